"""`skiff rollout status|history|undo|pause|resume|restart deploy/NAME`: kubectl's rollout.

- `status` follows the Deployment by watch and prints kubectl's progress lines as they change
  ("Waiting for deployment "web" rollout to finish: 1 of 3 updated replicas are available...")
  until `deployment "web" successfully rolled out` (exit 0); exits 1 when the progress deadline
  is exceeded or `--timeout` passes. `--watch=false` prints the state once. `--revision N`
  first checks that N is the running revision.
- `history` lists the revisions of the Deployment's ReplicaSets with their change-cause;
  `--revision N` prints that revision's pod template.
- `undo [--to-revision N]` copies the ReplicaSet template of revision N (default: the previous
  one) into the Deployment, with its annotations, as modern kubectl does; the Deployment
  controller then scales that ReplicaSet back up under a new revision. A paused Deployment is
  not rolled back.
- `pause`/`resume` set spec.paused; `restart` sets the template annotation
  `kubectl.kubernetes.io/restartedAt` to now (Deployments, DaemonSets and StatefulSets), which
  changes the template and so rolls every pod.
Writes carry the resourceVersion read, so a concurrent change is detected, not overwritten.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import yaml

from controlplane.client import api, codec, scheme
from controlplane.client.scheme import Kind
from controlplane.client.timeutil import format_time
from controlplane.controllers import deployment_util as du
from deploy.cli.kubectl.common import (CommandError, Session, add_connection_arguments, meta_of, object_ref,
                                       resolve_targets, run_session)
from deploy.cli.kubectl.get_cmd import list_all
from protos.skiff.api.v1 import apps_pb2

ACTIONS = ("status", "history", "undo", "pause", "resume", "restart")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=ACTIONS, help="what to do")
    p.add_argument("resources", nargs="+", metavar="KIND/NAME", help="the deployment (deploy/NAME or deploy NAME)")
    p.add_argument("--to-revision", type=int, default=0, help="undo: the revision to go back to (default: previous)")
    p.add_argument("--revision", type=int, default=0,
                   help="history: show this revision's template; status: insist on this revision")
    p.add_argument("--timeout", type=float, default=0.0, metavar="SECONDS",
                   help="status: give up after this long (default: wait forever)")
    p.add_argument("-w", "--watch", action=argparse.BooleanOptionalAction, default=True,
                   help="status: keep following until the rollout finishes (default on)")
    add_connection_arguments(p)


def run(args: argparse.Namespace) -> int:
    targets = [(t.kind, n) for t in resolve_targets(args.resources) for n in t.names]
    if not targets:
        raise CommandError("name the deployment: skiff rollout ACTION deploy/NAME")
    for kind, _ in targets:
        allowed = ("Deployment", "DaemonSet", "StatefulSet") if args.action == "restart" else ("Deployment",)
        if kind.kind not in allowed:
            raise CommandError(f"rollout {args.action} is not supported for {kind.resource} "
                               f"(supported: {', '.join(a.lower() + 's' for a in allowed)})")
    handler = {"status": status, "history": history, "undo": undo, "pause": pause, "resume": resume,
               "restart": restart}[args.action]

    async def body(session: Session) -> int:
        for kind, name in targets:
            await handler(session, kind, name, args)
        return 0

    return run_session(args, body)


async def _get(session: Session, kind: Kind, name: str) -> Any:
    return await session.client.get(kind, name, session.namespace_for(kind))


# ---- status ----------------------------------------------------------------------------------

async def status(session: Session, kind: Kind, name: str, args: argparse.Namespace) -> None:
    try:
        await asyncio.wait_for(_follow(session, kind, name, args), args.timeout if args.timeout > 0 else None)
    except asyncio.TimeoutError:
        raise CommandError("timed out waiting for the condition") from None


async def _follow(session: Session, kind: Kind, name: str, args: argparse.Namespace) -> None:
    namespace = session.namespace_for(kind)
    last = ""
    while True:
        d = await _get(session, kind, name)
        if args.revision and du.revision(d) != args.revision:
            raise CommandError(f"desired revision ({args.revision}) is different from the running revision "
                               f"({du.revision(d)})")
        if await _report(d, last):
            return
        last = du.rollout_status_message(d)[0]
        if not args.watch:
            return
        try:
            async for event in session.client.watch(kind, namespace, field_selector=f"metadata.name={name}",
                                                    resource_version=meta_of(d).resource_version):
                if event.type == "DELETED":
                    raise CommandError(f'deployment "{name}" was deleted')
                if event.type == "BOOKMARK":
                    continue
                if await _report(event.object, last):
                    return
                last = du.rollout_status_message(event.object)[0]  # type: ignore[arg-type]
        except api.GoneError:
            pass  # fell behind: read afresh
        await asyncio.sleep(0.2)


async def _report(d: Any, last: str) -> bool:
    """Print the status line if it changed; True when the rollout is done."""
    try:
        message, done = du.rollout_status_message(d)
    except ValueError as err:
        raise CommandError(str(err)) from None
    if message != last:
        print(message, flush=True)
    return done


# ---- history and undo ------------------------------------------------------------------------

async def owned_replica_sets(session: Session, d: Any) -> list[apps_pb2.ReplicaSet]:
    found, _ = await list_all(session.client, scheme.by_resource("replicasets"), meta_of(d).namespace)
    out = []
    for rs in found:
        assert isinstance(rs, apps_pb2.ReplicaSet)
        if any(r.uid == meta_of(d).uid and r.controller for r in rs.metadata.owner_references):
            out.append(rs)
    return out


def history_table(rss: list[apps_pb2.ReplicaSet]) -> str:
    rows = sorted({du.revision(rs): rs for rs in rss if du.revision(rs) > 0}.items())
    lines = ["REVISION  CHANGE-CAUSE"]
    lines += [f"{rev:<9} {rs.metadata.annotations.get(du.CHANGE_CAUSE, '<none>')}" for rev, rs in rows]
    return "\n".join(lines)


async def history(session: Session, kind: Kind, name: str, args: argparse.Namespace) -> None:
    d = await _get(session, kind, name)
    rss = await owned_replica_sets(session, d)
    if args.revision:
        rs = next((r for r in rss if du.revision(r) == args.revision), None)
        if rs is None:
            raise CommandError(f"unable to find the specified revision {args.revision}")
        print(f"{object_ref(kind, name)} with revision #{args.revision}\nPod Template:\n{_template_yaml(rs)}",
              end="", flush=True)
        return
    print(f"{object_ref(kind, name)}\n{history_table(rss)}\n", flush=True)


def _template_yaml(rs: apps_pb2.ReplicaSet) -> str:
    data = codec.encode(rs.spec.template)
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    return "".join(f"  {line}\n" for line in text.splitlines())


def rollback_source(rss: list[apps_pb2.ReplicaSet], to_revision: int, name: str) -> apps_pb2.ReplicaSet:
    """The ReplicaSet to go back to: revision to_revision, or the previous one when 0."""
    by_rev = {du.revision(rs): rs for rs in rss if du.revision(rs) > 0}
    if to_revision:
        if to_revision not in by_rev:
            raise CommandError(f"unable to find specified revision {to_revision} in history")
        return by_rev[to_revision]
    revisions = sorted(by_rev)
    if len(revisions) < 2:
        raise CommandError(f'no rollout history found for deployment "{name}"')
    return by_rev[revisions[-2]]


async def undo(session: Session, kind: Kind, name: str, args: argparse.Namespace) -> None:
    d = await _get(session, kind, name)
    if d.spec.paused:
        raise CommandError(f"you cannot rollback a paused deployment; resume it first with "
                           f"'skiff rollout resume deployment/{name}' and try again")
    source = rollback_source(await owned_replica_sets(session, d), args.to_revision, name)
    if du.equal_ignore_hash(source.spec.template, d.spec.template):
        print(f"{object_ref(kind, name)} skipped rollback (current template already matches revision "
              f"{du.revision(source)})", flush=True)
        return
    d.spec.template.CopyFrom(du.without_hash(source.spec.template))
    kept = {k: v for k, v in d.metadata.annotations.items() if k in du.CONTROLLER_ANNOTATIONS}
    d.metadata.annotations.clear()
    d.metadata.annotations.update(kept)
    d.metadata.annotations.update({k: v for k, v in source.metadata.annotations.items()
                                   if k not in du.CONTROLLER_ANNOTATIONS})
    await session.client.update(d)
    print(f"{object_ref(kind, name)} rolled back", flush=True)


# ---- pause, resume, restart ------------------------------------------------------------------

async def _patch(session: Session, kind: Kind, obj: Any, patch: dict[str, Any]) -> None:
    patch.setdefault("metadata", {})["resourceVersion"] = meta_of(obj).resource_version
    await session.client.patch(kind, meta_of(obj).name, patch, session.namespace_for(kind))


async def pause(session: Session, kind: Kind, name: str, args: argparse.Namespace) -> None:
    d = await _get(session, kind, name)
    if d.spec.paused:
        raise CommandError(f'{kind.group_resource} "{name}" is already paused')
    await _patch(session, kind, d, {"spec": {"paused": True}})
    print(f"{object_ref(kind, name)} paused", flush=True)


async def resume(session: Session, kind: Kind, name: str, args: argparse.Namespace) -> None:
    d = await _get(session, kind, name)
    if not d.spec.paused:
        raise CommandError(f'{kind.group_resource} "{name}" is not paused')
    await _patch(session, kind, d, {"spec": {"paused": None}})
    print(f"{object_ref(kind, name)} resumed", flush=True)


async def restart(session: Session, kind: Kind, name: str, args: argparse.Namespace) -> None:
    obj = await _get(session, kind, name)
    if kind.kind == "Deployment" and obj.spec.paused:
        raise CommandError(f"can't restart paused deployment (run 'skiff rollout resume deployment/{name}' first)")
    stamp = format_time(time.time())
    await _patch(session, kind, obj, {"spec": {"template": {"metadata": {"annotations": {du.RESTARTED_AT: stamp}}}}})
    print(f"{object_ref(kind, name)} restarted", flush=True)
