"""How `skiff get` prints objects: kubectl's table columns per kind, its AGE, its alignment.

Pure functions of the objects and `now` (seconds since the epoch); nothing here does I/O.

- `format_age(seconds)` is kubectl's HumanDuration: about two significant figures
  (`5s`, `119s`, `3m2s`, `15m`, `4h`, `4h30m`, `20h`, `2d`, `2d5h`, `30d`, `2y10d`).
- `TABLES` maps a kind to its columns (each marked wide or not, as kubectl's `-o wide` adds
  Priority-1 columns) and a row function; a kind without an entry gets NAME and AGE.
- `table_rows(kind, objects, now, options)` gives the header and one row of cells per object,
  the header first; NAMESPACE comes first with `-A` (namespaced kinds only), LABELS last with
  `--show-labels`, and `kind.group/name` names when several kinds are printed together.
- `tabwrite(lines, minwidth, padding)` aligns tab-separated cells the way Go's text/tabwriter
  (which kubectl uses) does: a column's width holds for a block of consecutive lines that have
  a cell in that column, text after a line's last tab is never padded. Tables use minwidth 6 and
  padding 3 (kubectl's `get`); descriptions minwidth 0 and padding 2 (kubectl's `describe`).
Invariant: every row has exactly as many cells as the header.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Sequence

from google.protobuf.message import Message

from controlplane.client import selectors
from controlplane.client.scheme import Kind
from controlplane.client.timeutil import parse_time

TABLE_MINWIDTH, TABLE_PADDING = 6, 3
NONE = "<none>"


# --- time ----------------------------------------------------------------------------------

def format_age(seconds: float) -> str:
    """kubectl's HumanDuration of a duration in seconds."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"  # a clock that far behind the server's is worth showing
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def age(timestamp: str, now: float) -> str:
    """The age of an RFC 3339 timestamp, "<unknown>" when it is unset or unreadable."""
    if not timestamp:
        return "<unknown>"
    try:
        return format_age(now - parse_time(timestamp))
    except ValueError:
        return "<unknown>"


def format_timestamp(timestamp: str) -> str:
    """An RFC 3339 timestamp in local time as kubectl describe shows it (RFC 1123 with offset)."""
    try:
        moment = datetime.fromtimestamp(parse_time(timestamp)).astimezone()
    except ValueError:
        return timestamp
    return moment.strftime("%a, %d %b %Y %H:%M:%S %z")


# --- cell helpers --------------------------------------------------------------------------

def format_labels(labels: Mapping[str, str]) -> str:
    """k=v pairs sorted by key, or <none> (kubectl's labels.FormatLabels)."""
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels)) or NONE


def format_selector(selector: Message | None) -> str:
    """A LabelSelector message as selector text, or <none>."""
    text = str(selectors.from_label_selector_proto(selector))  # type: ignore[arg-type]
    return text if text and text != "<nothing>" else NONE


def _containers(template_spec: Any) -> tuple[str, str]:
    names = ",".join(c.name for c in template_spec.containers)
    images = ",".join(c.image for c in template_spec.containers)
    return names, images


def _first_ip(pod: Any) -> str:
    if pod.status.pod_ips:
        return str(pod.status.pod_ips[0].ip) or NONE
    return str(pod.status.pod_ip) or NONE


def int_or_string(value: Any) -> str:
    which = value.WhichOneof("value")
    return "" if which is None else str(getattr(value, which))


# --- rows per kind -------------------------------------------------------------------------

def pod_summary(pod: Any, now: float) -> tuple[str, str, str]:
    """(READY, STATUS, RESTARTS) as kubectl computes them for a pod."""
    reason, restarts, last_restart = _init_progress(pod)
    ready = 0
    if reason is None:
        reason = pod.status.reason or pod.status.phase
        restarts, has_running = 0, False
        for cs in reversed(pod.status.container_statuses):
            restarts += cs.restart_count
            last_restart = max(last_restart, _finished_at(cs))
            state = cs.state
            if state.HasField("waiting") and state.waiting.reason:
                reason = state.waiting.reason
            elif state.HasField("terminated"):
                reason = _terminated_reason(state.terminated)
            elif cs.ready and state.HasField("running"):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            ready_cond = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
            reason = "Running" if ready_cond else "NotReady"
    if pod.metadata.deletion_timestamp:
        reason = "Unknown" if pod.status.reason == "NodeLost" else "Terminating"
    restart_text = f"{restarts} ({format_age(now - last_restart)} ago)" if last_restart else str(restarts)
    return f"{ready}/{len(pod.spec.containers)}", reason, restart_text


