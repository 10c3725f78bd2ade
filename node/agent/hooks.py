"""Container lifecycle hooks: postStart right after a container starts, preStop before it is
stopped, as the kubelet runs them.

`run_hook(handler, target, checker, timeout)` runs one `LifecycleHandler` and returns
(success, message); it never raises. The handlers are the probes' (`node.agent.probes`): exec
runs in the container through the runtime's ExecSync (success: exit code 0), httpGet and
tcpSocket go from the node to the pod's address (httpGet: a status of 200-399); sleep waits.

What the pod worker does with the result (`node.agent.podworker`):
- postStart runs once the container has started and before the worker moves on; if it fails the
  container is stopped (the pod's grace period) and the restart policy applies (with the
  crash-loop backoff): a container that will run again waits with `PostStartHookError` and the
  hook's message; under restartPolicy Never it stays terminated.
- preStop runs when a running container is to be stopped with a grace period (deletion, a failed
  liveness probe, a changed spec), within that grace period; whatever it returns, the container
  then gets SIGTERM with what is left of the period, at least `MIN_GRACE_AFTER_PRE_STOP` seconds
  (the kubelet's two-second extension), and SIGKILL after.
"""
from __future__ import annotations

import asyncio

from node.agent.probes import Checker, ProbeSpec, Target, run_probe
from protos.skiff.api.v1 import core_pb2

POST_START_TIMEOUT = 120.0  # a hang guard: Kubernetes gives postStart no timeout of its own
MIN_GRACE_AFTER_PRE_STOP = 2


def has_hook(container: core_pb2.Container, which: str) -> bool:
    """Whether the container has the hook `post_start` or `pre_stop`."""
    return container.HasField("lifecycle") and container.lifecycle.HasField(which)


async def run_hook(handler: core_pb2.LifecycleHandler, target: Target, checker: Checker,
                   timeout: float) -> tuple[bool, str]:
    """Run one hook handler; (success, message)."""
    if handler.HasField("sleep"):
        await asyncio.sleep(max(0.0, min(float(handler.sleep.seconds), timeout)))
        return True, ""
    probe = core_pb2.Probe()
    for kind in ("exec", "http_get", "tcp_socket"):
        if handler.HasField(kind):
            getattr(probe, kind).CopyFrom(getattr(handler, kind))
            break
    else:
        return False, "the hook has no handler (exec, httpGet, tcpSocket or sleep)"
    return await run_probe(ProbeSpec("hook", probe, 0.0, 0.0, timeout, 1, 1), target, checker)
