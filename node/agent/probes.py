"""Container probes: startup, liveness and readiness, of kinds exec, httpGet and tcpSocket.

Three layers, the first two pure:

- `ProbeTracker` is one probe's threshold state machine: due `initialDelaySeconds` after the
  container started, then every `periodSeconds`; `successThreshold` consecutive successes make
  the result True, `failureThreshold` consecutive failures make it False. Its initial result is
  Kubernetes': readiness and startup start False, liveness starts True.
- `ContainerProber` holds one running container's trackers and applies the gating: while a
  startup probe has not succeeded, only it runs (liveness and readiness wait); once it has
  succeeded it never runs again for that container. `tick(now)` runs every probe that is due
  (through an injected `Checker`) and says whether a verdict changed. Verdicts: `started`,
  `ready`, and `unhealthy` (why the container must be killed: the liveness probe failed, or the
  startup probe gave up), which `plan` turns into a kill.
- `ProbeManager` runs one asyncio task per container with probes, sleeping (injected `sleep`)
  until the next due time on the injected `Clock`, and calls `on_change(pod_uid)` when a
  verdict changed so the pod's worker re-plans and rewrites the status.

`CRIChecker` is the real `Checker`: exec through CRI ExecSync (exit code 0 is success; the
probe's timeout is the exec's), httpGet with a small HTTP/1.1 client (any status 200-399 is
success; https without certificate verification, as the kubelet does), tcpSocket by opening a
connection. The target host is the probe's `host`, else the pod's IP; a pod in the host's
network (the `process` handler without root) is probed on the node's address.

Defaults (Kubernetes'): timeout 1 s, period 10 s, success threshold 1, failure threshold 3,
initial delay 0. A named port is looked up in the container's ports.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from kvstore.clock import Clock, MonotonicClock
from protos.cri.runtime.v1 import api_pb2 as cri
from protos.skiff.api.v1 import core_pb2, meta_pb2

log = logging.getLogger(__name__)

LIVENESS, READINESS, STARTUP = "liveness", "readiness", "startup"
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ProbeSpec:
    kind: str
    probe: core_pb2.Probe
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int


def probe_spec(probe: core_pb2.Probe, kind: str) -> ProbeSpec:
    """The probe with Kubernetes' defaults for what is unset."""
    def opt(name: str, default: int) -> int:
        return getattr(probe, name) if probe.HasField(name) and getattr(probe, name) > 0 else default
    success = opt("success_threshold", 1)
    if kind in (LIVENESS, STARTUP):
        success = 1  # Kubernetes requires 1 for these
    return ProbeSpec(kind, probe, float(max(probe.initial_delay_seconds, 0)), float(opt("period_seconds", 10)),
                     float(opt("timeout_seconds", 1)), success, opt("failure_threshold", 3))


class ProbeTracker:
    """One probe's schedule and thresholds (see the module docstring). Pure."""

    def __init__(self, spec: ProbeSpec, started_at: float) -> None:
        self.spec = spec
        self.result = spec.kind == LIVENESS
        self.successes = 0
        self.failures = 0
        self.next_due = started_at + spec.initial_delay
        self.last_message = ""

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def record(self, now: float, ok: bool, message: str = "") -> bool:
        """Count one outcome at `now`; True when the result flipped."""
        self.next_due = now + self.spec.period
        self.last_message = message
        before = self.result
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.spec.success_threshold:
                self.result = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= self.spec.failure_threshold:
                self.result = False
        return self.result != before

    @property
    def gave_up(self) -> bool:
        """Failures reached the threshold (liveness: kill; startup: kill)."""
        return self.failures >= self.spec.failure_threshold


@dataclass(frozen=True)
class Target:
    """Where a container's network probes go, and how to exec in it."""
    container_id: str
    host: str
    ports: dict[str, int]


class Checker(Protocol):
    async def exec(self, container_id: str, command: list[str], timeout: float) -> tuple[bool, str]: ...

    async def http_get(self, host: str, port: int, path: str, scheme: str, headers: list[tuple[str, str]],
                       timeout: float) -> tuple[bool, str]: ...

    async def tcp(self, host: str, port: int, timeout: float) -> tuple[bool, str]: ...


