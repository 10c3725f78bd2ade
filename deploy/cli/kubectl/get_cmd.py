"""`skiff get KIND[,KIND2] [NAME...] [-n NS | -A] [-l SEL] [--field-selector SEL]
[-o wide|yaml|json|name] [-w] [--show-labels]`: kubectl's get.

- Tables use printers.TABLES; with several kinds (or `all`) each kind is its own section, names
  written kind.group/name, sections separated by a blank line, empty kinds left out.
- `all` is kubectl's category: pods, replicationcontrollers, services, daemonsets, deployments,
  replicasets, statefulsets.
- Lists are read in pages of PAGE_SIZE (kubectl's chunk size). Named objects are read one by
  one; a missing one prints the server's message on stderr, the others still print, exit 1.
- `-o yaml|json` prints one object when exactly one was named, else a `kind: List`.
- Nothing found prints "No resources found in NS namespace." (or "No resources found") on
  stderr, as kubectl does, and exits 0.
- `-w` (one kind only) prints the list, then a row (or name, or document) per watch event from
  the list's resourceVersion, until Ctrl-C. A watch that falls behind compaction re-lists and
  goes on from the new version.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

from google.protobuf.message import Message

from controlplane.client import api, codec
from controlplane.client.scheme import Kind
from deploy.cli.kubectl import printers
from deploy.cli.kubectl.common import (CommandError, Session, Target, add_connection_arguments, describe_error,
                                       kind_of, meta_of, object_ref, resolve_targets, run_session)

PAGE_SIZE = 500
ALL = ("pods", "replicationcontrollers", "services", "daemonsets", "deployments", "replicasets", "statefulsets")
OUTPUTS = ("wide", "yaml", "json", "name")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("resources", nargs="*", metavar="KIND [NAME...]",
                   help="kind(s) (pods, deploy, svc, ...; several joined by commas; all), then names, or KIND/NAME")
    p.add_argument("-o", "--output", choices=OUTPUTS, help="wide, yaml, json or name")
    p.add_argument("-l", "--selector", default="", help="label selector (app=web,tier!=db)")
    p.add_argument("--field-selector", default="", help="field selector (status.phase=Running)")
    p.add_argument("-w", "--watch", action="store_true", help="after listing, print changes until Ctrl-C")
    p.add_argument("--show-labels", action="store_true", help="add a LABELS column")
    p.add_argument("--no-headers", action="store_true", help="leave out table headers")
    add_connection_arguments(p, all_namespaces=True)


def expand(words: list[str]) -> list[Target]:
    """resolve_targets, with `all` standing for kubectl's category of workload kinds."""
    if not words or "/" in words[0] or "all" not in words[0].lower().split(","):
        return resolve_targets(words)
    if len(words) > 1:
        raise CommandError('names cannot be given with "all"')
    targets: list[Target] = []
    for word in words[0].split(","):
        names = ALL if word.lower() == "all" else (word,)
        targets += [Target(kind_of(n), ()) for n in names if kind_of(n) not in [t.kind for t in targets]]
    return targets


@dataclass
class Found:
    kind: Kind
    objects: list[Message] = field(default_factory=list)


def run(args: argparse.Namespace) -> int:
    targets = expand(args.resources)
    if args.watch and (len(targets) != 1 or len(targets[0].names) > 1):
        raise CommandError("watch is only supported on one resource type and at most one name")
    if args.all_namespaces and args.namespace:
        raise CommandError("-A and -n cannot be used together")
    return run_session(args, lambda session: _get(session, args, targets))


async def _get(session: Session, args: argparse.Namespace, targets: list[Target]) -> int:
    found: list[Found] = []
    failed = False
    listed_rv = ""
    for target in targets:
        namespace = "" if args.all_namespaces else session.namespace_for(target.kind)
        result = Found(target.kind)
        found.append(result)
        if not target.names or args.watch:
            # A watch starts from a list's version, so a watched name is listed by field selector.
            result.objects, listed_rv = await list_all(session.client, target.kind, namespace, args.selector,
                                                       _with_name(args.field_selector, target.names))
            continue
        for name in target.names:
            try:
                result.objects.append(await session.client.get(target.kind, name, namespace))
            except api.NotFoundError as err:
                print(f"skiff: {describe_error(err)}", file=sys.stderr)
                failed = True
    several_kinds = len(found) > 1
    single = len(targets) == 1 and len(targets[0].names) == 1
    print_found(found, args, session, several_kinds, single, failed)
    if args.watch:
        await watch(session, args, targets[0], found[0].objects, listed_rv)
    return 1 if failed else 0


