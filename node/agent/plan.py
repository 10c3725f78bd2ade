"""The pure core of the node agent: what to do next for one pod, from what is wanted and what is.

`plan(desired, actual, now, backoff) -> list[Action]` compares a Pod (the API's desired state)
with `PodRuntimeState` (what the runtime holds for that pod: sandboxes, containers, images,
pull failures, probe verdicts) and returns the next actions. It is incremental: the pod worker
executes the actions, observes the runtime again and plans again, until a plan holds nothing
but `Wait`s (or nothing). No I/O, no clock, no mutation of its inputs.

The rules, as the kubelet's (kuberuntime_manager.computePodActions):

- **Sandbox.** The newest sandbox of the pod is the current one. None, or one that is not
  ready while the pod still has work to do: create a new one (attempt + 1), after stopping the
  old one; older sandboxes are stopped and removed. Init containers run again in a new sandbox.
- **Images**, before a container starts: `Always` pulls each time a container starts,
  `IfNotPresent` pulls when the image is absent, `Never` waits (`ErrImageNeverPull`). After a
  failed pull the image is retried with its own backoff (`ImagePullBackOff`).
- **Init containers** run one at a time in order; each must exit 0 before the next starts. A
  failed one is restarted (with crash-loop backoff) unless restartPolicy is Never, in which case
  the pod has failed.
- **Containers** start once every init container succeeded. An exited container restarts when
  restartPolicy is Always, or OnFailure with a non-zero exit code; a restart waits out the
  crash-loop backoff (`CrashLoopBackOff`). A running container is killed when its spec changed
  (its hash label differs: a new image) or a liveness/startup probe gave up on it; it is then
  restarted by the same rules (a spec change restarts at once, without backoff, unless Never).
- **Finished pods** (phase Succeeded/Failed, or nothing will ever run again) get their sandbox
  stopped; their containers stay for logs.
- **Deletion** (deletionTimestamp set, or the pod is gone from the API: `desired` None): every
  running container is killed with the pod's grace period (SIGTERM, then SIGKILL), sandboxes are
  stopped and removed, and when nothing is left `Finalize` (volumes removed, the API object
  deleted with grace 0).
- **Garbage**: per container name the latest instance and the one before it (for
  `logs --previous`) are kept; older exited instances are removed.

Crash-loop backoff (`CrashLoopBackoff`, the kubelet's flowcontrol.Backoff keyed by container):
the first restart after an exit is immediate; each later one waits, from the exit, 10 s then
20, 40, ... capped at 5 min; an exit more than 10 min after the previous restart resets it.
Configurable through `BackoffPolicy`. The executor calls `record_restart` when it restarts.

Invariants: every action names ids taken from `actual` or values from `desired`; a plan never
starts a container while another action for the same container precedes it unfinished (the
executor runs them in order); plans for a pod being deleted never create anything.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from controlplane.client.pods import termination_grace
from controlplane.client.timeutil import parse_time
from protos.skiff.api.v1 import core_pb2

# Labels and annotations the agent puts on what it creates (Kubernetes' names where it has them).
POD_UID_LABEL = "io.kubernetes.pod.uid"
POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"
CONTAINER_TYPE_LABEL = "skiff.io/container-type"  # "init" or "regular"
CONTAINER_HASH_ANNOTATION = "io.kubernetes.container.hash"

CREATED, RUNNING, EXITED, UNKNOWN = "created", "running", "exited", "unknown"
SUCCEEDED, FAILED = "Succeeded", "Failed"
ORPHAN_GRACE = 2  # seconds: a pod that vanished from the API (force-deleted) gets this long


# --- what the runtime holds ---------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxInfo:
    id: str
    attempt: int
    ready: bool
    ip: str = ""
    created_at: float = 0.0     # seconds since the epoch
    host_network: bool = False


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    sandbox_id: str
    attempt: int
    state: str                  # created, running, exited, unknown
    init: bool = False
    exit_code: int = 0
    reason: str = ""            # the runtime's: Completed, Error, OOMKilled
    message: str = ""
    created_at: float = 0.0     # seconds since the epoch; 0 when not known
    started_at: float = 0.0
    finished_at: float = 0.0
    image: str = ""             # as the pod spec asked
    image_ref: str = ""         # what the runtime resolved (digest or image id)
    spec_hash: str = ""
    log_path: str = ""


@dataclass(frozen=True)
class PullFailure:
    count: int                  # consecutive failures
    last_at: float              # seconds since the epoch
    message: str


@dataclass(frozen=True)
class PodRuntimeState:
    sandboxes: tuple[SandboxInfo, ...] = ()
    containers: tuple[ContainerInfo, ...] = ()
    images: frozenset[str] = frozenset()                    # references present in the runtime
    pull_failures: Mapping[str, PullFailure] = field(default_factory=dict)
    unhealthy: Mapping[str, str] = field(default_factory=dict)  # container id -> why (probes)

    @property
    def current_sandbox(self) -> SandboxInfo | None:
        if not self.sandboxes:
            return None
        return max(self.sandboxes, key=lambda s: (s.attempt, s.created_at))

    def instances(self, name: str, sandbox_id: str | None = None) -> list[ContainerInfo]:
        """The instances of one container, newest first (optionally in one sandbox only)."""
        found = [c for c in self.containers
                 if c.name == name and (sandbox_id is None or c.sandbox_id == sandbox_id)]
        return sorted(found, key=lambda c: (c.attempt, c.created_at), reverse=True)

    def latest(self, name: str, sandbox_id: str | None) -> ContainerInfo | None:
        found = self.instances(name, sandbox_id)
        return found[0] if found else None


# --- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateSandbox:
    attempt: int


@dataclass(frozen=True)
class StopSandbox:
    sandbox_id: str


@dataclass(frozen=True)
class RemoveSandbox:
    sandbox_id: str


@dataclass(frozen=True)
class PullImage:
    container: str
    image: str


@dataclass(frozen=True)
class StartContainer:
    """Create and start one container in the current sandbox. `restart_of` is the finish time
    of the instance it replaces when the restart counts for crash-loop backoff."""
    name: str
    sandbox_id: str
    attempt: int
    init: bool = False
    restart_of: float | None = None


@dataclass(frozen=True)
class KillContainer:
    container_id: str
    name: str
    grace: int
    reason: str


@dataclass(frozen=True)
class RemoveContainer:
    container_id: str


@dataclass(frozen=True)
class Wait:
    """Nothing to do for a container until `until` (None: until something changes); the reason
    and message are the container's waiting state in the pod's status."""
    container: str
    reason: str
    message: str
    until: float | None = None


@dataclass(frozen=True)
class Finalize:
    """Everything of a deleted pod is gone from the runtime: remove its volumes and, when the
    API still has it, delete it there with grace period 0."""
    delete_from_api: bool


Action = (CreateSandbox | StopSandbox | RemoveSandbox | PullImage | StartContainer | KillContainer
          | RemoveContainer | Wait | Finalize)


def changes_state(action: Action) -> bool:
    """Whether executing the action changes the runtime (a plan of only Waits is settled)."""
    return not isinstance(action, Wait)


# --- crash-loop backoff ---------------------------------------------------------------------


@dataclass(frozen=True)
class BackoffPolicy:
    initial: float = 10.0
    maximum: float = 300.0
    reset_after: float = 600.0   # an exit this long after the last restart starts over


class CrashLoopBackoff:
    """Per-container restart delays (see the module docstring). Pure: times are passed in."""

    def __init__(self, policy: BackoffPolicy | None = None) -> None:
        self.policy = policy or BackoffPolicy()
        self._entries: dict[str, tuple[float, float]] = {}  # key -> (delay, last restart's exit)

    def _expired(self, entry: tuple[float, float], finished_at: float) -> bool:
        return finished_at - entry[1] > self.policy.reset_after

    def remaining(self, key: str, finished_at: float, now: float) -> float:
        """Seconds still to wait before restarting the container that exited at `finished_at`."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, finished_at):
            return 0.0
        return max(0.0, finished_at + entry[0] - now)

    def delay(self, key: str) -> float:
        """The delay the next crash will wait (0 before the first restart)."""
        entry = self._entries.get(key)
        return entry[0] if entry else 0.0

    def record_restart(self, key: str, finished_at: float) -> None:
        """A restart of the instance that exited at `finished_at` is happening now."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, finished_at):
            delay = self.policy.initial
        else:
            delay = min(entry[0] * 2, self.policy.maximum)
        self._entries[key] = (delay, finished_at)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)


def pull_backoff(failures: int, policy: BackoffPolicy) -> float:
    """Seconds between attempts to pull an image after `failures` consecutive failures."""
    return min(policy.initial * 2 ** max(failures - 1, 0), policy.maximum)


# --- helpers on the pod spec ----------------------------------------------------------------


def container_hash(container: core_pb2.Container) -> str:
    """A stable digest of a container's spec: a different hash means the container must be
    replaced (in practice: a new image, the one mutable field)."""
    return hashlib.sha256(container.SerializeToString(deterministic=True)).hexdigest()[:16]


def grace_period(pod: core_pb2.Pod | None) -> int:
    if pod is None:
        return ORPHAN_GRACE
    m = pod.metadata
    if m.HasField("deletion_grace_period_seconds"):
        return max(int(m.deletion_grace_period_seconds), 0)
    return max(termination_grace(pod.spec), 0)


def is_terminating(pod: core_pb2.Pod | None) -> bool:
    return pod is None or bool(pod.metadata.deletion_timestamp)


def should_restart(policy: str, exit_code: int) -> bool:
    if policy == "Never":
        return False
    if policy == "OnFailure":
        return exit_code != 0
    return True  # Always (the default)


DEADLINE_EXCEEDED = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


def deadline_exceeded(pod: core_pb2.Pod, now: float) -> bool:
    """spec.activeDeadlineSeconds have passed since the pod's status.startTime."""
    if not pod.spec.HasField("active_deadline_seconds") or not pod.status.start_time:
        return False
    return now >= parse_time(pod.status.start_time) + pod.spec.active_deadline_seconds


