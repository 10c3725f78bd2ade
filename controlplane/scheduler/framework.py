"""The scheduling framework: statuses, the facts plugins read, plugin protocols, weights.

Design (Kubernetes' scheduling framework, reduced to what skiff runs):
- A plugin answers with a `Status`: SUCCESS, or UNSCHEDULABLE / UNSCHEDULABLE_AND_UNRESOLVABLE
  with Kubernetes' reason strings ("Insufficient cpu"), or SKIP from a pre-step meaning "this
  plugin has nothing to say about this pod" (its filter or score is then not run at all).
- `PodInfo` and `NodeInfo` hold everything a plugin needs, computed once: a pod's requests
  (init containers counted as Kubernetes does), host ports, images, tolerations, parsed
  affinity terms; a node's allocatable, the sums requested by its pods, used host ports, image
  sizes, labels, taints, readiness. Plugins never parse quantities or selectors per node.
- A `Snapshot` is the immutable view one scheduling cycle reads. NodeInfos inside a snapshot
  are never mutated: the cache copies a NodeInfo before changing one a snapshot may hold.
- Plugins are objects with a `name` and some of: `pre_filter`, `filter`, `pre_score`, `score`,
  `normalize` (optional abilities as separate protocols). `score` works on the whole list of
  feasible nodes at once, which costs far less in Python than one call per node.
- Weights: Kubernetes' defaults (TaintToleration 3, NodeAffinity 2, InterPodAffinity 2, the
  rest 1), overridable from a YAML file in skiff's short form or as a
  KubeSchedulerConfiguration (profiles[0].plugins.score).

Invariants: `SUCCESS` and `SKIP` are singletons (compared with `is` in the hot loop); a
PodInfo is immutable after construction except `plugin_cache`, which a plugin fills once with
the pod's parsed form of its own inputs.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Mapping, Protocol, Sequence

import yaml

from controlplane.client import quantity
from controlplane.client.selectors import (LabelSelector, Requirement, SelectorError,
                                           from_label_selector_proto)
from protos.skiff.api.v1 import core_pb2

MAX_NODE_SCORE = 100
# What LeastAllocated assumes a container uses when it requests nothing (Kubernetes' values).
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
DEFAULT_SCHEDULER_NAME = "default-scheduler"
_FIXED_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage", "pods"})


class Code(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1
    UNSCHEDULABLE = 2
    UNSCHEDULABLE_AND_UNRESOLVABLE = 3
    SKIP = 4


@dataclass(frozen=True, slots=True)
class Status:
    """A plugin's answer; `reasons` are the strings the unschedulable message counts."""

    code: Code
    reasons: tuple[str, ...] = ()
    plugin: str = ""

    @property
    def is_success(self) -> bool:
        return self.code is Code.SUCCESS


SUCCESS = Status(Code.SUCCESS)
SKIP = Status(Code.SKIP)


def unschedulable(plugin: str, *reasons: str, unresolvable: bool = False) -> Status:
    code = Code.UNSCHEDULABLE_AND_UNRESOLVABLE if unresolvable else Code.UNSCHEDULABLE
    return Status(code, reasons, plugin)


# --- quantities and requests --------------------------------------------------------------

@lru_cache(maxsize=4096)
def _amount(resource: str, text: str) -> int:
    """A resource amount as an int: millicores for cpu, whole units (bytes, pods) otherwise.
    Cached: manifests repeat the same few quantity strings endlessly."""
    try:
        return quantity.parse_cpu_millis(text) if resource == "cpu" else quantity.parse_bytes(text)
    except ValueError:
        return 0  # the API server validates quantities; a bad one must not crash the loop


def resource_list(values: Mapping[str, str]) -> dict[str, int]:
    return {name: _amount(name, text) for name, text in values.items()}


def _container_requests(c: core_pb2.Container, non_zero: bool) -> dict[str, int]:
    # A limit without a request means request = limit (the API server's defaulting).
    out = resource_list(c.resources.limits)
    out.update(resource_list(c.resources.requests))
    if non_zero:
        out.setdefault("cpu", DEFAULT_MILLI_CPU_REQUEST)
        out.setdefault("memory", DEFAULT_MEMORY_REQUEST)
    return out


