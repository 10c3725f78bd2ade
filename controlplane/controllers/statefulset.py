"""The StatefulSet controller: pods with stable names, hostnames and storage, made in order.

Identity: the pod for ordinal i (i from spec.ordinals.start, default 0) is named `<set>-<i>`,
has spec.hostname `<set>-<i>`, spec.subdomain = spec.serviceName, and the labels
`statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
`controller-revision-hash` (`<set>-<template hash>`, the name Kubernetes' ControllerRevision
would have; skiff has no ControllerRevision kind).

Storage: skiff serves no PersistentVolumeClaims. Each volumeClaimTemplate becomes a hostPath
volume (type DirectoryOrCreate) of the same name at
`/var/lib/skiff/statefulsets/<namespace>/<set>-<ordinal>/<claim>` on whatever node runs the
pod; it replaces a template volume of that name. The path follows the ordinal, so a pod that
comes back on the same node finds its data; nothing moves data between nodes.

`sync(namespace/name)` - one pass of Kubernetes' algorithm, pure in `plan(...)`:
1. replicas (ordinals start .. start+replicas-1), in increasing order: a Failed or Succeeded
   pod is deleted (it is re-made on a later pass); a missing pod is created; a pod being deleted
   is waited for - **never two pods with one ordinal**: a replacement is only created once the
   old pod object is gone (for a pod on an unreachable node that means the node came back or
   its Node object was deleted, see nodelifecycle). With OrderedReady (the default) the pass
   stops at the first pod it created, deleted or found not Running+Ready; Parallel goes on.
2. condemned pods (ordinals outside the range), highest first: OrderedReady deletes one at a
   time and only when every replica is Running+Ready and nothing is terminating; Parallel
   deletes them all.
3. RollingUpdate (not OnDelete): from the highest ordinal down to spec.updateStrategy.
   rollingUpdate.partition, the first pod not at the update revision is deleted (it comes back
   at the new revision); the walk stops at the first pod that is not Running+Ready, so one pod
   is updated at a time and each waits for the previous to be Ready.
Status: replicas (pods that exist and are not being deleted), readyReplicas,
availableReplicas (ready for minReadySeconds), currentReplicas/updatedReplicas (pods at the
current/update revision), currentRevision (becomes the update revision once every replica is
updated and ready), updateRevision, observedGeneration; written only when changed.

Known difference from Kubernetes: without ControllerRevisions the old template is not kept, so
a pod below the partition that is deleted comes back at the update revision, not the current
one. Orphan adoption and PVC retention policies are not done.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from google.protobuf.message import Message

from controlplane.client.api import AlreadyExistsError, NotFoundError
from controlplane.client.informer import OWNER_INDEX, controller_owner_index
from controlplane.controllers import podutil
from controlplane.controllers.base import Controller, ControllerContext, on_changes
from protos.skiff.api.v1 import apps_pb2, core_pb2

log = logging.getLogger(__name__)

REVISION_HASH_LABEL = "controller-revision-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
STORAGE_ROOT = "/var/lib/skiff/statefulsets"


# ---- the pure core ---------------------------------------------------------------------------

def revision_name(sts: apps_pb2.StatefulSet) -> str:
    return f"{sts.metadata.name}-{podutil.template_hash(sts.spec.template)}"


def ordinal_of(sts_name: str, pod_name: str) -> int | None:
    m = re.fullmatch(re.escape(sts_name) + r"-(\d+)", pod_name)
    return int(m.group(1)) if m else None


def storage_path(namespace: str, sts_name: str, ordinal: int, claim: str) -> str:
    return f"{STORAGE_ROOT}/{namespace}/{sts_name}-{ordinal}/{claim}"


def new_stateful_pod(sts: apps_pb2.StatefulSet, ordinal: int, revision: str) -> core_pb2.Pod:
    name = f"{sts.metadata.name}-{ordinal}"
    pod = podutil.pod_from_template(sts.spec.template, sts, name=name)
    pod.metadata.labels[REVISION_HASH_LABEL] = revision
    pod.metadata.labels[POD_NAME_LABEL] = name
    pod.metadata.labels[POD_INDEX_LABEL] = str(ordinal)
    pod.spec.hostname = name
    pod.spec.subdomain = sts.spec.service_name
    claims = {c.metadata.name for c in sts.spec.volume_claim_templates}
    kept = [v for v in pod.spec.volumes if v.name not in claims]
    del pod.spec.volumes[:]
    pod.spec.volumes.extend(kept)
    for claim in sts.spec.volume_claim_templates:
        vol = pod.spec.volumes.add(name=claim.metadata.name)
        vol.host_path.path = storage_path(sts.metadata.namespace, sts.metadata.name, ordinal,
                                          claim.metadata.name)
        vol.host_path.type = "DirectoryOrCreate"
    return pod


def running_and_ready(pod: core_pb2.Pod) -> bool:
    return pod.status.phase == podutil.POD_RUNNING and podutil.is_pod_ready(pod)


def _healthy(pod: core_pb2.Pod) -> bool:
    return running_and_ready(pod) and not podutil.is_being_deleted(pod)


@dataclass
class Plan:
    create: list[int] = field(default_factory=list)          # ordinals
    delete: list[core_pb2.Pod] = field(default_factory=list)


def plan(sts: apps_pb2.StatefulSet, pods: dict[int, core_pb2.Pod], update_revision: str) -> Plan:
    """What one sync does, given the set's pods by ordinal (see the module docstring)."""
    out = Plan()
    start = sts.spec.ordinals.start
    count = sts.spec.replicas if sts.spec.HasField("replicas") else 1
    wanted = range(start, start + count)
    ordered = sts.spec.pod_management_policy in ("", "OrderedReady")
    for ordinal in wanted:
        pod = pods.get(ordinal)
        if pod is None:
            out.create.append(ordinal)
            if ordered:
                return out
            continue
        if podutil.is_pod_terminal(pod) and not podutil.is_being_deleted(pod):
            out.delete.append(pod)
            if ordered:
                return out
            continue
        if ordered and not _healthy(pod):
            return out  # being deleted, starting or unready: wait for it
    condemned = sorted((o for o in pods if o not in wanted), reverse=True)
    live_condemned = [pods[o] for o in condemned if not podutil.is_being_deleted(pods[o])]
    if ordered:
        if any(podutil.is_being_deleted(p) for p in pods.values()):
            return out
        if live_condemned:
            out.delete.append(live_condemned[0])
            return out
    else:
        out.delete += live_condemned
    if sts.spec.update_strategy.type not in ("", "RollingUpdate"):
        return out
    partition = sts.spec.update_strategy.rolling_update.partition
    for ordinal in reversed(wanted):
        if ordinal - start < partition:
            break
        pod = pods.get(ordinal)
        if pod is None:
            break
        if pod.metadata.labels.get(REVISION_HASH_LABEL) != update_revision and not podutil.is_being_deleted(pod):
            if pod not in out.delete:
                out.delete.append(pod)
            break
        if not _healthy(pod):
            break
    return out