def pod_finished(pod: core_pb2.Pod, actual: PodRuntimeState, now: float | None = None) -> str | None:
    """Succeeded/Failed when nothing in the pod will run again, else None. With `now`, a pod
    past its activeDeadlineSeconds is Failed whatever runs in it (its containers are then killed)."""
    if pod.status.phase in (SUCCEEDED, FAILED):
        return pod.status.phase
    if now is not None and deadline_exceeded(pod, now):
        return FAILED
    policy = pod.spec.restart_policy or "Always"
    sandbox = actual.current_sandbox
    sid = sandbox.id if sandbox else None
    if policy == "Never":
        for init in pod.spec.init_containers:
            latest = actual.latest(init.name, sid)
            if latest is not None and latest.state == EXITED and latest.exit_code != 0:
                return FAILED
    if policy == "Always" or not pod.spec.containers:
        return None
    codes = []
    for c in pod.spec.containers:
        latest = actual.latest(c.name, sid)
        if latest is None or latest.state != EXITED or should_restart(policy, latest.exit_code):
            return None
        codes.append(latest.exit_code)
    return SUCCEEDED if all(code == 0 for code in codes) else FAILED


# --- the plan -------------------------------------------------------------------------------


def plan(desired: core_pb2.Pod | None, actual: PodRuntimeState, now: float,
         backoff: CrashLoopBackoff, policy: BackoffPolicy | None = None) -> list[Action]:
    """The next actions for one pod (see the module docstring)."""
    policy = policy or backoff.policy
    if is_terminating(desired):
        return _terminate(desired, actual)
    assert desired is not None
    actions: list[Action] = []
    current = actual.current_sandbox
    for old in actual.sandboxes:
        if current is not None and old.id != current.id:
            actions += _drop_sandbox(old, actual, grace_period(desired))
    if pod_finished(desired, actual, now):
        if current is not None and current.ready:
            # Nothing runs in a finished pod, except in one past its deadline: killed first.
            actions += _kill_running(actual, current.id, grace_period(desired), "the pod is finished")
            actions.append(StopSandbox(current.id))
        return actions
    if current is None or not current.ready:
        if current is not None:
            actions += _kill_running(actual, current.id, grace_period(desired), "the pod sandbox is gone")
            actions.append(StopSandbox(current.id))
        actions.append(CreateSandbox(current.attempt + 1 if current else 0))
        return actions
    actions += _garbage(desired, actual, current.id)
    if not _init_done(desired, actual, current.id, now, backoff, policy, actions):
        return actions
    for container in desired.spec.containers:
        actions += _container_actions(desired, container, actual, current.id, now, backoff, policy)
    return actions


