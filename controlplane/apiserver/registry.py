"""The registry: create, get, list, update, patch, delete and bind, on top of the store.

Storage layout: `/registry/<resource>/<namespace>/<name>` (cluster-scoped kinds without the
namespace), the value is the object's protobuf encoding with metadata.resourceVersion empty; the
resourceVersion clients see is the key's mod_revision in the store.

Every write is one conditional etcd transaction:
- create: the key's create_revision is 0 (and so are the keys of allocations it makes);
- update/delete: the key's mod_revision equals the one read. With a resourceVersion from the
  client a mismatch is a conflict (ABORTED); without one the server re-reads and retries
  (Kubernetes' GuaranteedUpdate).
So two API servers against one store never overwrite each other, and the registry keeps no
state of its own besides the watch caches (which it only reads for lists).

Deletion follows Kubernetes: preconditions (uid, resourceVersion); Orphan and Foreground add the
`orphan` / `foregroundDeletion` finalizer; an object with finalizers, or a pod bound to a node
with a grace period, gets deletionTimestamp and stays until its finalizers are removed (an
update that empties them deletes it) or the node agent deletes it with grace period 0.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Callable

from google.protobuf.message import Message

from controlplane.apiserver import errors, strategy
from controlplane.apiserver.admission import Admission
from controlplane.apiserver.storage import (StoreClient, StoreCompacted, StoreUnavailable, absent, delete_op,
                                            put_op, unchanged)
from controlplane.apiserver.strategy import copy_of, meta
from controlplane.apiserver.watchcache import ResourceCache
from controlplane.client import codec, mergepatch
from controlplane.client.pods import awaiting_grace, deletion_grace
from controlplane.client.scheme import Kind
from controlplane.client.timeutil import WallClock, format_time
from protos.etcd.etcdserverpb import rpc_pb2

MAX_RETRIES = 16
ORPHAN, FOREGROUND = "orphan", "foregroundDeletion"
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def store_key(kind: Kind, namespace: str, name: str) -> bytes:
    if kind.namespaced:
        return f"/registry/{kind.resource}/{namespace}/{name}".encode()
    return f"/registry/{kind.resource}/{name}".encode()


def encode_for_store(obj: Message) -> bytes:
    m = meta(obj)
    rv = m.resource_version
    m.resource_version = ""
    try:
        return obj.SerializeToString(deterministic=True)
    finally:
        m.resource_version = rv


@dataclass
class Write:
    """What an update step wants written: the object (or None to delete it) and extra ops."""

    obj: Message | None
    ops: list[rpc_pb2.RequestOp] = field(default_factory=list)
    compares: list[rpc_pb2.Compare] = field(default_factory=list)


class Registry:
    """The verbs of the API over one store; `caches` serve lists and watches."""

    def __init__(self, store: StoreClient, caches: dict[str, ResourceCache], clock: WallClock,
                 admission: Admission) -> None:
        self.store = store
        self.caches = caches
        self.clock = clock
        self.admission = admission

    # ---- reads -----------------------------------------------------------------------------

    async def read(self, kind: Kind, namespace: str, name: str) -> Message:
        """The object as stored now (linearizable), resourceVersion set; NotFound when absent."""
        got = await self._store(self.store.get(store_key(kind, namespace, name)))
        if got is None:
            raise errors.not_found(kind, name)
        obj = kind.message()
        obj.ParseFromString(got[0])
        meta(obj).resource_version = str(got[1])
        return obj

    async def _store(self, awaitable):  # type: ignore[no-untyped-def]
        try:
            return await awaitable
        except StoreUnavailable as err:
            raise errors.Unavailable(str(err)) from None
        except StoreCompacted as err:
            raise errors.Gone(f"too old resource version: {err}") from None

    # ---- create ----------------------------------------------------------------------------

    async def create(self, kind: Kind, namespace: str, obj: Message, dry_run: bool = False) -> Message:
        obj = copy_of(obj)
        m = meta(obj)
        self._check_namespace_scope(kind, namespace, obj)
        if not m.name and m.generate_name:
            m.name = m.generate_name + _random_suffix()
        strategy.prepare_create(kind, obj, self.clock.now())
        strategy.apply_defaults(obj)
        problems = strategy.validate(obj, None)
        if problems:
            raise errors.invalid(kind, m.name or m.generate_name, problems)
        await self.admission.admit_create(kind, obj)
        key = store_key(kind, m.namespace, m.name)
        for _ in range(MAX_RETRIES):
            attempt = copy_of(obj)  # allocations start afresh on each attempt
            extra = await self.admission.allocations_for(kind, attempt, None)
            if dry_run:
                return attempt
            req = rpc_pb2.TxnRequest(
                compare=[absent(key), *extra.compares],
                success=[put_op(key, encode_for_store(attempt)), *extra.ops])
            resp = await self._store(self.store.txn(req))
            if resp.succeeded:
                meta(attempt).resource_version = str(resp.header.revision)
                return attempt
            if await self._store(self.store.get(key)) is not None:
                raise errors.already_exists(kind, m.name)
            # Another create took the IP or port we picked: pick again.
        raise errors.Unavailable(f'{kind.group_resource} "{m.name}": could not allocate; try again')

    def _check_namespace_scope(self, kind: Kind, namespace: str, obj: Message) -> None:
        m = meta(obj)
        if not kind.namespaced:
            if m.namespace:
                raise errors.BadRequest(f'{kind.qualified} "{m.name}": metadata.namespace: '
                                        f"{kind.kind} is cluster-scoped and has no namespace")
            return
        if m.namespace and namespace and m.namespace != namespace:
            raise errors.BadRequest(
                f'{kind.qualified} "{m.name}": the namespace of the provided object ({m.namespace}) '
                f"does not match the namespace sent on the request ({namespace})")
        m.namespace = m.namespace or namespace or "default"

    # ---- update ----------------------------------------------------------------------------

    async def update(self, kind: Kind, namespace: str, obj: Message, dry_run: bool = False) -> Message:
        """Replace spec and metadata (status kept); optimistic on metadata.resourceVersion."""
        new_in = copy_of(obj)
        self._check_namespace_scope(kind, namespace, new_in)
        name = meta(new_in).name
        if not name:
            raise errors.invalid(kind, "", ["metadata.name: Required value: name is required"])

        def step(current: Message) -> Write:
            new = copy_of(new_in)
            strategy.apply_defaults(new)  # before the comparison that decides a new generation
            strategy.prepare_update(kind, new, current)
            problems = strategy.validate(new, current)
            if problems:
                raise errors.invalid(kind, name, problems)
            return self._finalize_or_keep(new)

        return await self.guaranteed_update(kind, meta(new_in).namespace, name, step,
                                            meta(obj).resource_version, dry_run, with_allocations=True)

    async def update_status(self, kind: Kind, namespace: str, obj: Message, dry_run: bool = False) -> Message:
        """Replace status only."""
        if not kind.has_status:
            raise errors.NotFound(f"{kind.group_resource} has no status subresource")
        new_in = copy_of(obj)
        self._check_namespace_scope(kind, namespace, new_in)
        name = meta(new_in).name

        def step(current: Message) -> Write:
            new = strategy.prepare_status_update(kind, new_in, current)
            problems = strategy.validate(new, current)
            if problems:
                raise errors.invalid(kind, name, problems)
            return Write(new)

        return await self.guaranteed_update(kind, meta(new_in).namespace, name, step,
                                            meta(obj).resource_version, dry_run)

    async def patch(self, kind: Kind, namespace: str, name: str, patch: bytes, patch_type: str,
                    subresource: str, dry_run: bool = False) -> Message:
        """JSON merge patch onto the current object, then an update (or a status update)."""
        if patch_type not in ("", "merge", "application/merge-patch+json"):
            raise errors.BadRequest(f'patch type "{patch_type}" is not supported (use "merge")')
        try:
            doc = json.loads(patch or b"{}")
        except ValueError as err:
            raise errors.BadRequest(f'{kind.group_resource} "{name}": the patch is not JSON: {err}') from None
        if not isinstance(doc, dict):
            raise errors.BadRequest(f'{kind.group_resource} "{name}": a merge patch must be a JSON object')
        wanted_rv = str((doc.get("metadata") or {}).get("resourceVersion") or "")
        ns = (namespace or "default") if kind.namespaced else ""
        for _ in range(MAX_RETRIES):
            current = await self.read(kind, ns, name)
            merged = mergepatch.merge_patch(codec.encode(current), doc)
            try:
                new = codec.decode(merged, kind.message)
            except codec.DecodeError as err:
                raise errors.invalid(kind, name, [str(e) for e in err.errors]) from None
            meta(new).resource_version = wanted_rv or meta(current).resource_version
            try:
                if subresource == "status":
                    return await self.update_status(kind, ns, new, dry_run)
                return await self.update(kind, ns, new, dry_run)
            except errors.Conflict:
                if wanted_rv:
                    raise
        raise errors.conflict(kind, name)

    async def guaranteed_update(self, kind: Kind, namespace: str, name: str,
                                step: Callable[[Message], Write], expected_rv: str = "",
                                dry_run: bool = False, with_allocations: bool = False) -> Message:
        """Read, apply `step`, write if the object did not change meanwhile; retry otherwise.

        The first attempt starts from the watch cache's copy, saving a linearizable read of the
        store: the write's compare on mod_revision makes a stale copy harmless (the transaction
        fails and the next attempt reads the store). Every answer that does not come from a
        successful write — a conflict with the client's resourceVersion, an error of `step`,
        "nothing changed" — is only given from a store read, never from the cache alone."""
        key = store_key(kind, namespace, name)
        for attempt in range(MAX_RETRIES):
            cached = self._cached(kind, namespace, name) if attempt == 0 else None
            current = cached if cached is not None else await self.read(kind, namespace, name)
            current_rv = meta(current).resource_version
            if expected_rv and expected_rv != current_rv:
                if cached is not None:
                    continue
                raise errors.conflict(kind, name)
            try:
                write = step(copy_of(current))
            except errors.ApiError:
                if cached is not None:
                    continue
                raise
            if write.obj is not None and with_allocations:
                extra = await self.admission.allocations_for(kind, write.obj, current)
                write.ops += extra.ops
                write.compares += extra.compares
            if write.obj is not None and _same(write.obj, current) and not write.ops:
                if cached is not None:
                    continue
                return current
            if dry_run:
                return write.obj or current
            if write.obj is None:
                write.ops += self.admission.releases_for(kind, current)
            cmp = [unchanged(key, int(current_rv)), *write.compares]
            op = put_op(key, encode_for_store(write.obj)) if write.obj is not None else delete_op(key)
            resp = await self._store(self.store.txn(rpc_pb2.TxnRequest(compare=cmp, success=[op, *write.ops])))
            if resp.succeeded:
                done = write.obj if write.obj is not None else current
                meta(done).resource_version = str(resp.header.revision)
                return done
            if expected_rv and cached is None:
                raise errors.conflict(kind, name)
        raise errors.conflict(kind, name)

    def _cached(self, kind: Kind, namespace: str, name: str) -> Message | None:
        """A copy of the watch cache's object (resourceVersion set), or None."""
        cache = self.caches.get(kind.resource)
        if cache is None or not cache.ready.is_set():
            return None
        obj = cache.objects.get(f"{namespace}/{name}" if kind.namespaced else name)
        return copy_of(obj) if obj is not None else None

    def _finalize_or_keep(self, new: Message) -> Write:
        """An object being deleted whose last finalizer was just removed goes away."""
        m = meta(new)
        if m.deletion_timestamp and not m.finalizers and not awaiting_grace(new) \
                and not (new.DESCRIPTOR.name == "Namespace" and new.spec.finalizers):  # type: ignore[attr-defined]
            return Write(None)
        return Write(new)

    # ---- delete ----------------------------------------------------------------------------

    async def delete(self, kind: Kind, namespace: str, name: str, grace: int | None = None,
                     propagation: str = "", uid: str = "", resource_version: str = "",
                     dry_run: bool = False) -> tuple[Message, bool]:
        """Delete (or begin deleting) an object; returns (object, removed now)."""
        if propagation not in ("", "Background", "Foreground", "Orphan"):
            raise errors.BadRequest(f'propagationPolicy "{propagation}" is not one of Background, Foreground, Orphan')
        ns = namespace if kind.namespaced else ""
        removed = False

        def step(current: Message) -> Write:
            nonlocal removed
            m = meta(current)
            if uid and m.uid != uid:
                raise errors.Conflict(f'Precondition failed: UID in precondition: {uid}, UID in object meta: {m.uid}')
            if resource_version and m.resource_version != resource_version:
                raise errors.Conflict(f"Precondition failed: ResourceVersion in precondition: {resource_version}, "
                                      f"ResourceVersion in object meta: {m.resource_version}")
            now = self.clock.now()
            wanted = {"Orphan": ORPHAN, "Foreground": FOREGROUND}.get(propagation)
            if wanted and wanted not in m.finalizers:
                m.finalizers.append(wanted)
            if propagation in ("Orphan", "Foreground"):
                other = FOREGROUND if propagation == "Orphan" else ORPHAN
                if other in m.finalizers:
                    m.finalizers.remove(other)
            period = deletion_grace(current, grace)
            waits = period > 0 or bool(m.finalizers) or (kind.kind == "Namespace" and _namespace_has_finalizers(current))
            if not waits:
                removed = True
                return Write(None)
            if not m.deletion_timestamp:
                m.deletion_timestamp = format_time(now + period)
                m.deletion_grace_period_seconds = period
            elif period < m.deletion_grace_period_seconds:
                m.deletion_timestamp = format_time(now + period)  # a shorter grace period wins
                m.deletion_grace_period_seconds = period
            if kind.kind == "Namespace":
                current.status.phase = "Terminating"  # type: ignore[attr-defined]
            return Write(current)

        obj = await self.guaranteed_update(kind, ns, name, step, "", dry_run)
        return obj, removed

    # ---- bind ------------------------------------------------------------------------------

    async def bind(self, kind: Kind, namespace: str, name: str, node_name: str, uid: str = "") -> Message:
        """Set a pending pod's spec.nodeName (once) and its PodScheduled condition."""
        if not node_name:
            raise errors.invalid(kind, name, ["target.name: Required value"])

        def step(pod: Message) -> Write:
            m = meta(pod)
            if uid and m.uid != uid:
                raise errors.Conflict(f'Operation cannot be fulfilled on pods/binding "{name}": '
                                      f"the pod's uid is {m.uid}, not {uid}")
            if m.deletion_timestamp:
                raise errors.Conflict(f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is being deleted')
            if pod.spec.node_name:  # type: ignore[attr-defined]
                raise errors.Conflict(f'Operation cannot be fulfilled on pods/binding "{name}": '
                                      f"pod {name} is already assigned to node \"{pod.spec.node_name}\"")  # type: ignore[attr-defined]
            pod.spec.node_name = node_name  # type: ignore[attr-defined]
            _set_pod_condition(pod, "PodScheduled", "True", format_time(self.clock.now()))
            return Write(pod)

        return await self.guaranteed_update(kind, namespace, name, step)


def _set_pod_condition(pod: Message, type_: str, status: str, now: str) -> None:
    for cond in pod.status.conditions:  # type: ignore[attr-defined]
        if cond.type == type_:
            if cond.status != status:
                cond.last_transition_time = now
            cond.status, cond.reason, cond.message = status, "", ""
            return
    pod.status.conditions.add(type=type_, status=status, last_transition_time=now)  # type: ignore[attr-defined]


def _namespace_has_finalizers(ns: Message) -> bool:
    return bool(ns.spec.finalizers) or bool(meta(ns).finalizers)  # type: ignore[attr-defined]


def _same(a: Message, b: Message) -> bool:
    return encode_for_store(a) == encode_for_store(b)


def _random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(n))