def _add(into: dict[str, int], other: Mapping[str, int]) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


def _max_into(into: dict[str, int], other: Mapping[str, int]) -> None:
    for k, v in other.items():
        if v > into.get(k, 0):
            into[k] = v


def pod_requests(spec: core_pb2.PodSpec, non_zero: bool = False) -> dict[str, int]:
    """What a pod needs, as Kubernetes counts it: max(sum(containers) + sidecars, each init
    container on top of the sidecars started before it), plus the pod overhead. `non_zero`
    gives LeastAllocated's view, where a container without a cpu/memory request counts
    100m/200Mi."""
    total: dict[str, int] = {}
    for c in spec.containers:
        _add(total, _container_requests(c, non_zero))
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for c in spec.init_containers:
        req = _container_requests(c, non_zero)
        if c.HasField("restart_policy") and c.restart_policy == "Always":
            _add(total, req)  # a sidecar keeps running beside the app containers
            _add(sidecars, req)
            _max_into(init_peak, sidecars)
        else:
            running = dict(sidecars)
            _add(running, req)
            _max_into(init_peak, running)
    _max_into(total, init_peak)
    _add(total, resource_list(spec.overhead))
    return total


def normalized_image_name(name: str) -> str:
    """"busybox" -> "busybox:latest", as the kubelet reports image names."""
    return name if name.rfind(":") > name.rfind("/") else name + ":latest"


# --- affinity terms -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AffinityTerm:
    """A parsed PodAffinityTerm: which pods (namespaces x selector) it means, by topology key."""

    namespaces: frozenset[str]
    selector: LabelSelector
    topology_key: str
    namespace_selector: LabelSelector

    def matches(self, pod: PodInfo, ns_labels: Mapping[str, str]) -> bool:
        if pod.namespace in self.namespaces or self.namespace_selector.matches(ns_labels):
            return self.selector.matches(pod.labels)
        return False


def _affinity_term(term: core_pb2.PodAffinityTerm, namespace: str,
                   labels: Mapping[str, str]) -> AffinityTerm:
    try:
        selector = from_label_selector_proto(
            term.label_selector if term.HasField("label_selector") else None)
        ns_selector = from_label_selector_proto(
            term.namespace_selector if term.HasField("namespace_selector") else None)
    except SelectorError:
        selector = ns_selector = LabelSelector.nothing()  # invalid: the term selects no pod
    if term.HasField("label_selector") and not selector.matches_nothing:
        # matchLabelKeys / mismatchLabelKeys add the owning pod's own label values.
        extra = [Requirement(k, "in", (labels[k],)) for k in term.match_label_keys if k in labels]
        extra += [Requirement(k, "notin", (labels[k],))
                  for k in term.mismatch_label_keys if k in labels]
        if extra:
            selector = LabelSelector(selector.requirements + tuple(extra))
    namespaces = frozenset(term.namespaces)
    if not namespaces and not term.HasField("namespace_selector"):
        namespaces = frozenset({namespace})
    return AffinityTerm(namespaces, selector, term.topology_key, ns_selector)


# --- pods ---------------------------------------------------------------------------------