def _terminate(desired: core_pb2.Pod | None, actual: PodRuntimeState) -> list[Action]:
    grace = grace_period(desired)
    actions: list[Action] = []
    for sandbox in actual.sandboxes:
        actions += _kill_running(actual, sandbox.id, grace, "the pod is being deleted")
    for sandbox in actual.sandboxes:
        actions += [StopSandbox(sandbox.id), RemoveSandbox(sandbox.id)]
    stray = [c for c in actual.containers if c.sandbox_id not in {s.id for s in actual.sandboxes}]
    for c in stray:
        if c.state == RUNNING:
            actions.append(KillContainer(c.id, c.name, grace, "the pod is being deleted"))
        actions.append(RemoveContainer(c.id))
    if not actions:
        actions.append(Finalize(delete_from_api=desired is not None))
    return actions


def _kill_running(actual: PodRuntimeState, sandbox_id: str, grace: int, reason: str) -> list[Action]:
    return [KillContainer(c.id, c.name, grace, reason) for c in actual.containers
            if c.sandbox_id == sandbox_id and c.state in (RUNNING, CREATED, UNKNOWN)]


def _drop_sandbox(sandbox: SandboxInfo, actual: PodRuntimeState, grace: int) -> list[Action]:
    return _kill_running(actual, sandbox.id, grace, "an older sandbox of the pod") + [
        StopSandbox(sandbox.id), RemoveSandbox(sandbox.id)]


