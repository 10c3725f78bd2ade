"""Probes on a fake clock: thresholds, periods, initial delay, startup gating, the manager's
tasks under simulated time, and the real HTTP/TCP checks against a loopback server."""
from __future__ import annotations

import asyncio

from controlplane.client.fake import FakeTimers
from kvstore.clock import FakeClock
from node.agent.probes import (LIVENESS, READINESS, CRIChecker, ContainerProber, ProbeManager, ProbeTracker,
                               Target, probe_spec, resolve_port)
from protos.skiff.api.v1 import core_pb2, meta_pb2


class ScriptedChecker:
    """Answers probes from a script of outcomes per command (the last one repeats)."""

    def __init__(self, outcomes: dict[str, list[bool]]) -> None:
        self.outcomes = outcomes
        self.calls: list[tuple[str, float]] = []
        self.clock: FakeClock | None = None

    def _next(self, key: str) -> tuple[bool, str]:
        self.calls.append((key, self.clock.now() if self.clock else 0.0))
        script = self.outcomes[key]
        ok = script.pop(0) if len(script) > 1 else script[0]
        return ok, "" if ok else f"{key} failed"

    async def exec(self, container_id: str, command: list[str], timeout: float) -> tuple[bool, str]:
        return self._next(command[0])

    async def http_get(self, host: str, port: int, path: str, scheme: str, headers: list[tuple[str, str]],
                       timeout: float) -> tuple[bool, str]:
        return self._next(f"http:{host}:{port}{path}")

    async def tcp(self, host: str, port: int, timeout: float) -> tuple[bool, str]:
        return self._next(f"tcp:{host}:{port}")


def exec_probe(command: str, **kw: int) -> core_pb2.Probe:
    p = core_pb2.Probe()
    for name, value in kw.items():
        setattr(p, name, value)
    p.exec.command.append(command)
    return p


def test_defaults_and_named_ports() -> None:
    spec = probe_spec(core_pb2.Probe(), READINESS)
    assert (spec.timeout, spec.period, spec.success_threshold, spec.failure_threshold, spec.initial_delay) == (
        1.0, 10.0, 1, 3, 0.0)
    port = meta_pb2.IntOrString(str_val="http")
    assert resolve_port(port, {"http": 8080}) == 8080
    assert resolve_port(meta_pb2.IntOrString(int_val=81), {}) == 81


def test_tracker_thresholds_and_period() -> None:
    spec = probe_spec(exec_probe("check", initial_delay_seconds=5, period_seconds=2, failure_threshold=2,
                                 success_threshold=2), READINESS)
    t = ProbeTracker(spec, started_at=100.0)
    assert not t.result and not t.due(104.9) and t.due(105.0)
    assert not t.record(105.0, True) and not t.result          # 1 of 2 successes
    assert t.next_due == 107.0
    assert t.record(107.0, True) and t.result                  # ready
    assert not t.record(109.0, False) and t.result             # 1 of 2 failures
    assert t.record(111.0, False) and not t.result
    live = ProbeTracker(probe_spec(exec_probe("x"), LIVENESS), 0.0)
    assert live.result  # liveness starts healthy


def run_ticks(prober: ContainerProber, checker: ScriptedChecker, clock: FakeClock,
              until: float) -> list[tuple[float, bool, bool, str | None]]:
    """Tick at every due time up to `until`; the verdicts after each tick."""
    seen: list[tuple[float, bool, bool, str | None]] = []
    while True:
        due = prober.next_due()
        if due is None or due > until:
            return seen
        clock.advance(max(0.0, due - clock.now()))
        asyncio.run(prober.tick(clock.now(), checker))
        seen.append((clock.now(), *prober.verdicts()))


