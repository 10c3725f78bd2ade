"""`skiff set image KIND/NAME... CONTAINER=IMAGE... [--all | -l SELECTOR]`: kubectl's set image.

Sets the image of the named containers (init containers too; `*` means every container) in a
Pod or in the pod template of a Deployment, ReplicaSet, ReplicationController, DaemonSet or
StatefulSet. Each object is read, changed by `set_images` (pure) and written back with the
resourceVersion read (retried on a conflict). A container name that no object has is an error
(`unable to find container named "x"`). Prints `deployment.apps/web image updated`.

Registered as `skiff set` (this module adds the `image` sub-command) or as `skiff set image`
(then the arguments are added directly).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping

from controlplane.client import api
from controlplane.client.scheme import Kind
from deploy.cli.kubectl.common import (CommandError, Session, add_connection_arguments, describe_error, object_ref, resolve_targets, run_session)
from deploy.cli.kubectl.get_cmd import expand_targets
from protos.skiff.api.v1 import core_pb2

MAX_ATTEMPTS = 5
WITH_TEMPLATE = ("Deployment", "ReplicaSet", "ReplicationController", "DaemonSet", "StatefulSet")


def _add_image_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="+", metavar="KIND/NAME... CONTAINER=IMAGE...",
                   help="objects (KIND/NAME... or KIND NAME...), then container=image pairs ('*' for all)")
    p.add_argument("-l", "--selector", default="", help="change the objects of KIND matching this selector")
    p.add_argument("--all", action="store_true", help="change every object of KIND in the namespace")
    add_connection_arguments(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    if p.prog.split()[-1] == "image":
        _add_image_arguments(p)
        return
    sub = p.add_subparsers(dest="set_what", metavar="WHAT", required=True)
    _add_image_arguments(sub.add_parser("image", help="update the image of containers in pods or pod templates"))


def parse_images(words: list[str]) -> dict[str, str]:
    images: dict[str, str] = {}
    for word in words:
        name, sep, image = word.partition("=")
        if not sep or not name or not image:
            raise CommandError(f'"{word}" is not CONTAINER=IMAGE')
        images[name] = image
    return images


def pod_spec_of(obj: Any) -> core_pb2.PodSpec:
    if isinstance(obj, core_pb2.Pod):
        return obj.spec
    return obj.spec.template.spec  # type: ignore[no-any-return]


def set_images(spec: core_pb2.PodSpec, images: Mapping[str, str]) -> tuple[bool, set[str]]:
    """Change spec in place; (whether anything changed, the container names that matched)."""
    changed, matched = False, set()
    for c in [*spec.init_containers, *spec.containers]:
        image = images.get(c.name, images.get("*"))
        if image is None:
            continue
        matched.add(c.name if c.name in images else "*")
        if c.image != image:
            c.image = image
            changed = True
    return changed, matched


async def set_one(session: Session, kind: Kind, name: str, images: Mapping[str, str]) -> bool:
    namespace = session.namespace_for(kind)
    for _ in range(MAX_ATTEMPTS):
        obj: Any = await session.client.get(kind, name, namespace)
        changed, matched = set_images(pod_spec_of(obj), images)
        missing = sorted(set(images) - matched)
        if missing:
            raise CommandError(f'unable to find container named "{missing[0]}" in {object_ref(kind, name)}')
        if not changed:
            return False
        try:
            await session.client.update(obj)
            return True
        except api.ConflictError:
            continue
    raise CommandError(f'{kind.group_resource} "{name}": still changing after {MAX_ATTEMPTS} attempts; try again')


def run(args: argparse.Namespace) -> int:
    split = next((i for i, w in enumerate(args.args) if "=" in w), len(args.args))
    if split == len(args.args):
        raise CommandError("at least one image update is required (CONTAINER=IMAGE)")
    images = parse_images(args.args[split:])
    targets = resolve_targets(args.args[:split])
    for t in targets:
        if t.kind.kind != "Pod" and t.kind.kind not in WITH_TEMPLATE:
            raise CommandError(f"cannot set the image of {t.kind.resource}: they have no pod template")

    async def body(session: Session) -> int:
        failed = False
        objects = await expand_targets(session, targets, args.selector, args.all, "change")
        for kind, name in objects:
            try:
                changed = await set_one(session, kind, name, images)
            except (api.ApiStatusError, CommandError) as err:
                print(f"skiff: {describe_error(err)}", file=sys.stderr)
                failed = True
                continue
            print(f"{object_ref(kind, name)} {'image updated' if changed else 'image unchanged'}", flush=True)
        return 1 if failed else 0

    return run_session(args, body)
