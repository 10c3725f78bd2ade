"""`skiff describe KIND [NAME...] [-n NS] [-l SEL]`: kubectl's describe.

Each object is read, what its description needs besides it is read (a Service's Endpoints, the
pods a ReplicaSet or Node runs, the events about it), and then a pure describer turns it all
into text: `describe_object(kind, obj, related, now) -> str`. Pods, Deployments, ReplicaSets,
Services, Nodes and Namespaces have their own describers; every other kind gets its metadata and
the YAML of its other fields.

Layout is kubectl's: `Key:<TAB>value` lines at two-space indentation levels, aligned by
printers.tabwrite (minwidth 0, padding 2) in blocks, timestamps in RFC 1123 local time, labels
and annotations one per line (the last-applied annotation left out), and last `Events:` as a
table (Type Reason Age From Message, oldest first) or `<none>`. Events are those listed with the
field selector involvedObject.name/namespace whose involvedObject kind matches and whose uid is
the object's (or unset). Objects are separated by a blank line. Without a NAME every object of
the kind (matching -l) is described.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import yaml
from google.protobuf.message import Message

from controlplane.client import api, codec, scheme
from controlplane.client.scheme import Kind
from deploy.cli.kubectl import printers
from deploy.cli.kubectl.apply_cmd import LAST_APPLIED
from deploy.cli.kubectl.common import (Session, add_connection_arguments, describe_error, kind_of,
                                       meta_of, run_session)
from deploy.cli.kubectl.get_cmd import list_all

NONE = "<none>"
PODS, EVENTS = scheme.by_resource("pods"), scheme.by_resource("events")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", metavar="KIND", help="pods, deploy, svc, nodes, ... (or KIND/NAME)")
    p.add_argument("names", nargs="*", metavar="NAME", help="objects to describe (default: all)")
    p.add_argument("-l", "--selector", default="", help="label selector, without NAME")
    add_connection_arguments(p)


def run(args: argparse.Namespace) -> int:
    kind_name, _, slash_name = args.kind.partition("/")
    kind = kind_of(kind_name)
    names = ([slash_name] if slash_name else []) + list(args.names)
    return run_session(args, lambda session: _describe(session, kind, names, args.selector))


async def _describe(session: Session, kind: Kind, names: list[str], selector: str) -> int:
    namespace = session.namespace_for(kind)
    failed = False
    objects: list[Message] = []
    if names:
        for name in names:
            try:
                objects.append(await session.client.get(kind, name, namespace))
            except api.NotFoundError as err:
                print(f"skiff: {describe_error(err)}", file=sys.stderr)
                failed = True
    else:
        objects, _ = await list_all(session.client, kind, namespace, selector)
        if not objects:
            print(f"No resources found in {namespace} namespace." if namespace else "No resources found",
                  file=sys.stderr)
    texts = []
    for obj in objects:
        related = await gather(session.client, kind, obj)
        texts.append(describe_object(kind, obj, related, time.time()))
    sys.stdout.write("\n\n".join(t.rstrip("\n") for t in texts) + ("\n" if texts else ""))
    return 1 if failed else 0


# --- what a description needs besides the object ------------------------------------------

@dataclass
class Related:
    events: list[Message] = field(default_factory=list)
    pods: list[Message] = field(default_factory=list)
    endpoints: Message | None = None


async def gather(client: api.ApiClient, kind: Kind, obj: Message) -> Related:
    meta = meta_of(obj)
    related = Related()
    try:
        if kind.kind == "Service":
            try:
                related.endpoints = await client.get("endpoints", meta.name, meta.namespace)
            except api.NotFoundError:
                pass
        elif kind.kind == "Node":
            related.pods, _ = await list_all(client, PODS, "", field_selector=f"spec.nodeName={meta.name}")
        elif kind.kind in ("ReplicaSet", "ReplicationController"):
            pods, _ = await list_all(client, PODS, meta.namespace)
            related.pods = [p for p in pods if any(o.uid == meta.uid for o in meta_of(p).owner_references)]
        related.events = await events_for(client, kind, obj)
    except api.ForbiddenError:
        pass  # a description without what we may not read is still worth showing
    return related


async def events_for(client: api.ApiClient, kind: Kind, obj: Message) -> list[Message]:
    meta = meta_of(obj)
    selector = f"involvedObject.name={meta.name},involvedObject.namespace={meta.namespace}"
    found, _ = await list_all(client, EVENTS, meta.namespace, field_selector=selector)
    return [e for e in found
            if e.involved_object.kind in ("", kind.kind)  # type: ignore[attr-defined]
            and e.involved_object.uid in ("", meta.uid)]  # type: ignore[attr-defined]


# --- writing -------------------------------------------------------------------------------

class Writer:
    """Lines of tab-separated cells at indentation levels, aligned like kubectl's describe."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, level: int, *cells: object) -> None:
        self.lines.append("  " * level + "\t".join(str(c) for c in cells))

    def kv(self, level: int, key: str, value: object) -> None:
        self.line(level, f"{key}:", value)

    def mapping(self, level: int, key: str, values: Mapping[str, str], sep: str = "=",
                skip: frozenset[str] = frozenset()) -> None:
        shown = [k for k in sorted(values) if k not in skip]
        if not shown:
            self.kv(level, key, NONE)
            return
        for i, k in enumerate(shown):
            self.line(level, f"{key}:" if i == 0 else "", f"{k}{sep}{values[k]}")

    def text(self) -> str:
        return printers.tabwrite(self.lines, minwidth=0, padding=2)