def compute_status(sts: apps_pb2.StatefulSet, pods: dict[int, core_pb2.Pod], update_revision: str,
                   now: float) -> apps_pb2.StatefulSetStatus:
    status = apps_pb2.StatefulSetStatus()
    status.CopyFrom(sts.status)
    current_revision = sts.status.current_revision or update_revision
    live = [p for p in pods.values() if not podutil.is_being_deleted(p)]
    status.replicas = len(live)
    status.ready_replicas = sum(1 for p in live if podutil.is_pod_ready(p))
    status.available_replicas = sum(1 for p in live if podutil.is_pod_available(p, sts.spec.min_ready_seconds, now))
    status.updated_replicas = sum(1 for p in live if p.metadata.labels.get(REVISION_HASH_LABEL) == update_revision)
    status.current_replicas = sum(1 for p in live if p.metadata.labels.get(REVISION_HASH_LABEL) == current_revision)
    want = sts.spec.replicas if sts.spec.HasField("replicas") else 1
    if (status.updated_replicas == want == status.replicas and status.ready_replicas == want):
        current_revision = update_revision
        status.current_replicas = status.updated_replicas
    status.current_revision = current_revision
    status.update_revision = update_revision
    status.observed_generation = sts.metadata.generation
    return status


# ---- the controller --------------------------------------------------------------------------

class StatefulSetController(Controller):
    name = "statefulset"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.sets = self.informer("statefulsets")
        self.pods = self.informer("pods")
        self.pods.add_index(OWNER_INDEX, controller_owner_index)
        on_changes(self.sets, self.enqueue)
        on_changes(self.pods, self._pod_changed)

    def _pod_changed(self, pod: Message) -> None:
        ref = podutil.get_controller_of(pod)
        if ref is not None and ref.kind == "StatefulSet":
            self.enqueue_key(f"{pod.metadata.namespace}/{ref.name}")  # type: ignore[attr-defined]

    def pods_by_ordinal(self, sts: apps_pb2.StatefulSet) -> dict[int, core_pb2.Pod]:
        out: dict[int, core_pb2.Pod] = {}
        for pod in self.pods.by_index(OWNER_INDEX, sts.metadata.uid):
            assert isinstance(pod, core_pb2.Pod)
            ordinal = ordinal_of(sts.metadata.name, pod.metadata.name)
            if ordinal is not None:
                out[ordinal] = pod
        return out

    async def sync(self, key: str) -> None:
        sts = self.sets.get(key)
        if sts is None:
            return
        assert isinstance(sts, apps_pb2.StatefulSet)
        if sts.metadata.deletion_timestamp:
            return
        update_revision = revision_name(sts)
        pods = self.pods_by_ordinal(sts)
        todo = plan(sts, pods, update_revision)
        await self._act(sts, todo, update_revision)
        await self._write_status(sts, compute_status(sts, pods, update_revision, self.ctx.wall.now()))

    async def _act(self, sts: apps_pb2.StatefulSet, todo: Plan, update_revision: str) -> None:
        ns = sts.metadata.namespace
        for ordinal in todo.create:
            pod = new_stateful_pod(sts, ordinal, update_revision)
            try:
                await self.ctx.client.create(pod, ns)
            except AlreadyExistsError:
                continue  # our cache lags: the pod exists; the next sync sees it
            await self.recorder.event(sts, "Normal", "SuccessfulCreate",
                                      f"create Pod {pod.metadata.name} in StatefulSet {sts.metadata.name} successful")
        for pod in todo.delete:
            try:
                await self.ctx.client.delete("pods", pod.metadata.name, ns, uid=pod.metadata.uid)
            except NotFoundError:
                continue
            await self.recorder.event(sts, "Normal", "SuccessfulDelete",
                                      f"delete Pod {pod.metadata.name} in StatefulSet {sts.metadata.name} successful")

    async def _write_status(self, sts: apps_pb2.StatefulSet, status: apps_pb2.StatefulSetStatus) -> None:
        if status == sts.status:
            return
        new = apps_pb2.StatefulSet()
        new.CopyFrom(sts)
        new.status.CopyFrom(status)
        try:
            await self.ctx.client.update_status(new)
        except NotFoundError:
            pass


CONTROLLERS = (StatefulSetController,)  # what the controller manager runs from this module
