"""The DaemonSet controller: one pod of each DaemonSet on every node that may run it.

Desired state, per (DaemonSet, node), decided by the pure `node_should_run(node, pod)`:
- *should run* - the node's labels satisfy the template's nodeSelector and required node
  affinity, and the pod (with the tolerations below) tolerates every NoSchedule and NoExecute
  taint of the node;
- *should continue running* - the pod tolerates every NoExecute taint (a new NoSchedule taint
  does not evict an existing daemon pod, as in Kubernetes).
Daemon pods get Kubernetes' extra tolerations: not-ready and unreachable NoExecute without
tolerationSeconds (a daemon pod is never evicted for those), and disk-pressure,
memory-pressure, pid-pressure and unschedulable NoSchedule (network-unavailable too on the host
network). They are bound by setting spec.nodeName directly at creation (Kubernetes before 1.12
did this; since then it sets a matchFields metadata.name node affinity and lets the scheduler
bind). Setting nodeName means daemon pods run even when the scheduler is down or the node is
cordoned, which is what system daemons need; the cost is that the scheduler's resource checks
are skipped. Pods carry the label `controller-revision-hash` = a hash of the template
(`podutil.template_hash`; skiff has no ControllerRevision kind).

`sync(namespace/name)`:
1. a node that should run the pod and has no live one (failed pods are deleted, pods being
   deleted are ignored, as Kubernetes does) gets one; a node with two or more keeps the oldest;
   a node that may no longer run it (removed from the selection, an untolerated NoExecute
   taint, or the node object is gone) loses its pods;
2. RollingUpdate: pods with an old hash are deleted so that at most maxUnavailable (an int or a
   percentage of desiredNumberScheduled, rounded up; 1 when it resolves to 0) of the nodes that
   should run a pod are without an available one; old pods that are already unavailable go
   first. OnDelete: old pods stay until someone deletes them;
3. status (desiredNumberScheduled, currentNumberScheduled, numberMisscheduled, numberReady,
   numberAvailable, numberUnavailable, updatedNumberScheduled, observedGeneration) is written
   with update_status only when it changed.
Creations and deletions are recorded in Expectations: a sync acts again only once its informer
has shown the effect of the previous one (or 5 minutes passed). A DaemonSet being deleted is
left alone (the garbage collector removes its pods). Orphan adoption is not done.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from google.protobuf.message import Message

from controlplane.client.api import NotFoundError
from controlplane.client.expectations import Expectations
from controlplane.client.informer import OWNER_INDEX, controller_owner_index
from controlplane.controllers import podutil
from controlplane.controllers.base import Controller, ControllerContext, on_changes
from controlplane.controllers.deployment_util import scaled_value
from controlplane.scheduler.plugins.node_affinity import compile_term
from controlplane.scheduler.plugins.taint_toleration import tolerates
from protos.skiff.api.v1 import apps_pb2, core_pb2

log = logging.getLogger(__name__)

REVISION_HASH_LABEL = "controller-revision-hash"
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
_NO_SCHEDULE_TOLERATED = ("node.kubernetes.io/disk-pressure", "node.kubernetes.io/memory-pressure",
                          "node.kubernetes.io/pid-pressure", "node.kubernetes.io/unschedulable")
NETWORK_UNAVAILABLE = "node.kubernetes.io/network-unavailable"


# ---- the pure core ---------------------------------------------------------------------------

def add_daemon_tolerations(spec: core_pb2.PodSpec) -> None:
    """Add Kubernetes' daemon pod tolerations to spec (in place) unless already present."""
    wanted = [(NOT_READY, "NoExecute"), (UNREACHABLE, "NoExecute")]
    wanted += [(key, "NoSchedule") for key in _NO_SCHEDULE_TOLERATED]
    if spec.host_network:
        wanted.append((NETWORK_UNAVAILABLE, "NoSchedule"))
    for key, effect in wanted:
        if not any(t.key == key and t.effect == effect and t.operator == "Exists"
                   and not t.HasField("toleration_seconds") for t in spec.tolerations):
            spec.tolerations.add(key=key, operator="Exists", effect=effect)


def _fits_selection(node: core_pb2.Node, spec: core_pb2.PodSpec) -> bool:
    labels = node.metadata.labels
    if any(labels.get(k) != v for k, v in spec.node_selector.items()):
        return False
    na = spec.affinity.node_affinity
    if not na.HasField("required_during_scheduling_ignored_during_execution"):
        return True
    terms = na.required_during_scheduling_ignored_during_execution.node_selector_terms
    return any(compile_term(t).matches(labels, node.metadata.name) for t in terms)