def _stamp(value: str) -> str:
    return printers.format_timestamp(value) if value else NONE


def write_meta(w: Writer, obj: Any, namespace: bool = True) -> None:
    m = obj.metadata
    w.kv(0, "Name", m.name)
    if namespace:
        w.kv(0, "Namespace", m.namespace)
    w.kv(0, "CreationTimestamp", _stamp(m.creation_timestamp))
    w.mapping(0, "Labels", m.labels)
    w.mapping(0, "Annotations", m.annotations, ": ", frozenset({LAST_APPLIED}))


def controlled_by(obj: Any) -> str | None:
    for ref in obj.metadata.owner_references:
        if ref.HasField("controller") and ref.controller:
            return f"{ref.kind}/{ref.name}"
    return None


def write_events(w: Writer, events: list[Any], now: float) -> None:
    if not events:
        w.kv(0, "Events", NONE)
        return
    w.line(0, "Events:")
    w.line(1, "Type", "Reason", "Age", "From", "Message")
    w.line(1, "----", "------", "----", "----", "-------")
    for ev in sorted(events, key=printers.event_time):
        last, first, count = printers.event_times(ev, now)
        when = f"{last} (x{count} over {first})" if count > 1 else last
        w.line(1, ev.type, ev.reason, when, printers.event_source(ev), " ".join(ev.message.split()))


def write_container(w: Writer, level: int, c: Any, status: Any | None) -> None:
    w.line(level, f"{c.name}:")
    inner = level + 1
    if status is not None:
        w.kv(inner, "Container ID", status.container_id)
    w.kv(inner, "Image", c.image)
    if status is not None:
        w.kv(inner, "Image ID", status.image_id)
    ports = [f"{p.container_port}/{p.protocol or 'TCP'}" for p in c.ports]
    w.kv(inner, "Port" if len(ports) < 2 else "Ports", ", ".join(ports) or NONE)
    host_ports = [f"{p.host_port}/{p.protocol or 'TCP'}" for p in c.ports]
    w.kv(inner, "Host Port" if len(host_ports) < 2 else "Host Ports", ", ".join(host_ports) or NONE)
    for title, items in (("Command", c.command), ("Args", c.args)):
        if items:
            w.line(inner, f"{title}:")
            for item in items:
                w.line(inner + 1, item)
    if status is not None:
        write_state(w, inner, "State", status.state)
        if status.last_state.ListFields():
            write_state(w, inner, "Last State", status.last_state)
        w.kv(inner, "Ready", "True" if status.ready else "False")
        w.kv(inner, "Restart Count", status.restart_count)
    for title, resources in (("Limits", c.resources.limits), ("Requests", c.resources.requests)):
        if resources:
            w.line(inner, f"{title}:")
            for name in sorted(resources):
                w.kv(inner + 1, name, resources[name])
    if c.env:
        w.line(inner, "Environment:")
        for env in c.env:
            w.kv(inner + 1, env.name, env.value if not env.HasField("value_from") else "<set from a source>")
    else:
        w.kv(inner, "Environment", NONE)
    mounts = [f"{m.mount_path} from {m.name} ({'ro' if m.read_only else 'rw'})" for m in c.volume_mounts]
    w.kv(inner, "Mounts", mounts[0] if len(mounts) == 1 else (NONE if not mounts else ""))
    if len(mounts) > 1:
        for mount in mounts:
            w.line(inner + 1, mount)