def _init_progress(pod: Any) -> tuple[str | None, int, float]:
    """(Init:... status while an init container has not succeeded, else None; restarts of init
    containers; when one last finished)."""
    restarts, last_restart = 0, 0.0
    for i, cs in enumerate(pod.status.init_container_statuses):
        restarts += cs.restart_count
        last_restart = max(last_restart, _finished_at(cs))
        state = cs.state
        if state.HasField("terminated") and state.terminated.exit_code == 0:
            continue
        if state.HasField("terminated"):
            return "Init:" + _terminated_reason(state.terminated), restarts, last_restart
        if state.HasField("waiting") and state.waiting.reason and state.waiting.reason != "PodInitializing":
            return "Init:" + state.waiting.reason, restarts, last_restart
        return f"Init:{i}/{len(pod.spec.init_containers)}", restarts, last_restart
    return None, restarts, last_restart


def _terminated_reason(t: Any) -> str:
    return str(t.reason) or (f"Signal:{t.signal}" if t.signal else f"ExitCode:{t.exit_code}")


def _finished_at(cs: Any) -> float:
    last = cs.last_state
    if last.HasField("terminated") and last.terminated.finished_at:
        try:
            return parse_time(last.terminated.finished_at)
        except ValueError:
            return 0.0
    return 0.0


def _pod(pod: Any, now: float) -> list[str]:
    ready, status, restarts = pod_summary(pod, now)
    gates = NONE
    if pod.spec.readiness_gates:
        true = {c.type for c in pod.status.conditions if c.status == "True"}
        passed = sum(1 for g in pod.spec.readiness_gates if g.condition_type in true)
        gates = f"{passed}/{len(pod.spec.readiness_gates)}"
    return [pod.metadata.name, ready, status, restarts, age(pod.metadata.creation_timestamp, now),
            _first_ip(pod), pod.spec.node_name or NONE, pod.status.nominated_node_name or NONE, gates]


def _replicas(spec: Any) -> int:
    return int(spec.replicas) if spec.HasField("replicas") else 1


def _deployment(d: Any, now: float) -> list[str]:
    names, images = _containers(d.spec.template.spec)
    return [d.metadata.name, f"{d.status.ready_replicas}/{_replicas(d.spec)}", str(d.status.updated_replicas),
            str(d.status.available_replicas), age(d.metadata.creation_timestamp, now), names, images,
            format_selector(d.spec.selector if d.spec.HasField("selector") else None)]


def _replica_set(rs: Any, now: float) -> list[str]:
    names, images = _containers(rs.spec.template.spec)
    return [rs.metadata.name, str(_replicas(rs.spec)), str(rs.status.replicas), str(rs.status.ready_replicas),
            age(rs.metadata.creation_timestamp, now), names, images,
            format_selector(rs.spec.selector if rs.spec.HasField("selector") else None)]


def _replication_controller(rc: Any, now: float) -> list[str]:
    names, images = _containers(rc.spec.template.spec)
    return [rc.metadata.name, str(_replicas(rc.spec)), str(rc.status.replicas), str(rc.status.ready_replicas),
            age(rc.metadata.creation_timestamp, now), names, images, format_labels(rc.spec.selector)]


def _daemon_set(ds: Any, now: float) -> list[str]:
    names, images = _containers(ds.spec.template.spec)
    st = ds.status
    return [ds.metadata.name, str(st.desired_number_scheduled), str(st.current_number_scheduled),
            str(st.number_ready), str(st.updated_number_scheduled), str(st.number_available),
            format_labels(ds.spec.template.spec.node_selector), age(ds.metadata.creation_timestamp, now),
            names, images, format_selector(ds.spec.selector if ds.spec.HasField("selector") else None)]


def _stateful_set(ss: Any, now: float) -> list[str]:
    names, images = _containers(ss.spec.template.spec)
    return [ss.metadata.name, f"{ss.status.ready_replicas}/{_replicas(ss.spec)}",
            age(ss.metadata.creation_timestamp, now), names, images]


