"""`skiff scale KIND/NAME... --replicas=N [--current-replicas=M] [--resource-version=V]`.

kubectl's scale for Deployments, ReplicaSets, ReplicationControllers and StatefulSets (also
`KIND NAME...` and `-l SELECTOR`/`--all`). The change is a JSON merge patch of spec.replicas;
`--current-replicas` and `--resource-version` are preconditions checked against the object read,
and the patch carries the resourceVersion read, so a concurrent change is detected, not
overwritten. Prints `deployment.apps/web scaled`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from controlplane.client import api
from controlplane.client.scheme import Kind
from deploy.cli.kubectl.common import (CommandError, Session, add_connection_arguments, describe_error, meta_of,
                                       object_ref, resolve_targets, run_session)
from deploy.cli.kubectl.get_cmd import expand_targets

SCALABLE = ("Deployment", "ReplicaSet", "ReplicationController", "StatefulSet")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("resources", nargs="+", metavar="KIND/NAME", help="what to scale (KIND/NAME... or KIND NAME...)")
    p.add_argument("--replicas", type=int, required=True, help="the new number of replicas")
    p.add_argument("--current-replicas", type=int, default=None,
                   help="precondition: scale only if the current number of replicas is this")
    p.add_argument("--resource-version", default="", help="precondition: scale only at this resourceVersion")
    p.add_argument("-l", "--selector", default="", help="scale the objects of KIND matching this selector")
    p.add_argument("--all", action="store_true", help="scale every object of KIND in the namespace")
    add_connection_arguments(p)


def check_preconditions(obj: Any, current_replicas: int | None, resource_version: str) -> None:
    """CommandError when the object is not in the state the user said it must be in."""
    name = meta_of(obj).name
    if current_replicas is not None and obj.spec.replicas != current_replicas:
        raise CommandError(f"Expected replicas to be {current_replicas}, was {obj.spec.replicas} ({name})")
    if resource_version and meta_of(obj).resource_version != resource_version:
        raise CommandError(f"Expected resource version to be {resource_version}, was "
                           f"{meta_of(obj).resource_version} ({name})")


async def scale_one(session: Session, kind: Kind, name: str, replicas: int, current_replicas: int | None,
                    resource_version: str) -> None:
    namespace = session.namespace_for(kind)
    obj: Any = await session.client.get(kind, name, namespace)
    check_preconditions(obj, current_replicas, resource_version)
    patch = {"spec": {"replicas": replicas}, "metadata": {"resourceVersion": meta_of(obj).resource_version}}
    await session.client.patch(kind, name, patch, namespace)


def run(args: argparse.Namespace) -> int:
    if args.replicas < 0:
        raise CommandError("The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0")
    targets = resolve_targets(args.resources)
    for t in targets:
        if t.kind.kind not in SCALABLE:
            raise CommandError(f"cannot scale {t.kind.resource}: only deployments, replicasets, "
                               "replicationcontrollers and statefulsets scale")

    async def body(session: Session) -> int:
        failed = False
        objects = await expand_targets(session, targets, args.selector, args.all, "scale")
        for kind, name in objects:
            try:
                await scale_one(session, kind, name, args.replicas, args.current_replicas, args.resource_version)
            except (api.ApiStatusError, CommandError) as err:
                print(f"skiff: {describe_error(err)}", file=sys.stderr)
                failed = True
                continue
            print(f"{object_ref(kind, name)} scaled", flush=True)
        return 1 if failed else 0

    return run_session(args, body)
