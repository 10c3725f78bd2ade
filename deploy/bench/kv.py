"""`skiff bench kv`: throughput and latency of the key-value store, optionally next to etcd.

For each system it measures, under the same closed-loop load (see `loadgen`): put, linearizable
get and serializable get (N processes x K in flight, ops/s and p50/p99), then serial put and
serial get (1 process, 1 in flight: the latency of one request on an idle cluster). Optional
extras: `etcdctl check perf` against each system, and a failover run that kill -9s the leader
under a steady put load and reports how long writes stopped.

Systems are measured one after the other, never at once: a cluster the command starts runs only
while it is measured, so the two systems get the same machine. The load generator and the
servers still share the machine's cores; the output says so, and the ratios are the fair part.

Without --endpoints the command starts a 3-replica skiff store (kvstore.localcluster); with
--compare-etcd it starts a 3-member etcd (etcd_cluster). Data lives in a temporary directory
unless --data-dir is given.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from deploy.bench.common import cpu_seconds, data_root, machine_info, server_pids
from deploy.cli.main import CommandError

ROWS = (  # (key, label)
    ("put", "put"),
    ("get", "linearizable get"),
    ("sget", "serializable get"),
    ("serial_put", "serial put (1x1)"),
    ("serial_get", "serial get (1x1)"),
)
SHARED_CPU_NOTE = ("the load generator and every server process share this machine's {n} CPU(s): "
                   "absolute figures are lower bounds for both systems, the ratios are what compare")


class Cluster(Protocol):
    """What the bench needs from a cluster it starts (LocalCluster and EtcdCluster both fit)."""

    @property
    def endpoints(self) -> list[str]: ...
    def start(self, timeout: float = 30.0) -> None: ...
    def stop(self) -> None: ...
    def leader_index(self) -> int | None: ...
    def kill(self, index: int, sig: int = signal.SIGKILL) -> None: ...


# The no-op Python gRPC servers of --calibrate (see deploy/bench/noop_server.py).
CALIBRATION = "grpc-noop"

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's flags; defaults are sized for a 2-core machine."""
    parser.add_argument("--endpoints", help="H:P,... of a running skiff store (default: start a local 3-replica one)")
    parser.add_argument("--label", default="skiff", help="name of the measured system in the output (default: skiff)")
    parser.add_argument("--compare-etcd", action="store_true", help="also start a 3-member etcd and run the same load")
    parser.add_argument("--etcd-only", action="store_true", help="measure only the etcd this command starts (a baseline)")
    parser.add_argument("--failover", action="store_true", help="kill -9 the leader under put load; report the write outage")
    parser.add_argument("--calibrate", action="store_true",
                        help="also measure no-op Python gRPC servers under the same load: the ceiling for any Python server here")
    parser.add_argument("--check-perf", action="store_true", help="also run `etcdctl check perf` against each system (~60 s each)")
    parser.add_argument("--check-perf-load", default="l", choices=("s", "m", "l", "xl"), help="check perf load (default l)")
    parser.add_argument("--clients", type=int, default=3, help="client processes (default 3)")
    parser.add_argument("--inflight", type=int, default=64, help="requests in flight per process (default 64)")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per loaded row (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each measurement (default 1)")
    parser.add_argument("--serial-duration", type=float, default=3.0, help="seconds per serial row (default 3)")
    parser.add_argument("--key-space", type=int, default=1000, help="distinct keys written and read (default 1000)")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request deadline in seconds (default 5)")
    parser.add_argument("--failover-duration", type=float, default=8.0, help="seconds of put load in the failover run")
    parser.add_argument("--failover-inflight", type=int, default=16, help="in flight per process during failover (default 16)")
    parser.add_argument("--failover-timeout", type=float, default=0.5,
                        help="per-request deadline during failover (default 0.5 s; it bounds how finely the outage is seen)")
    parser.add_argument("--data-dir", type=Path, help="where started clusters keep their data (kept; default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure, the parameters and machine info here")


def run(args: argparse.Namespace) -> int:
    """Measure each system in turn, print the table, write the JSON; exit status 0."""
    _validate(args)
    from deploy.bench import loadgen  # heavy imports (grpc) only when the command runs

    loadavg_before = os.getloadavg()
    systems: dict[str, dict[str, Any]] = {}
    with data_root(args.data_dir) as root:
        if not args.etcd_only:
            if args.endpoints:
                endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
                systems[args.label] = _bench_system(args, loadgen, args.label, None, endpoints)
            else:
                systems[args.label] = _bench_system(args, loadgen, args.label, _skiff_factory(root / "skiff"), None)
        if args.compare_etcd or args.etcd_only:
            systems["etcd"] = _bench_system(args, loadgen, "etcd", _etcd_factory(root / "etcd"), None)
        if args.calibrate:
            systems[CALIBRATION] = _bench_system(args, loadgen, CALIBRATION, _noop_factory(), None)
    report: dict[str, Any] = {
        "params": _params(args),
        "machine": machine_info(loadavg_before, os.getloadavg(), args.data_dir or Path(tempfile.gettempdir())),
        "systems": systems,
        "notes": [SHARED_CPU_NOTE.format(n=os.cpu_count())],
    }
    if loadavg_before[0] > 0.5 * (os.cpu_count() or 1):
        report["notes"].append(f"the machine was already busy (1-min load average {loadavg_before[0]:.2f} "
                               "before the run): figures are noisy, compare systems measured together")
    if args.label in systems and "etcd" in systems and args.label != "etcd":
        report["ratios"] = _ratios(systems[args.label], systems["etcd"])
        report["targets"] = _targets(systems[args.label], systems["etcd"], report["ratios"], args)
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
        _progress(f"wrote {args.json}")
    return 0


def _validate(args: argparse.Namespace) -> None:
    if args.clients < 1 or args.inflight < 1 or args.failover_inflight < 1:
        raise CommandError("--clients, --inflight and --failover-inflight must be at least 1")
    if not 0 <= args.value_size <= 1024 * 1024:
        raise CommandError("--value-size must be between 0 and 1 MiB (etcd's request limit is 1.5 MiB)")
    if args.duration <= 0 or args.serial_duration <= 0 or args.warmup < 0 or args.failover_duration < 3:
        raise CommandError("--duration/--serial-duration must be > 0, --warmup >= 0, --failover-duration >= 3")
    if args.key_space < 1:
        raise CommandError("--key-space must be at least 1")
    if args.etcd_only and args.endpoints:
        raise CommandError("--etcd-only measures the etcd this command starts; drop --endpoints")
    if args.failover and args.endpoints and not (args.compare_etcd or args.etcd_only):
        raise CommandError("--failover kills the leader of a cluster this command starts; drop --endpoints")
    if (args.compare_etcd or args.etcd_only or args.check_perf):
        from deploy.bench.etcd_cluster import ETCD_BINARY, ETCDCTL_BINARY

        needed = [ETCDCTL_BINARY] if args.check_perf else []
        needed += [ETCD_BINARY] if (args.compare_etcd or args.etcd_only) else []
        missing = [p for p in needed if not os.access(p, os.X_OK)]
        if missing:
            raise CommandError(f"{', '.join(missing)} not found (Debian packages etcd-server, etcd-client)")


def _skiff_factory(base: Path) -> Callable[[], Cluster]:
    def make() -> Cluster:
        try:
            from kvstore.localcluster import LocalCluster
        except ImportError as err:
            raise CommandError(f"cannot start a local skiff store ({err}); pass --endpoints of a running "
                               "one, or --etcd-only for an etcd baseline") from None
        return LocalCluster(base, size=3)
    return make


def _noop_factory() -> Callable[[], Cluster]:
    def make() -> Cluster:
        from deploy.bench.noop_server import NoopCluster
        return NoopCluster(size=3)
    return make


def _etcd_factory(base: Path) -> Callable[[], Cluster]:
    def make() -> Cluster:
        from deploy.bench.etcd_cluster import EtcdCluster
        return EtcdCluster(base, size=3)
    return make


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _bench_system(args: argparse.Namespace, loadgen: Any, name: str,
                  factory: Callable[[], Cluster] | None, endpoints: list[str] | None) -> dict[str, Any]:
    """Start (if asked), measure and stop one system; its section of the report."""
    cluster = factory() if factory is not None else None
    if cluster is not None:
        _progress(f"{name}: starting a 3-member cluster on loopback")
        started = time.monotonic()
        cluster.start(timeout=60.0)
        endpoints = list(cluster.endpoints)
        _progress(f"{name}: up in {time.monotonic() - started:.1f} s at {','.join(endpoints)}")
    assert endpoints is not None
    out: dict[str, Any] = {"endpoints": endpoints, "started_by_bench": cluster is not None, "rows": {}}
    try:
        out["server_version"] = _server_version(endpoints)
        if out["server_version"] is None:
            raise CommandError(f"{name}: no endpoint of {','.join(endpoints)} answers Status")
        loadgen.preload(endpoints, args.key_space, args.value_size, timeout=args.timeout)
        for key, label in ROWS:
            out["rows"][key] = _measure_row(args, loadgen, name, key, label, endpoints, cluster)
        if args.check_perf and name != CALIBRATION:
            from deploy.bench.etcd_cluster import check_perf

            _progress(f"{name}: etcdctl check perf --load={args.check_perf_load} (about 60 s)")
            out["check_perf"] = check_perf(endpoints, args.check_perf_load)
        if cluster is None:
            loadgen.cleanup(endpoints, timeout=args.timeout)
        if args.failover and cluster is not None and name != CALIBRATION:
            out["failover"] = _measure_failover(args, loadgen, name, cluster, endpoints)
        elif args.failover:
            _progress(f"{name}: no failover run (its cluster was not started by this command)")
    finally:
        if cluster is not None:
            _progress(f"{name}: stopping")
            cluster.stop()
    return out


def _measure_row(args: argparse.Namespace, loadgen: Any, name: str, key: str, label: str,
                 endpoints: list[str], cluster: Cluster | None) -> dict[str, Any]:
    """One row; besides the load figures, the Raft term change (elections during the row) and,
    for a cluster the bench started, the CPU its server processes used."""
    serial = key.startswith("serial_")
    spec = loadgen.LoadSpec(
        op=key.removeprefix("serial_"), endpoints=tuple(endpoints),
        clients=1 if serial else args.clients, inflight=1 if serial else args.inflight,
        value_size=args.value_size, duration=args.serial_duration if serial else args.duration,
        warmup=min(args.warmup, 0.5) if serial else args.warmup, key_space=args.key_space,
        timeout=args.timeout)
    _progress(f"{name}: {label}: {spec.clients} x {spec.inflight} for {spec.duration:g} s")
    pids = server_pids(cluster)
    term_before, cpu_before = _raft_term(endpoints), cpu_seconds(pids)
    summary = loadgen.run_load(spec).summary()
    term_after, cpu_after = _raft_term(endpoints), cpu_seconds(pids)
    summary["elections"] = (term_after - term_before) if term_before and term_after else None
    if pids and cpu_before is not None and cpu_after is not None:
        summary["server_cpu_s"] = round(cpu_after - cpu_before, 2)
        summary["server_cpu_ms_per_op"] = round(1000 * (cpu_after - cpu_before) / summary["ops"], 3) \
            if summary["ops"] else None
    _progress(f"{name}: {label}: {summary['ops_per_s']:.0f} ops/s, p50 {_fmt(summary['p50_ms'])} ms, "
              f"p99 {_fmt(summary['p99_ms'])} ms, errors {sum(summary['errors'].values())}")
    return summary


def _measure_failover(args: argparse.Namespace, loadgen: Any, name: str, cluster: Cluster,
                      endpoints: list[str]) -> dict[str, Any]:
    """Put load over every endpoint; kill -9 the leader a third of the way in; measure the gap."""
    if _wait_leader(cluster, 15.0) is None:
        return {"error": "no leader known before the load"}
    spec = loadgen.LoadSpec(op="put", endpoints=tuple(endpoints), clients=args.clients,
                            inflight=args.failover_inflight, value_size=args.value_size,
                            duration=args.failover_duration, warmup=0.0, key_space=args.key_space,
                            timeout=args.failover_timeout, retry_pause=0.05)
    marks: dict[str, float] = {}
    kill_after = max(1.5, args.failover_duration / 3.0)

    def on_start(t0: float) -> None:
        time.sleep(max(0.0, t0 + kill_after - time.monotonic()))
        leader = _wait_leader(cluster, 5.0)  # now, not before the load: leadership may have moved
        if leader is None:
            return
        marks["killed"] = leader
        marks["kill_at"] = time.monotonic()
        cluster.kill(leader, signal.SIGKILL)
        while time.monotonic() < t0 + args.failover_duration:
            now_leader = cluster.leader_index()
            if now_leader is not None and now_leader != leader:
                marks["new_leader_at"] = time.monotonic()
                marks["new_leader"] = now_leader
                return
            time.sleep(0.02)

    _progress(f"{name}: failover: put load {spec.clients} x {spec.inflight} over {len(endpoints)} endpoints, "
              f"kill -9 of the leader after {kill_after:.1f} s")
    result = loadgen.run_load(spec, on_start=on_start)
    if "kill_at" not in marks:
        return {"error": "no leader known at the moment of the kill"}
    report = loadgen.failover_report(result, marks["kill_at"])
    report["killed_member"] = int(marks["killed"])
    report["new_leader"] = marks.get("new_leader")
    new_at = marks.get("new_leader_at")
    report["new_leader_seen_after_s"] = round(new_at - marks["kill_at"], 3) if new_at else None
    report["request_timeout_s"] = args.failover_timeout
    _progress(f"{name}: failover: writes stopped {report['writes_stopped_s']:.3f} s, first put after kill "
              f"{_fmt(report['first_ok_after_kill_s'])} s")
    return report


def _wait_leader(cluster: Cluster, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        index = cluster.leader_index()
        if index is not None:
            return index
        time.sleep(0.1)
    return None


def _raft_term(endpoints: list[str]) -> int | None:
    """The highest Raft term any endpoint reports (None if none answers)."""
    from kvstore.client import sync_stubs
    from protos.etcd.etcdserverpb import rpc_pb2

    terms = []
    for endpoint in endpoints:
        stubs = sync_stubs(endpoint)
        try:
            terms.append(int(stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=2.0).raftTerm))
        except Exception:
            continue
        finally:
            stubs.channel.close()
    return max(terms) if terms else None


def _server_version(endpoints: list[str]) -> str | None:
    from kvstore.client import sync_stubs
    from protos.etcd.etcdserverpb import rpc_pb2

    for endpoint in endpoints:
        stubs = sync_stubs(endpoint)
        try:
            return str(stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=5.0).version)
        except Exception:
            continue
        finally:
            stubs.channel.close()
    return None


