"""The node lifecycle controller: notice nodes that stopped talking, taint them, evict their pods.

Health. A node is heard from when its Lease (`kube-node-lease/<node>`) gets a new renewTime or
its Ready condition a new lastHeartbeatTime. The controller records *when it observed* that
change on its own monotonic clock (ctx.clock), never trusting the node's wall clock, as
Kubernetes does. A node first seen counts as heard from then. A node not heard from for
`grace_period` seconds (Kubernetes' node-monitor-grace-period, 50 s) gets its Ready,
MemoryPressure, DiskPressure and PIDPressure conditions set to Unknown (reason
NodeStatusUnknown) through update_status. Each node key is re-queued for the moment its grace
would run out, so the check needs no polling loop.

Taints. A node whose Ready condition is Unknown gets the NoExecute taint
`node.kubernetes.io/unreachable`; one that reports Ready=False gets `node.kubernetes.io/not-ready`;
a Ready node gets neither (the taints go when it comes back). timeAdded is the wall time
(ctx.wall) the taint was added.

Eviction (Kubernetes' taint manager). A pod bound to a node with NoExecute taints (any, not just
ours) is deleted - normally, with its grace period - once its tolerations run out: at once for a
taint it does not tolerate; for a tolerated one, tolerationSeconds after the taint's timeAdded
(the smallest tolerationSeconds among the matching tolerations; matching tolerations without
seconds tolerate forever). The API server adds 300 s tolerations of both taints to every pod,
so by default pods go 300 s after the taint. Pod keys (`namespace/name`) share the queue with
node keys (`name`: node names have no "/"), re-queued with add_after for their eviction time.

Pods on a lost node. A pod on an unreachable node is only marked for deletion: its node agent,
which would finish the deletion, is gone, so the pod object stays - and a StatefulSet does not
make a second pod with the same ordinal while it does. When the Node object is deleted, the
controller force-deletes (grace 0) every pod still bound to it (Kubernetes' pod GC), which
releases those names.

Full disruption. If every node is unhealthy (Ready not True), the controller assumes it is the
one cut off: it removes its NoExecute taints from all nodes and evicts nothing until some node
is healthy again (taints then come back with a fresh timeAdded, restarting tolerations).

Invariants: cache objects are never mutated; taints other than the two above are never
touched; a pod already being deleted is not deleted again.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from google.protobuf.message import Message

from controlplane.client.api import NotFoundError
from controlplane.client.informer import NODE_INDEX, node_name_index, object_key
from controlplane.client.timeutil import format_time, parse_time
from controlplane.controllers import podutil
from controlplane.controllers.base import Controller, ControllerContext
from controlplane.scheduler.plugins.taint_toleration import toleration_matches
from protos.skiff.api.v1 import coordination_pb2, core_pb2

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
OUR_TAINTS = (UNREACHABLE, NOT_READY)
DEFAULT_GRACE_PERIOD = 50.0
_UNKNOWN_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")


# ---- the pure core ---------------------------------------------------------------------------

def copy_of(node: core_pb2.Node) -> core_pb2.Node:
    out = core_pb2.Node()
    out.CopyFrom(node)
    return out


def ready_status(node: core_pb2.Node) -> str:
    """The Ready condition's status; "Unknown" when the node has none."""
    for cond in node.status.conditions:
        if cond.type == "Ready":
            return cond.status
    return "Unknown"


def heartbeat(node: core_pb2.Node) -> str:
    for cond in node.status.conditions:
        if cond.type == "Ready":
            return cond.last_heartbeat_time
    return ""


def mark_unknown(node: core_pb2.Node, now: str) -> core_pb2.Node | None:
    """A copy with the node's conditions set Unknown, or None when they already are."""
    new = copy_of(node)
    changed = False
    present = {c.type for c in new.status.conditions}
    if "Ready" not in present:
        new.status.conditions.add(type="Ready", status="")
    for cond in new.status.conditions:
        if cond.type in _UNKNOWN_CONDITIONS and cond.status != "Unknown":
            cond.status, cond.last_transition_time = "Unknown", now
            cond.reason, cond.message = "NodeStatusUnknown", "Kubelet stopped posting node status."
            changed = True
    return new if changed else None