def resolve_port(port: meta_pb2.IntOrString, ports: dict[str, int]) -> int:
    """A probe's port: a number, or a container port's name (ValueError when unknown)."""
    which = port.WhichOneof("value")
    if which == "int_val":
        return int(port.int_val)
    text = port.str_val if which == "str_val" else ""
    if text.isdigit():
        return int(text)
    if text in ports:
        return ports[text]
    raise ValueError(f"port {text!r} is not a named port of the container")


async def run_probe(spec: ProbeSpec, target: Target, checker: Checker) -> tuple[bool, str]:
    """One attempt of a probe; (success, message). Errors are failures, never exceptions."""
    probe = spec.probe
    try:
        if probe.HasField("exec"):
            return await checker.exec(target.container_id, list(probe.exec.command), spec.timeout)
        if probe.HasField("http_get"):
            h = probe.http_get
            port = resolve_port(h.port, target.ports)
            headers = [(x.name, x.value) for x in h.http_headers]
            return await checker.http_get(h.host or target.host, port, h.path or "/", h.scheme or "HTTP",
                                          headers, spec.timeout)
        if probe.HasField("tcp_socket"):
            t = probe.tcp_socket
            return await checker.tcp(t.host or target.host, resolve_port(t.port, target.ports), spec.timeout)
    except ValueError as err:
        return False, str(err)
    return False, "the probe has no handler skiff supports (exec, httpGet, tcpSocket)"


class ContainerProber:
    """One running container's probes with startup gating (see the module docstring)."""

    def __init__(self, container: core_pb2.Container, target: Target, started_at: float) -> None:
        self.name = container.name
        self.target = target
        self.trackers: dict[str, ProbeTracker] = {}
        for kind, field_name in ((STARTUP, "startup_probe"), (LIVENESS, "liveness_probe"),
                                 (READINESS, "readiness_probe")):
            if container.HasField(field_name):
                self.trackers[kind] = ProbeTracker(probe_spec(getattr(container, field_name), kind), started_at)
        self.startup_done = STARTUP not in self.trackers

    def _active(self) -> list[ProbeTracker]:
        if not self.startup_done:
            return [self.trackers[STARTUP]]
        return [t for k, t in self.trackers.items() if k != STARTUP]

    def next_due(self) -> float | None:
        active = self._active()
        return min(t.next_due for t in active) if active else None

    async def tick(self, now: float, checker: Checker) -> bool:
        """Run every due probe; True when a verdict (started, ready, unhealthy) changed."""
        before = self.verdicts()
        for tracker in self._active():
            if not tracker.due(now):
                continue
            ok, message = await run_probe(tracker.spec, self.target, checker)
            tracker.record(now, ok, message)
            if tracker.spec.kind == STARTUP and tracker.result:
                self.startup_done = True
                for other in self.trackers.values():  # liveness/readiness start counting now
                    if other.spec.kind != STARTUP:
                        other.next_due = max(other.next_due, now)
        return self.verdicts() != before

    @property
    def started(self) -> bool:
        return self.startup_done

    @property
    def ready(self) -> bool:
        if not self.startup_done:
            return False
        readiness = self.trackers.get(READINESS)
        return readiness.result if readiness else True

    @property
    def unhealthy(self) -> str | None:
        startup = self.trackers.get(STARTUP)
        if startup is not None and not self.startup_done and startup.gave_up:
            return f"Startup probe failed: {startup.last_message}".strip()
        liveness = self.trackers.get(LIVENESS)
        if self.startup_done and liveness is not None and liveness.gave_up:
            return f"Liveness probe failed: {liveness.last_message}".strip()
        return None

    def verdicts(self) -> tuple[bool, bool, str | None]:
        return self.started, self.ready, self.unhealthy