def service_ports(svc: Any) -> str:
    """80/TCP, 80:30080/TCP, ... (kubectl's makePortString), or <none>."""
    parts = []
    for p in svc.spec.ports:
        protocol = p.protocol or "TCP"
        parts.append(f"{p.port}:{p.node_port}/{protocol}" if p.node_port else f"{p.port}/{protocol}")
    return ",".join(parts) or NONE


def service_external_ip(svc: Any) -> str:
    """EXTERNAL-IP: external IPs, a load balancer's ingress (or <pending>), an external name.
    (kubectl also shortens long ingress lists outside -o wide; skiff has no load balancers.)"""
    spec = svc.spec
    kind = spec.type or "ClusterIP"
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(spec.external_ips) or NONE
    if kind == "ExternalName":
        return str(spec.external_name)
    if kind == "LoadBalancer":
        ips = [i.ip or i.hostname for i in svc.status.load_balancer.ingress if i.ip or i.hostname]
        return ",".join(ips + list(spec.external_ips)) or "<pending>"
    return "<unknown>"


def _service(svc: Any, now: float) -> list[str]:
    cluster_ip = svc.spec.cluster_ips[0] if svc.spec.cluster_ips else (svc.spec.cluster_ip or NONE)
    return [svc.metadata.name, svc.spec.type or "ClusterIP", cluster_ip, service_external_ip(svc),
            service_ports(svc), age(svc.metadata.creation_timestamp, now), format_labels(svc.spec.selector)]


def format_endpoints(ep: Any, limit: int = 3) -> str:
    """ip:port,... with at most `limit` shown and "+ N more...", or <none>."""
    shown: list[str] = []
    count = 0
    for subset in ep.subsets:
        pairs = ([f"{a.ip}:{p.port}" for p in subset.ports for a in subset.addresses]
                 if subset.ports else [a.ip for a in subset.addresses])
        for pair in pairs:
            if len(shown) < limit:
                shown.append(pair)
            count += 1
    if not ep.subsets or not shown:
        return NONE
    text = ",".join(shown)
    return f"{text} + {count - limit} more..." if count > limit else text


def _endpoints(ep: Any, now: float) -> list[str]:
    return [ep.metadata.name, format_endpoints(ep), age(ep.metadata.creation_timestamp, now)]


def node_status(node: Any) -> str:
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    status = ["Unknown"] if not ready else ["Ready" if ready[0].status == "True" else "NotReady"]
    if node.spec.unschedulable:
        status.append("SchedulingDisabled")
    return ",".join(status)


def node_roles(labels: Mapping[str, str]) -> str:
    prefix = "node-role.kubernetes.io/"
    roles = {k[len(prefix):] for k in labels if k.startswith(prefix) and k[len(prefix):]}
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    return ",".join(sorted(roles)) or NONE


def _node(node: Any, now: float) -> list[str]:
    info = node.status.node_info
    addresses = {a.type: a.address for a in reversed(node.status.addresses)}  # the first of a type wins
    return [node.metadata.name, node_status(node), node_roles(node.metadata.labels),
            age(node.metadata.creation_timestamp, now), info.kubelet_version,
            addresses.get("InternalIP", NONE), addresses.get("ExternalIP", NONE),
            info.os_image or "<unknown>", info.kernel_version or "<unknown>",
            info.container_runtime_version or "<unknown>"]


def event_times(ev: Any, now: float) -> tuple[str, str, int]:
    """(last seen, first seen, count) of an event as kubectl works them out."""
    first = age(ev.first_timestamp, now) if ev.first_timestamp else age(ev.event_time, now)
    last = age(ev.last_timestamp, now) if ev.last_timestamp else first
    count = ev.count
    if ev.HasField("series"):
        last, count = age(ev.series.last_observed_time, now), ev.series.count
    elif count == 0:
        count = 1  # events of the newer API do not count singletons
    return last, first, count


def event_time(ev: Any) -> float:
    """When an event last happened, for sorting (0 when unknown)."""
    for stamp in (ev.series.last_observed_time if ev.HasField("series") else "", ev.last_timestamp,
                  ev.event_time, ev.first_timestamp, ev.metadata.creation_timestamp):
        if stamp:
            try:
                return parse_time(stamp)
            except ValueError:
                continue
    return 0.0