def desired_taint(status: str) -> str | None:
    return {"True": None, "False": NOT_READY}.get(status, UNREACHABLE)


def with_taint(node: core_pb2.Node, wanted: str | None, now: str) -> core_pb2.Node | None:
    """A copy whose NoExecute taints among OUR_TAINTS are exactly `wanted`; None if already so."""
    ours = [t.key for t in node.spec.taints if t.key in OUR_TAINTS and t.effect == "NoExecute"]
    if ours == ([wanted] if wanted else []):
        return None
    new = copy_of(node)
    kept = [t for t in new.spec.taints if not (t.key in OUR_TAINTS and t.effect == "NoExecute")]
    del new.spec.taints[:]
    new.spec.taints.extend(kept)
    if wanted:
        new.spec.taints.add(key=wanted, effect="NoExecute", time_added=now)
    return new


def toleration_time(pod: core_pb2.Pod, taint: core_pb2.Taint) -> float | None:
    """Seconds the pod tolerates the taint: 0 not at all, None forever."""
    matching = [t for t in pod.spec.tolerations if toleration_matches(t, taint)]
    if not matching:
        return 0.0
    seconds = [t.toleration_seconds for t in matching if t.HasField("toleration_seconds")]
    return float(max(min(seconds), 0)) if seconds else None


def eviction_delay(pod: core_pb2.Pod, taints: list[core_pb2.Taint], now: float,
                   first_seen: dict[str, float] | None = None) -> float | None:
    """Seconds from `now` until the pod must go (<= 0: now), None if it may stay.
    A taint without timeAdded counts from first_seen[key] (or now)."""
    due = math.inf
    for taint in taints:
        if taint.effect != "NoExecute":
            continue
        tolerated = toleration_time(pod, taint)
        if tolerated is None:
            continue
        try:
            added = parse_time(taint.time_added) if taint.time_added else None
        except ValueError:
            added = None
        if added is None:
            added = (first_seen or {}).get(taint.key, now)
        due = min(due, added + tolerated)
    return None if due == math.inf else due - now


@dataclass
class Observation:
    renew_time: str
    heartbeat: str
    probe_at: float


# ---- the controller --------------------------------------------------------------------------

