"""`skiff create namespace NAME` and `skiff create -f FILE|DIR|-`: kubectl's create.

Creates and never updates: an object that exists is refused by the server (AlreadyExists) and
that one line is printed; the other objects are still created and the exit status is 1.
Manifests are all read and checked before anything is sent. Prints `namespace/NAME created`,
`deployment.apps/web created`.
"""
from __future__ import annotations

import argparse
import sys

from google.protobuf.message import Message

from controlplane.client import scheme
from deploy.cli.kubectl.apply_cmd import load_all
from deploy.cli.kubectl.common import (CommandError, Session, add_connection_arguments, describe_error, meta_of,
                                       object_ref, run_session)
from protos.skiff.api.v1 import core_pb2

GENERATORS = ("namespace", "ns")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="*", metavar="namespace NAME", help="what to create: namespace NAME")
    p.add_argument("-f", "--filename", action="append", metavar="FILE",
                   help="a manifest file, a directory of them or - for stdin; repeatable")
    add_connection_arguments(p)


def objects_to_create(args: argparse.Namespace) -> list[tuple[str, Message]]:
    """(where it came from, object) pairs, all checked before anything is sent."""
    if args.filename:
        if args.what:
            raise CommandError("give either -f FILE or namespace NAME, not both")
        return [(m.describe(), m.object) for m in load_all(args.filename, args.namespace)]
    if len(args.what) != 2 or args.what[0].lower() not in GENERATORS:
        raise CommandError('say what to create: "skiff create namespace NAME" or "skiff create -f FILE"')
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = args.what[1]
    return [(f'namespace "{args.what[1]}"', ns)]


def run(args: argparse.Namespace) -> int:
    todo = objects_to_create(args)

    async def body(session: Session) -> int:
        failed = False
        for where, obj in todo:
            kind = scheme.by_message(obj)
            try:
                made = await session.client.create(obj, session.namespace_for(kind, meta_of(obj).namespace))
            except Exception as err:
                message = describe_error(err)
                if message is None:
                    raise
                print(f"skiff: {where}: {message}" if args.filename else f"skiff: {message}", file=sys.stderr)
                failed = True
                continue
            print(f"{object_ref(kind, meta_of(made).name)} created", flush=True)
        return 1 if failed else 0

    return run_session(args, body)
