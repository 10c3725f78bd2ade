"""The ReplicaSet and ReplicationController controllers: keep `replicas` pods of a template.

One class, `ReplicaSetController`, serves both kinds; `ReplicationManager` is the same loop for
ReplicationControllers (an equality selector, a core/v1 owner). `sync(key)` is Kubernetes'
syncReplicaSet, level-triggered from the informer caches:

1. **Claim.** The active pods of the namespace (not Succeeded/Failed, no deletionTimestamp) are
   sorted into ours: a pod controlled by this owner (uid) stays ours while the selector matches
   it, and is *released* (its ownerReference removed by a merge patch) when it stops matching;
   an orphan that matches is *adopted* (a controller ownerReference added by a merge patch) -
   but only after a fresh read of the owner confirms it still exists with the same uid and is
   not being deleted. Patches carry the pod's resourceVersion, so a stale cache conflicts
   rather than overwriting someone else's ownerReferences. Pods controlled by others are never
   touched. An owner being deleted neither adopts nor releases.
2. **Manage** (only when expectations are satisfied, and not while the owner is deleted):
   too few pods - create the difference (at most `burst_replicas` a sync) with generateName
   `<owner>-`, in slow-start batches of 1, 2, 4, ... (a batch with a failure ends the burst;
   creations never attempted or failed are taken off the expectations); too many - delete the
   first ones in Kubernetes' ActivePods order (`deletion_order_key`): unscheduled before
   scheduled, Pending before Unknown before Running, not ready before ready, lower
   `controller.kubernetes.io/pod-deletion-cost` first, pods doubled up on a node (with the
   sibling ReplicaSets' pods of the same Deployment) first, ready for less time first, more
   container restarts first, newer first. Deletions are expected by uid.
3. **Status**: replicas (claimed active pods), fullyLabeledReplicas (pods carrying all the
   template's labels), readyReplicas, availableReplicas (Ready for minReadySeconds, by the
   wall clock), observedGeneration, and a ReplicaFailure condition while creating or deleting
   fails. Written with update_status only when it changed. When some ready pods are not yet
   available the key is looked at again once they may be.

Invariants: objects from the caches are never mutated (copies are patched/updated); at most one
create burst is outstanding per owner (expectations); a pod is deleted only if it is ours.

Kubernetes' logarithmic scale-down (ready times compared by log2 buckets) is not done: ready
times compare linearly, as with the LogarithmicScaleDown gate off.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Sequence

from google.protobuf.message import Message

from controlplane.client.api import ApiStatusError, ConflictError, NotFoundError
from controlplane.client.expectations import Expectations
from controlplane.client.informer import (NAMESPACE_INDEX, OWNER_INDEX, controller_owner_index, object_key,
                                          split_key)
from controlplane.client.selectors import LabelSelector, SelectorError, from_label_selector_proto, from_set
from controlplane.client.timeutil import format_time, parse_time
from controlplane.controllers.base import Controller, ControllerContext
from controlplane.controllers.podutil import (controller_ref, get_controller_of, is_pod_active, is_pod_available,
                                               is_pod_ready, pod_from_template, ready_condition)
from protos.skiff.api.v1 import core_pb2, meta_pb2

log = logging.getLogger(__name__)

BURST_REPLICAS = 500          # Kubernetes' BurstReplicas
SLOW_START_INITIAL_BATCH = 1  # Kubernetes' SlowStartInitialBatchSize
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


# ---- choosing pods to delete (pure) ----------------------------------------------------------------------

def _time(text: str) -> float | None:
    try:
        return parse_time(text) if text else None
    except ValueError:
        return None


def _deletion_cost(pod: core_pb2.Pod) -> int:
    try:
        return int(pod.metadata.annotations.get(DELETION_COST_ANNOTATION, "0"))
    except ValueError:
        return 0


def _newest_first(t: float | None) -> tuple[int, float]:
    """Kubernetes' afterOrZero as a sort key: no time first, then later times first."""
    return (0, 0.0) if t is None else (1, -t)