# -- figures derived from the measurements ----------------------------------------------------

def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _ratios(mine: dict[str, Any], etcd: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per row: throughput, p50 and p99 of the measured system divided by etcd's."""
    out: dict[str, dict[str, float | None]] = {}
    for key, _label in ROWS:
        a, b = mine["rows"].get(key), etcd["rows"].get(key)
        if a and b:
            out[key] = {"throughput": _ratio(a["ops_per_s"], b["ops_per_s"]),
                        "p50": _ratio(a["p50_ms"], b["p50_ms"]), "p99": _ratio(a["p99_ms"], b["p99_ms"])}
    return out


def _targets(mine: dict[str, Any], etcd: dict[str, Any], ratios: dict[str, Any],
             args: argparse.Namespace) -> list[dict[str, Any]]:
    """Issue 2 section 4's targets, each with the measured value and whether it is met."""
    def target(name: str, value: float | None, ok: bool | None) -> dict[str, Any]:
        return {"target": name, "value": value, "met": ok}

    put_r = ratios.get("put", {}).get("throughput")
    ser_r = ratios.get("serial_put", {}).get("p50")
    get_r = ratios.get("get", {}).get("throughput")
    out = [
        target("put throughput >= 1.0x etcd", put_r, None if put_r is None else put_r >= 1.0),
        target("serial put p50 <= 1.5x etcd", ser_r, None if ser_r is None else ser_r <= 1.5),
        target("linearizable get throughput >= 1.0x etcd", get_r, None if get_r is None else get_r >= 1.0),
    ]
    if "check_perf" in mine:
        out.append(target(f"etcdctl check perf --load={args.check_perf_load} passes", None,
                          bool(mine["check_perf"]["passed"])))
    if "failover" in mine and "writes_stopped_s" in mine["failover"]:
        stopped = mine["failover"]["writes_stopped_s"]
        out.append(target("writes stop <= 2 s when the leader is killed", stopped,
                          bool(mine["failover"]["recovered"]) and stopped <= 2.0))
    return out


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            if not k.startswith("_") and k not in ("command", "bench_command")}


