"""`skiff image`: manage the images of skiff's runtime on this host (import, ls, rm, pull).

    skiff image import FILE [--name NAME] [--root DIR]    OCI layout archive or `docker save` tar
    skiff image ls [-q] [--root DIR]
    skiff image rm REF... [--root DIR]
    skiff image pull REF [--insecure-registry HOST]... [--platform OS/ARCH] [--root DIR]

The store is the one the runtime serves over CRI: ``/var/lib/skiff/runtime`` as root, else
``~/.skiff/runtime``. Registries on loopback are reached over plain HTTP without asking;
``--insecure-registry`` adds others. Credentials for ``pull`` come from ``SKIFF_REGISTRY_USER``
and ``SKIFF_REGISTRY_PASSWORD`` (never from the command line, where ``ps`` would show them).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from deploy.cli.errors import CommandError

if TYPE_CHECKING:
    from node.runtime.images.store import ImageStore


def default_root() -> Path:
    return Path("/var/lib/skiff/runtime") if os.geteuid() == 0 else Path.home() / ".skiff" / "runtime"


def add_arguments(p: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=None,
                        help=f"the runtime's state directory (default: {default_root()})")
    verbs = p.add_subparsers(dest="image_command", metavar="COMMAND", required=True)
    imp = verbs.add_parser("import", parents=[common], help="import images from an OCI layout archive or a docker save tar")
    imp.add_argument("file", type=Path)
    imp.add_argument("--name", help="repository for images the archive names only by a bare tag (e.g. team/app)")
    ls = verbs.add_parser("ls", parents=[common], help="list images")
    ls.add_argument("-q", "--quiet", action="store_true", help="print image IDs only")
    rm = verbs.add_parser("rm", parents=[common], help="remove images (all their tags) and unused content")
    rm.add_argument("refs", nargs="+", metavar="REF", help="image ID, ID prefix, tag or digest reference")
    pull = verbs.add_parser("pull", parents=[common], help="pull an image from a registry")
    pull.add_argument("ref", metavar="REF")
    pull.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                      help="use plain HTTP for this registry (loopback registries always are)")
    pull.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="platform to choose from an index (default: this host's)")


def run(args: argparse.Namespace) -> int:
    from node.runtime.images.importer import ArchiveError
    from node.runtime.images.manifest import ManifestError
    from node.runtime.images.reference import InvalidReference
    from node.runtime.images.registry import RegistryError
    from node.runtime.images.store import ImageStore, StoreError
    from node.runtime.images.unpack import LayerError

    try:
        store = ImageStore(args.root or default_root())
        handler = {"import": _import, "ls": _ls, "rm": _rm, "pull": _pull}[args.image_command]
        return handler(store, args)
    except (InvalidReference, RegistryError, ManifestError, StoreError, LayerError, ArchiveError) as err:
        raise CommandError(str(err)) from None
    except PermissionError as err:
        raise CommandError(f"{err.strerror}: {err.filename} (run as root, or pass --root DIR)") from None


def _import(store: ImageStore, args: argparse.Namespace) -> int:
    from node.runtime.images.importer import import_archive

    if not args.file.is_file():
        raise CommandError(f"{args.file}: no such file")
    for record in import_archive(store, args.file, base_name=args.name):
        names = ", ".join(record.repo_tags) or "(no name; use --name REPOSITORY to tag it)"
        print(f"imported {record.id}  {names}")
    return 0


def _ls(store: ImageStore, args: argparse.Namespace) -> int:
    records = sorted(store.list(), key=lambda r: (r.repo_tags or ("~",))[0])
    if args.quiet:
        for record in records:
            print(record.id)
        return 0
    rows = [("IMAGE", "ID", "SIZE", "PLATFORM")]
    for record in records:
        short = record.id.removeprefix("sha256:")[:12]
        for name in record.repo_tags or ("<none>",):
            rows.append((name, short, _human(record.size), record.platform))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _rm(store: ImageStore, args: argparse.Namespace) -> int:
    status = 0
    for ref in args.refs:
        removed = store.remove(ref)
        if removed is None:
            print(f"skiff: no image {ref}")
            status = 1
        else:
            print(f"removed {removed.id}")
    return status


def _pull(store: ImageStore, args: argparse.Namespace) -> int:
    from node.runtime.images.manifest import Platform
    from node.runtime.images.pull import Puller
    from node.runtime.images.registry import Credentials, RegistryClient, RegistryConfig

    platform = Platform.parse(args.platform) if args.platform else Platform.host()
    user, password = os.environ.get("SKIFF_REGISTRY_USER", ""), os.environ.get("SKIFF_REGISTRY_PASSWORD", "")
    config = RegistryConfig(insecure_http=frozenset(args.insecure_registry), platform=platform)
    credentials = Credentials(username=user, password=password) if user or password else None
    record = Puller(store, RegistryClient(config)).pull(args.ref, credentials)
    print(f"pulled {record.id}  {', '.join(record.repo_tags or record.repo_digests)}")
    return 0


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}B"
