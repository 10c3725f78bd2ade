"""What every kubectl-like command shares: connection options, the session, errors, names.

- `add_connection_arguments(parser)` adds `--server`, `--token`, `--config` (else
  $SKIFF_CONFIG, else ~/.skiff/config; see controlplane/client/config.py), `-n/--namespace`
  and, when asked, `-A/--all-namespaces`.
- `run_session(args, body)` loads the config, opens one ApiClient on a channel carrying the
  config's TLS and token, runs `body(session)` in a fresh event loop and closes the channel.
  Every failure a user can act on leaves it as a CommandError whose message is one line:
  the server's message for a refused call (ApiStatusError), the config's (ConfigError), the
  manifest's (ManifestError), the selector's (SelectorError), an unknown kind (KeyError from
  the scheme). Nothing here prints a traceback.
- `Session.namespace_for(kind, requested)` is the namespace a request uses: "" for
  cluster-scoped kinds, else the object's, else `-n`, else the config's namespace.
- `resolve_targets(words)` reads kubectl's `KIND NAME...`, `KIND1,KIND2` and `KIND/NAME ...`
  forms into (Kind, names) pairs.
"""
from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

from google.protobuf.message import Message

from controlplane.client import api, scheme
from controlplane.client.api import ApiClient, ApiStatusError
from controlplane.client.config import ClientConfig, ConfigError, load_config
from controlplane.client.manifests import ManifestError
from controlplane.client.scheme import Kind
from controlplane.client.selectors import SelectorError
from deploy.cli.errors import CommandError
from deploy.cli.kubectl.printers import object_ref

__all__ = ["CommandError", "Session", "add_connection_arguments", "run_session", "kind_of",
           "resolve_targets", "one_line", "object_ref", "describe_error", "Target"]

REQUEST_TIMEOUT = 30.0


def add_connection_arguments(p: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--server", metavar="HOST:PORT", help="the API server (overrides the client config)")
    g.add_argument("--token", help="bearer token (overrides the client config; needs TLS)")
    g.add_argument("--config", metavar="PATH",
                   help="client config file (default: $SKIFF_CONFIG, else ~/.skiff/config)")
    g.add_argument("-n", "--namespace", help="namespace (default: the client config's, else default)")
    if all_namespaces:
        g.add_argument("-A", "--all-namespaces", action="store_true",
                       help="every namespace (adds a NAMESPACE column)")


def one_line(message: str) -> str:
    """A message folded onto one line (gRPC details can carry newlines)."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def kind_of(name: str) -> Kind:
    """The kind a kubectl resource name means, or a CommandError naming the known ones."""
    try:
        return scheme.by_resource(name)
    except KeyError as err:
        raise CommandError(str(err.args[0])) from None


@dataclass
class Session:
    client: ApiClient
    config: ClientConfig
    requested_namespace: str | None  # -n as given, None when not given

    @property
    def default_namespace(self) -> str:
        return self.requested_namespace or self.config.namespace or "default"

    def namespace_for(self, kind: Kind, object_namespace: str = "") -> str:
        if not kind.namespaced:
            return ""
        return object_namespace or self.default_namespace


def load(args: argparse.Namespace) -> ClientConfig:
    try:
        return load_config(getattr(args, "config", None), getattr(args, "server", None),
                           getattr(args, "token", None))
    except ConfigError as err:
        raise CommandError(one_line(str(err))) from None


def describe_error(err: BaseException) -> str | None:
    """The one-line message for an error a user can act on; None for a bug."""
    if isinstance(err, CommandError):
        return str(err)
    if isinstance(err, (ApiStatusError, ConfigError, ManifestError, SelectorError)):
        return one_line(str(err))
    return None


def run_session(args: argparse.Namespace, body: Callable[[Session], Awaitable[int]]) -> int:
    """Run body against the API server named by the options; see the module docstring."""
    config = load(args)

    async def main() -> int:
        try:
            channel = config.open_channel(api.CHANNEL_OPTIONS)
        except ConfigError as err:
            raise CommandError(one_line(str(err))) from None
        client = ApiClient(channel, timeout=REQUEST_TIMEOUT)
        try:
            return await body(Session(client, config, getattr(args, "namespace", None)))
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except (ApiStatusError, ConfigError, ManifestError, SelectorError) as err:
        raise CommandError(describe_error(err) or str(err)) from None


@dataclass(frozen=True)
class Target:
    kind: Kind
    names: tuple[str, ...]  # empty: every object of the kind (in scope)


def resolve_targets(words: Sequence[str]) -> list[Target]:
    """kubectl's resource arguments: `KIND [NAME...]`, `KIND1,KIND2`, or `KIND/NAME...`."""
    if not words:
        raise CommandError("you must specify the type of resource (e.g. pods, deployments)")
    if any("/" in w for w in words):
        if not all("/" in w for w in words):
            raise CommandError("there is no need to specify a resource type as a separate argument "
                               "when passing arguments in resource/name form")
        targets: list[Target] = []
        for word in words:
            kind_name, _, name = word.partition("/")
            if not name:
                raise CommandError(f'"{word}": a resource/name pair needs a name')
            targets.append(Target(kind_of(kind_name), (name,)))
        return targets
    kinds = [kind_of(k) for k in words[0].split(",") if k]
    names = tuple(words[1:])
    if names and len(kinds) > 1:
        raise CommandError("names can be given with one resource type only (or use KIND/NAME)")
    return [Target(k, names) for k in kinds]


def meta_of(obj: Message):  # type: ignore[no-untyped-def]
    """obj.metadata: every served kind has an ObjectMeta at field 3."""
    return obj.metadata  # type: ignore[attr-defined]


def ref_of(obj: Message) -> str:
    """kind.group/name of a served object."""
    return object_ref(scheme.by_message(obj), meta_of(obj).name)


async def wait_gone(client: ApiClient, kind: Kind, namespace: str, name: str, uid: str) -> None:
    """Return once the object with this uid no longer exists. Reads it, then watches from the
    version read, so a deletion between the two cannot be missed."""
    while True:
        try:
            current = await client.get(kind, name, namespace)
        except api.NotFoundError:
            return
        if meta_of(current).uid != uid:
            return  # deleted and already re-created under the same name
        try:
            async for event in client.watch(kind, namespace, field_selector=f"metadata.name={name}",
                                            resource_version=meta_of(current).resource_version):
                if event.type == "BOOKMARK":
                    continue
                same = meta_of(event.object).uid == uid
                if (event.type == "DELETED" and same) or not same:
                    return
        except api.GoneError:
            continue  # the watch fell behind compaction: read afresh
        await asyncio.sleep(0.5)  # the stream ended without an answer: look again
