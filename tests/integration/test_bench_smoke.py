"""The pod-start and reconcile benchmarks run end to end at a tiny size and write their figures
(and the reconcile plots, where matplotlib is installed).

Not a performance test: only that every figure is in the JSON and is a plausible number (the
timeouts passed are hang guards).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.images import LocalRegistry

REPO = Path(__file__).resolve().parents[2]


def run_bench(module: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=str(REPO),
                          timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, f"{module} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


def percentiles_ok(fig: dict[str, float], n: int, keys: tuple[str, ...] = ("p50_ms", "p99_ms", "max_ms")) -> None:
    assert fig["n"] == n, fig
    values = [fig[k] for k in keys]
    assert all(v > 0 for v in values) and values == sorted(values), fig


@pytest.mark.skipif(not LocalRegistry.available(), reason="needs docker-registry (Debian package docker-registry)")
@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="needs /bin/busybox (busybox-static) for the image")
def test_pod_start_fake_one_pod(tmp_path: Path) -> None:
    out = tmp_path / "podstart.json"
    proc = run_bench("deploy.bench.podstart", ["--handlers", "fake", "--pods", "1", "--rounds", "2",
                                                "--out", str(out)], timeout=120)
    assert "fake: bound -> Running seen by watch: 1 pod at once: p50" in proc.stdout
    report = json.loads(out.read_text())
    fig = report["handlers"]["fake"]["1"]
    percentiles_ok(fig, 2)
    assert fig["not_running"] == 0
    assert report["machine"]["load_average_before"] and report["params"]["pods"] == [1]


def test_reconcile_tiny(tmp_path: Path) -> None:
    out = tmp_path / "reconcile.json"
    proc = run_bench("deploy.bench.reconcile", [
        "--nodes", "3", "--pods", "6", "--node-grace", "5", "--lease-interval", "1", "--toleration", "1",
        "--delete-samples", "2", "--cm-lease-duration", "3", "--timeout", "60", "--out", str(out),
        "--out-dir", str(tmp_path / "plots")], timeout=180)
    report = json.loads(out.read_text())
    s = report["scenarios"]
    assert set(s) == {"startup", "scale", "rolling-update", "delete-pod", "node-lost", "cm-failover"}, proc.stdout
    percentiles_ok(s["startup"]["pod_startup"], 6)
    assert 0 < s["startup"]["total_s"]
    percentiles_ok(s["scale"]["down_pod_gone"], 6)
    percentiles_ok(s["scale"]["up_pod_startup"], 6)
    percentiles_ok(s["rolling-update"]["new_pod_startup"], 6)
    percentiles_ok(s["delete-pod"]["replacement_running"], 2)
    lost = s["node-lost"]
    assert lost["total_s"] > 1.0 and lost["expected_within_s"] == 5 + 1 + 2
    assert lost["replacement_running_since_lost"]["n"] == lost["pods_on_lost_node"]
    cm = s["cm-failover"]
    assert {cm["killed"], cm["new_leader"]} == {"bench-cm-a", "bench-cm-b"}, cm
    # The standby may take over only once the Lease (3 s) went unrenewed: well over a second.
    assert cm["replicas_after"] == 7 and cm["lease_handover_s"] > 1.0 and cm["total_s"] > 1.0, cm
    percentiles_ok(cm["new_pod_running_since_kill"], 1)
    assert report["cpu_seconds"]["controller-manager-" + cm["killed"][-1]] > 0  # kept from before the kill
    assert "startup: all Running in" in proc.stdout and "node lost (" in proc.stdout
    assert "controller manager killed (" in proc.stdout and "series" in proc.stdout
    plots = [tmp_path / "plots" / name for name in ("reconcile-cdf.png", "reconcile-timeline.png")]
    if importlib.util.find_spec("matplotlib") is not None:
        assert all(p.stat().st_size > 0 for p in plots) and f"plot written to {plots[0]}" in proc.stdout
    else:
        assert "matplotlib is not installed" in proc.stdout