def write_state(w: Writer, level: int, title: str, state: Any) -> None:
    if state.HasField("running"):
        w.kv(level, title, "Running")
        w.kv(level + 1, "Started", _stamp(state.running.started_at))
    elif state.HasField("terminated"):
        t = state.terminated
        w.kv(level, title, "Terminated")
        w.kv(level + 1, "Reason", t.reason or NONE)
        if t.message:
            w.kv(level + 1, "Message", t.message)
        w.kv(level + 1, "Exit Code", t.exit_code)
        if t.signal:
            w.kv(level + 1, "Signal", t.signal)
        w.kv(level + 1, "Started", _stamp(t.started_at))
        w.kv(level + 1, "Finished", _stamp(t.finished_at))
    elif state.HasField("waiting"):
        w.kv(level, title, "Waiting")
        if state.waiting.reason:
            w.kv(level + 1, "Reason", state.waiting.reason)
    else:
        w.kv(level, title, "Waiting")


def write_pod_template(w: Writer, level: int, template: Any) -> None:
    w.line(level, "Pod Template:")
    w.mapping(level + 1, "Labels", template.metadata.labels)
    w.line(level + 1, "Containers:")
    for c in template.spec.containers:
        write_container(w, level + 2, c, None)
    write_volumes(w, level + 1, template.spec.volumes)


def write_volumes(w: Writer, level: int, volumes: Any) -> None:
    if not volumes:
        w.kv(level, "Volumes", NONE)
        return
    w.line(level, "Volumes:")
    for v in volumes:
        w.line(level + 1, f"{v.name}:")
        w.kv(level + 2, "Type", _volume_type(v))


def _volume_type(volume: Any) -> str:
    """The set source's name as kubectl shows it (empty_dir -> EmptyDir)."""
    names = [fd.name for fd, _ in volume.ListFields() if fd.name != "name"]
    return "".join(part.capitalize() for part in names[0].split("_")) if names else NONE


def write_conditions(w: Writer, conditions: Any, columns: tuple[str, ...]) -> None:
    if not conditions:
        return
    w.line(0, "Conditions:")
    w.line(1, *[c.replace("_", " ").title().replace(" ", "") for c in columns])
    w.line(1, *["-" * len(c.replace("_", "")) for c in columns])
    for cond in conditions:
        w.line(1, *[getattr(cond, c) or "" for c in columns])


# --- describers ----------------------------------------------------------------------------

def describe_pod(pod: Any, related: Related, now: float) -> Writer:
    w = Writer()
    m, spec, status = pod.metadata, pod.spec, pod.status
    w.kv(0, "Name", m.name)
    w.kv(0, "Namespace", m.namespace)
    if spec.HasField("priority"):
        w.kv(0, "Priority", spec.priority)
    if spec.HasField("runtime_class_name"):
        w.kv(0, "Runtime Class Name", spec.runtime_class_name)
    w.kv(0, "Service Account", spec.service_account_name or "default")
    w.kv(0, "Node", f"{spec.node_name}/{status.host_ip}" if spec.node_name and status.host_ip else spec.node_name or NONE)
    if status.start_time:
        w.kv(0, "Start Time", _stamp(status.start_time))
    w.mapping(0, "Labels", m.labels)
    w.mapping(0, "Annotations", m.annotations, ": ", frozenset({LAST_APPLIED}))
    write_pod_status(w, pod, now)
    if controlled_by(pod):
        w.kv(0, "Controlled By", controlled_by(pod))
    for title, containers, statuses in (("Init Containers", spec.init_containers, status.init_container_statuses),
                                        ("Containers", spec.containers, status.container_statuses)):
        if not containers and title == "Init Containers":
            continue
        w.line(0, f"{title}:")
        by_name = {s.name: s for s in statuses}
        for c in containers:
            write_container(w, 1, c, by_name.get(c.name))
    write_conditions(w, status.conditions, ("type", "status"))
    write_volumes(w, 0, spec.volumes)
    w.kv(0, "QoS Class", status.qos_class or NONE)
    w.mapping(0, "Node-Selectors", spec.node_selector)
    tolerations = [_toleration(t) for t in spec.tolerations]
    for i, text in enumerate(tolerations or [NONE]):
        w.line(0, "Tolerations:" if i == 0 else "", text)
    return w


def write_pod_status(w: Writer, pod: Any, now: float) -> None:
    """Status (or Terminating), Reason, Message, IP and IPs."""
    m, status = pod.metadata, pod.status
    if m.deletion_timestamp:
        w.kv(0, "Status", f"Terminating (lasts {printers.age(m.deletion_timestamp, now)})")
        w.kv(0, "Termination Grace Period", f"{m.deletion_grace_period_seconds}s")
    else:
        w.kv(0, "Status", status.phase or NONE)
    if status.reason:
        w.kv(0, "Reason", status.reason)
    if status.message:
        w.kv(0, "Message", status.message)
    ips = [i.ip for i in status.pod_ips] or ([status.pod_ip] if status.pod_ip else [])
    w.kv(0, "IP", ips[0] if ips else "")
    if ips:
        w.line(0, "IPs:")
        for ip in ips:
            w.kv(1, "IP", ip)
    else:
        w.kv(0, "IPs", NONE)