def _garbage(desired: core_pb2.Pod, actual: PodRuntimeState, sandbox_id: str) -> list[Action]:
    """Remove exited instances older than the previous one, and containers the spec lacks."""
    wanted = {c.name for c in desired.spec.init_containers} | {c.name for c in desired.spec.containers}
    actions: list[Action] = []
    for c in actual.containers:
        if c.sandbox_id == sandbox_id and c.name not in wanted:
            if c.state == RUNNING:
                actions.append(KillContainer(c.id, c.name, grace_period(desired), "not in the pod's spec"))
            actions.append(RemoveContainer(c.id))
    for name in wanted:
        for old in actual.instances(name)[2:]:
            if old.state == EXITED:
                actions.append(RemoveContainer(old.id))
    return actions


def _init_done(desired: core_pb2.Pod, actual: PodRuntimeState, sandbox_id: str, now: float,
               backoff: CrashLoopBackoff, policy: BackoffPolicy, actions: list[Action]) -> bool:
    """Append what the init containers need; True once every one of them exited 0."""
    restart_policy = desired.spec.restart_policy or "Always"
    for init in desired.spec.init_containers:
        latest = actual.latest(init.name, sandbox_id)
        if latest is not None and latest.state == EXITED and latest.exit_code == 0:
            continue
        if latest is None:
            actions += _start(desired, init, actual, sandbox_id, now, policy, True, None)
        elif latest.state == CREATED:
            actions += [RemoveContainer(latest.id)]
        elif latest.state == RUNNING and latest.id in actual.unhealthy:
            actions.append(KillContainer(latest.id, init.name, grace_period(desired), actual.unhealthy[latest.id]))
        elif latest.state == EXITED and restart_policy != "Never":
            actions += _restart(desired, init, latest, actual, sandbox_id, now, backoff, policy, True)
        return False
    return True


