"""`skiff delete -f FILE | KIND NAME... | KIND -l SEL | KIND --all [-n NS] [--grace-period N]
[--cascade background|foreground|orphan] [--wait/--no-wait] [--timeout S] [--ignore-not-found]`.

Prints `deployment.apps "web" deleted` per object, as kubectl does. `--cascade` maps to the
API's propagationPolicy (kubectl's legacy true/false mean background/orphan). With --wait (the
default, as in kubectl) the command returns once every deleted object is gone: an object held by
finalizers or a pod's grace period is watched until its DELETED event (common.wait_gone), for
at most --timeout seconds (default: 60 plus the largest grace period asked for). A missing object
prints the server's message and the others are still deleted (exit 1), unless
--ignore-not-found. Manifests are all read and checked before anything is deleted.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass

from google.protobuf.message import Message

from controlplane.client import api, manifests, scheme
from controlplane.client.scheme import Kind
from deploy.cli.kubectl.common import (CommandError, Session, add_connection_arguments, describe_error, meta_of,
                                       resolve_targets, run_session, wait_gone)
from deploy.cli.kubectl.get_cmd import list_all
from deploy.cli.kubectl.printers import kind_ref

CASCADE = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan",
           "true": "Background", "false": "Orphan"}
DEFAULT_WAIT = 60.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("resources", nargs="*", metavar="KIND [NAME...]", help="kind and names, or KIND/NAME")
    p.add_argument("-f", "--filename", action="append", metavar="FILE", help="delete what these manifests name")
    p.add_argument("-l", "--selector", default="", help="delete the objects of KIND matching this label selector")
    p.add_argument("--all", action="store_true", help="delete every object of KIND in the namespace")
    p.add_argument("--grace-period", type=int, default=-1, metavar="SECONDS",
                   help="seconds a pod gets to stop (default -1: the pod's own; 0: at once)")
    p.add_argument("--cascade", default="background", type=str.lower, choices=sorted(CASCADE),
                   help="what happens to dependents: background (default), foreground or orphan")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                   help="wait until the objects are gone (default: wait)")
    p.add_argument("--timeout", type=float, default=0.0, metavar="SECONDS",
                   help="how long --wait waits (default: 60 plus the grace period)")
    p.add_argument("--ignore-not-found", action="store_true", help="a missing object is not an error")
    add_connection_arguments(p)


@dataclass(frozen=True)
class Victim:
    kind: Kind
    namespace: str | None  # None: the session's default (the object named none)
    name: str


def run(args: argparse.Namespace) -> int:
    if args.filename and args.resources:
        raise CommandError("give either -f or KIND NAME..., not both")
    victims: list[Victim] = []
    by_selector: list[Kind] = []
    if args.filename:
        for path in args.filename:
            try:
                for m in manifests.load_path(path):
                    meta = meta_of(m.object)
                    victims.append(Victim(scheme.by_message(m.object), meta.namespace or None, meta.name))
            except manifests.ManifestError as err:
                raise CommandError(str(err)) from None
    else:
        for target in resolve_targets(args.resources):
            if target.names:
                victims += [Victim(target.kind, None, n) for n in target.names]
            elif args.selector or args.all:
                by_selector.append(target.kind)
            else:
                raise CommandError(f"name {target.kind.resource} to delete, or pass -l SELECTOR or --all")
    return run_session(args, lambda session: _delete(session, args, victims, by_selector))


async def _delete(session: Session, args: argparse.Namespace, victims: list[Victim], by_selector: list[Kind]) -> int:
    for kind in by_selector:
        found, _ = await list_all(session.client, kind, session.namespace_for(kind), args.selector)
        victims += [Victim(kind, meta_of(o).namespace or None, meta_of(o).name) for o in found]
    if by_selector and not victims:
        print(f"No resources found in {session.default_namespace} namespace.", file=sys.stderr)
    grace = None if args.grace_period < 0 else args.grace_period
    pending: list[tuple[Victim, str, Message]] = []
    failed = False
    for v in victims:
        namespace = session.namespace_for(v.kind, v.namespace or "")
        try:
            obj, gone = await session.client.delete(v.kind, v.name, namespace, grace_period_seconds=grace,
                                                    propagation_policy=CASCADE[args.cascade])
        except api.NotFoundError as err:
            if not args.ignore_not_found:
                print(f"skiff: {describe_error(err)}", file=sys.stderr)
                failed = True
            continue
        print(f'{kind_ref(v.kind)} "{v.name}" deleted', flush=True)
        if not gone:
            pending.append((v, namespace, obj))
    if args.wait and pending:
        await wait_all(session.client, pending, args.timeout or DEFAULT_WAIT + max(grace or 0, _graces(pending)))
    return 1 if failed else 0


def _graces(pending: list[tuple[Victim, str, Message]]) -> int:
    return max((meta_of(o).deletion_grace_period_seconds for _, _, o in pending), default=0)


async def wait_all(client: api.ApiClient, pending: list[tuple[Victim, str, Message]], timeout: float) -> None:
    async def one(v: Victim, namespace: str, obj: Message) -> None:
        try:
            await asyncio.wait_for(wait_gone(client, v.kind, namespace, v.name, meta_of(obj).uid), timeout)
        except asyncio.TimeoutError:
            raise CommandError(f"timed out after {timeout:.0f}s waiting for {v.kind.resource}/{v.name} "
                               f"to be deleted (finalizers: {', '.join(meta_of(obj).finalizers) or 'none'})") from None
    await asyncio.gather(*(one(*p) for p in pending))