def _toleration(t: Any) -> str:
    text = t.key
    if t.value:
        text += f"={t.value}"
    if t.effect:
        text += f":{t.effect}"
    if t.operator == "Exists" and not t.value:
        text += " op=Exists"
    if t.HasField("toleration_seconds"):
        text += f" for {t.toleration_seconds}s"
    return text or "op=Exists"


def describe_deployment(d: Any, related: Related, now: float) -> Writer:
    w = Writer()
    write_meta(w, d)
    spec, st = d.spec, d.status
    w.kv(0, "Selector", printers.format_selector(spec.selector if spec.HasField("selector") else None))
    desired = spec.replicas if spec.HasField("replicas") else 1
    w.kv(0, "Replicas", f"{desired} desired | {st.updated_replicas} updated | {st.replicas} total | "
                        f"{st.available_replicas} available | {st.unavailable_replicas} unavailable")
    w.kv(0, "StrategyType", spec.strategy.type or "RollingUpdate")
    w.kv(0, "MinReadySeconds", spec.min_ready_seconds)
    if (spec.strategy.type or "RollingUpdate") == "RollingUpdate":
        ru = spec.strategy.rolling_update
        w.kv(0, "RollingUpdateStrategy", f"{printers.int_or_string(ru.max_unavailable) or '25%'} max unavailable, "
                                         f"{printers.int_or_string(ru.max_surge) or '25%'} max surge")
    write_pod_template(w, 0, spec.template)
    write_conditions(w, st.conditions, ("type", "status", "reason"))
    return w


def describe_replica_set(rs: Any, related: Related, now: float) -> Writer:
    w = Writer()
    write_meta(w, rs)
    spec, st = rs.spec, rs.status
    if rs.DESCRIPTOR.name == "ReplicationController":
        w.kv(0, "Selector", printers.format_labels(spec.selector))  # a plain map, not a LabelSelector
    else:
        w.kv(0, "Selector", printers.format_selector(spec.selector if spec.HasField("selector") else None))
    if controlled_by(rs):
        w.kv(0, "Controlled By", controlled_by(rs))
    desired = spec.replicas if spec.HasField("replicas") else 1
    w.kv(0, "Replicas", f"{st.replicas} current / {desired} desired")
    phases = [meta_phase(p) for p in related.pods]
    w.kv(0, "Pods Status", " / ".join(f"{phases.count(p)} {p}" for p in ("Running", "Waiting", "Succeeded", "Failed")))
    write_pod_template(w, 0, spec.template)
    write_conditions(w, st.conditions, ("type", "status", "reason"))
    return w


def meta_phase(pod: Any) -> str:
    phase = pod.status.phase
    return phase if phase in ("Running", "Succeeded", "Failed") else "Waiting"


def describe_service(svc: Any, related: Related, now: float) -> Writer:
    w = Writer()
    m, spec = svc.metadata, svc.spec
    w.kv(0, "Name", m.name)
    w.kv(0, "Namespace", m.namespace)
    w.mapping(0, "Labels", m.labels)
    w.mapping(0, "Annotations", m.annotations, ": ", frozenset({LAST_APPLIED}))
    w.kv(0, "Selector", printers.format_labels(spec.selector))
    w.kv(0, "Type", spec.type or "ClusterIP")
    if spec.HasField("ip_family_policy"):
        w.kv(0, "IP Family Policy", spec.ip_family_policy)
    if spec.ip_families:
        w.kv(0, "IP Families", ",".join(spec.ip_families))
    w.kv(0, "IP", spec.cluster_ip or NONE)
    w.kv(0, "IPs", ",".join(spec.cluster_ips) or NONE)
    if spec.external_ips:
        w.kv(0, "External IPs", ",".join(spec.external_ips))
    if spec.type == "ExternalName":
        w.kv(0, "External Name", spec.external_name)
    for p in spec.ports:
        protocol = p.protocol or "TCP"
        w.kv(0, "Port", f"{p.name or '<unset>'}  {p.port}/{protocol}")
        target = printers.int_or_string(p.target_port) or str(p.port)
        w.kv(0, "TargetPort", f"{target}/{protocol}")
        if p.node_port:
            w.kv(0, "NodePort", f"{p.name or '<unset>'}  {p.node_port}/{protocol}")
        w.kv(0, "Endpoints", printers.format_endpoints(related.endpoints) if related.endpoints else "")
    w.kv(0, "Session Affinity", spec.session_affinity or "None")
    return w