def event_source(ev: Any) -> str:
    component = ev.source.component or ev.reporting_component
    host = ev.source.host or ev.reporting_instance
    return f"{component}, {host}" if host and component else (component or host)


def _event(ev: Any, now: float) -> list[str]:
    last, first, count = event_times(ev, now)
    obj = ev.involved_object
    target = f"{obj.kind.lower()}/{obj.name}" if obj.name else obj.kind.lower()
    return [last, ev.type, ev.reason, target, obj.field_path, event_source(ev), ev.message, first, str(count),
            ev.metadata.name]


def _namespace(ns: Any, now: float) -> list[str]:
    return [ns.metadata.name, ns.status.phase, age(ns.metadata.creation_timestamp, now)]


def _config_map(cm: Any, now: float) -> list[str]:
    return [cm.metadata.name, str(len(cm.data) + len(cm.binary_data)), age(cm.metadata.creation_timestamp, now)]


def _secret(s: Any, now: float) -> list[str]:
    return [s.metadata.name, s.type or "Opaque", str(len(s.data)), age(s.metadata.creation_timestamp, now)]


def _lease(lease: Any, now: float) -> list[str]:
    return [lease.metadata.name, lease.spec.holder_identity, age(lease.metadata.creation_timestamp, now)]


def _runtime_class(rc: Any, now: float) -> list[str]:
    return [rc.metadata.name, rc.handler, age(rc.metadata.creation_timestamp, now)]


def _generic(obj: Any, now: float) -> list[str]:
    return [obj.metadata.name, age(obj.metadata.creation_timestamp, now)]


# --- tables --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    header: str
    wide: bool = False  # shown only with -o wide (kubectl's Priority 1)


def _cols(normal: str, wide: str = "") -> tuple[Column, ...]:
    return (tuple(Column(h) for h in normal.split("|"))
            + tuple(Column(h, True) for h in wide.split("|") if h))


RowFn = Callable[[Any, float], list[str]]


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    row: RowFn
    name_column: int | None = 0  # which cell is the object's name (gets kind/ prefixes)


_TEMPLATE_WIDE = "CONTAINERS|IMAGES|SELECTOR"
TABLES: dict[str, Table] = {
    "Pod": Table(_cols("NAME|READY|STATUS|RESTARTS|AGE", "IP|NODE|NOMINATED NODE|READINESS GATES"), _pod),
    "Deployment": Table(_cols("NAME|READY|UP-TO-DATE|AVAILABLE|AGE", _TEMPLATE_WIDE), _deployment),
    "ReplicaSet": Table(_cols("NAME|DESIRED|CURRENT|READY|AGE", _TEMPLATE_WIDE), _replica_set),
    "ReplicationController": Table(_cols("NAME|DESIRED|CURRENT|READY|AGE", _TEMPLATE_WIDE),
                                   _replication_controller),
    "DaemonSet": Table(_cols("NAME|DESIRED|CURRENT|READY|UP-TO-DATE|AVAILABLE|NODE SELECTOR|AGE",
                             _TEMPLATE_WIDE), _daemon_set),
    "StatefulSet": Table(_cols("NAME|READY|AGE", "CONTAINERS|IMAGES"), _stateful_set),
    "Service": Table(_cols("NAME|TYPE|CLUSTER-IP|EXTERNAL-IP|PORT(S)|AGE", "SELECTOR"), _service),
    "Endpoints": Table(_cols("NAME|ENDPOINTS|AGE"), _endpoints),
    "Node": Table(_cols("NAME|STATUS|ROLES|AGE|VERSION",
                        "INTERNAL-IP|EXTERNAL-IP|OS-IMAGE|KERNEL-VERSION|CONTAINER-RUNTIME"), _node),
    "Namespace": Table(_cols("NAME|STATUS|AGE"), _namespace),
    "ConfigMap": Table(_cols("NAME|DATA|AGE"), _config_map),
    "Secret": Table(_cols("NAME|TYPE|DATA|AGE"), _secret),
    "Lease": Table(_cols("NAME|HOLDER|AGE"), _lease),
    "RuntimeClass": Table(_cols("NAME|HANDLER|AGE"), _runtime_class),
    # kubectl interleaves events' wide columns with the normal ones.
    "Event": Table((Column("LAST SEEN"), Column("TYPE"), Column("REASON"), Column("OBJECT"),
                    Column("SUBOBJECT", True), Column("SOURCE", True), Column("MESSAGE"),
                    Column("FIRST SEEN", True), Column("COUNT", True), Column("NAME", True)), _event, 9),
}
GENERIC = Table(_cols("NAME|AGE"), _generic)