class NodeLifecycleController(Controller):
    name = "nodelifecycle"

    def __init__(self, ctx: ControllerContext, grace_period: float = DEFAULT_GRACE_PERIOD) -> None:
        super().__init__(ctx)
        self.grace_period = grace_period
        self.nodes = self.informer("nodes")
        self.leases = self.informer("leases", namespace=NODE_LEASE_NAMESPACE)
        self.pods = self.informer("pods")
        self.pods.add_index(NODE_INDEX, node_name_index)
        self.observed: dict[str, Observation] = {}
        self.full_disruption = False
        self._taint_seen: dict[tuple[str, str], float] = {}
        node_key = self._node_key
        self.nodes.add_handler(node_key, lambda old, new: node_key(new), node_key)
        self.leases.add_handler(node_key, lambda old, new: node_key(new), None)
        self.pods.add_handler(self._pod_changed, lambda old, new: self._pod_changed(new), None)

    def _node_key(self, obj: Message) -> None:
        self.enqueue_key(obj.metadata.name)  # type: ignore[attr-defined]

    def _pod_changed(self, pod: Message) -> None:
        if pod.spec.node_name and not podutil.is_being_deleted(pod):  # type: ignore[attr-defined]
            self.enqueue(pod)

    async def sync(self, key: str) -> None:
        if "/" in key:
            await self._sync_pod(key)
        else:
            await self._sync_node(key)

    # ---- nodes -----------------------------------------------------------------------------

    def _observe(self, node: core_pb2.Node) -> Observation:
        """Note when this controller last heard from the node (see the module docstring)."""
        name, now = node.metadata.name, self.ctx.clock.now()
        lease = self.leases.get(f"{NODE_LEASE_NAMESPACE}/{name}")
        renew = lease.spec.renew_time if isinstance(lease, coordination_pb2.Lease) else ""
        beat = heartbeat(node)
        seen = self.observed.get(name)
        if seen is None or seen.renew_time != renew or seen.heartbeat != beat:
            seen = Observation(renew, beat, now)
            self.observed[name] = seen
        return seen

    async def _sync_node(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            self.observed.pop(name, None)
            await self._force_delete_pods(name)
            return
        assert isinstance(node, core_pb2.Node)
        seen = self._observe(node)
        left = seen.probe_at + self.grace_period - self.ctx.clock.now()
        wall = format_time(self.ctx.wall.now())
        if left < 0:
            unknown = mark_unknown(node, wall)
            if unknown is not None:
                log.info("node %s: not heard from for %.0fs; marking it Unknown", name, self.grace_period)
                node = await self.ctx.client.update_status(unknown)
                await self.recorder.event(node, "Normal", "NodeNotReady", f"Node {name} status is now: NodeNotReady")
        else:
            self.queue.add_after(name, left + 0.001)
        assert isinstance(node, core_pb2.Node)
        self._update_disruption(node)
        wanted = None if self.full_disruption else desired_taint(ready_status(node))
        tainted = with_taint(node, wanted, wall)
        if tainted is not None:
            node = await self.ctx.client.update(tainted)
            assert isinstance(node, core_pb2.Node)
        if any(t.effect == "NoExecute" for t in node.spec.taints):
            for pod in self.pods.by_index(NODE_INDEX, name):
                self.enqueue(pod)

    def _update_disruption(self, fresh: core_pb2.Node) -> None:
        """Every node unhealthy: assume we are the one cut off (full disruption)."""
        nodes = [fresh if n.metadata.name == fresh.metadata.name else n  # type: ignore[attr-defined]
                 for n in self.nodes.list()]
        full = bool(nodes) and all(ready_status(n) != "True" for n in nodes)  # type: ignore[arg-type]
        if full != self.full_disruption:
            log.warning("node lifecycle: %s full disruption (%d nodes, none ready)",
                        "entering" if full else "leaving", len(nodes))
            self.full_disruption = full
            for n in nodes:
                if n.metadata.name != fresh.metadata.name:  # type: ignore[attr-defined]
                    self._node_key(n)

    async def _force_delete_pods(self, node_name: str) -> None:
        errors = []
        for pod in self.pods.by_index(NODE_INDEX, node_name):
            m = pod.metadata  # type: ignore[attr-defined]
            try:
                await self.ctx.client.delete("pods", m.name, m.namespace, grace_period_seconds=0, uid=m.uid)
                log.info("node %s is gone: force-deleted pod %s/%s", node_name, m.namespace, m.name)
            except NotFoundError:
                pass
            except Exception as err:
                errors.append(f"{m.namespace}/{m.name}: {err}")
        if errors:
            raise RuntimeError(f"force-deleting pods of deleted node {node_name}: " + "; ".join(errors))

    # ---- pods ------------------------------------------------------------------------------

    async def _sync_pod(self, key: str) -> None:
        pod = self.pods.get(key)
        if not isinstance(pod, core_pb2.Pod) or not pod.spec.node_name or podutil.is_being_deleted(pod):
            return
        node = self.nodes.get(pod.spec.node_name)
        if not isinstance(node, core_pb2.Node) or self.full_disruption:
            return
        taints = [t for t in node.spec.taints if t.effect == "NoExecute"]
        now = self.ctx.wall.now()
        first_seen = {t.key: self._taint_seen.setdefault((node.metadata.name, t.key), now)
                      for t in taints if not t.time_added}
        delay = eviction_delay(pod, taints, now, first_seen)
        if delay is None:
            return
        if delay > 0:
            self.queue.add_after(key, delay)
            return
        try:
            await self.ctx.client.delete("pods", pod.metadata.name, pod.metadata.namespace, uid=pod.metadata.uid)
        except NotFoundError:
            return
        log.info("evicted pod %s from tainted node %s", object_key(pod), node.metadata.name)
        await self.recorder.event(pod, "Normal", "TaintManagerEviction", f"Marking for deletion Pod {key}")


CONTROLLERS = (NodeLifecycleController,)  # what the controller manager runs from this module
