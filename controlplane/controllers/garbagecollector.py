"""The garbage collector: objects whose owners are gone go too; owners deleted in the foreground
wait for their dependents; orphaning owners let their dependents go free.

The owner graph is an index on every watched informer (`gc-owners`: an object -> the uids in
its ownerReferences), so "the dependents of uid U" is one lookup per kind, and it follows the
caches with no graph of its own to keep consistent. Watched: every kind in `GC_RESOURCES`
(all namespaced kinds that carry ownerReferences, plus Nodes as owners; Events are left out).

Queue keys are `<resource>|<namespace>/<name>` (`<resource>|<name>` for cluster-scoped kinds).
`sync(key)` looks at one object:

- **Orphan**: it is being deleted and has the `orphan` finalizer -> remove its ownerReference
  from each dependent (found by consistent live lists, not the caches: see `live_dependents`) (a merge patch of ownerReferences, conditional on the dependent's
  resourceVersion), then remove the finalizer (update), after which the API server deletes it.
- **Foreground**: it is being deleted and has `foregroundDeletion` -> delete each dependent not
  already being deleted (Foreground itself when it has dependents of its own, else Background);
  once no dependent with blockOwnerDeletion remains in the caches nor in live lists, remove
  the finalizer.
- **Background / dangling owners**: it has ownerReferences -> each owner is classified as
  present, absent (no object of that kind and name, or one with another uid) or waiting
  (being deleted with foregroundDeletion). A cache miss is confirmed with a live GET before an
  owner counts as absent (the caches may lag a just-created owner). With no present owner and
  an absent or waiting one, the object is deleted (Foreground when it has dependents and an
  owner waits, else Background); with a present owner, absent owners' references are removed.
  References to kinds skiff does not serve are treated as present (never collected).

Events: an object's deletion enqueues its dependents (their owner may be gone) and its owners
(a foreground owner may be waiting for it); any add/update enqueues the object itself when it
has ownerReferences or is being deleted. Cache objects are never mutated.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from google.protobuf.message import Message

from controlplane.client import codec, scheme
from controlplane.client.api import ConflictError, NotFoundError
from controlplane.client.informer import SharedInformer
from controlplane.controllers.base import Controller, ControllerContext
from protos.skiff.api.v1 import meta_pb2

log = logging.getLogger(__name__)

ORPHAN, FOREGROUND = "orphan", "foregroundDeletion"
OWNERS_INDEX = "gc-owners"
GC_RESOURCES = ("pods", "replicasets", "deployments", "daemonsets", "statefulsets",
                "replicationcontrollers", "services", "endpoints", "configmaps", "secrets",
                "leases", "nodes")
PRESENT, ABSENT, WAITING = "present", "absent", "waiting"


def owner_uids(obj: Message) -> list[str]:
    return [ref.uid for ref in obj.metadata.owner_references]  # type: ignore[attr-defined]


def _meta(obj: Message) -> Any:
    return obj.metadata  # type: ignore[attr-defined]


def gc_key(resource: str, obj: Message) -> str:
    m = _meta(obj)
    return f"{resource}|{m.namespace}/{m.name}" if m.namespace else f"{resource}|{m.name}"


def _blocks(dependent: Message, owner_uid: str) -> bool:
    """Whether dependent's reference to owner_uid has blockOwnerDeletion set."""
    return any(r.uid == owner_uid and r.HasField("block_owner_deletion") and r.block_owner_deletion
               for r in _meta(dependent).owner_references)


def _copy(obj: Message) -> Message:
    out = type(obj)()
    out.CopyFrom(obj)
    return out


