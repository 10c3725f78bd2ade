"""`skiff bench kv` end to end with tiny numbers: against a real etcd, then (once it exists) skiff.

These check the plumbing (processes, merging, the table and the JSON's fields), not performance.
"""
from __future__ import annotations

import importlib.util
import json
from array import array
from pathlib import Path

import pytest

from deploy.bench import loadgen
from deploy.bench.etcd_cluster import EtcdCluster, etcd_available
from deploy.cli.main import main

TINY = ["--clients", "1", "--inflight", "4", "--duration", "0.5", "--warmup", "0.2",
        "--serial-duration", "0.3", "--key-space", "20"]
ROW_FIELDS = {"op", "ops", "seconds", "ops_per_s", "p50_ms", "p99_ms", "mean_ms", "max_ms", "errors"}
ROWS = {"put", "get", "sget", "serial_put", "serial_get"}

needs_etcd = pytest.mark.skipif(not etcd_available(), reason="needs /usr/bin/etcd and /usr/bin/etcdctl "
                                "(Debian packages etcd-server, etcd-client)")


def _check_system(section: dict) -> None:
    assert set(section["rows"]) == ROWS
    for row in section["rows"].values():
        assert ROW_FIELDS <= set(row)
        assert row["ops"] > 0 and row["ops_per_s"] > 0
        assert row["p50_ms"] is not None and row["p99_ms"] >= row["p50_ms"]
        assert row["errors"] == {}


@pytest.mark.etcd
@needs_etcd
@pytest.mark.timeout(60)
def test_bench_against_etcd_endpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    with EtcdCluster(tmp_path / "etcd") as cluster:
        status = main(["bench", "kv", "--endpoints", ",".join(cluster.endpoints), "--label", "etcd-a",
                       *TINY, "--json", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"params", "machine", "systems", "notes"}
    assert report["params"]["clients"] == 1 and report["params"]["value_size"] == 100
    machine = report["machine"]
    assert machine["nproc"] >= 1 and len(machine["load_average_before"]) == 3
    assert len(machine["load_average_after"]) == 3 and machine["python"].startswith("3.")
    _check_system(report["systems"]["etcd-a"])
    assert report["systems"]["etcd-a"]["server_version"].startswith("3.")
    table = capsys.readouterr().out
    assert "linearizable get" in table and "serial put (1x1)" in table and "share" in table


@pytest.mark.etcd
@needs_etcd
@pytest.mark.timeout(120)
def test_failover_against_etcd(tmp_path: Path) -> None:
    """The bench starts etcd itself, kills its leader, and sees writes come back (the window is
    generous: on a busy 2-core machine etcd's election can take several seconds)."""
    out = tmp_path / "bench.json"
    status = main(["bench", "kv", "--etcd-only", "--failover", "--failover-duration", "10",
                   "--failover-inflight", "2", *TINY, "--data-dir", str(tmp_path / "data"), "--json", str(out)])
    assert status == 0
    failover = json.loads(out.read_text())["systems"]["etcd"]["failover"]
    assert failover["recovered"] is True
    assert 0 < failover["writes_stopped_s"] < 10
    assert failover["first_ok_after_kill_s"] is not None
    assert failover["killed_member"] in (0, 1, 2)


@pytest.mark.timeout(120)
@pytest.mark.skipif(importlib.util.find_spec("kvstore.localcluster") is None,
                    reason="kvstore.localcluster not written yet")
def test_bench_against_local_skiff(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "kv", *TINY, "--data-dir", str(tmp_path / "data"), "--json", str(out)]
    if etcd_available():
        argv.append("--compare-etcd")
    assert main(argv) == 0
    report = json.loads(out.read_text())
    _check_system(report["systems"]["skiff"])
    if etcd_available():
        _check_system(report["systems"]["etcd"])
        assert set(report["ratios"]) == ROWS
        assert {t["target"] for t in report["targets"]} >= {"put throughput >= 1.0x etcd"}


def test_failover_report_finds_the_gap() -> None:
    """Pure: successes every 10 ms, none from 1.0 s to 2.5 s; the kill at 1.1 s."""
    ends = [i / 100 for i in range(100)] + [2.5 + i / 100 for i in range(50)]
    starts = [e - 0.005 for e in ends]
    result = loadgen.LoadResult(
        spec=loadgen.LoadSpec(op="put", endpoints=("x",)), window=(0.0, 3.0), starts=starts, ends=ends,
        error_times=[1.2, 1.7, 2.6], error_codes=["UNAVAILABLE", "DEADLINE_EXCEEDED", "UNAVAILABLE"])
    report = loadgen.failover_report(result, kill_at=1.1)
    assert report["recovered"] is True
    assert report["writes_stopped_s"] == pytest.approx(1.51, abs=1e-6)
    assert report["gap_began_s_from_kill"] == pytest.approx(-0.11, abs=1e-6)
    assert report["first_ok_after_kill_s"] == pytest.approx(1.4, abs=1e-6)
    assert report["errors_after_kill"] == {"UNAVAILABLE": 2, "DEADLINE_EXCEEDED": 1}


def test_failover_report_without_recovery() -> None:
    ends = [i / 100 for i in range(100)]
    result = loadgen.LoadResult(spec=loadgen.LoadSpec(op="put", endpoints=("x",)), window=(0.0, 3.0),
                                starts=[e - 0.001 for e in ends], ends=ends, error_times=[], error_codes=[])
    report = loadgen.failover_report(result, kill_at=1.0)
    assert report["recovered"] is False and report["first_ok_after_kill_s"] is None
    assert report["writes_stopped_s"] == pytest.approx(2.01, abs=1e-6)


def test_summary_percentiles_and_window() -> None:
    spec = loadgen.LoadSpec(op="get", endpoints=("x",), duration=1.0, warmup=0.0)
    ends = [0.01 * (i + 1) for i in range(100)]  # latencies 1..100 ms, all inside the window
    starts = [e - 0.001 * (i + 1) for i, e in enumerate(ends)]
    summary = loadgen.LoadResult(spec, (0.0, 1.0), starts, ends, [], []).summary()
    assert summary["ops"] == 100 and summary["ops_per_s"] == 100.0
    assert summary["p50_ms"] == pytest.approx(50.0) and summary["p99_ms"] == pytest.approx(99.0)
    assert loadgen.percentile([], 50) is None
    assert isinstance(loadgen.WorkerResult(0, 0.0).starts, array)