def node_should_run(node: core_pb2.Node, pod: core_pb2.Pod) -> tuple[bool, bool]:
    """(should run, should continue running) the daemon pod `pod` on `node`."""
    if not _fits_selection(node, pod.spec):
        return False, False
    should_run = should_continue = True
    for taint in node.spec.taints:
        if taint.effect not in ("NoSchedule", "NoExecute") or tolerates(pod.spec.tolerations, taint):
            continue
        should_run = False
        if taint.effect == "NoExecute":
            should_continue = False
    return should_run, should_continue


def max_unavailable(ds: apps_pb2.DaemonSet, desired: int) -> int:
    ru = ds.spec.update_strategy.rolling_update
    n = scaled_value(ru.max_unavailable, desired, round_up=True) if ru.HasField("max_unavailable") else 1
    surge = scaled_value(ru.max_surge, desired, round_up=True) if ru.HasField("max_surge") else 0
    return 1 if n <= 0 and surge <= 0 else max(n, 0)


@dataclass
class Plan:
    """What one sync decides: nodes to create a pod on, pods to delete, and the counts."""

    create_on: list[str] = field(default_factory=list)
    delete: list[core_pb2.Pod] = field(default_factory=list)
    should_run: dict[str, core_pb2.Pod | None] = field(default_factory=dict)  # node -> live pod
    misscheduled: int = 0


def plan_nodes(nodes: list[core_pb2.Node], pods_by_node: dict[str, list[core_pb2.Pod]],
               template_pod: core_pb2.Pod) -> Plan:
    """Step 1 of the module docstring, pure."""
    plan = Plan()
    known = {n.metadata.name for n in nodes}
    for node in nodes:
        name = node.metadata.name
        run, keep = node_should_run(node, template_pod)
        pods = pods_by_node.get(name, [])
        live = [p for p in pods if not podutil.is_being_deleted(p) and p.status.phase != podutil.POD_FAILED]
        plan.delete += [p for p in pods if p.status.phase == podutil.POD_FAILED
                        and not podutil.is_being_deleted(p)]
        if keep and live:
            live.sort(key=lambda p: (p.metadata.creation_timestamp, p.metadata.name))
            plan.delete += live[1:]
            if run:
                plan.should_run[name] = live[0]
            else:
                plan.misscheduled += 1
        elif live:
            plan.delete += live
            plan.misscheduled += 1
        elif run:
            plan.create_on.append(name)
            plan.should_run[name] = None
    for name, pods in pods_by_node.items():  # pods on nodes that no longer exist
        if name not in known:
            plan.delete += [p for p in pods if not podutil.is_being_deleted(p)]
    return plan


def plan_rolling_update(plan: Plan, current_hash: str, limit: int, min_ready: int,
                        now: float) -> list[core_pb2.Pod]:
    """Old-template pods to delete now so that at most `limit` nodes lack an available pod."""
    unavailable = 0
    old_unavailable: list[core_pb2.Pod] = []
    old_available: list[core_pb2.Pod] = []
    for pod in plan.should_run.values():
        available = pod is not None and podutil.is_pod_available(pod, min_ready, now)
        if not available:
            unavailable += 1
        if pod is not None and pod.metadata.labels.get(REVISION_HASH_LABEL) != current_hash:
            (old_available if available else old_unavailable).append(pod)
    chosen = list(old_unavailable)  # already unavailable: deleting them costs nothing
    budget = limit - unavailable
    old_available.sort(key=lambda p: p.spec.node_name)
    chosen += old_available[:max(budget, 0)]
    return chosen


def compute_status(ds: apps_pb2.DaemonSet, plan: Plan, current_hash: str,
                   now: float) -> apps_pb2.DaemonSetStatus:
    status = apps_pb2.DaemonSetStatus()
    status.CopyFrom(ds.status)
    live = [p for p in plan.should_run.values() if p is not None]
    status.desired_number_scheduled = len(plan.should_run)
    status.current_number_scheduled = len(live)
    status.number_misscheduled = plan.misscheduled
    status.number_ready = sum(1 for p in live if podutil.is_pod_ready(p))
    status.number_available = sum(1 for p in live if podutil.is_pod_available(p, ds.spec.min_ready_seconds, now))
    status.number_unavailable = status.desired_number_scheduled - status.number_available
    status.updated_number_scheduled = sum(1 for p in live
                                          if p.metadata.labels.get(REVISION_HASH_LABEL) == current_hash)
    status.observed_generation = ds.metadata.generation
    return status


def new_daemon_pod(ds: apps_pb2.DaemonSet, current_hash: str, node_name: str = "") -> core_pb2.Pod:
    pod = podutil.pod_from_template(ds.spec.template, ds, generate_name=f"{ds.metadata.name}-")
    pod.metadata.labels[REVISION_HASH_LABEL] = current_hash
    add_daemon_tolerations(pod.spec)
    pod.spec.node_name = node_name
    return pod


# ---- the controller --------------------------------------------------------------------------