class PodInfo:
    """A pod and the facts every plugin reads, computed once. `key` is namespace/name."""

    __slots__ = ("pod", "key", "namespace", "name", "uid", "labels", "priority", "node_name",
                 "requests", "req_cpu", "req_mem", "req_eph", "req_scalars", "nz_cpu",
                 "nz_mem", "host_ports", "images", "tolerations", "owner_uid",
                 "required_affinity", "required_anti_affinity", "preferred_affinity",
                 "preferred_anti_affinity", "plugin_cache")

    def __init__(self, pod: core_pb2.Pod) -> None:
        meta, spec = pod.metadata, pod.spec
        self.pod = pod
        self.namespace = meta.namespace or "default"
        self.name = meta.name
        self.key = f"{self.namespace}/{meta.name}"
        self.uid = meta.uid
        self.labels: dict[str, str] = dict(meta.labels)
        self.priority = spec.priority if spec.HasField("priority") else 0
        self.node_name = spec.node_name
        self.requests = pod_requests(spec)
        self.req_cpu = self.requests.get("cpu", 0)
        self.req_mem = self.requests.get("memory", 0)
        self.req_eph = self.requests.get("ephemeral-storage", 0)
        self.req_scalars = {k: v for k, v in self.requests.items()
                            if k not in _FIXED_RESOURCES and v}
        non_zero = pod_requests(spec, non_zero=True)
        self.nz_cpu = non_zero.get("cpu", 0)
        self.nz_mem = non_zero.get("memory", 0)
        self.host_ports = tuple((p.host_ip or "0.0.0.0", p.protocol or "TCP", p.host_port)
                                for c in spec.containers for p in c.ports if p.host_port > 0)
        self.images = tuple(normalized_image_name(c.image)
                            for c in (*spec.init_containers, *spec.containers) if c.image)
        self.tolerations = tuple(spec.tolerations)
        self.owner_uid = next((r.uid for r in meta.owner_references
                               if r.HasField("controller") and r.controller), "")
        aff = spec.affinity
        pa, paa = aff.pod_affinity, aff.pod_anti_affinity
        ns, lab = self.namespace, self.labels
        req = pa.required_during_scheduling_ignored_during_execution
        anti = paa.required_during_scheduling_ignored_during_execution
        self.required_affinity = tuple(_affinity_term(t, ns, lab) for t in req)
        self.required_anti_affinity = tuple(_affinity_term(t, ns, lab) for t in anti)
        self.preferred_affinity = tuple(
            (w.weight, _affinity_term(w.pod_affinity_term, ns, lab))
            for w in pa.preferred_during_scheduling_ignored_during_execution if w.weight)
        self.preferred_anti_affinity = tuple(
            (w.weight, _affinity_term(w.pod_affinity_term, ns, lab))
            for w in paa.preferred_during_scheduling_ignored_during_execution if w.weight)
        self.plugin_cache: dict[str, Any] = {}

    @property
    def has_affinity(self) -> bool:
        """Any pod (anti-)affinity term at all: such pods matter to others' scoring."""
        return bool(self.required_affinity or self.required_anti_affinity
                    or self.preferred_affinity or self.preferred_anti_affinity)

    def on_node(self, node_name: str) -> PodInfo:
        """A copy placed on node_name (what the cache assumes after a bind). Only `node_name`
        differs: `pod` stays the object as it was scheduled, so this costs no re-parsing."""
        copy = PodInfo.__new__(PodInfo)
        for slot in PodInfo.__slots__:
            setattr(copy, slot, getattr(self, slot))
        copy.node_name = node_name
        return copy

    def __repr__(self) -> str:
        return f"PodInfo({self.key!r})"


# --- nodes --------------------------------------------------------------------------------

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"


def zone_key(labels: Mapping[str, str]) -> str:
    """The node's failure domain, region and zone together ("" without a zone label)."""
    zone = labels.get(ZONE_LABEL, "")
    return f"{labels.get(REGION_LABEL, '')}:\x00:{zone}" if zone else ""