# -- the table ---------------------------------------------------------------------------------

def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_report(report: dict[str, Any]) -> str:
    """The human-readable, aligned form of a report."""
    p, m = report["params"], report["machine"]
    lines = [
        f"skiff bench kv: {p['clients']} client processes x {p['inflight']} in flight, {p['value_size']}-byte values, "
        f"{p['duration']:g} s per row after {p['warmup']:g} s warm-up, {p['key_space']} keys; serial rows 1 x 1",
        f"machine: {m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"load average {m['load_average_before'][0]:.2f} before, {m['load_average_after'][0]:.2f} after",
        *(f"note: {note}" for note in report["notes"]),
        "",
        f"{'system':<8} {'row':<18} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'elections':>9} "
        f"{'server CPU ms/op':>16} {'client CPU s':>12}",
    ]
    for name, system in report["systems"].items():
        for key, label in ROWS:
            row = system["rows"].get(key)
            if row:
                elections = "-" if row.get("elections") is None else str(row["elections"])
                lines.append(f"{name:<8} {label:<18} {row['ops_per_s']:>9.0f} {_fmt(row['p50_ms']):>8} "
                             f"{_fmt(row['p99_ms']):>8} {sum(row['errors'].values()):>7} {elections:>9} "
                             f"{_fmt(row.get('server_cpu_ms_per_op'), 3):>16} {_fmt(row['client_cpu_s'], 1):>12}")
    if "ratios" in report:
        label = next(iter(report["systems"]))
        lines += ["", f"{'ratio ' + label + '/etcd':<27} {'ops/s':>9} {'p50':>8} {'p99':>8}"]
        for key, row_label in ROWS:
            r = report["ratios"].get(key)
            if r:
                lines.append(f"{row_label:<27} {_fmt(r['throughput']):>9} {_fmt(r['p50']):>8} {_fmt(r['p99']):>8}")
    lines += _format_failover(report) + _format_check_perf(report)
    if report.get("targets"):
        lines += ["", "targets (issue 2, section 4):"]
        for t in report["targets"]:
            verdict = {True: "met", False: "NOT met", None: "unknown"}[t["met"]]
            value = "" if t["value"] is None else f"{t['value']:.2f}"
            lines.append(f"  {t['target']:<46} {value:>6}  {verdict}")
    return "\n".join(lines)