@dataclass(frozen=True)
class TableOptions:
    wide: bool = False
    with_namespace: bool = False   # -A: NAMESPACE first (namespaced kinds only)
    with_kind: bool = False        # several kinds printed together: names as kind.group/name
    show_labels: bool = False
    headers: bool = True


def kind_ref(kind: Kind) -> str:
    """kind.group as kubectl names a kind in messages: pod, deployment.apps."""
    return f"{kind.kind.lower()}.{kind.group}" if kind.group else kind.kind.lower()


def object_ref(kind: Kind, name: str) -> str:
    """kind.group/name as kubectl names objects: pod/web, deployment.apps/web."""
    return f"{kind_ref(kind)}/{name}"


def table_rows(kind: Kind, objects: Iterable[Message], now: float, options: TableOptions) -> list[list[str]]:
    """The header (unless options.headers is false) and one row per object."""
    table = TABLES.get(kind.kind, GENERIC)
    keep = [i for i, c in enumerate(table.columns) if options.wide or not c.wide]
    with_ns = options.with_namespace and kind.namespaced
    rows: list[list[str]] = []
    if options.headers:
        header = [table.columns[i].header for i in keep]
        rows.append((["NAMESPACE"] if with_ns else []) + header + (["LABELS"] if options.show_labels else []))
    for obj in objects:
        full = [str(c) for c in table.row(obj, now)]
        if options.with_kind and table.name_column is not None:
            full[table.name_column] = object_ref(kind, full[table.name_column])
        cells = [full[i] for i in keep]
        meta = obj.metadata  # type: ignore[attr-defined]
        rows.append(([meta.namespace] if with_ns else []) + cells
                    + ([format_labels(meta.labels)] if options.show_labels else []))
    return rows


# --- alignment -----------------------------------------------------------------------------

def tabwrite(lines: Sequence[str], minwidth: int = TABLE_MINWIDTH, padding: int = TABLE_PADDING,
             widths: list[int] | None = None) -> str:
    """Align tab-separated cells as Go's text/tabwriter does (see the module docstring).
    `widths`, when given, are minimum widths per column that every line respects and that
    are raised to what these lines need (so `get -w` rows line up with the table above)."""
    cells = [line.split("\t") for line in lines]
    assigned: list[list[int]] = [[] for _ in cells]
    _format(cells, assigned, 0, 0, len(cells), minwidth, padding, widths)
    out = []
    for row, row_widths in zip(cells, assigned):
        padded = [cell.ljust(w) for cell, w in zip(row[:-1], row_widths)]
        out.append("".join(padded) + row[-1])
    return "\n".join(out) + ("\n" if out else "")


def _format(cells: list[list[str]], assigned: list[list[int]], column: int, start: int, end: int,
            minwidth: int, padding: int, floor: list[int] | None) -> None:
    line = start
    while line < end:
        if column >= len(cells[line]) - 1:
            line += 1
            continue
        block_end = line
        width = minwidth if floor is None or column >= len(floor) else max(minwidth, floor[column])
        while block_end < end and column < len(cells[block_end]) - 1:
            width = max(width, len(cells[block_end][column]) + padding)
            block_end += 1
        if floor is not None:
            if column < len(floor):
                floor[column] = width
            else:
                floor.append(width)
        for i in range(line, block_end):
            assigned[i].append(width)
        _format(cells, assigned, column + 1, line, block_end, minwidth, padding, floor)
        line = block_end


def render_table(rows: Sequence[Sequence[str]], widths: list[int] | None = None) -> str:
    """Rows of cells as kubectl prints a table."""
    return tabwrite(["\t".join(r) for r in rows], TABLE_MINWIDTH, TABLE_PADDING, widths)
