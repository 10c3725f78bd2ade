"""The namespace controller: empties a namespace that is being deleted, then lets it go.

When a Namespace has a deletionTimestamp, `sync(name)`:
1. makes sure status.phase is Terminating (the API server sets it on delete; this covers a
   namespace that got its deletionTimestamp another way);
2. lists every namespaced kind the API serves (`scheme.KINDS`) in that namespace - live from the
   API, not from caches, so nothing created just before the delete is missed - and deletes each
   object not already being deleted (default propagation; pods bound to a node are deleted
   gracefully and go when their node agent finishes);
3. if anything is left (terminating pods, objects with finalizers), the key is re-queued after
   `recheck` seconds (1 s by default) and the namespace stays;
4. once the namespace is empty, removes `kubernetes` from spec.finalizers with an update, and
   the API server deletes the namespace (when metadata.finalizers are empty too).
Admission refuses creates in a terminating namespace, so the emptying converges. Namespaces
not being deleted are left alone.
"""
from __future__ import annotations

import logging

from controlplane.client import scheme
from controlplane.client.api import NotFoundError
from controlplane.controllers.base import Controller, ControllerContext, on_changes
from protos.skiff.api.v1 import core_pb2

log = logging.getLogger(__name__)

FINALIZER = "kubernetes"
TERMINATING = "Terminating"


def _copy(ns: core_pb2.Namespace) -> core_pb2.Namespace:
    out = core_pb2.Namespace()
    out.CopyFrom(ns)
    return out


class NamespaceController(Controller):
    name = "namespace"

    def __init__(self, ctx: ControllerContext, recheck: float = 1.0) -> None:
        super().__init__(ctx)
        self.recheck = recheck
        self.namespaces = self.informer("namespaces")
        on_changes(self.namespaces, self.enqueue)

    async def sync(self, key: str) -> None:
        ns = self.namespaces.get(key)
        if not isinstance(ns, core_pb2.Namespace) or not ns.metadata.deletion_timestamp:
            return
        if ns.status.phase != TERMINATING:
            marked = _copy(ns)
            marked.status.phase = TERMINATING
            ns = await self.ctx.client.update_status(marked)
            assert isinstance(ns, core_pb2.Namespace)
        remaining = await self.delete_contents(key)
        if remaining:
            log.info("namespace %s: waiting for %d object(s) to go: %s", key, len(remaining),
                     ", ".join(remaining[:5]))
            self.queue.add_after(key, self.recheck)
            return
        if FINALIZER in ns.spec.finalizers:
            done = _copy(ns)
            kept = [f for f in done.spec.finalizers if f != FINALIZER]
            del done.spec.finalizers[:]
            done.spec.finalizers.extend(kept)
            try:
                await self.ctx.client.update(done)
            except NotFoundError:
                return
            log.info("namespace %s is empty; finalized", key)

    async def delete_contents(self, namespace: str) -> list[str]:
        """Delete what is in the namespace; returns `resource/name` of what is still there."""
        remaining: list[str] = []
        for kind in scheme.KINDS:
            if not kind.namespaced:
                continue
            items = (await self.ctx.client.list(kind, namespace)).items
            for obj in items:
                m = obj.metadata  # type: ignore[attr-defined]
                remaining.append(f"{kind.resource}/{m.name}")
                if m.deletion_timestamp:
                    continue
                try:
                    _, gone = await self.ctx.client.delete(kind, m.name, namespace, uid=m.uid)
                except NotFoundError:
                    gone = True
                if gone:
                    remaining.pop()
        return remaining


CONTROLLERS = (NamespaceController,)  # what the controller manager runs from this module