class ProbeManager:
    """One task per probed container; `on_change(pod_uid)` when a verdict changes."""

    def __init__(self, checker: Checker, on_change: Callable[[str], None], clock: Clock | None = None,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.checker = checker
        self.on_change = on_change
        self.clock: Clock = clock or MonotonicClock()
        self.sleep = sleep
        self.probers: dict[str, ContainerProber] = {}     # container id -> prober
        self._owners: dict[str, str] = {}                  # container id -> pod uid
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def ensure(self, pod_uid: str, container: core_pb2.Container, target: Target, running_for: float) -> None:
        """Probe this running container (a no-op when it is already probed or has no probes)."""
        cid = target.container_id
        if cid in self.probers:
            return
        if not any(container.HasField(f) for f in ("startup_probe", "liveness_probe", "readiness_probe")):
            return
        prober = ContainerProber(container, target, self.clock.now() - max(running_for, 0.0))
        self.probers[cid] = prober
        self._owners[cid] = pod_uid
        self._tasks[cid] = asyncio.create_task(self._run(pod_uid, prober), name=f"probe-{container.name}")

    def retain(self, pod_uid: str, running_ids: set[str]) -> None:
        """Stop probing the pod's containers that are no longer running."""
        for cid in [c for c, uid in self._owners.items() if uid == pod_uid and c not in running_ids]:
            self.drop(cid)

    def drop(self, container_id: str) -> None:
        self.probers.pop(container_id, None)
        self._owners.pop(container_id, None)
        task = self._tasks.pop(container_id, None)
        if task is not None:
            task.cancel()

    def verdicts(self, pod_uid: str) -> tuple[dict[str, bool], dict[str, bool], dict[str, str]]:
        """(ready, started, unhealthy) by container id for one pod's probed containers."""
        ready, started, unhealthy = {}, {}, {}
        for cid, prober in self.probers.items():
            if self._owners.get(cid) != pod_uid:
                continue
            ready[cid], started[cid] = prober.ready, prober.started
            why = prober.unhealthy
            if why:
                unhealthy[cid] = why
        return ready, started, unhealthy

    async def _run(self, pod_uid: str, prober: ContainerProber) -> None:
        while True:
            due = prober.next_due()
            if due is None:
                return
            await self.sleep(max(0.0, due - self.clock.now()))
            try:
                changed = await prober.tick(self.clock.now(), self.checker)
            except Exception:
                log.exception("probe of container %s failed", prober.name)
                changed = False
            if changed:
                self.on_change(pod_uid)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for cid in list(self._tasks):
            self.drop(cid)
        await asyncio.gather(*tasks, return_exceptions=True)


class CRIChecker:
    """Probes for real: ExecSync on a CRI runtime stub, HTTP and TCP over asyncio streams."""

    def __init__(self, runtime: object) -> None:
        self.runtime = runtime  # api_pb2_grpc.RuntimeServiceStub

    async def exec(self, container_id: str, command: list[str], timeout: float) -> tuple[bool, str]:
        request = cri.ExecSyncRequest(container_id=container_id, cmd=command, timeout=max(int(timeout), 1))
        try:
            resp = await self.runtime.ExecSync(request, timeout=timeout + 5)  # type: ignore[attr-defined]
        except grpc.aio.AioRpcError as err:
            return False, f"exec {command[:1]}: {err.details() or err.code().name}"
        out = (resp.stdout + resp.stderr).decode(errors="replace").strip()[:200]
        if resp.exit_code == 0:
            return True, out
        return False, f"command {command!r} exited with {resp.exit_code}: {out}".strip()

    async def http_get(self, host: str, port: int, path: str, scheme: str, headers: list[tuple[str, str]],
                       timeout: float) -> tuple[bool, str]:
        try:
            return await asyncio.wait_for(_http_get(host, port, path, scheme, headers), timeout)
        except asyncio.TimeoutError:
            return False, f'Get "{scheme.lower()}://{host}:{port}{path}": timeout after {timeout:g}s'
        except (OSError, ValueError) as err:
            return False, f'Get "{scheme.lower()}://{host}:{port}{path}": {err}'

    async def tcp(self, host: str, port: int, timeout: float) -> tuple[bool, str]:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except asyncio.TimeoutError:
            return False, f"dial tcp {host}:{port}: i/o timeout"
        except OSError as err:
            return False, f"dial tcp {host}:{port}: {err.strerror or err}"
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return True, ""


async def _http_get(host: str, port: int, path: str, scheme: str, headers: list[tuple[str, str]]) -> tuple[bool, str]:
    context = None
    if scheme.upper() == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        names = {k.lower() for k, _ in headers}
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}" if "host" not in names else ""]
        lines += ["User-Agent: skiff-probe/0.1.0", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers]
        writer.write(("\r\n".join(x for x in lines if x) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = (await reader.readline()).decode("latin-1").strip()
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            return False, f"not an HTTP response: {status_line[:80]!r}"
        code = int(parts[1])
        if 200 <= code < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {code}"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
