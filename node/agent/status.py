"""The pure pod status: what the API is told about a pod, from what the runtime holds.

`pod_status(pod, actual, now=..., host_ip=..., waiting=..., probes=...) -> PodStatus` builds the
status from the pod (its spec and the status the API has now), the runtime state the planner
saw (`plan.PodRuntimeState`), the waiting reasons the last plan gave (CrashLoopBackOff,
ImagePullBackOff, ...; `plan.Wait`) and the probe verdicts. No I/O; `now` is passed in.

- **phase**: Pending until the sandbox runs and every container has started at least once;
  Running while any container runs or will be restarted; Succeeded when every container exited
  0 and none will restart; Failed when they all exited, one with an error, and none will
  restart (or an init container failed under restartPolicy Never), or when the pod has been
  active longer than spec.activeDeadlineSeconds (reason DeadlineExceeded; the planner kills its
  containers). Succeeded and Failed are final: once the API holds one, it is kept. The pod's
  reason and message are kept as they were otherwise.
- **conditions** PodScheduled, Initialized, ContainersReady, Ready; a condition's
  lastTransitionTime changes only when its status does, so an unchanged pod yields an equal
  status and the worker skips the write. Conditions of other types are kept as they are.
- **containerStatuses / initContainerStatuses** in spec order: state waiting (reason
  ContainerCreating, PodInitializing, CrashLoopBackOff, ErrImagePull, ImagePullBackOff, ...),
  running (startedAt) or terminated (exitCode, reason Completed/Error/OOMKilled, startedAt,
  finishedAt, containerID); lastState is the instance before; restartCount is the latest
  instance's attempt; ready/started from the probes (a container without a readiness probe is
  ready while running; without a startup probe it has started once running); containerID is
  `<scheme>://<id>` (`skiff://`, or `containerd://` against containerd).
- **podIP/podIPs** from the sandbox (the host's address for a host-network sandbox),
  **hostIP/hostIPs**, **startTime** (kept once set), qosClass and nominatedNodeName as they were.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controlplane.client.timeutil import format_time
from node.agent.plan import (DEADLINE_EXCEEDED, DEADLINE_MESSAGE, EXITED, FAILED, RUNNING, SUCCEEDED, UNKNOWN,
                             ContainerInfo, PodRuntimeState, deadline_exceeded, pod_finished, should_restart)
from protos.skiff.api.v1 import core_pb2

OWNED_CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class ProbeVerdicts:
    """Probe results by container id: readiness passed, startup passed. A container with such a
    probe and no entry has not passed it yet."""
    ready: Mapping[str, bool] = field(default_factory=dict)
    started: Mapping[str, bool] = field(default_factory=dict)


def container_id(runtime_id: str, scheme: str = "skiff") -> str:
    return f"{scheme}://{runtime_id}" if runtime_id else ""


def pod_status(pod: core_pb2.Pod, actual: PodRuntimeState, *, now: float, host_ip: str,
               waiting: Mapping[str, Waiting] | None = None, probes: ProbeVerdicts | None = None,
               id_scheme: str = "skiff") -> core_pb2.PodStatus:
    """The status to write for `pod` (see the module docstring); `pod` is not changed."""
    waiting = waiting or {}
    probes = probes or ProbeVerdicts()
    old = pod.status
    status = core_pb2.PodStatus()
    status.qos_class = old.qos_class
    status.nominated_node_name = old.nominated_node_name
    sandbox = actual.current_sandbox
    sid = sandbox.id if sandbox else None
    stamp = format_time(now)
    status.start_time = old.start_time or stamp
    if host_ip:
        status.host_ip = host_ip
        status.host_ips.add(ip=host_ip)
    if sandbox is not None and sandbox.ready:
        ip = sandbox.ip or (host_ip if sandbox.host_network else "")
        if ip:
            status.pod_ip = ip
            status.pod_ips.add(ip=ip)
    init_done = _init_done(pod, actual, sid)
    for spec in pod.spec.init_containers:
        status.init_container_statuses.append(
            _container_status(spec, actual, sid, waiting, probes, id_scheme, "PodInitializing"))
    pending_reason = "ContainerCreating" if init_done else "PodInitializing"
    for spec in pod.spec.containers:
        status.container_statuses.append(
            _container_status(spec, actual, sid, waiting, probes, id_scheme, pending_reason))
    status.phase = _phase(pod, actual, status, now)
    status.reason, status.message = old.reason, old.message
    if status.phase == FAILED and old.phase != FAILED and deadline_exceeded(pod, now):
        status.reason, status.message = DEADLINE_EXCEEDED, DEADLINE_MESSAGE
    _conditions(pod, status, init_done, stamp)
    return status


def _init_done(pod: core_pb2.Pod, actual: PodRuntimeState, sid: str | None) -> bool:
    for spec in pod.spec.init_containers:
        latest = actual.latest(spec.name, sid) if sid else None
        if latest is None or latest.state != EXITED or latest.exit_code != 0:
            return False
    return True


def _terminated(c: ContainerInfo, scheme: str) -> core_pb2.ContainerStateTerminated:
    reason = c.reason or ("Completed" if c.exit_code == 0 else "Error")
    return core_pb2.ContainerStateTerminated(
        exit_code=c.exit_code, reason=reason, message=c.message,
        started_at=format_time(c.started_at) if c.started_at else "",
        finished_at=format_time(c.finished_at) if c.finished_at else "",
        container_id=container_id(c.id, scheme))


def _state_of(c: ContainerInfo, scheme: str) -> core_pb2.ContainerState:
    if c.state == EXITED:
        return core_pb2.ContainerState(terminated=_terminated(c, scheme))
    if c.state in (RUNNING, UNKNOWN):
        return core_pb2.ContainerState(running=core_pb2.ContainerStateRunning(
            started_at=format_time(c.started_at) if c.started_at else ""))
    return core_pb2.ContainerState(waiting=core_pb2.ContainerStateWaiting(reason="ContainerCreating"))


def _container_status(spec: core_pb2.Container, actual: PodRuntimeState, sid: str | None,
                      waiting: Mapping[str, Waiting], probes: ProbeVerdicts, scheme: str,
                      pending_reason: str) -> core_pb2.ContainerStatus:
    out = core_pb2.ContainerStatus(name=spec.name, image=spec.image)
    instances = actual.instances(spec.name, sid) if sid else []
    latest = instances[0] if instances else None
    wait = waiting.get(spec.name)
    if latest is None:
        out.state.waiting.reason = wait.reason if wait else pending_reason
        out.state.waiting.message = wait.message if wait else ""
        out.started = False
        return out
    out.restart_count = latest.attempt
    out.image_id = latest.image_ref
    out.container_id = container_id(latest.id, scheme)
    previous = instances[1] if len(instances) > 1 else None
    if latest.state == EXITED and wait is not None:
        out.state.waiting.reason, out.state.waiting.message = wait.reason, wait.message
        out.last_state.terminated.CopyFrom(_terminated(latest, scheme))
    else:
        out.state.CopyFrom(_state_of(latest, scheme))
        if previous is not None and previous.state == EXITED:
            out.last_state.terminated.CopyFrom(_terminated(previous, scheme))
    running = latest.state in (RUNNING, UNKNOWN)
    started = running and (not spec.HasField("startup_probe") or probes.started.get(latest.id, False))
    out.started = started
    out.ready = started and (not spec.HasField("readiness_probe") or probes.ready.get(latest.id, False))
    return out


def _phase(pod: core_pb2.Pod, actual: PodRuntimeState, status: core_pb2.PodStatus, now: float) -> str:
    if pod.status.phase in (SUCCEEDED, FAILED):
        return pod.status.phase
    finished = pod_finished(pod, actual, now)
    if finished:
        return finished
    if actual.current_sandbox is None or not pod.spec.containers:
        return "Pending"
    policy = pod.spec.restart_policy or "Always"
    running = 0
    for cs in status.container_statuses:
        has_run = cs.state.HasField("running") or cs.state.HasField("terminated") or cs.last_state.HasField("terminated")
        if not has_run:
            return "Pending"
        if cs.state.HasField("running"):
            running += 1
        elif cs.state.HasField("terminated") and should_restart(policy, cs.state.terminated.exit_code):
            running += 1  # about to be restarted
        elif cs.state.HasField("waiting"):
            running += 1  # in backoff, to be restarted
    return "Running" if running else "Pending"


def _conditions(pod: core_pb2.Pod, status: core_pb2.PodStatus, init_done: bool, stamp: str) -> None:
    old = {c.type: c for c in pod.status.conditions}
    terminal = status.phase in (SUCCEEDED, FAILED)
    unready = [cs.name for cs in status.container_statuses if not cs.ready]
    uninit = [cs.name for cs in status.init_container_statuses
              if not (cs.state.HasField("terminated") and cs.state.terminated.exit_code == 0)]
    if terminal:
        ready_reason = "PodCompleted"
        ready, ready_message = False, ""
    else:
        ready = not unready and bool(status.container_statuses)
        ready_reason = "" if ready else "ContainersNotReady"
        ready_message = "" if ready else f"containers with unready status: [{' '.join(unready)}]"
    init_reason = "PodCompleted" if terminal and init_done else ("" if init_done else "ContainersNotInitialized")
    init_message = "" if init_done else f"containers with incomplete status: [{' '.join(uninit)}]"
    wanted = [
        ("PodScheduled", True, "", ""),
        ("Initialized", init_done, init_reason, init_message),
        ("ContainersReady", ready, ready_reason, ready_message),
        ("Ready", ready, ready_reason, ready_message),
    ]
    for ctype, ok, reason, message in wanted:
        cond = status.conditions.add(type=ctype, status="True" if ok else "False", reason=reason, message=message)
        before = old.get(ctype)
        cond.last_transition_time = (before.last_transition_time if before is not None and before.status == cond.status
                                     and before.last_transition_time else stamp)
        if before is not None and ctype == "PodScheduled":
            cond.reason, cond.message = before.reason, before.message
    for ctype, cond in old.items():
        if ctype not in OWNED_CONDITIONS:
            status.conditions.append(cond)
