"""The pure pod status: phase, conditions (with stable transition times), container states."""
from __future__ import annotations

from dataclasses import replace

from controlplane.client.timeutil import format_time
from node.agent.plan import CREATED, EXITED, RUNNING, ContainerInfo, PodRuntimeState, SandboxInfo
from node.agent.status import ProbeVerdicts, Waiting, pod_status
from protos.skiff.api.v1 import core_pb2

NOW = 1_800_000_000.0
SB = SandboxInfo("sb1", 0, True, "10.244.0.5")


def pod(restart: str = "Always", init: tuple[str, ...] = (), names: tuple[str, ...] = ("app", "side"),
        readiness: bool = False, startup: bool = False) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = "web", "default", "u1"
    p.spec.restart_policy = restart
    for name in init:
        p.spec.init_containers.add(name=name, image="busybox:1.0")
    for name in names:
        c = p.spec.containers.add(name=name, image="busybox:1.0")
        if readiness:
            c.readiness_probe.tcp_socket.port.int_val = 80
        if startup:
            c.startup_probe.tcp_socket.port.int_val = 80
    p.status.qos_class = "BestEffort"
    p.status.conditions.add(type="PodScheduled", status="True", last_transition_time="2027-01-01T00:00:00Z")
    return p


def c(name: str, st: str, attempt: int = 0, code: int = 0, reason: str = "", cid: str | None = None) -> ContainerInfo:
    return ContainerInfo(id=cid or f"{name}{attempt}", name=name, sandbox_id="sb1", attempt=attempt, state=st,
                         exit_code=code, reason=reason, started_at=NOW - 60,
                         finished_at=NOW - 1 if st == EXITED else 0.0, image="busybox:1.0",
                         image_ref="docker.io/library/busybox@sha256:abc")


def actual(*containers: ContainerInfo, sandboxes: tuple[SandboxInfo, ...] = (SB,)) -> PodRuntimeState:
    return PodRuntimeState(sandboxes=sandboxes, containers=containers)


def status(p: core_pb2.Pod, a: PodRuntimeState, **kw: object) -> core_pb2.PodStatus:
    return pod_status(p, a, now=NOW, host_ip="192.168.1.10", **kw)  # type: ignore[arg-type]


def conditions(s: core_pb2.PodStatus) -> dict[str, str]:
    return {x.type: x.status for x in s.conditions}


def test_pending_while_the_sandbox_is_made() -> None:
    s = status(pod(), actual(sandboxes=()))
    assert s.phase == "Pending" and not s.pod_ip and s.host_ip == "192.168.1.10"
    assert [x.state.waiting.reason for x in s.container_statuses] == ["ContainerCreating"] * 2
    assert conditions(s) == {"PodScheduled": "True", "Initialized": "True", "ContainersReady": "False", "Ready": "False"}
    assert s.start_time == format_time(NOW) and s.qos_class == "BestEffort"


def test_running_needs_every_container_started() -> None:
    p = pod()
    s = status(p, actual(c("app", RUNNING)))
    assert s.phase == "Pending" and s.pod_ip == "10.244.0.5" and [x.ip for x in s.pod_ips] == ["10.244.0.5"]
    s = status(p, actual(c("app", RUNNING), c("side", RUNNING)))
    assert s.phase == "Running"
    app = s.container_statuses[0]
    assert app.state.running.started_at == format_time(NOW - 60) and app.ready and app.started
    assert app.container_id == "skiff://app0" and app.image_id.endswith("@sha256:abc") and app.image == "busybox:1.0"
    assert conditions(s)["Ready"] == "True"
    s = status(p, actual(c("app", RUNNING), c("side", CREATED)))
    assert s.phase == "Pending" and s.container_statuses[1].state.waiting.reason == "ContainerCreating"


def test_terminal_phases() -> None:
    never = pod(restart="Never")
    ok = status(never, actual(c("app", EXITED), c("side", EXITED)))
    assert ok.phase == "Succeeded"
    assert ok.container_statuses[0].state.terminated.reason == "Completed"
    assert conditions(ok)["Ready"] == "False"
    assert next(x for x in ok.conditions if x.type == "Ready").reason == "PodCompleted"
    bad = status(never, actual(c("app", EXITED), c("side", EXITED, code=3)))
    assert bad.phase == "Failed"
    term = bad.container_statuses[1].state.terminated
    assert (term.exit_code, term.reason, term.container_id) == (3, "Error", "skiff://side0")
    oom = status(never, actual(c("app", EXITED), c("side", EXITED, code=137, reason="OOMKilled")))
    assert oom.container_statuses[1].state.terminated.reason == "OOMKilled"
    # A terminal phase is final, whatever the runtime says later.
    never.status.phase = "Failed"
    assert status(never, actual(sandboxes=())).phase == "Failed"
    # Always: exited containers will be restarted, so the pod keeps Running.
    assert status(pod(), actual(c("app", EXITED, code=1), c("side", RUNNING))).phase == "Running"