def _container_actions(desired: core_pb2.Pod, container: core_pb2.Container, actual: PodRuntimeState,
                       sandbox_id: str, now: float, backoff: CrashLoopBackoff,
                       policy: BackoffPolicy) -> list[Action]:
    latest = actual.latest(container.name, sandbox_id)
    if latest is None:
        return _start(desired, container, actual, sandbox_id, now, policy, False, None)
    if latest.state == CREATED:
        return [RemoveContainer(latest.id)]  # made but never started (an agent crash): make anew
    if latest.state in (RUNNING, UNKNOWN):
        if latest.spec_hash and latest.spec_hash != container_hash(container):
            return [KillContainer(latest.id, container.name, grace_period(desired),
                                  f"container {container.name} definition changed, will be restarted")]
        if latest.id in actual.unhealthy:
            return [KillContainer(latest.id, container.name, grace_period(desired), actual.unhealthy[latest.id])]
        return []
    return _restart(desired, container, latest, actual, sandbox_id, now, backoff, policy, False)


def _restart(desired: core_pb2.Pod, container: core_pb2.Container, latest: ContainerInfo,
             actual: PodRuntimeState, sandbox_id: str, now: float, backoff: CrashLoopBackoff,
             policy: BackoffPolicy, init: bool) -> list[Action]:
    restart_policy = desired.spec.restart_policy or "Always"
    changed = bool(latest.spec_hash) and latest.spec_hash != container_hash(container)
    if changed and restart_policy != "Never":
        return _start(desired, container, actual, sandbox_id, now, policy, init, None)
    if not should_restart(restart_policy, latest.exit_code):
        return []
    left = backoff.remaining(container.name, latest.finished_at, now)
    if left > 0:
        delay = backoff.delay(container.name)
        return [Wait(container.name, "CrashLoopBackOff",
                     f"back-off {delay:g}s restarting failed container={container.name} "
                     f"pod={desired.metadata.name}_{desired.metadata.namespace}({desired.metadata.uid})",
                     now + left)]
    return _start(desired, container, actual, sandbox_id, now, policy, init, latest.finished_at)


def _start(desired: core_pb2.Pod, container: core_pb2.Container, actual: PodRuntimeState,
           sandbox_id: str, now: float, policy: BackoffPolicy, init: bool,
           restart_of: float | None) -> list[Action]:
    image = container.image
    pull_policy = container.image_pull_policy or "IfNotPresent"
    present = image in actual.images
    actions: list[Action] = []
    if pull_policy == "Never" and not present:
        return [Wait(container.name, "ErrImageNeverPull",
                     f'Container image "{image}" is not present with pull policy of Never')]
    if pull_policy == "Always" or not present:
        failure = actual.pull_failures.get(image)
        if failure is not None and now < failure.last_at + pull_backoff(failure.count, policy):
            return [Wait(container.name, "ImagePullBackOff", f'Back-off pulling image "{image}": {failure.message}',
                         failure.last_at + pull_backoff(failure.count, policy))]
        actions.append(PullImage(container.name, image))
    attempt = max((c.attempt + 1 for c in actual.instances(container.name)), default=0)
    actions.append(StartContainer(container.name, sandbox_id, attempt, init, restart_of))
    return actions


def settled(actions: Sequence[Action]) -> bool:
    """True when the plan changes nothing in the runtime (only waits, or nothing)."""
    return not any(changes_state(a) for a in actions)


def deletion_deadline(pod: core_pb2.Pod) -> float | None:
    """When the API expects the pod gone (its deletionTimestamp), in seconds since the epoch."""
    stamp = pod.metadata.deletion_timestamp
    if not stamp:
        return None
    try:
        return parse_time(stamp)
    except ValueError:
        return None