def _is_ready(node: core_pb2.Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


class NodeInfo:
    """A node, the pods on it and their sums. `node` is None for a placeholder that holds pods
    whose node the cache has not seen (yet, or any more); snapshots leave placeholders out."""

    __slots__ = ("node", "name", "labels", "taints", "hard_taints", "prefer_taints",
                 "unschedulable", "ready", "zone", "alloc_cpu", "alloc_mem", "alloc_eph", "alloc_pods",
                 "alloc_scalars", "images", "pods", "req_cpu", "req_mem", "req_eph",
                 "req_scalars", "nz_cpu", "nz_mem", "used_ports", "affinity_pods",
                 "anti_affinity_pods", "owner_counts", "epoch")

    def __init__(self, node: core_pb2.Node | None = None, name: str = "") -> None:
        self.pods: dict[str, PodInfo] = {}
        self.req_cpu = self.req_mem = self.req_eph = self.nz_cpu = self.nz_mem = 0
        self.req_scalars: dict[str, int] = {}
        self.used_ports: dict[tuple[str, int], dict[str, int]] = {}
        self.affinity_pods: list[PodInfo] = []
        self.anti_affinity_pods: list[PodInfo] = []
        self.owner_counts: dict[str, int] = {}
        self.epoch = 0  # the cache's copy-on-write marker
        self.name = name
        self.set_node(node)

    def set_node(self, node: core_pb2.Node | None) -> None:
        self.node = node
        if node is None:
            self.labels: dict[str, str] = {}
            self.taints: tuple[core_pb2.Taint, ...] = ()
            self.unschedulable = self.ready = False
            self.zone = ""
            alloc: dict[str, int] = {}
            self.images: dict[str, int] = {}
        else:
            self.name = node.metadata.name
            self.labels = dict(node.metadata.labels)
            self.taints = tuple(node.spec.taints)
            self.unschedulable = node.spec.unschedulable
            self.ready = _is_ready(node)
            self.zone = zone_key(self.labels)
            # Hollow or freshly registered nodes may report capacity only.
            alloc = resource_list(node.status.allocatable or node.status.capacity)
            self.images = {normalized_image_name(n): img.size_bytes
                           for img in node.status.images for n in img.names}
        self.hard_taints = tuple(t for t in self.taints if t.effect in ("NoSchedule", "NoExecute"))
        self.prefer_taints = tuple(t for t in self.taints if t.effect == "PreferNoSchedule")
        self.alloc_cpu = alloc.get("cpu", 0)
        self.alloc_mem = alloc.get("memory", 0)
        self.alloc_eph = alloc.get("ephemeral-storage", 0)
        self.alloc_pods = alloc.get("pods", 0)
        self.alloc_scalars = {k: v for k, v in alloc.items() if k not in _FIXED_RESOURCES}

    def add_pod(self, pod: PodInfo) -> None:
        self._account(pod, 1)
        self.pods[pod.key] = pod

    def remove_pod(self, key: str) -> PodInfo | None:
        pod = self.pods.pop(key, None)
        if pod is not None:
            self._account(pod, -1)
        return pod

    def _account(self, pod: PodInfo, sign: int) -> None:
        self.req_cpu += sign * pod.req_cpu
        self.req_mem += sign * pod.req_mem
        self.req_eph += sign * pod.req_eph
        self.nz_cpu += sign * pod.nz_cpu
        self.nz_mem += sign * pod.nz_mem
        for name, amount in pod.req_scalars.items():
            self.req_scalars[name] = self.req_scalars.get(name, 0) + sign * amount
        for ip, proto, port in pod.host_ports:
            ips = self.used_ports.setdefault((proto, port), {})
            ips[ip] = ips.get(ip, 0) + sign
            if ips[ip] <= 0:
                del ips[ip]
                if not ips:
                    del self.used_ports[(proto, port)]
        if pod.owner_uid:
            count = self.owner_counts.get(pod.owner_uid, 0) + sign
            if count > 0:
                self.owner_counts[pod.owner_uid] = count
            else:
                self.owner_counts.pop(pod.owner_uid, None)
        if pod.has_affinity:
            self._track(self.affinity_pods, pod, sign)
        if pod.required_anti_affinity:
            self._track(self.anti_affinity_pods, pod, sign)

    @staticmethod
    def _track(pods: list[PodInfo], pod: PodInfo, sign: int) -> None:
        if sign > 0:
            pods.append(pod)
        else:
            pods[:] = [p for p in pods if p.key != pod.key]

    def clone(self) -> NodeInfo:
        """A copy that can be changed without touching this one (the node proto is shared)."""
        c = NodeInfo.__new__(NodeInfo)
        for slot in NodeInfo.__slots__:
            setattr(c, slot, getattr(self, slot))
        c.pods = dict(self.pods)
        c.req_scalars = dict(self.req_scalars)
        c.used_ports = {k: dict(v) for k, v in self.used_ports.items()}
        c.affinity_pods = list(self.affinity_pods)
        c.anti_affinity_pods = list(self.anti_affinity_pods)
        c.owner_counts = dict(self.owner_counts)
        return c

    def __repr__(self) -> str:
        return f"NodeInfo({self.name!r}, pods={len(self.pods)})"


# --- snapshot -----------------------------------------------------------------------------

class Snapshot:
    """What one scheduling cycle sees: the nodes (in a stable order) with their pods, how many
    nodes hold each image (ImageLocality's spread) and namespaces' labels (for affinity
    terms' namespaceSelector). Immutable by convention."""

    __slots__ = ("nodes", "image_nodes", "namespace_labels", "_by_name", "_affinity",
                 "_anti_affinity")

    def __init__(self, nodes: Sequence[NodeInfo], image_nodes: Mapping[str, int] | None = None,
                 namespace_labels: Mapping[str, Mapping[str, str]] | None = None, *,
                 affinity_nodes: list[NodeInfo] | None = None,
                 anti_affinity_nodes: list[NodeInfo] | None = None) -> None:
        """`affinity_nodes`/`anti_affinity_nodes`, when the caller knows them (the cache knows
        when there are none), spare a scan of every node."""
        self.nodes = nodes
        if image_nodes is None:
            counts: dict[str, int] = {}
            for ni in nodes:
                for image in ni.images:
                    counts[image] = counts.get(image, 0) + 1
            image_nodes = counts
        self.image_nodes = image_nodes
        self.namespace_labels: Mapping[str, Mapping[str, str]] = namespace_labels or {}
        self._by_name: dict[str, NodeInfo] | None = None
        self._affinity = affinity_nodes
        self._anti_affinity = anti_affinity_nodes

    @classmethod
    def from_objects(cls, nodes: Iterable[core_pb2.Node], pods: Iterable[core_pb2.Pod] = (),
                     namespace_labels: Mapping[str, Mapping[str, str]] | None = None) -> Snapshot:
        """A snapshot straight from API objects (tests, benchmarks); pods on unknown nodes and
        pods without spec.nodeName are left out."""
        infos = {n.metadata.name: NodeInfo(n) for n in nodes}
        for pod in pods:
            ni = infos.get(pod.spec.node_name)
            if ni is not None:
                ni.add_pod(PodInfo(pod))
        return cls(list(infos.values()), namespace_labels=namespace_labels)

    def get(self, name: str) -> NodeInfo | None:
        if self._by_name is None:
            self._by_name = {ni.name: ni for ni in self.nodes}
        return self._by_name.get(name)

    @property
    def with_affinity_pods(self) -> list[NodeInfo]:
        """Nodes running a pod that has any pod (anti-)affinity term."""
        if self._affinity is None:
            self._affinity = [ni for ni in self.nodes if ni.affinity_pods]
        return self._affinity

    @property
    def with_required_anti_affinity_pods(self) -> list[NodeInfo]:
        if self._anti_affinity is None:
            self._anti_affinity = [ni for ni in self.nodes if ni.anti_affinity_pods]
        return self._anti_affinity

    def ns_labels(self, namespace: str) -> Mapping[str, str]:
        return self.namespace_labels.get(namespace, {})

    def replacing(self, node: NodeInfo) -> Snapshot:
        """A copy with the node of the same name swapped for `node`."""
        nodes = [node if ni.name == node.name else ni for ni in self.nodes]
        return Snapshot(nodes, self.image_nodes, self.namespace_labels)


# --- plugins ------------------------------------------------------------------------------

CycleState = dict[str, Any]  # per-cycle data a plugin's pre-step leaves for its later steps


class Plugin(Protocol):
    name: str


class PreFilterPlugin(Plugin, Protocol):
    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status:
        """SUCCESS, SKIP (do not call filter for this pod) or a failure for every node."""
        ...


class FilterPlugin(Plugin, Protocol):
    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status: ...


class BatchFilterPlugin(Plugin, Protocol):
    def filter_batch(self, state: CycleState, pod: PodInfo,
                     nodes: Sequence[NodeInfo]) -> list[tuple[int, Status]]:
        """The failures among `nodes` as (index, status): the same answers as `filter` node
        by node, in one pass (the algorithm's fast path for cheap per-node checks)."""
        ...


class PreScorePlugin(Plugin, Protocol):
    def pre_score(self, state: CycleState, pod: PodInfo, snapshot: Snapshot,
                  nodes: Sequence[NodeInfo]) -> Status:
        """SUCCESS, or SKIP: this plugin would give every node the same score."""
        ...


class ScorePlugin(Plugin, Protocol):
    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        """One raw score per node, in order."""
        ...


class NormalizePlugin(Plugin, Protocol):
    def normalize(self, state: CycleState, nodes: Sequence[NodeInfo],
                  scores: list[int]) -> list[int]:
        """Raw scores (one per node, in order) mapped to 0..MAX_NODE_SCORE."""
        ...


def default_normalize(scores: list[int], reverse: bool = False) -> list[int]:
    """Kubernetes' DefaultNormalizeScore: scale so the highest is 100 (reverse: 100 - that);
    all zero stays zero (reverse: all 100)."""
    top = max(scores, default=0)
    if top <= 0:
        return [MAX_NODE_SCORE] * len(scores) if reverse else [0] * len(scores)
    if reverse:
        return [MAX_NODE_SCORE - MAX_NODE_SCORE * s // top for s in scores]
    return [MAX_NODE_SCORE * s // top for s in scores]


# --- configuration ------------------------------------------------------------------------

DEFAULT_WEIGHTS: Mapping[str, int] = {
    "TaintToleration": 3, "NodeAffinity": 2, "InterPodAffinity": 2,
    "NodeResourcesLeastAllocated": 1, "NodeResourcesBalancedAllocation": 1, "ImageLocality": 1,
    "SelectorSpread": 1, "PodCount": 1,
}
# Kubernetes scores LeastAllocated as NodeResourcesFit's scoring strategy.
_ALIASES = {"NodeResourcesFit": "NodeResourcesLeastAllocated"}


class ConfigError(ValueError):
    """A scheduler configuration that cannot be used; the message names the field."""


@dataclass(frozen=True)
class SchedulerConfig:
    """Score weights by plugin name (0 disables a score) and percentageOfNodesToScore (0 means
    Kubernetes' adaptive default)."""

    weights: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    percentage_of_nodes_to_score: int = 0
    scheduler_name: str = DEFAULT_SCHEDULER_NAME


def _weight(name: object, value: object, where: str) -> tuple[str, int]:
    canonical = _ALIASES.get(str(name), str(name))
    if canonical not in DEFAULT_WEIGHTS:
        raise ConfigError(f"{where}: unknown score plugin {name!r} "
                          f"(known: {', '.join(sorted(DEFAULT_WEIGHTS))})")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
        raise ConfigError(f"{where}: weight of {name} must be an integer 0..100, got {value!r}")
    return canonical, value


def parse_config(data: Mapping[str, Any] | None) -> SchedulerConfig:
    """skiff's short form `{weights: {Name: w}, percentageOfNodesToScore: p}` or a
    KubeSchedulerConfiguration (first profile's plugins.score enabled/disabled)."""
    data = data or {}
    if not isinstance(data, Mapping):
        raise ConfigError("scheduler config: expected a mapping at the top level")
    weights = dict(DEFAULT_WEIGHTS)
    name = DEFAULT_SCHEDULER_NAME
    if data.get("kind") == "KubeSchedulerConfiguration":
        profiles = data.get("profiles") or [{}]
        profile = profiles[0] if isinstance(profiles, list) and profiles else {}
        name = str(profile.get("schedulerName", name))
        score = ((profile.get("plugins") or {}).get("score") or {})
        for i, p in enumerate(score.get("disabled") or []):
            if p.get("name") == "*":
                weights = {k: 0 for k in weights}
            else:
                weights[_weight(p.get("name"), 0, f"profiles[0].plugins.score.disabled[{i}]")[0]] = 0
        for i, p in enumerate(score.get("enabled") or []):
            k, w = _weight(p.get("name"), p.get("weight", 1),
                           f"profiles[0].plugins.score.enabled[{i}]")
            weights[k] = w
    else:
        for k, v in (data.get("weights") or {}).items():
            key, w = _weight(k, v, f"weights.{k}")
            weights[key] = w
        name = str(data.get("schedulerName", name))
    pct = data.get("percentageOfNodesToScore", 0)
    if not isinstance(pct, int) or not 0 <= pct <= 100:
        raise ConfigError(f"percentageOfNodesToScore: must be an integer 0..100, got {pct!r}")
    return SchedulerConfig(weights, pct, name)


def load_config(path: str | None) -> SchedulerConfig:
    """The configuration in a YAML file; no path gives the defaults."""
    if not path:
        return SchedulerConfig()
    try:
        with open(path, encoding="utf-8") as f:
            return parse_config(yaml.safe_load(f))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"scheduler config {path}: {err}") from None