def _with_name(field_selector: str, names: tuple[str, ...]) -> str:
    return ",".join(filter(None, [field_selector, *(f"metadata.name={n}" for n in names)]))


async def list_all(client: api.ApiClient, kind: Kind, namespace: str, label_selector: str = "",
                   field_selector: str = "") -> tuple[list[Message], str]:
    """Every object (in pages), and the version of the first page (what the list shows)."""
    items: list[Message] = []
    token, version = "", ""
    while True:
        page = await client.list(kind, namespace, label_selector, field_selector, limit=PAGE_SIZE,
                                 continue_token=token)
        items.extend(page.items)
        version = version or page.resource_version
        token = page.continue_token
        if not token:
            if kind.kind == "Event":
                items.sort(key=printers.event_time)  # kubectl shows events oldest first
            return items, version


async def expand_targets(session: Session, targets: Sequence[Target], selector: str, everything: bool,
                         verb: str) -> list[tuple[Kind, str]]:
    """(kind, name) of every object the arguments name: explicit names, or with -l / --all
    every matching object in scope (for scale, set, label)."""
    objects: list[tuple[Kind, str]] = []
    for t in targets:
        if t.names:
            objects += [(t.kind, n) for n in t.names]
        elif selector or everything:
            found, _ = await list_all(session.client, t.kind, session.namespace_for(t.kind), selector)
            objects += [(t.kind, meta_of(o).name) for o in found]
        else:
            raise CommandError(f"name the {t.kind.resource} to {verb}, or pass -l SELECTOR or --all")
    return objects


def table_options(args: argparse.Namespace, with_kind: bool, headers: bool = True) -> printers.TableOptions:
    return printers.TableOptions(wide=args.output == "wide", with_namespace=bool(args.all_namespaces),
                                 with_kind=with_kind, show_labels=args.show_labels,
                                 headers=headers and not args.no_headers)


def print_found(found: list[Found], args: argparse.Namespace, session: Session, several_kinds: bool,
                single: bool, failed: bool) -> None:
    objects = [o for f in found for o in f.objects]
    if args.output in ("yaml", "json"):
        if single and len(objects) == 1:
            sys.stdout.write(codec.to_yaml(objects[0]) if args.output == "yaml" else codec.to_json(objects[0]))
        elif objects or not failed:
            sys.stdout.write(codec.to_yaml(objects) if args.output == "yaml" else codec.to_json(objects))
        return
    if not objects:
        if not failed:
            print(no_resources(found, args, session), file=sys.stderr)
        return
    if args.output == "name":
        for f in found:
            for obj in f.objects:
                print(object_ref(f.kind, meta_of(obj).name))
        return
    now = time.time()
    sections = [printers.render_table(printers.table_rows(f.kind, f.objects, now, table_options(args, several_kinds)))
                for f in found if f.objects]
    sys.stdout.write("\n".join(sections))
    sys.stdout.flush()


def no_resources(found: list[Found], args: argparse.Namespace, session: Session) -> str:
    if args.all_namespaces or not any(f.kind.namespaced for f in found):
        return "No resources found"
    return f"No resources found in {session.default_namespace} namespace."


async def watch(session: Session, args: argparse.Namespace, target: Target, listed: list[Message],
                rv: str) -> None:
    kind = target.kind
    namespace = "" if args.all_namespaces else session.namespace_for(kind)
    field_selector = _with_name(args.field_selector, target.names)
    widths: list[int] = []
    if listed and args.output in (None, "wide"):
        rows = printers.table_rows(kind, listed, time.time(), table_options(args, False))
        printers.render_table(rows, widths)  # only to learn the column widths printed above
    while True:
        if not rv:
            page = await session.client.list(kind, namespace, args.selector, field_selector, limit=1)
            rv = page.resource_version
        try:
            async for event in session.client.watch(kind, namespace, args.selector, field_selector,
                                                    resource_version=rv):
                if event.type == "BOOKMARK":
                    continue
                rv = meta_of(event.object).resource_version or rv
                print_event(kind, event.object, args, widths)
        except api.GoneError:
            rv = ""


def print_event(kind: Kind, obj: Message, args: argparse.Namespace, widths: list[int]) -> None:
    if args.output == "name":
        print(object_ref(kind, meta_of(obj).name), flush=True)
    elif args.output in ("yaml", "json"):
        text = codec.to_yaml(obj) if args.output == "yaml" else codec.to_json(obj)
        sys.stdout.write(("---\n" + text) if args.output == "yaml" else text)
        sys.stdout.flush()
    else:
        rows = printers.table_rows(kind, [obj], time.time(), table_options(args, False, headers=False))
        sys.stdout.write(printers.render_table(rows, widths))
        sys.stdout.flush()