def _format_failover(report: dict[str, Any]) -> list[str]:
    rows = {n: s["failover"] for n, s in report["systems"].items() if "failover" in s}
    if not rows:
        return []
    lines = ["", "failover: kill -9 of the leader under put load (clients spread over all endpoints, "
             "retry after 50 ms on error)",
             f"{'system':<8} {'writes stopped s':>16} {'first put s':>11} {'new leader s':>12} errors after kill"]
    for name, f in rows.items():
        if "error" in f:
            lines.append(f"{name:<8} {f['error']}")
            continue
        errors = ", ".join(f"{code} {n}" for code, n in sorted(f["errors_after_kill"].items())) or "none"
        lines.append(f"{name:<8} {f['writes_stopped_s']:>16.3f} {_fmt(f['first_ok_after_kill_s'], 3):>11} "
                     f"{_fmt(f['new_leader_seen_after_s'], 3):>12} {errors}")
    return lines


def _format_check_perf(report: dict[str, Any]) -> list[str]:
    rows = {n: s["check_perf"] for n, s in report["systems"].items() if "check_perf" in s}
    if not rows:
        return []
    lines = ["", f"etcdctl check perf --load={report['params']['check_perf_load']}:"]
    for name, c in rows.items():
        lines.append(f"  {name:<8} {'PASS' if c['passed'] else 'FAIL'}   " + "; ".join(c["lines"]))
    return lines
