"""`skiff apply -f FILE|DIR|-`: make the cluster hold what the manifests say (kubectl's
client-side apply).

Every manifest of every -f is read and decoded first; one bad document stops the command before
anything is sent (the ManifestError names the file, document, line and field path). Then each
object, in order:
- absent: created, carrying the annotation `kubectl.kubernetes.io/last-applied-configuration`
  (the manifest as compact JSON) -> `deployment.apps/web created`;
- present: a JSON merge patch worked out three ways by `three_way_patch(last applied,
  manifest, current)`: fields the manifest sets that differ from the object, and null for fields
  the last apply set that the manifest no longer has. Fields nobody applied (a controller's
  annotations, an allocated clusterIP, a pod's nodeName) are left alone. A merge patch can only
  replace a list, so lists whose items have a merge key (kubectl's strategic-merge keys: name,
  containerPort, port, mountPath) are merged item by item on the client first: an item keeps
  what the server set in it (defaults, a Service port's nodePort) and the list is sent only when
  the merge changes it. The patch carries the resourceVersion read, so a concurrent write is a
  conflict and the object is read again and the patch recomputed (up to MAX_ATTEMPTS).
  -> `configured`, or `unchanged` when there is nothing to patch or the server's result is what
  was stored (same resourceVersion).
The namespace is the object's, else -n, else the client config's; an object naming another
namespace than an explicit -n is refused before anything is applied, as kubectl does. A refused
call prints one line naming the document and the server's message; the others still apply and
the exit status is 1.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any

from google.protobuf.message import Message

from controlplane.client import api, codec, manifests, mergepatch, scheme
from controlplane.client.manifests import Manifest
from controlplane.client.scheme import Kind
from deploy.cli.kubectl.common import (CommandError, Session, add_connection_arguments, describe_error,
                                       meta_of, object_ref, run_session)

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MAX_ATTEMPTS = 5
MERGE_KEYS = ("name", "containerPort", "port", "mountPath")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                   help="a manifest file, a directory of them (*.yaml, *.yml, *.json) or - for stdin; repeatable")
    add_connection_arguments(p)


def load_all(paths: list[str], namespace: str | None) -> list[Manifest]:
    """Every manifest of every path, checked before anything is sent."""
    loaded: list[Manifest] = []
    for path in paths:
        try:
            loaded.extend(manifests.load_path(path))
        except manifests.ManifestError as err:
            raise CommandError(str(err)) from None
    if not loaded:
        raise CommandError(f"no objects passed to apply (read {', '.join(paths)})")
    if namespace:
        for m in loaded:
            own = meta_of(m.object).namespace
            if own and own != namespace and scheme.by_message(m.object).namespaced:
                raise CommandError(
                    f'{m.describe()}: the namespace from the provided object "{own}" does not match '
                    f'the namespace "{namespace}"; pass --namespace={own} or leave -n out')
    return loaded


def run(args: argparse.Namespace) -> int:
    loaded = load_all(args.filename, args.namespace)

    async def body(session: Session) -> int:
        failed = False
        for m in loaded:
            kind = scheme.by_message(m.object)
            try:
                result = await apply_object(session, kind, m.object)
            except Exception as err:
                message = describe_error(err)
                if message is None:
                    raise
                print(f"skiff: {m.describe()}: {message}", file=sys.stderr)
                failed = True
                continue
            print(f"{object_ref(kind, meta_of(m.object).name)} {result}", flush=True)
        return 1 if failed else 0

    return run_session(args, body)


async def apply_object(session: Session, kind: Kind, obj: Message) -> str:
    """Create or patch one object; "created", "configured" or "unchanged"."""
    client = session.client
    namespace = session.namespace_for(kind, meta_of(obj).namespace)
    modified = with_last_applied(codec.encode(obj))
    name = meta_of(obj).name
    if not name:
        raise CommandError("metadata.name is required (apply does not support generateName)")
    for _ in range(MAX_ATTEMPTS):
        try:
            current = await client.get(kind, name, namespace)
        except api.NotFoundError:
            try:
                await client.create(codec.decode(modified, kind.message), namespace)
                return "created"
            except api.AlreadyExistsError:
                continue  # created meanwhile by someone else: patch it instead
        current_data = codec.encode(current)
        patch = three_way_patch(last_applied(current_data), modified, current_data)
        if not patch:
            return "unchanged"
        rv = meta_of(current).resource_version
        patch.setdefault("metadata", {})["resourceVersion"] = rv
        try:
            result = await client.patch(kind, name, patch, namespace)
        except api.ConflictError:
            continue
        return "unchanged" if meta_of(result).resource_version == rv else "configured"
    raise CommandError(f'{kind.group_resource} "{name}": still changing after {MAX_ATTEMPTS} attempts; try again')


# --- the pure core -------------------------------------------------------------------------

def with_last_applied(data: dict[str, Any]) -> dict[str, Any]:
    """data with the last-applied annotation set to data itself (without that annotation)."""
    out = copy.deepcopy(data)
    annotations = out.setdefault("metadata", {}).setdefault("annotations", {})
    annotations.pop(LAST_APPLIED, None)
    text = json.dumps(out, sort_keys=True, separators=(",", ":"))
    annotations[LAST_APPLIED] = text + "\n"
    return out


def last_applied(data: dict[str, Any]) -> dict[str, Any]:
    """What the previous apply sent, from the annotation; {} when there is none (or it is bad)."""
    text = ((data.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def three_way_patch(original: dict[str, Any], modified: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch that takes current to what the manifest (modified) says: fields
    modified sets that differ from current, null for fields original (the last apply) set that
    modified dropped. Lists with a merge key are merged item by item (see merge_list)."""
    patch: dict[str, Any] = {key: None for key in original if key not in modified and key in current}
    for key, value in modified.items():
        if key not in current:
            patch[key] = copy.deepcopy(value)
            continue
        now, before = current[key], original.get(key)
        if isinstance(value, dict) and isinstance(now, dict):
            sub = three_way_patch(before if isinstance(before, dict) else {}, value, now)
            if sub:
                patch[key] = sub
        elif isinstance(value, list) and isinstance(now, list):
            merged = merge_list(before if isinstance(before, list) else [], value, now)
            if merged != now:
                patch[key] = merged
        elif value != now:
            patch[key] = copy.deepcopy(value)
    return patch