def describe_node(node: Any, related: Related, now: float) -> Writer:
    w = Writer()
    m, spec, st = node.metadata, node.spec, node.status
    w.kv(0, "Name", m.name)
    w.kv(0, "Roles", printers.node_roles(m.labels))
    w.mapping(0, "Labels", m.labels)
    w.mapping(0, "Annotations", m.annotations, ": ", frozenset({LAST_APPLIED}))
    w.kv(0, "CreationTimestamp", _stamp(m.creation_timestamp))
    taints = [f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}" for t in spec.taints]
    for i, text in enumerate(taints or [NONE]):
        w.line(0, "Taints:" if i == 0 else "", text)
    w.kv(0, "Unschedulable", "true" if spec.unschedulable else "false")
    write_node_conditions(w, st.conditions)
    w.line(0, "Addresses:")
    for a in st.addresses:
        w.kv(1, a.type, a.address)
    for title, resources in (("Capacity", st.capacity), ("Allocatable", st.allocatable)):
        w.line(0, f"{title}:")
        for name in sorted(resources):
            w.kv(1, name, resources[name])
    info = st.node_info
    w.line(0, "System Info:")
    for label, value in (("Machine ID", info.machine_id), ("Boot ID", info.boot_id),
                         ("Kernel Version", info.kernel_version), ("OS Image", info.os_image),
                         ("Operating System", info.operating_system), ("Architecture", info.architecture),
                         ("Container Runtime Version", info.container_runtime_version),
                         ("Kubelet Version", info.kubelet_version)):
        w.kv(1, label, value)
    w.kv(0, "PodCIDR", spec.pod_cidr or NONE)
    running = [p for p in related.pods if p.status.phase not in ("Succeeded", "Failed")]  # type: ignore[attr-defined]
    w.kv(0, "Non-terminated Pods", f"({len(running)} in total)")
    if running:
        w.line(1, "Namespace", "Name", "Age")
        w.line(1, "---------", "----", "---")
        for p in running:
            pm = meta_of(p)
            w.line(1, pm.namespace, pm.name, printers.age(pm.creation_timestamp, now))
    return w


def write_node_conditions(w: Writer, conditions: Any) -> None:
    if conditions:
        w.line(0, "Conditions:")
        w.line(1, "Type", "Status", "LastHeartbeatTime", "LastTransitionTime", "Reason", "Message")
        w.line(1, "----", "------", "-----------------", "------------------", "------", "-------")
        for c in conditions:
            w.line(1, c.type, c.status, _stamp(c.last_heartbeat_time), _stamp(c.last_transition_time),
                   c.reason, c.message)


def describe_namespace(ns: Any, related: Related, now: float) -> Writer:
    w = Writer()
    w.kv(0, "Name", ns.metadata.name)
    w.mapping(0, "Labels", ns.metadata.labels)
    w.mapping(0, "Annotations", ns.metadata.annotations, ": ", frozenset({LAST_APPLIED}))
    w.kv(0, "Status", ns.status.phase or NONE)
    return w


def describe_generic(obj: Any, related: Related, now: float) -> Writer:
    """Metadata, then every other top-level field as YAML under its capitalized name."""
    w = Writer()
    write_meta(w, obj, namespace=bool(obj.metadata.namespace))
    data = codec.encode(obj)
    for key, value in data.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        title = key[:1].upper() + key[1:]
        if not isinstance(value, (dict, list)):
            w.kv(0, title, value)
            continue
        w.line(0, f"{title}:")
        text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=1 << 16)
        for line in text.rstrip("\n").splitlines():
            w.lines.append("  " + line.replace("\t", " "))
    return w


DESCRIBERS: dict[str, Callable[[Any, Related, float], Writer]] = {
    "Pod": describe_pod,
    "Deployment": describe_deployment,
    "ReplicaSet": describe_replica_set,
    "ReplicationController": describe_replica_set,
    "Service": describe_service,
    "Node": describe_node,
    "Namespace": describe_namespace,
}


def describe_object(kind: Kind, obj: Message, related: Related, now: float) -> str:
    """The description of obj (pure: everything it shows is passed in)."""
    writer = DESCRIBERS.get(kind.kind, describe_generic)(obj, related, now)
    write_events(writer, related.events, now)
    return writer.text()