def deletion_order_key(pod: core_pb2.Pod, rank: int = 0) -> tuple[Any, ...]:
    """Sort key: pods that sort first are deleted first (module docstring, ActivePodsWithRanks)."""
    ready = is_pod_ready(pod)
    cond = ready_condition(pod)
    ready_since = _newest_first(_time(cond.last_transition_time)) if ready and cond is not None else (0, 0.0)
    restarts = max((c.restart_count for c in pod.status.container_statuses), default=0)
    return (1 if pod.spec.node_name else 0, _PHASE_ORDER.get(pod.status.phase, 0), 1 if ready else 0,
            _deletion_cost(pod), -rank, ready_since, -restarts,
            _newest_first(_time(pod.metadata.creation_timestamp)), pod.metadata.name)


def pods_to_delete(pods: Sequence[core_pb2.Pod], related: Iterable[core_pb2.Pod], count: int
                   ) -> list[core_pb2.Pod]:
    """The `count` pods to delete first; `related` (this owner's and its siblings' pods) ranks
    pods by how many active related pods share their node."""
    on_node: dict[str, int] = {}
    for p in related:
        if is_pod_active(p):
            on_node[p.spec.node_name] = on_node.get(p.spec.node_name, 0) + 1
    ranked = sorted(pods, key=lambda p: deletion_order_key(p, on_node.get(p.spec.node_name, 0)))
    return ranked[:count]


