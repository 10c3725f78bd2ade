"""`skiff label KIND NAME... k=v k2- [--overwrite] [-n NS] [-l SEL | --all]`: kubectl's label.

Arguments up to the first `k=v` or `k-` name objects (KIND NAME..., or KIND/NAME...); the rest
are changes: `k=v` sets, `k-` removes. Keys and values are checked with Kubernetes' rules before
anything is sent. Each object is read, the changes are worked out against its labels by
`label_patch` (pure), and sent as a JSON merge patch carrying the resourceVersion read, so a
concurrent change means reading again (not overwriting a value --overwrite did not allow).
Changing an existing value without --overwrite is refused with kubectl's message; removing a
missing label only warns. Prints `pod/web labeled`, or `pod/web not labeled` when nothing
changed.
"""
from __future__ import annotations

import argparse
import sys
from typing import Mapping

from controlplane.client import api, selectors
from controlplane.client.scheme import Kind
from deploy.cli.kubectl.common import (CommandError, Session, add_connection_arguments, describe_error, meta_of,
                                       object_ref, resolve_targets, run_session)
from deploy.cli.kubectl.get_cmd import expand_targets

MAX_ATTEMPTS = 5


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="+", metavar="KIND NAME... KEY=VAL... KEY-...",
                   help="objects (KIND NAME... or KIND/NAME...), then labels to set (k=v) or remove (k-)")
    p.add_argument("--overwrite", action="store_true", help="allow changing labels that already have a value")
    p.add_argument("-l", "--selector", default="", help="label the objects of KIND matching this selector")
    p.add_argument("--all", action="store_true", help="label every object of KIND in the namespace")
    add_connection_arguments(p)


def is_change(word: str) -> bool:
    """k=v or k- (object names never end in "-", so the two cannot be confused)."""
    return "=" in word or (len(word) > 1 and word.endswith("-"))


def parse_changes(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """(labels to set, labels to remove) from k=v and k- words; CommandError for a bad one."""
    to_set: dict[str, str] = {}
    to_remove: list[str] = []
    try:
        for word in words:
            if "=" in word:
                key, _, value = word.partition("=")
                selectors.validate_label_key(key)
                selectors.validate_label_value(value)
                to_set[key] = value
            elif word.endswith("-"):
                selectors.validate_label_key(word[:-1])
                to_remove.append(word[:-1])
            else:
                raise CommandError(f'"{word}" is not a label change: use key=value or key-')
    except selectors.SelectorError as err:
        raise CommandError(str(err)) from None
    both = set(to_set) & set(to_remove)
    if both:
        raise CommandError(f"can not both modify and remove a label in the same command: {', '.join(sorted(both))}")
    return to_set, to_remove


def label_patch(current: Mapping[str, str], to_set: Mapping[str, str], to_remove: list[str],
                overwrite: bool) -> tuple[dict[str, str | None], list[str]]:
    """(the labels part of a merge patch, warnings); CommandError when a value would change
    without overwrite."""
    patch: dict[str, str | None] = {}
    warnings: list[str] = []
    for key, value in to_set.items():
        if key in current and current[key] != value and not overwrite:
            raise CommandError(f"'{key}' already has a value ({current[key]}), and --overwrite is false")
        if current.get(key) != value:
            patch[key] = value
    for key in to_remove:
        if key in current:
            patch[key] = None
        else:
            warnings.append(f'label "{key}" not found.')
    return patch, warnings


def run(args: argparse.Namespace) -> int:
    split = next((i for i, w in enumerate(args.args) if is_change(w)), len(args.args))
    resource_words, change_words = args.args[:split], args.args[split:]
    if not change_words:
        raise CommandError("at least one label update is required (key=value or key-)")
    to_set, to_remove = parse_changes(change_words)
    targets = resolve_targets(resource_words)

    async def body(session: Session) -> int:
        failed = False
        objects = await expand_targets(session, targets, args.selector, args.all, "label")
        for kind, name in objects:
            try:
                changed = await label_one(session, kind, name, to_set, to_remove, args.overwrite)
            except api.ApiStatusError as err:
                print(f"skiff: {describe_error(err)}", file=sys.stderr)
                failed = True
                continue
            print(f"{object_ref(kind, name)} {'labeled' if changed else 'not labeled'}", flush=True)
        return 1 if failed else 0

    return run_session(args, body)


async def label_one(session: Session, kind: Kind, name: str, to_set: dict[str, str], to_remove: list[str],
                    overwrite: bool) -> bool:
    namespace = session.namespace_for(kind)
    for _ in range(MAX_ATTEMPTS):
        current = await session.client.get(kind, name, namespace)
        labels, warnings = label_patch(meta_of(current).labels, to_set, to_remove, overwrite)
        for warning in warnings:
            print(f"skiff: warning: {warning}", file=sys.stderr)
        if not labels:
            return False
        patch = {"metadata": {"labels": labels, "resourceVersion": meta_of(current).resource_version}}
        try:
            await session.client.patch(kind, name, patch, namespace)
            return True
        except api.ConflictError:
            continue
    raise CommandError(f'{kind.group_resource} "{name}": still changing after {MAX_ATTEMPTS} attempts; try again')