class GarbageCollector(Controller):
    name = "garbagecollector"

    def __init__(self, ctx: ControllerContext, resources: Iterable[str] = GC_RESOURCES) -> None:
        super().__init__(ctx)
        self.watched: dict[str, SharedInformer] = {}
        for resource in resources:
            inf = self.informer(resource)
            inf.add_index(OWNERS_INDEX, owner_uids)
            inf.add_handler(self._on_add(resource), self._on_update(resource), self._on_delete(resource))
            self.watched[inf.kind.resource] = inf

    # ---- events -> keys --------------------------------------------------------------------

    def _interesting(self, obj: Message) -> bool:
        m = _meta(obj)
        return bool(m.owner_references) or (bool(m.deletion_timestamp) and
                                            (ORPHAN in m.finalizers or FOREGROUND in m.finalizers))

    def _on_add(self, resource: str) -> Callable[[Message], None]:
        def handler(obj: Message) -> None:
            if self._interesting(obj):
                self.enqueue_key(gc_key(resource, obj))
        return handler

    def _on_update(self, resource: str) -> Callable[[Message, Message], None]:
        def handler(old: Message, new: Message) -> None:
            if self._interesting(new) or self._interesting(old):
                self.enqueue_key(gc_key(resource, new))
            if list(_meta(old).owner_references) != list(_meta(new).owner_references):
                self._enqueue_owners(old)  # a foreground owner may no longer wait for it
        return handler

    def _on_delete(self, resource: str) -> Callable[[Message], None]:
        def handler(obj: Message) -> None:
            for dep_resource, dep in self.dependents(_meta(obj).uid):
                self.enqueue_key(gc_key(dep_resource, dep))
            self._enqueue_owners(obj)
        return handler

    def _enqueue_owners(self, obj: Message) -> None:
        for ref in _meta(obj).owner_references:
            key = self._owner_key(ref, _meta(obj).namespace)
            if key is not None:
                self.enqueue_key(key)

    def _owner_key(self, ref: meta_pb2.OwnerReference, namespace: str) -> str | None:
        try:
            kind = scheme.by_kind(ref.api_version, ref.kind)
        except KeyError:
            return None
        if kind.resource not in self.watched:
            return None
        return f"{kind.resource}|{namespace}/{ref.name}" if kind.namespaced else f"{kind.resource}|{ref.name}"

    # ---- the graph -------------------------------------------------------------------------

    def dependents(self, uid: str) -> list[tuple[str, Message]]:
        """Every cached object with an ownerReference to uid, as (resource, object)."""
        out: list[tuple[str, Message]] = []
        for resource, inf in self.watched.items():
            out += [(resource, o) for o in inf.by_index(OWNERS_INDEX, uid)]
        return out

    async def live_dependents(self, owner: Message) -> list[tuple[str, Message]]:
        """Every object with an ownerReference to `owner`, from consistent live lists.

        The caches may not have seen a dependent created just before its owner's deletion;
        orphaning or finishing a foreground deletion on a cache that lags would then let the
        dependent be collected (orphan) or outlive its owner (foreground). Both are rare, so
        they are decided on a fresh read: one list per watched kind, in the owner's namespace
        (all namespaces for a cluster-scoped owner)."""
        m = _meta(owner)
        out: list[tuple[str, Message]] = []
        for resource, inf in self.watched.items():
            if not inf.kind.namespaced and m.namespace:
                continue  # a namespaced owner cannot own cluster-scoped objects
            listed = await self.ctx.client.list(inf.kind, m.namespace)
            out += [(resource, o) for o in listed.items if m.uid in owner_uids(o)]
        return out

    async def owner_state(self, ref: meta_pb2.OwnerReference, namespace: str) -> str:
        try:
            kind = scheme.by_kind(ref.api_version, ref.kind)
        except KeyError:
            return PRESENT  # not a kind skiff serves: never collect because of it
        ns = namespace if kind.namespaced else ""
        inf = self.watched.get(kind.resource)
        owner = inf.get(f"{ns}/{ref.name}" if ns else ref.name) if inf is not None else None
        if owner is None or _meta(owner).uid != ref.uid:
            try:  # confirm with the API: the cache may not have seen a new owner yet
                owner = await self.ctx.client.get(kind, ref.name, ns)
            except NotFoundError:
                return ABSENT
            if _meta(owner).uid != ref.uid:
                return ABSENT
        m = _meta(owner)
        return WAITING if m.deletion_timestamp and FOREGROUND in m.finalizers else PRESENT

    # ---- sync ------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        resource, _, obj_key = key.partition("|")
        inf = self.watched.get(resource)
        obj = inf.get(obj_key) if inf is not None else None
        if obj is None:
            return
        m = _meta(obj)
        if m.deletion_timestamp:
            if ORPHAN in m.finalizers:
                await self._orphan(resource, obj)
            elif FOREGROUND in m.finalizers:
                await self._foreground(resource, obj)
            return
        if m.owner_references:
            await self._check_owners(resource, obj)

    async def _check_owners(self, resource: str, obj: Message) -> None:
        m = _meta(obj)
        states = [(ref, await self.owner_state(ref, m.namespace)) for ref in m.owner_references]
        absent = [ref for ref, s in states if s == ABSENT]
        waiting = [ref for ref, s in states if s == WAITING]
        present = [ref for ref, s in states if s == PRESENT]
        if present:
            if absent:
                gone = {ref.uid for ref in absent}
                await self._set_owner_refs(resource, obj, [r for r in m.owner_references if r.uid not in gone])
            return
        if not absent and not waiting:
            return
        policy = "Foreground" if waiting and self.dependents(m.uid) else "Background"
        log.info("garbage collecting %s %s/%s (owners: %s)", resource, m.namespace, m.name,
                 ", ".join(f"{r.kind}/{r.name} {s}" for r, s in states))
        try:
            await self.ctx.client.delete(resource, m.name, m.namespace, propagation_policy=policy, uid=m.uid)
        except NotFoundError:
            pass

    async def _set_owner_refs(self, resource: str, obj: Message, refs: list[meta_pb2.OwnerReference]) -> None:
        m = _meta(obj)
        patch = {"metadata": {"resourceVersion": m.resource_version,
                              "ownerReferences": [codec.encode(r) for r in refs]}}
        try:
            await self.ctx.client.patch(resource, m.name, patch, m.namespace)
        except NotFoundError:
            pass

    async def _orphan(self, resource: str, owner: Message) -> None:
        uid = _meta(owner).uid
        for dep_resource, dep in await self.live_dependents(owner):
            await self._set_owner_refs(dep_resource, dep, [r for r in _meta(dep).owner_references if r.uid != uid])
        await self._remove_finalizer(owner, ORPHAN)

    async def _foreground(self, resource: str, owner: Message) -> None:
        uid = _meta(owner).uid
        blocking = 0
        for dep_resource, dep in self.dependents(uid):
            dm = _meta(dep)
            if not dm.deletion_timestamp:
                policy = "Foreground" if self.dependents(dm.uid) else "Background"
                try:
                    await self.ctx.client.delete(dep_resource, dm.name, dm.namespace,
                                                 propagation_policy=policy, uid=dm.uid)
                except NotFoundError:
                    continue
            if _blocks(dep, uid):
                blocking += 1
        if blocking == 0 and not any(_blocks(dep, uid) for _, dep in await self.live_dependents(owner)):
            await self._remove_finalizer(owner, FOREGROUND)

    async def _remove_finalizer(self, obj: Message, finalizer: str) -> None:
        new = _copy(obj)
        kept = [f for f in _meta(new).finalizers if f != finalizer]
        del _meta(new).finalizers[:]
        _meta(new).finalizers.extend(kept)
        try:
            await self.ctx.client.update(new)
        except NotFoundError:
            pass
        except ConflictError:
            raise RuntimeError(f"{_meta(obj).name}: changed while removing finalizer {finalizer}; retrying") from None


CONTROLLERS = (GarbageCollector,)  # what the controller manager runs from this module
