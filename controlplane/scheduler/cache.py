"""The scheduler's cache: nodes, the pods on them, and pods it has assumed.

Nodes and bound pods arrive from the driver's watches (`add_node`, `update_pod`, ...). When the
scheduler picks a node it calls `assume(pod, node)` before the Bind call returns, so the next
cycle already counts that pod against the node's capacity: no two pods are placed on the same
free capacity while the watch catches up. An assumed pod is
- confirmed when the watch reports it bound (`add_pod`/`update_pod` of that key, or
  `confirm`) — it is then an ordinary pod, on whichever node the API server says;
- forgotten when the bind fails (`forget`);
- expired `ttl` seconds after `assume` (or after `finish_binding`, which restarts the clock)
  when no confirmation came, so a lost watch event cannot pin capacity forever. Expiry is
  checked by `cleanup_expired()`, which `snapshot()` calls.

Terminal pods (phase Succeeded or Failed) free their node's resources: `add_pod`/`update_pod`
of one removes it, as Kubernetes' scheduler does by not caching them.

Snapshots are cheap and safe: a NodeInfo handed out in a snapshot is never changed again; the
cache copies it before its next change (copy-on-write by epoch: every snapshot starts a new
epoch and a NodeInfo last copied in an older epoch is copied before it is touched). So a
snapshot costs one list of references, and only nodes that changed are copied.

Invariants: every pod key is on at most one node; a node's sums equal the sums over its pods;
pods on a node the cache has not seen are kept on a placeholder (not in snapshots) and count
as soon as the node arrives.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from controlplane.scheduler.framework import NodeInfo, PodInfo, Snapshot
from kvstore.clock import Clock
from protos.skiff.api.v1 import core_pb2

DEFAULT_ASSUMED_TTL = 30.0
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass
class _Assumed:
    node_name: str
    deadline: float
    seq: int  # its live entry in the expiry heap (older entries are stale)


def pod_key(pod: core_pb2.Pod) -> str:
    return f"{pod.metadata.namespace or 'default'}/{pod.metadata.name}"


class SchedulerCache:
    def __init__(self, clock: Clock, ttl: float = DEFAULT_ASSUMED_TTL) -> None:
        self._clock = clock
        self._ttl = ttl
        self._nodes: dict[str, NodeInfo] = {}
        self._pod_node: dict[str, str] = {}  # pod key -> node name
        self._assumed: dict[str, _Assumed] = {}
        # Deadlines in a heap, so expiring costs nothing while nothing is due.
        self._expiry: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._image_nodes: dict[str, int] = {}
        # Copies handed to snapshots, remade only when their source changes (rarely).
        self._image_nodes_view: dict[str, int] | None = None
        self._namespace_view: dict[str, dict[str, str]] | None = None
        self._epoch = 1
        # The real nodes in snapshot order, kept up to date so a snapshot is a list copy.
        self._list: list[NodeInfo] = []
        self._index: dict[str, int] = {}
        # Placed pods with (anti-)affinity terms: at zero, snapshots need no scan for them.
        self._affinity_pods = 0
        self._anti_affinity_pods = 0
        self._snapshot: Snapshot | None = None
        self._namespace_labels: dict[str, dict[str, str]] = {}

    # --- internals ------------------------------------------------------------------------

    def _writable(self, name: str) -> NodeInfo:
        """The node's info, copied first if a snapshot may hold it; created if missing."""
        self._snapshot = None
        ni = self._nodes.get(name)
        if ni is None:
            ni = NodeInfo(None, name)
        elif ni.epoch != self._epoch:
            ni = ni.clone()
        ni.epoch = self._epoch
        self._nodes[name] = ni
        at = self._index.get(name)
        if at is not None:
            self._list[at] = ni
        return ni

    def _sync_list(self, ni: NodeInfo) -> None:
        """After a node appeared or disappeared: keep `_list` to the real nodes."""
        listed = ni.name in self._index
        if ni.node is not None and not listed:
            self._index[ni.name] = len(self._list)
            self._list.append(ni)
        elif ni.node is None and listed:
            self._list = [n for n in self._list if n.name != ni.name]
            self._index = {n.name: i for i, n in enumerate(self._list)}

    def _drop_if_empty(self, name: str) -> None:
        ni = self._nodes.get(name)
        if ni is not None and ni.node is None and not ni.pods:
            del self._nodes[name]

    def _count_images(self, ni: NodeInfo, sign: int) -> None:
        self._image_nodes_view = None
        for image in ni.images:
            count = self._image_nodes.get(image, 0) + sign
            if count > 0:
                self._image_nodes[image] = count
            else:
                self._image_nodes.pop(image, None)

    def _count_affinity(self, pod: PodInfo, sign: int) -> None:
        if pod.has_affinity:
            self._affinity_pods += sign
        if pod.required_anti_affinity:
            self._anti_affinity_pods += sign

    def _place(self, pod: PodInfo, node_name: str) -> None:
        self._unplace(pod.key)
        self._writable(node_name).add_pod(pod)
        self._pod_node[pod.key] = node_name
        self._count_affinity(pod, 1)

    def _unplace(self, key: str) -> None:
        name = self._pod_node.pop(key, None)
        if name is not None:
            removed = self._writable(name).remove_pod(key)
            if removed is not None:
                self._count_affinity(removed, -1)
            self._drop_if_empty(name)

    # --- nodes ----------------------------------------------------------------------------

    def add_node(self, node: core_pb2.Node) -> None:
        self.update_node(node)

    def update_node(self, node: core_pb2.Node) -> None:
        name = node.metadata.name
        ni = self._writable(name)
        self._count_images(ni, -1)
        ni.set_node(node)
        self._count_images(ni, 1)
        self._sync_list(ni)

    def remove_node(self, name: str) -> None:
        """The node leaves snapshots; its pods stay accounted (the watch deletes them)."""
        ni = self._nodes.get(name)
        if ni is None:
            return
        ni = self._writable(name)
        self._count_images(ni, -1)
        ni.set_node(None)
        self._sync_list(ni)
        self._drop_if_empty(name)

    # --- pods from the watch --------------------------------------------------------------

    def add_pod(self, pod: core_pb2.Pod) -> None:
        self.update_pod(pod)

    def update_pod(self, pod: core_pb2.Pod) -> None:
        """A bound pod as the API server has it; confirms it if it was assumed. Pods without
        spec.nodeName are the queue's business and are ignored (an assumed pod whose bind has
        not landed yet stays assumed)."""
        if not pod.spec.node_name:
            return
        key = pod_key(pod)
        self._assumed.pop(key, None)
        if pod.status.phase in TERMINAL_PHASES:
            self._unplace(key)
            return
        self._place(PodInfo(pod), pod.spec.node_name)

    def remove_pod(self, key: str) -> None:
        self._assumed.pop(key, None)
        self._unplace(key)

    # --- assumed pods ---------------------------------------------------------------------

    def assume(self, pod: PodInfo | core_pb2.Pod, node_name: str) -> PodInfo:
        """Count `pod` on `node_name` from now on; returns the PodInfo placed there."""
        info = pod if isinstance(pod, PodInfo) else PodInfo(pod)
        if info.key in self._pod_node and info.key not in self._assumed:
            raise ValueError(f"pod {info.key} is already bound to node "
                             f"{self._pod_node[info.key]}; it cannot be assumed")
        if info.node_name != node_name:
            info = info.on_node(node_name)
        self._place(info, node_name)
        self._assumed[info.key] = self._deadline(info.key, node_name)
        return info

    def _deadline(self, key: str, node_name: str) -> _Assumed:
        entry = _Assumed(node_name, self._clock.now() + self._ttl, next(self._seq))
        heapq.heappush(self._expiry, (entry.deadline, entry.seq, key))
        return entry

    def finish_binding(self, key: str) -> None:
        """The Bind call returned: the assumed pod now has `ttl` seconds to be confirmed."""
        entry = self._assumed.get(key)
        if entry is not None:
            self._assumed[key] = self._deadline(key, entry.node_name)

    def forget(self, key: str) -> None:
        """The bind failed: the pod no longer counts anywhere."""
        if self._assumed.pop(key, None) is not None:
            self._unplace(key)

    def confirm(self, key: str) -> None:
        """The pod is known bound where it was assumed: keep it, stop its expiry."""
        self._assumed.pop(key, None)

    def is_assumed(self, key: str) -> bool:
        return key in self._assumed

    def cleanup_expired(self) -> list[str]:
        now = self._clock.now()
        expired = []
        while self._expiry and self._expiry[0][0] <= now:
            _, seq, key = heapq.heappop(self._expiry)
            entry = self._assumed.get(key)
            if entry is not None and entry.seq == seq:
                del self._assumed[key]
                self._unplace(key)
                expired.append(key)
        if not self._assumed:
            self._expiry.clear()  # only stale entries can be left
        return expired

    # --- reading --------------------------------------------------------------------------

    def set_namespace_labels(self, namespace: str, labels: dict[str, str] | None) -> None:
        """Namespaces' labels, for affinity terms with a namespaceSelector (None: deleted)."""
        self._snapshot = None
        self._namespace_view = None
        if labels is None:
            self._namespace_labels.pop(namespace, None)
        else:
            self._namespace_labels[namespace] = dict(labels)

    def snapshot(self) -> Snapshot:
        """The current state for one cycle; expires overdue assumed pods first."""
        if self._expiry and self._expiry[0][0] <= self._clock.now():
            self.cleanup_expired()
        if self._snapshot is None:
            nodes = list(self._list)
            if self._image_nodes_view is None:
                self._image_nodes_view = dict(self._image_nodes)
            if self._namespace_view is None:
                self._namespace_view = {k: dict(v) for k, v in self._namespace_labels.items()}
            self._snapshot = Snapshot(
                nodes, self._image_nodes_view, self._namespace_view,
                affinity_nodes=None if self._affinity_pods else [],
                anti_affinity_nodes=None if self._anti_affinity_pods else [])
            self._epoch += 1
        return self._snapshot

    def node_info(self, name: str) -> NodeInfo | None:
        return self._nodes.get(name)

    def node_of(self, key: str) -> str | None:
        return self._pod_node.get(key)

    @property
    def node_count(self) -> int:
        return len(self._list)

    @property
    def pod_count(self) -> int:
        return len(self._pod_node)

    @property
    def assumed_count(self) -> int:
        return len(self._assumed)