class DaemonSetController(Controller):
    name = "daemonset"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.expectations = Expectations(ctx.clock)
        self.sets = self.informer("daemonsets")
        self.pods = self.informer("pods")
        self.nodes = self.informer("nodes")
        self.pods.add_index(OWNER_INDEX, controller_owner_index)
        on_changes(self.sets, self.enqueue)
        self.pods.add_handler(self._pod_added, self._pod_updated, self._pod_deleted)
        on_changes(self.nodes, self._node_changed)

    # handlers: map a pod or node event to DaemonSet keys

    def _owner_key(self, pod: Message) -> str | None:
        ref = podutil.get_controller_of(pod)
        if ref is None or ref.kind != "DaemonSet":
            return None
        return f"{pod.metadata.namespace}/{ref.name}"  # type: ignore[attr-defined]

    def _pod_added(self, pod: Message) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            self.enqueue_key(key)

    def _pod_updated(self, old: Message, new: Message) -> None:
        key = self._owner_key(new)
        if key is not None:
            if not podutil.is_being_deleted(old) and podutil.is_being_deleted(new):
                self.expectations.deletion_observed(key, new.metadata.uid)  # type: ignore[attr-defined]
            self.enqueue_key(key)

    def _pod_deleted(self, pod: Message) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.deletion_observed(key, pod.metadata.uid)  # type: ignore[attr-defined]
            self.enqueue_key(key)

    def _node_changed(self, node: Message) -> None:
        for ds in self.sets.list():
            self.enqueue(ds)

    # sync

    async def sync(self, key: str) -> None:
        ds = self.sets.get(key)
        if ds is None:
            self.expectations.delete(key)
            return
        assert isinstance(ds, apps_pb2.DaemonSet)
        if ds.metadata.deletion_timestamp:
            return
        current_hash = podutil.template_hash(ds.spec.template)
        template_pod = new_daemon_pod(ds, current_hash)
        pods_by_node: dict[str, list[core_pb2.Pod]] = {}
        for pod in self.pods.by_index(OWNER_INDEX, ds.metadata.uid):
            assert isinstance(pod, core_pb2.Pod)
            pods_by_node.setdefault(pod.spec.node_name, []).append(pod)
        nodes = [n for n in self.nodes.list() if isinstance(n, core_pb2.Node)]
        plan = plan_nodes(nodes, pods_by_node, template_pod)
        now = self.ctx.wall.now()
        if self.expectations.satisfied(key):
            deletes = list(plan.delete)
            if ds.spec.update_strategy.type in ("", "RollingUpdate"):
                limit = max_unavailable(ds, len(plan.should_run))
                deletes += plan_rolling_update(plan, current_hash, limit, ds.spec.min_ready_seconds, now)
            await self._act(key, ds, current_hash, plan.create_on, deletes)
        await self._write_status(ds, compute_status(ds, plan, current_hash, now))

    async def _act(self, key: str, ds: apps_pb2.DaemonSet, current_hash: str, create_on: list[str],
                   deletes: list[core_pb2.Pod]) -> None:
        uids = list(dict.fromkeys(p.metadata.uid for p in deletes))
        # each expect_* call replaces the record: set deletions, then raise the creation count
        self.expectations.expect_deletions(key, uids)
        self.expectations.lower(key, adds=-len(create_on))
        errors: list[str] = []
        for node in create_on:
            try:
                made = await self.ctx.client.create(new_daemon_pod(ds, current_hash, node), ds.metadata.namespace)
                await self.recorder.event(ds, "Normal", "SuccessfulCreate", f"Created pod: {made.metadata.name}")
            except Exception as err:
                self.expectations.creation_observed(key)  # it will never show up
                errors.append(f"create on node {node}: {err}")
        seen: set[str] = set()
        for pod in deletes:
            if pod.metadata.uid in seen:
                continue
            seen.add(pod.metadata.uid)
            try:
                await self.ctx.client.delete("pods", pod.metadata.name, pod.metadata.namespace, uid=pod.metadata.uid)
                await self.recorder.event(ds, "Normal", "SuccessfulDelete", f"Deleted pod: {pod.metadata.name}")
            except NotFoundError:
                self.expectations.deletion_observed(key, pod.metadata.uid)
            except Exception as err:
                self.expectations.deletion_observed(key, pod.metadata.uid)
                errors.append(f"delete pod {pod.metadata.name}: {err}")
        if errors:
            raise RuntimeError(f"daemonset {key}: " + "; ".join(errors))

    async def _write_status(self, ds: apps_pb2.DaemonSet, status: apps_pb2.DaemonSetStatus) -> None:
        if status == ds.status:
            return
        new = apps_pb2.DaemonSet()
        new.CopyFrom(ds)
        new.status.CopyFrom(status)
        try:
            await self.ctx.client.update_status(new)
        except NotFoundError:
            pass  # deleted meanwhile: nothing to report on



CONTROLLERS = (DaemonSetController,)  # what the controller manager runs from this module