async def slow_start_batch(count: int, initial: int, fn: Callable[[], Awaitable[None]]) -> tuple[int, Exception | None]:
    """Call fn `count` times in concurrent batches of initial, 2*initial, ...; stop after the
    first batch with a failure. Returns (successes, the first error)."""
    done, batch = 0, min(count, initial)
    while batch > 0:
        results = await asyncio.gather(*(fn() for _ in range(batch)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        done += batch - len(errors)
        if errors:
            err = errors[0]
            if not isinstance(err, Exception):
                raise err
            return done, err
        batch = min(2 * batch, count - done)
    return done, None


def owner_references_patch(refs: Iterable[meta_pb2.OwnerReference], obj: Any) -> dict[str, Any]:
    """A merge patch making obj's ownerReferences exactly refs, valid only at obj's
    resourceVersion (merge patch replaces the whole list, so it must not race other writers)."""
    data: list[dict[str, Any]] = []
    for r in refs:
        d: dict[str, Any] = {"apiVersion": r.api_version, "kind": r.kind, "name": r.name, "uid": r.uid}
        if r.HasField("controller"):
            d["controller"] = r.controller
        if r.HasField("block_owner_deletion"):
            d["blockOwnerDeletion"] = r.block_owner_deletion
        data.append(d)
    return {"metadata": {"ownerReferences": data or None, "resourceVersion": obj.metadata.resource_version}}


# ---- the kinds -------------------------------------------------------------------------------

@dataclass(frozen=True)
class OwnerKind:
    """What differs between ReplicaSets and ReplicationControllers."""

    resource: str
    kind: str
    api_version: str
    equality_selector: bool  # RC: spec.selector is a map

    def selector(self, owner: Any) -> LabelSelector:
        if self.equality_selector:
            return from_set(owner.spec.selector)
        return from_label_selector_proto(owner.spec.selector if owner.spec.HasField("selector") else None)


REPLICA_SET = OwnerKind("replicasets", "ReplicaSet", "apps/v1", False)
REPLICATION_CONTROLLER = OwnerKind("replicationcontrollers", "ReplicationController", "v1", True)


def calculate_status(owner: Any, pods: Sequence[core_pb2.Pod], now: float, manage_error: Exception | None,
                     creating: bool, timestamp: str) -> Any:
    """The owner's new status for its claimed active pods (Kubernetes' calculateStatus)."""
    status = type(owner.status)()
    status.CopyFrom(owner.status)
    template = from_set(owner.spec.template.metadata.labels)
    status.replicas = len(pods)
    status.fully_labeled_replicas = sum(1 for p in pods if template.matches(p.metadata.labels))
    status.ready_replicas = sum(1 for p in pods if is_pod_ready(p))
    status.available_replicas = sum(1 for p in pods if is_pod_available(p, owner.spec.min_ready_seconds, now))
    status.observed_generation = owner.metadata.generation
    failure = [c for c in status.conditions if c.type == "ReplicaFailure"]
    if manage_error is not None and not failure:
        cond = status.conditions.add()
        cond.type, cond.status = "ReplicaFailure", "True"
        cond.reason = "FailedCreate" if creating else "FailedDelete"
        cond.message, cond.last_transition_time = str(manage_error), timestamp
    elif manage_error is None and failure:
        keep = [c for c in status.conditions if c.type != "ReplicaFailure"]
        del status.conditions[:]
        status.conditions.extend(keep)
    return status


# ---- the controller --------------------------------------------------------------------------

class ReplicaSetController(Controller):
    """Keeps each ReplicaSet's pods at spec.replicas (module docstring)."""

    name = "replicaset"
    owner_kind = REPLICA_SET

    def __init__(self, ctx: ControllerContext, burst_replicas: int = BURST_REPLICAS) -> None:
        super().__init__(ctx)
        self.burst_replicas = burst_replicas
        self.expectations = Expectations(ctx.clock)
        self.owners = self.informer(self.owner_kind.resource)
        self.pods = self.informer("pods")
        self.pods.add_index(OWNER_INDEX, controller_owner_index)
        self.owners.add_index(OWNER_INDEX, controller_owner_index)
        self.owners.add_handler(self.enqueue, lambda old, new: self.enqueue(new), self._owner_deleted)
        self.pods.add_handler(self._pod_added, self._pod_updated, self._pod_deleted)

    # ---- event handlers: keys only -----------------------------------------------------------

    def _owner_deleted(self, owner: Message) -> None:
        self.expectations.delete(object_key(owner))
        self.enqueue(owner)

    def _owner_of(self, pod: core_pb2.Pod, ref: meta_pb2.OwnerReference | None) -> Message | None:
        if ref is None or ref.kind != self.owner_kind.kind:
            return None
        owner = self.owners.get(f"{pod.metadata.namespace}/{ref.name}")
        return owner if owner is not None and owner.metadata.uid == ref.uid else None  # type: ignore[attr-defined]

    def _enqueue_matching(self, pod: core_pb2.Pod) -> None:
        """An orphan changed: every owner in its namespace that selects it may adopt it."""
        for owner in self.owners.by_index(NAMESPACE_INDEX, pod.metadata.namespace):
            try:
                if self.owner_kind.selector(owner).matches(pod.metadata.labels):
                    self.enqueue(owner)
            except SelectorError:
                continue

    def _pod_added(self, pod: Message) -> None:
        assert isinstance(pod, core_pb2.Pod)
        if pod.metadata.deletion_timestamp:
            self._pod_deleted(pod)
            return
        ref = get_controller_of(pod)
        if ref is not None:
            owner = self._owner_of(pod, ref)
            if owner is not None:
                self.expectations.creation_observed(object_key(owner))
                self.enqueue(owner)
            return
        self._enqueue_matching(pod)

    def _pod_updated(self, old: Message, new: Message) -> None:
        assert isinstance(old, core_pb2.Pod) and isinstance(new, core_pb2.Pod)
        if old.metadata.resource_version == new.metadata.resource_version:
            return  # a resync: the owners' own resync covers them
        old_ref, new_ref = get_controller_of(old), get_controller_of(new)
        if new.metadata.deletion_timestamp:
            self._pod_deleted(new)
            if old_ref is not None and (new_ref is None or old_ref.uid != new_ref.uid):
                self._enqueue_owner(old, old_ref)
            return
        if old_ref is not None and (new_ref is None or old_ref.uid != new_ref.uid):
            self._enqueue_owner(old, old_ref)
        if new_ref is not None:
            owner = self._owner_of(new, new_ref)
            if owner is not None:
                self.enqueue(owner)
                min_ready = owner.spec.min_ready_seconds  # type: ignore[attr-defined]
                if min_ready > 0 and not is_pod_ready(old) and is_pod_ready(new):
                    self.queue.add_after(object_key(owner), min_ready + 1.0)
            return
        if old.metadata.labels != new.metadata.labels or old_ref is not None:
            self._enqueue_matching(new)

    def _enqueue_owner(self, pod: core_pb2.Pod, ref: meta_pb2.OwnerReference) -> None:
        owner = self._owner_of(pod, ref)
        if owner is not None:
            self.enqueue(owner)

    def _pod_deleted(self, pod: Message) -> None:
        assert isinstance(pod, core_pb2.Pod)
        owner = self._owner_of(pod, get_controller_of(pod))
        if owner is not None:
            key = object_key(owner)
            self.expectations.deletion_observed(key, pod.metadata.uid)
            self.enqueue_key(key)

    # ---- sync --------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        owner: Any = self.owners.get(key)
        if owner is None:
            self.expectations.delete(key)
            return
        try:
            selector = self.owner_kind.selector(owner)
        except SelectorError as err:
            log.warning("%s %s: invalid selector: %s", self.owner_kind.kind, key, err)
            return
        needs_sync = self.expectations.satisfied(key)
        namespace, _ = split_key(key)
        active = [p for p in self.pods.by_index(NAMESPACE_INDEX, namespace) if is_pod_active(p)]  # type: ignore[arg-type]
        pods = await self.claim_pods(owner, selector, active)
        manage_error: Exception | None = None
        creating = len(pods) < owner.spec.replicas
        if needs_sync and not owner.metadata.deletion_timestamp:
            manage_error = await self.manage_replicas(key, owner, pods)
        status = await self.update_status(owner, pods, manage_error, creating)
        if manage_error is not None:
            raise manage_error
        min_ready = owner.spec.min_ready_seconds
        if min_ready > 0 and status.ready_replicas != status.available_replicas:
            self.queue.add_after(key, float(min_ready))

    # ---- claiming ----------------------------------------------------------------------------

    async def claim_pods(self, owner: Any, selector: LabelSelector, pods: Sequence[core_pb2.Pod]
                         ) -> list[core_pb2.Pod]:
        """Ours among pods, adopting matching orphans and releasing ours that stopped matching."""
        claimed: list[core_pb2.Pod] = []
        errors: list[Exception] = []
        can_adopt: bool | None = None
        deleting = bool(owner.metadata.deletion_timestamp)
        for pod in pods:
            ref = get_controller_of(pod)
            matches = selector.matches(pod.metadata.labels)
            if ref is not None:
                if ref.uid != owner.metadata.uid:
                    continue
                if matches:
                    claimed.append(pod)
                elif not deleting:
                    await self._try(errors, self._release(owner, pod))
                continue
            if deleting or not matches or pod.metadata.deletion_timestamp:
                continue
            if can_adopt is None:
                can_adopt = await self._can_adopt(owner)
            if not can_adopt:
                continue
            adopted = await self._try(errors, self._adopt(owner, pod))
            if isinstance(adopted, core_pb2.Pod):
                claimed.append(adopted)
        if errors:
            raise errors[0]
        return claimed

    @staticmethod
    async def _try(errors: list[Exception], call: Awaitable[Any]) -> Any:
        try:
            return await call
        except NotFoundError:
            return None  # the pod is gone: nothing to claim or release
        except ApiStatusError as err:
            errors.append(err)
            return None

    async def _can_adopt(self, owner: Any) -> bool:
        """A fresh read: adopting for an owner that was deleted (or re-created) would be wrong."""
        m = owner.metadata
        try:
            fresh: Any = await self.ctx.client.get(self.owner_kind.resource, m.name, m.namespace)
        except NotFoundError:
            return False
        return bool(fresh.metadata.uid == m.uid and not fresh.metadata.deletion_timestamp)

    async def _adopt(self, owner: Any, pod: core_pb2.Pod) -> Message:
        patch = owner_references_patch([*pod.metadata.owner_references, controller_ref(owner)], pod)
        return await self.ctx.client.patch("pods", pod.metadata.name, patch, pod.metadata.namespace)

    async def _release(self, owner: Any, pod: core_pb2.Pod) -> Message:
        patch = owner_references_patch([r for r in pod.metadata.owner_references if r.uid != owner.metadata.uid], pod)
        return await self.ctx.client.patch("pods", pod.metadata.name, patch, pod.metadata.namespace)

    # ---- creating and deleting ---------------------------------------------------------------

    async def manage_replicas(self, key: str, owner: Any, pods: Sequence[core_pb2.Pod]) -> Exception | None:
        """Create or delete pods toward spec.replicas; the error that stopped it, if any."""
        diff = len(pods) - owner.spec.replicas
        if diff < 0:
            return await self._create_pods(key, owner, min(-diff, self.burst_replicas))
        if diff > 0:
            return await self._delete_pods(key, owner, pods, min(diff, self.burst_replicas))
        return None

    async def _create_pods(self, key: str, owner: Any, count: int) -> Exception | None:
        self.expectations.expect_creations(key, count)
        template = pod_from_template(owner.spec.template, owner)

        async def create_one() -> None:
            try:
                made = await self.ctx.client.create(template, owner.metadata.namespace)
            except ApiStatusError as err:
                await self.recorder.event(owner, "Warning", "FailedCreate", f"Error creating: {err}")
                raise
            await self.recorder.event(owner, "Normal", "SuccessfulCreate", f"Created pod: {made.metadata.name}")

        done, err = await slow_start_batch(count, SLOW_START_INITIAL_BATCH, create_one)
        if done < count:
            self.expectations.lower(key, adds=count - done)  # they will never show up
        return err

    def _related_pods(self, owner: Any, pods: Sequence[core_pb2.Pod]) -> list[core_pb2.Pod]:
        """Our pods plus those of sibling owners with the same controller (one Deployment)."""
        parent = get_controller_of(owner)
        if parent is None:
            return list(pods)
        related: dict[str, core_pb2.Pod] = {p.metadata.uid: p for p in pods}
        for sibling in self.owners.by_index(OWNER_INDEX, parent.uid):
            for p in self.pods.by_index(OWNER_INDEX, sibling.metadata.uid):  # type: ignore[attr-defined]
                assert isinstance(p, core_pb2.Pod)
                related.setdefault(p.metadata.uid, p)
        return list(related.values())

    async def _delete_pods(self, key: str, owner: Any, pods: Sequence[core_pb2.Pod], count: int
                           ) -> Exception | None:
        victims = pods_to_delete(pods, self._related_pods(owner, pods), count)
        self.expectations.expect_deletions(key, [p.metadata.uid for p in victims])

        async def delete_one(pod: core_pb2.Pod) -> Exception | None:
            m = pod.metadata
            try:
                await self.ctx.client.delete("pods", m.name, m.namespace, uid=m.uid)
            except ApiStatusError as err:
                self.expectations.deletion_observed(key, m.uid)  # it will not go on its own
                if isinstance(err, NotFoundError):
                    return None
                await self.recorder.event(owner, "Warning", "FailedDelete", f"Error deleting: {err}")
                return err
            await self.recorder.event(owner, "Normal", "SuccessfulDelete", f"Deleted pod: {m.name}")
            return None

        results = await asyncio.gather(*(delete_one(p) for p in victims))
        return next((e for e in results if e is not None), None)

    # ---- status ------------------------------------------------------------------------------

    async def update_status(self, owner: Any, pods: Sequence[core_pb2.Pod], manage_error: Exception | None,
                            creating: bool) -> Any:
        """Write the status if it changed (one retry on a conflict, re-reading the owner)."""
        now = self.ctx.wall.now()
        for attempt in range(2):
            status = calculate_status(owner, pods, now, manage_error, creating, format_time(now))
            if status == owner.status:
                return status
            new = type(owner)()
            new.CopyFrom(owner)
            new.status.CopyFrom(status)
            try:
                await self.ctx.client.update_status(new)
                return status
            except ConflictError:
                if attempt:
                    raise
                m = owner.metadata
                owner = await self.ctx.client.get(self.owner_kind.resource, m.name, m.namespace)
        return status


class ReplicationManager(ReplicaSetController):
    """The same loop for ReplicationControllers (equality selectors)."""

    name = "replicationcontroller"
    owner_kind = REPLICATION_CONTROLLER


CONTROLLERS: tuple[type[Controller], ...] = (ReplicaSetController, ReplicationManager)