def list_key(*lists: list[Any]) -> str | None:
    """The merge key every item of these lists has, uniquely per list (kubectl's strategic merge
    keys: containers and volumes by name, ports by containerPort or port, mounts by mountPath);
    None when there is none and the list is replaced whole."""
    for key in MERGE_KEYS:
        if all(isinstance(item, dict) and isinstance(item.get(key), (str, int)) for items in lists for item in items):
            if all(len({item[key] for item in items}) == len(items) for items in lists):
                return key
    return None


def merge_list(original: list[Any], modified: list[Any], current: list[Any]) -> list[Any]:
    """The list after applying: modified's items in its order, each merged three-way into the
    current item with the same key (keeping what the server set in it, like a nodePort or an
    imagePullPolicy default), then current items nobody applied (added by someone else).
    Items the last apply had and modified dropped go away. Without a merge key: modified."""
    key = list_key(modified, current)
    if key is None:
        return copy.deepcopy(modified)
    now = {item[key]: item for item in current}
    before = {item[key]: item for item in original if isinstance(item, dict) and key in item}
    out = []
    for item in modified:
        here = now.get(item[key])
        if here is None:
            out.append(copy.deepcopy(item))
        else:
            out.append(mergepatch.merge_patch(here, three_way_patch(before.get(item[key], {}), item, here)))
    wanted = {item[key] for item in modified}
    out += [copy.deepcopy(item) for item in current if item[key] not in wanted and item[key] not in before]
    return out