def test_startup_gates_liveness_and_readiness() -> None:
    container = core_pb2.Container(name="app")
    container.startup_probe.CopyFrom(exec_probe("startup", period_seconds=1, failure_threshold=10))
    container.liveness_probe.CopyFrom(exec_probe("live", period_seconds=3))
    container.readiness_probe.CopyFrom(exec_probe("ready", period_seconds=2))
    clock = FakeClock(0.0)
    checker = ScriptedChecker({"startup": [False, False, True], "live": [True], "ready": [False, True]})
    checker.clock = clock
    prober = ContainerProber(container, Target("c1", "10.0.0.5", {}), started_at=0.0)
    run_ticks(prober, checker, clock, until=10.0)
    kinds = [k for k, _ in checker.calls]
    first_other = next(i for i, k in enumerate(kinds) if k != "startup")
    assert kinds[:first_other] == ["startup"] * 3            # nothing else ran before startup passed
    assert "startup" not in kinds[first_other:]               # and it never runs again
    assert prober.started and prober.ready and prober.unhealthy is None


def test_liveness_failure_makes_the_container_unhealthy() -> None:
    container = core_pb2.Container(name="app")
    container.liveness_probe.CopyFrom(exec_probe("live", period_seconds=5, failure_threshold=3))
    clock = FakeClock(0.0)
    checker = ScriptedChecker({"live": [True, False, False, False]})
    checker.clock = clock
    prober = ContainerProber(container, Target("c1", "10.0.0.5", {}), 0.0)
    seen = run_ticks(prober, checker, clock, until=15.0)
    assert [(t, unhealthy) for t, _, _, unhealthy in seen] == [
        (0.0, None), (5.0, None), (10.0, None), (15.0, "Liveness probe failed: live failed")]


def test_startup_that_gives_up_is_unhealthy() -> None:
    container = core_pb2.Container(name="app")
    container.startup_probe.CopyFrom(exec_probe("startup", period_seconds=1, failure_threshold=2))
    clock = FakeClock(0.0)
    checker = ScriptedChecker({"startup": [False]})
    prober = ContainerProber(container, Target("c1", "h", {}), 0.0)
    run_ticks(prober, checker, clock, until=1.0)
    assert prober.unhealthy == "Startup probe failed: startup failed" and not prober.started


def test_manager_runs_probes_on_simulated_time_and_reports_changes() -> None:
    async def scenario() -> None:
        clock = FakeClock(0.0)
        timers = FakeTimers(clock)
        checker = ScriptedChecker({"tcp:10.0.0.5:80": [False, False, True]})
        checker.clock = clock
        changes: list[str] = []
        manager = ProbeManager(checker, changes.append, clock=clock, sleep=timers.sleep)
        container = core_pb2.Container(name="web")
        container.readiness_probe.tcp_socket.port.int_val = 80
        container.readiness_probe.period_seconds = 10
        manager.ensure("pod-1", container, Target("c1", "10.0.0.5", {}), running_for=0.0)
        manager.ensure("pod-1", core_pb2.Container(name="plain"), Target("c2", "10.0.0.5", {}), 0.0)
        assert set(manager.probers) == {"c1"}  # no probes: nothing to run
        await timers.run_until(15.0)
        assert manager.verdicts("pod-1")[0] == {"c1": False} and changes == []
        await timers.run_until(25.0)
        assert manager.verdicts("pod-1")[0] == {"c1": True} and changes == ["pod-1"]
        assert [t for _, t in checker.calls] == [0.0, 10.0, 20.0]
        manager.retain("pod-1", set())
        assert not manager.probers
        await manager.stop()

    asyncio.run(scenario())


def test_real_http_and_tcp_checks_on_loopback() -> None:
    async def scenario() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.readuntil(b"\r\n\r\n")
            code = b"200 OK" if request.startswith(b"GET /healthz ") else b"503 Unavailable"
            writer.write(b"HTTP/1.1 " + code + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        checker = CRIChecker(runtime=None)
        try:
            assert (await checker.http_get("127.0.0.1", port, "/healthz", "HTTP", [], 2.0))[0]
            ok, message = await checker.http_get("127.0.0.1", port, "/other", "HTTP", [], 2.0)
            assert not ok and "503" in message
            assert (await checker.tcp("127.0.0.1", port, 2.0))[0]
        finally:
            server.close()
            await server.wait_closed()
        ok, message = await checker.tcp("127.0.0.1", port, 2.0)
        assert not ok and "dial tcp" in message

    asyncio.run(scenario())
