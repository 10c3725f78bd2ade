"""Pod workers: one asyncio task per pod that drives the runtime toward the pod's spec.

`PodWorkers.update(uid, pod)` hands a worker the latest desired state (None: the pod is gone
from the API) and wakes it. Each pod has exactly one worker task, so one pod is never handled
by two workers at once; updates that arrive while a worker is busy are coalesced into its next
pass (a keyed mailbox: only the latest desired state is kept).

A pass (`PodWorker.sync`): observe the runtime (`CRIRuntime.observe`: the pod's sandboxes and
containers by the pod-uid label, which images are present), `plan(...)`, execute the actions,
and repeat until the plan only waits (at most `MAX_ROUNDS` rounds). Then the status is computed
(`status.pod_status`) and written with UpdateStatus only when it differs from what the API holds
and from what this worker last wrote. The worker sleeps until the earliest `Wait` expires, a
probe verdict changes, an update arrives, or `resync` seconds pass (the runtime is polled, as the
kubelet's PLEG relists: that is how exits are noticed).

Failures: an image pull that fails is remembered (`PullFailure`, backing off per image) and the
container waits with ErrImagePull, then ImagePullBackOff. Any other failure (a missing
configMap: CreateContainerConfigError; the runtime refusing: CreateContainerError,
RunContainerError; the runtime or the API unreachable) ends the pass after the status was
written with the reason; the worker retries with backoff (0.5 s doubling to 30 s). A status
write the API refuses or cannot take is retried on the next pass. The worker keeps its last
desired state, so pods keep running while the API server is away, and their status catches up
once it is back.

Deletion: kills run concurrently (each with the pod's grace period: SIGTERM, then SIGKILL),
then sandboxes are stopped and removed, volumes removed, and the pod deleted in the API with
grace period 0 (uid precondition). A worker whose pod is gone and whose runtime state is empty
ends.

The CRI configs are built by pure functions (`sandbox_config`, `container_config`,
`linux_resources`, `container_env`): Kubernetes' labels (io.kubernetes.pod.uid, ...), logs
under `<log_root>/<namespace>_<name>_<uid>/<container>/<attempt>.log`, cgroup limits from
requests/limits, env with fieldRef (metadata.name/namespace/uid, spec.nodeName,
status.podIP/hostIP) and configMap/secret key refs. Pod annotations starting with `skiff.io/`
are also copied onto each container (for the fake handler's exit controls).
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.message import Message

from controlplane.client import quantity
from controlplane.client.api import ApiClient, ApiStatusError, NotFoundError
from controlplane.client.timeutil import SystemClock, WallClock
from node.agent import downward, hooks
from node.agent import plan as p
from node.agent.probes import ProbeManager, Target
from node.agent.status import ProbeVerdicts, Waiting, pod_status
from node.agent.volumes import VolumeError, VolumeManager, container_mounts
from protos.cri.runtime.v1 import api_pb2 as cri
from protos.skiff.api.v1 import core_pb2

log = logging.getLogger(__name__)

MAX_ROUNDS = 8
Lookup = Callable[[str, str, str], Awaitable[Message | None]]
_STATES = {cri.CONTAINER_CREATED: p.CREATED, cri.CONTAINER_RUNNING: p.RUNNING,
           cri.CONTAINER_EXITED: p.EXITED, cri.CONTAINER_UNKNOWN: p.UNKNOWN}


# --- pure CRI configs ---------------------------------------------------------------------------


def log_directory(log_root: Path, pod: core_pb2.Pod) -> str:
    m = pod.metadata
    return str(log_root / f"{m.namespace}_{m.name}_{m.uid}")


def sandbox_config(pod: core_pb2.Pod, attempt: int, log_root: Path) -> cri.PodSandboxConfig:
    m = pod.metadata
    labels = {p.POD_UID_LABEL: m.uid, p.POD_NAME_LABEL: m.name, p.POD_NAMESPACE_LABEL: m.namespace}
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=m.name, uid=m.uid, namespace=m.namespace, attempt=attempt),
        hostname=pod.spec.hostname or m.name, log_directory=log_directory(log_root, pod),
        labels=labels, annotations=dict(m.annotations))
    share = pod.spec.HasField("share_process_namespace") and pod.spec.share_process_namespace
    config.linux.security_context.namespace_options.CopyFrom(cri.NamespaceOption(
        network=cri.NODE if pod.spec.host_network else cri.POD, pid=cri.POD if share else cri.CONTAINER, ipc=cri.POD))
    if pod.spec.dns_config.nameservers:
        config.dns_config.servers.extend(pod.spec.dns_config.nameservers)
        config.dns_config.searches.extend(pod.spec.dns_config.searches)
    return config


def linux_resources(container: core_pb2.Container) -> cri.LinuxContainerResources:
    """cgroup settings from requests and limits, as the kubelet computes them."""
    limits, requests = container.resources.limits, container.resources.requests
    out = cri.LinuxContainerResources(cpu_period=100_000)
    cpu_request = requests.get("cpu") or limits.get("cpu")
    out.cpu_shares = max(quantity.parse_cpu_millis(cpu_request) * 1024 // 1000, 2) if cpu_request else 2
    if "cpu" in limits:
        out.cpu_quota = max(quantity.parse_cpu_millis(limits["cpu"]) * 100_000 // 1000, 1000)
    if "memory" in limits:
        out.memory_limit_in_bytes = quantity.parse_bytes(limits["memory"])
    return out


_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


async def _source_data(lookup: Lookup, namespace: str, is_cm: bool, name: str, optional: bool,
                       what: str) -> dict[str, str] | None:
    """The data of a ConfigMap or Secret as text; None when it is absent and optional."""
    obj = await lookup("configmaps" if is_cm else "secrets", namespace, name)
    if obj is None:
        if optional:
            return None
        raise ValueError(f"{what}: {'configmap' if is_cm else 'secret'} {name!r} not found")
    data = getattr(obj, "data", {})
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in data.items()}


async def container_env(pod: core_pb2.Pod, container: core_pb2.Container, pod_ip: str, host_ip: str,
                        lookup: Lookup, allocatable: Mapping[str, str] | None = None) -> list[cri.KeyValue]:
    """The container's environment as the kubelet builds it: every key of each envFrom source
    (in order, keys sorted, with the prefix; keys that are not valid variable names are skipped,
    later sources win), then `env`, whose entries override same-named ones. fieldRef and
    resourceFieldRef values come from `node.agent.downward` (`allocatable`: the node's, for
    limits the container does not set)."""
    values: dict[str, str] = {}
    for i, source in enumerate(container.env_from):
        is_cm = source.HasField("config_map_ref")
        ref = source.config_map_ref if is_cm else source.secret_ref
        data = await _source_data(lookup, pod.metadata.namespace, is_cm, ref.name,
                                  ref.HasField("optional") and ref.optional, f"envFrom[{i}]")
        for key in sorted(data or {}):
            name = source.prefix + key
            if _ENV_NAME.fullmatch(name):
                values[name] = (data or {})[key]
    for var in container.env:
        value = var.value
        src = var.value_from
        if src.HasField("field_ref"):
            value = downward.field_value(pod, src.field_ref.field_path, pod_ip=pod_ip, host_ip=host_ip)
        elif src.HasField("resource_field_ref"):
            r = src.resource_field_ref
            value = downward.resource_value(pod, r.container_name or container.name, r.resource, r.divisor,
                                            allocatable or {})
        elif src.HasField("config_map_key_ref") or src.HasField("secret_key_ref"):
            is_cm = src.HasField("config_map_key_ref")
            ref = src.config_map_key_ref if is_cm else src.secret_key_ref
            optional = ref.HasField("optional") and ref.optional
            data = await _source_data(lookup, pod.metadata.namespace, is_cm, ref.name, optional, f"env {var.name}")
            if data is None:
                continue  # an optional source that is absent: no variable
            if ref.key not in data:
                if optional:
                    continue
                raise ValueError(f"env {var.name}: {'configmap' if is_cm else 'secret'} {ref.name!r} "
                                 f"has no key {ref.key!r}")
            value = data[ref.key]
        values[var.name] = value
    return [cri.KeyValue(key=k, value=v) for k, v in values.items()]


def container_config(pod: core_pb2.Pod, container: core_pb2.Container, attempt: int, init: bool,
                     mounts: list[cri.Mount], envs: list[cri.KeyValue]) -> cri.ContainerConfig:
    m = pod.metadata
    labels = {p.POD_UID_LABEL: m.uid, p.POD_NAME_LABEL: m.name, p.POD_NAMESPACE_LABEL: m.namespace,
              p.CONTAINER_NAME_LABEL: container.name, p.CONTAINER_TYPE_LABEL: "init" if init else "regular"}
    annotations = {k: v for k, v in m.annotations.items() if k.startswith("skiff.io/")}
    annotations[p.CONTAINER_HASH_ANNOTATION] = p.container_hash(container)
    annotations["io.kubernetes.container.restartCount"] = str(attempt)
    config = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=container.name, attempt=attempt),
        image=cri.ImageSpec(image=container.image, user_specified_image=container.image),
        command=list(container.command), args=list(container.args), working_dir=container.working_dir,
        envs=envs, mounts=mounts, labels=labels, annotations=annotations,
        log_path=f"{container.name}/{attempt}.log", stdin=container.stdin, tty=container.tty)
    config.linux.resources.CopyFrom(linux_resources(container))
    sc, psc = container.security_context, pod.spec.security_context
    out = config.linux.security_context
    for name, target in (("run_as_user", out.run_as_user), ("run_as_group", out.run_as_group)):
        if sc.HasField(name):
            target.value = getattr(sc, name)
        elif psc.HasField(name):
            target.value = getattr(psc, name)
    out.supplemental_groups.extend(psc.supplemental_groups)
    out.readonly_rootfs = sc.HasField("read_only_root_filesystem") and sc.read_only_root_filesystem
    out.privileged = sc.HasField("privileged") and sc.privileged
    out.no_new_privs = sc.HasField("allow_privilege_escalation") and not sc.allow_privilege_escalation
    out.capabilities.add_capabilities.extend(sc.capabilities.add)
    out.capabilities.drop_capabilities.extend(sc.capabilities.drop)
    return config


def _seconds(ns: int) -> float:
    return ns / 1e9 if ns > 0 else 0.0


# --- the runtime, for one node ------------------------------------------------------------------


@dataclass
class CRIRuntime:
    """The CRI calls pod workers make (`cri` is a node.runtime.client.CRIClient)."""
    cri: object
    log_root: Path
    timeout: float = 120.0

    @property
    def rt(self) -> object:
        return self.cri.runtime  # type: ignore[attr-defined]

    async def observe(self, uid: str, images: set[str]) -> tuple[list[p.SandboxInfo], list[p.ContainerInfo], frozenset[str]]:
        selector = {p.POD_UID_LABEL: uid}
        listed = await self.rt.ListPodSandbox(cri.ListPodSandboxRequest(  # type: ignore[attr-defined]
            filter=cri.PodSandboxFilter(label_selector=selector)), timeout=self.timeout)
        sandboxes = []
        for item in listed.items:
            try:
                st = (await self.rt.PodSandboxStatus(cri.PodSandboxStatusRequest(  # type: ignore[attr-defined]
                    pod_sandbox_id=item.id), timeout=self.timeout)).status
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    continue
                raise
            sandboxes.append(p.SandboxInfo(
                id=st.id, attempt=st.metadata.attempt, ready=st.state == cri.SANDBOX_READY, ip=st.network.ip,
                created_at=_seconds(st.created_at), host_network=st.linux.namespaces.options.network == cri.NODE))
        containers = []
        found = await self.rt.ListContainers(cri.ListContainersRequest(  # type: ignore[attr-defined]
            filter=cri.ContainerFilter(label_selector=selector)), timeout=self.timeout)
        for c in found.containers:
            try:
                s = (await self.rt.ContainerStatus(cri.ContainerStatusRequest(  # type: ignore[attr-defined]
                    container_id=c.id), timeout=self.timeout)).status
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    continue
                raise
            containers.append(p.ContainerInfo(
                id=s.id, name=s.metadata.name, sandbox_id=c.pod_sandbox_id, attempt=s.metadata.attempt,
                state=_STATES.get(s.state, p.UNKNOWN), init=s.labels.get(p.CONTAINER_TYPE_LABEL) == "init",
                exit_code=s.exit_code, reason=s.reason, message=s.message, created_at=_seconds(s.created_at),
                started_at=_seconds(s.started_at), finished_at=_seconds(s.finished_at),
                image=s.image.user_specified_image or s.image.image, image_ref=s.image_ref or s.image_id,
                spec_hash=s.annotations.get(p.CONTAINER_HASH_ANNOTATION, ""), log_path=s.log_path))
        present = set()
        for image in images:
            got = await self.cri.images.ImageStatus(cri.ImageStatusRequest(  # type: ignore[attr-defined]
                image=cri.ImageSpec(image=image)), timeout=self.timeout)
            if got.HasField("image") and got.image.id:
                present.add(image)
        return sandboxes, containers, frozenset(present)


# --- one pod's worker ---------------------------------------------------------------------------


@dataclass
class WorkerDeps:
    """What every pod worker shares."""
    runtime: CRIRuntime
    api: ApiClient
    volumes: VolumeManager
    probes: ProbeManager
    lookup: Lookup
    host_ip: str
    id_scheme: str = "skiff"
    backoff_policy: p.BackoffPolicy = field(default_factory=p.BackoffPolicy)
    allocatable: dict[str, str] = field(default_factory=dict)  # the node's (downward API limits)
    wall: WallClock = field(default_factory=SystemClock)
    resync: float = 1.0


class PodWorker:
    """The one task that owns one pod (see the module docstring)."""

    def __init__(self, uid: str, deps: WorkerDeps, on_done: Callable[[str], None]) -> None:
        self.uid = uid
        self.deps = deps
        self.on_done = on_done
        self.desired: core_pb2.Pod | None = None
        self.backoff = p.CrashLoopBackoff(deps.backoff_policy)
        self.pull_failures: dict[str, p.PullFailure] = {}
        self.errors: dict[str, Waiting] = {}      # container -> waiting reason from this pass's failures
        self.last_written: core_pb2.PodStatus | None = None
        self.wake = asyncio.Event()
        self.finished = False
        self.syncs = 0
        self.task: asyncio.Task[None] | None = None

    def update(self, pod: core_pb2.Pod | None) -> None:
        self.desired = pod
        self.wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name=f"pod-worker-{self.uid}")

    async def _loop(self) -> None:
        failures = 0
        while not self.finished:
            self.wake.clear()
            try:
                delay = await self.sync()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the runtime or the API failed: retry with backoff
                failures += 1
                delay = min(0.5 * 2 ** (failures - 1), 30.0)
                log.warning("pod %s: sync failed (%s: %s); retrying in %.1fs", self._name(), type(err).__name__,
                            _one_line(err), delay)
            if self.finished:
                break
            try:
                await asyncio.wait_for(self.wake.wait(), max(delay, 0.01))
            except asyncio.TimeoutError:
                pass
        self.on_done(self.uid)

    def _name(self) -> str:
        d = self.desired
        return f"{d.metadata.namespace}/{d.metadata.name}" if d is not None else self.uid

    async def _observe(self, desired: core_pb2.Pod | None) -> p.PodRuntimeState:
        images = set()
        if desired is not None:
            images = {c.image for c in list(desired.spec.init_containers) + list(desired.spec.containers)}
        sandboxes, containers, present = await self.deps.runtime.observe(self.uid, images)
        _, _, unhealthy = self.deps.probes.verdicts(self.uid)
        return p.PodRuntimeState(tuple(sandboxes), tuple(containers), present, dict(self.pull_failures), unhealthy)

    async def sync(self) -> float:
        """One pass; returns the seconds until the next one is due."""
        self.syncs += 1
        desired = self.desired
        self.errors = {}
        actions: list[p.Action] = []
        actual = await self._observe(desired)
        failure: Exception | None = None
        try:
            for _ in range(MAX_ROUNDS):
                actions = p.plan(desired, actual, self.deps.wall.now(), self.backoff)
                if p.settled(actions):
                    break
                if await self._execute(desired, actual, actions):
                    self.finished = True  # the pod is gone from the runtime (and from the API)
                    return 0.0
                actual = await self._observe(desired)
        except (VolumeError, ValueError, ApiStatusError, grpc.aio.AioRpcError) as err:
            failure = err  # the status still tells why (CreateContainerConfigError, ...)
        self._probe(desired, actual)
        if desired is not None:
            try:
                await self._write_status(desired, actual, actions)
            except ApiStatusError as err:  # the API is away: the next pass writes it
                log.info("pod %s: status not written (%s); will retry", self._name(), _one_line(err))
        if failure is not None:
            raise failure
        waits = [a.until for a in actions if isinstance(a, p.Wait) and a.until is not None]
        next_due = min(waits, default=self.deps.wall.now() + self.deps.resync) - self.deps.wall.now()
        return min(max(next_due, 0.05), self.deps.resync)

    async def _execute(self, desired: core_pb2.Pod | None, actual: p.PodRuntimeState,
                       actions: list[p.Action]) -> bool:
        """Run the actions in order (kills first, concurrently); True once a Finalize ran."""
        rt = self.deps.runtime.rt
        skip: set[str] = set()
        kills = [a for a in actions if isinstance(a, p.KillContainer)]
        if kills:
            await asyncio.gather(*(self._kill(k, desired, actual) for k in kills))
        for action in actions:
            if isinstance(action, p.CreateSandbox):
                assert desired is not None
                config = sandbox_config(desired, action.attempt, self.deps.runtime.log_root)
                handler = await self._runtime_handler(desired)
                await rt.RunPodSandbox(cri.RunPodSandboxRequest(config=config, runtime_handler=handler),  # type: ignore[attr-defined]
                                       timeout=self.deps.runtime.timeout)
            elif isinstance(action, p.StopSandbox):
                await _ignore_not_found(rt.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=action.sandbox_id),  # type: ignore[attr-defined]
                                                          timeout=self.deps.runtime.timeout))
            elif isinstance(action, p.RemoveSandbox):
                await rt.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=action.sandbox_id),  # type: ignore[attr-defined]
                                          timeout=self.deps.runtime.timeout)
            elif isinstance(action, p.RemoveContainer):
                await rt.RemoveContainer(cri.RemoveContainerRequest(container_id=action.container_id),  # type: ignore[attr-defined]
                                         timeout=self.deps.runtime.timeout)
            elif isinstance(action, p.PullImage) and action.container not in skip:
                assert desired is not None
                if not await self._pull(desired, action, actual):
                    skip.add(action.container)
            elif isinstance(action, p.StartContainer) and action.name not in skip:
                assert desired is not None
                await self._start(desired, action, actual)
            elif isinstance(action, p.Finalize):
                await self._finalize(desired, action)
                return True
        return False

    async def _kill(self, kill: p.KillContainer, desired: core_pb2.Pod | None, actual: p.PodRuntimeState) -> None:
        grace = kill.grace
        spec = _container_spec(desired, kill.name)
        info = next((c for c in actual.containers if c.id == kill.container_id), None)
        if spec is not None and hooks.has_hook(spec, "pre_stop") and grace > 0 and info is not None \
                and info.state == p.RUNNING and not info.init:
            started = self.deps.wall.now()
            ok, message = await hooks.run_hook(spec.lifecycle.pre_stop, self._target(spec, kill.container_id, actual),
                                               self.deps.probes.checker, float(grace))
            if not ok:
                log.warning("pod %s: preStop hook of %s failed: %s", self._name(), kill.name, message)
            grace = max(grace - int(self.deps.wall.now() - started), hooks.MIN_GRACE_AFTER_PRE_STOP)
        log.info("pod %s: killing container %s (%s), grace %ds", self._name(), kill.name, kill.reason, grace)
        await self._stop_container(kill.container_id, grace)

    async def _stop_container(self, container_id: str, grace: int) -> None:
        await _ignore_not_found(self.deps.runtime.rt.StopContainer(  # type: ignore[attr-defined]
            cri.StopContainerRequest(container_id=container_id, timeout=grace),
            timeout=grace + self.deps.runtime.timeout))

    def _target(self, spec: core_pb2.Container, container_id: str, actual: p.PodRuntimeState) -> Target:
        """Where the container's probes and hooks go: the pod's IP (the node's for hostNetwork)."""
        info = next((c for c in actual.containers if c.id == container_id), None)
        sandbox = next((sb for sb in actual.sandboxes if info is not None and sb.id == info.sandbox_id),
                       actual.current_sandbox)
        host = sandbox.ip if sandbox is not None and sandbox.ip and not sandbox.host_network else self.deps.host_ip
        return Target(container_id, host, {port.name: port.container_port for port in spec.ports if port.name})

    async def _runtime_handler(self, pod: core_pb2.Pod) -> str:
        if not pod.spec.HasField("runtime_class_name") or not pod.spec.runtime_class_name:
            return ""
        rc = await self.deps.lookup("runtimeclasses", "", pod.spec.runtime_class_name)
        if rc is None:
            raise ValueError(f"RuntimeClass {pod.spec.runtime_class_name!r} not found")
        return str(rc.handler)  # type: ignore[attr-defined]

    async def _pull(self, pod: core_pb2.Pod, action: p.PullImage, actual: p.PodRuntimeState) -> bool:
        sandbox = actual.current_sandbox
        request = cri.PullImageRequest(image=cri.ImageSpec(image=action.image))
        if sandbox is not None:
            request.sandbox_config.CopyFrom(sandbox_config(pod, sandbox.attempt, self.deps.runtime.log_root))
        try:
            await self.deps.runtime.cri.images.PullImage(request, timeout=600)  # type: ignore[attr-defined]
        except grpc.aio.AioRpcError as err:
            before = self.pull_failures.get(action.image)
            message = err.details() or err.code().name
            self.pull_failures[action.image] = p.PullFailure((before.count if before else 0) + 1,
                                                             self.deps.wall.now(), message)
            self.errors[action.container] = Waiting("ErrImagePull", message)
            log.warning("pod %s: pulling %s failed: %s", self._name(), action.image, message)
            return False
        self.pull_failures.pop(action.image, None)
        return True

    async def _start(self, pod: core_pb2.Pod, action: p.StartContainer, actual: p.PodRuntimeState) -> None:
        spec = next(c for c in list(pod.spec.init_containers) + list(pod.spec.containers) if c.name == action.name)
        sandbox = actual.current_sandbox
        assert sandbox is not None and sandbox.id == action.sandbox_id
        where = f"pod {pod.metadata.namespace}/{pod.metadata.name}: "
        try:
            paths = await self.deps.volumes.setup(pod, self.deps.lookup)
            mounts = container_mounts(spec, paths, where)
            envs = await container_env(pod, spec, sandbox.ip or self.deps.host_ip, self.deps.host_ip, self.deps.lookup,
                                       self.deps.allocatable)
        except (VolumeError, ValueError, ApiStatusError) as err:
            self.errors[action.name] = Waiting("CreateContainerConfigError", str(err))
            raise
        if action.restart_of is not None:
            self.backoff.record_restart(action.name, action.restart_of)
        config = container_config(pod, spec, action.attempt, action.init, mounts, envs)
        rt = self.deps.runtime.rt
        sb_config = sandbox_config(pod, sandbox.attempt, self.deps.runtime.log_root)
        try:
            created = await rt.CreateContainer(cri.CreateContainerRequest(  # type: ignore[attr-defined]
                pod_sandbox_id=action.sandbox_id, config=config, sandbox_config=sb_config), timeout=self.deps.runtime.timeout)
        except grpc.aio.AioRpcError as err:
            self.errors[action.name] = Waiting("CreateContainerError", err.details() or err.code().name)
            raise
        try:
            await rt.StartContainer(cri.StartContainerRequest(container_id=created.container_id),  # type: ignore[attr-defined]
                                    timeout=self.deps.runtime.timeout)
        except grpc.aio.AioRpcError as err:
            self.errors[action.name] = Waiting("RunContainerError", err.details() or err.code().name)
            raise
        log.info("pod %s: started container %s (attempt %d)", self._name(), action.name, action.attempt)
        if hooks.has_hook(spec, "post_start"):
            target = self._target(spec, created.container_id, actual)  # not in `actual` yet: its sandbox is current
            ok, message = await hooks.run_hook(spec.lifecycle.post_start, target, self.deps.probes.checker,
                                               hooks.POST_START_TIMEOUT)
            if not ok:
                log.warning("pod %s: postStart hook of %s failed: %s", self._name(), action.name, message)
                await self._stop_container(created.container_id, p.grace_period(pod))
                if (pod.spec.restart_policy or "Always") != "Never":  # it will run again: say why it waits
                    self.errors[action.name] = Waiting("PostStartHookError", message)

    async def _finalize(self, desired: core_pb2.Pod | None, action: p.Finalize) -> None:
        self.deps.volumes.cleanup(self.uid)
        self.deps.probes.retain(self.uid, set())
        if action.delete_from_api and desired is not None:
            m = desired.metadata
            try:
                await self.deps.api.delete("pods", m.name, m.namespace, grace_period_seconds=0, uid=m.uid)
            except NotFoundError:
                pass
            log.info("pod %s/%s: deleted", m.namespace, m.name)

    def _probe(self, desired: core_pb2.Pod | None, actual: p.PodRuntimeState) -> None:
        """Probe the running containers of the current sandbox; stop probing the others."""
        sandbox = actual.current_sandbox
        running = {c.id: c for c in actual.containers
                   if sandbox is not None and c.sandbox_id == sandbox.id and c.state == p.RUNNING}
        self.deps.probes.retain(self.uid, set(running) if desired is not None and not p.is_terminating(desired) else set())
        if desired is None or p.is_terminating(desired) or sandbox is None:
            return
        now = self.deps.wall.now()
        for cid, info in running.items():
            spec = _container_spec(desired, info.name)
            if spec is None or info.init:
                continue
            self.deps.probes.ensure(self.uid, spec, self._target(spec, cid, actual),
                                    now - info.started_at if info.started_at else 0.0)

    async def _write_status(self, desired: core_pb2.Pod, actual: p.PodRuntimeState, actions: list[p.Action]) -> None:
        waiting = {a.container: Waiting(a.reason, a.message) for a in actions if isinstance(a, p.Wait)}
        waiting.update(self.errors)
        ready, started, _ = self.deps.probes.verdicts(self.uid)
        base = desired
        if self.last_written is not None:
            base = core_pb2.Pod()
            base.CopyFrom(desired)
            base.status.CopyFrom(self.last_written)  # our own last word beats a stale cache
        status = pod_status(base, actual, now=self.deps.wall.now(), host_ip=self.deps.host_ip, waiting=waiting,
                            probes=ProbeVerdicts(ready, started), id_scheme=self.deps.id_scheme)
        if status == desired.status or status == self.last_written:
            return
        updated = core_pb2.Pod()
        updated.CopyFrom(desired)
        updated.status.CopyFrom(status)
        updated.metadata.resource_version = ""  # the agent owns the status: no precondition
        try:
            await self.deps.api.update_status(updated)
        except NotFoundError:
            return
        self.last_written = status


def _container_spec(pod: core_pb2.Pod | None, name: str) -> core_pb2.Container | None:
    if pod is None:
        return None
    return next((c for c in list(pod.spec.init_containers) + list(pod.spec.containers) if c.name == name), None)


async def _ignore_not_found(call: Awaitable[object]) -> None:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise


def _one_line(err: BaseException) -> str:
    text = err.details() if isinstance(err, grpc.aio.AioRpcError) else str(err)
    return " ".join((text or type(err).__name__).split())


class PodWorkers:
    """Workers by pod uid; one task per pod (see the module docstring)."""

    def __init__(self, deps: WorkerDeps) -> None:
        self.deps = deps
        self.workers: dict[str, PodWorker] = {}

    def update(self, uid: str, pod: core_pb2.Pod | None) -> None:
        """The pod's latest desired state (None: gone from the API); starts a worker if needed."""
        worker = self.workers.get(uid)
        if worker is None:
            worker = PodWorker(uid, self.deps, self._done)
            self.workers[uid] = worker
            worker.update(pod)
            worker.start()
            return
        worker.update(pod)

    def poke(self, uid: str) -> None:
        """Wake a pod's worker (a probe verdict changed)."""
        worker = self.workers.get(uid)
        if worker is not None:
            worker.wake.set()

    def _done(self, uid: str) -> None:
        worker = self.workers.get(uid)
        if worker is not None and worker.finished:
            del self.workers[uid]
            self.deps.probes.retain(uid, set())

    async def stop(self) -> None:
        tasks = [w.task for w in self.workers.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