def test_crash_loop_shows_waiting_with_the_last_termination() -> None:
    a = actual(c("app", EXITED, attempt=3, code=1), c("app", EXITED, attempt=2, code=1, cid="old"), c("side", RUNNING))
    s = status(pod(), a, waiting={"app": Waiting("CrashLoopBackOff", "back-off 40s restarting failed container")})
    app = s.container_statuses[0]
    assert app.state.waiting.reason == "CrashLoopBackOff" and app.restart_count == 3
    assert app.last_state.terminated.exit_code == 1 and app.last_state.terminated.container_id == "skiff://app3"
    assert not app.ready and s.phase == "Running"


def test_last_state_is_the_previous_instance() -> None:
    a = actual(c("app", RUNNING, attempt=1), c("app", EXITED, attempt=0, code=2), c("side", RUNNING))
    app = status(pod(), a).container_statuses[0]
    assert app.state.HasField("running") and app.restart_count == 1
    assert app.last_state.terminated.exit_code == 2


def test_init_containers() -> None:
    p = pod(init=("setup",))
    s = status(p, actual(c("setup", RUNNING)))
    assert s.phase == "Pending"
    assert [x.state.waiting.reason for x in s.container_statuses] == ["PodInitializing"] * 2
    assert s.init_container_statuses[0].state.HasField("running")
    assert conditions(s)["Initialized"] == "False"
    done = status(p, actual(c("setup", EXITED), c("app", RUNNING), c("side", RUNNING)))
    assert conditions(done)["Initialized"] == "True" and done.phase == "Running"


def test_image_pull_waiting_reasons() -> None:
    s = status(pod(), actual(), waiting={"app": Waiting("ErrImagePull", "manifest unknown")})
    assert (s.container_statuses[0].state.waiting.reason, s.container_statuses[0].state.waiting.message) == (
        "ErrImagePull", "manifest unknown")
    assert s.phase == "Pending"


def test_readiness_and_startup_probes() -> None:
    p = pod(readiness=True, startup=True, names=("app",))
    a = actual(c("app", RUNNING))
    s = status(p, a)
    assert not s.container_statuses[0].started and not s.container_statuses[0].ready
    s = status(p, a, probes=ProbeVerdicts(ready={"app0": False}, started={"app0": True}))
    assert s.container_statuses[0].started and not s.container_statuses[0].ready
    assert conditions(s)["Ready"] == "False"
    assert next(x for x in s.conditions if x.type == "Ready").message == "containers with unready status: [app]"
    s = status(p, a, probes=ProbeVerdicts(ready={"app0": True}, started={"app0": True}))
    assert conditions(s)["Ready"] == "True"


def test_transition_times_kept_while_unchanged_and_status_is_stable() -> None:
    p = pod()
    a = actual(c("app", RUNNING), c("side", RUNNING))
    first = status(p, a)
    p.status.CopyFrom(first)
    later = pod_status(p, a, now=NOW + 100, host_ip="192.168.1.10")
    assert later == first  # nothing changed: the worker skips the write
    scheduled = next(x for x in later.conditions if x.type == "PodScheduled")
    assert scheduled.last_transition_time == "2027-01-01T00:00:00Z"
    p.status.CopyFrom(later)
    flipped = pod_status(p, actual(c("app", RUNNING), c("side", EXITED, code=1)), now=NOW + 200, host_ip="192.168.1.10",
                         waiting={"side": Waiting("CrashLoopBackOff")})
    ready = next(x for x in flipped.conditions if x.type == "Ready")
    assert ready.status == "False" and ready.last_transition_time == format_time(NOW + 200)
    init = next(x for x in flipped.conditions if x.type == "Initialized")
    assert init.last_transition_time == format_time(NOW)


def test_host_network_sandbox_uses_the_host_address_and_containerd_ids() -> None:
    a = actual(c("app", RUNNING), sandboxes=(replace(SB, ip="", host_network=True),))
    s = pod_status(pod(names=("app",)), a, now=NOW, host_ip="10.0.0.7", id_scheme="containerd")
    assert s.pod_ip == "10.0.0.7" and s.container_statuses[0].container_id == "containerd://app0"


def test_past_its_active_deadline_the_pod_fails_with_deadline_exceeded() -> None:
    p = pod()
    p.spec.active_deadline_seconds = 30
    p.status.start_time = format_time(NOW - 31)
    s = status(p, actual(c("app", RUNNING), c("side", RUNNING)))
    assert (s.phase, s.reason, s.message) == ("Failed", "DeadlineExceeded",
                                              "Pod was active on the node longer than the specified deadline")
    p.status.start_time = format_time(NOW - 29)
    assert status(p, actual(c("app", RUNNING), c("side", RUNNING))).phase == "Running"
