"""Lifecycle hook handlers: exec, httpGet and tcpSocket through the probes' checker, sleep."""
from __future__ import annotations

import asyncio

from node.agent import hooks
from node.agent.probes import Target
from protos.skiff.api.v1 import core_pb2, meta_pb2

TARGET = Target("c1", "10.244.0.5", {"http": 8080})


class RecordingChecker:
    """A Checker that records calls and answers `ok`."""

    def __init__(self, ok: bool = True) -> None:
        self.ok, self.calls = ok, []  # type: ignore[var-annotated]

    async def exec(self, container_id: str, command: list[str], timeout: float) -> tuple[bool, str]:
        self.calls.append(("exec", container_id, command, timeout))
        return self.ok, "" if self.ok else "command exited 1"

    async def http_get(self, host: str, port: int, path: str, scheme: str, headers: list[tuple[str, str]],
                       timeout: float) -> tuple[bool, str]:
        self.calls.append(("http", host, port, path))
        return self.ok, ""

    async def tcp(self, host: str, port: int, timeout: float) -> tuple[bool, str]:
        self.calls.append(("tcp", host, port))
        return self.ok, ""


def _run(handler: core_pb2.LifecycleHandler, checker: RecordingChecker, timeout: float = 5) -> tuple[bool, str]:
    return asyncio.run(hooks.run_hook(handler, TARGET, checker, timeout))


def test_exec_hook_runs_in_the_container_and_reports_failure() -> None:
    checker = RecordingChecker()
    handler = core_pb2.LifecycleHandler(exec=core_pb2.ExecAction(command=["sh", "-c", "echo hi"]))
    assert _run(handler, checker, 7) == (True, "")
    assert checker.calls == [("exec", "c1", ["sh", "-c", "echo hi"], 7)]
    assert _run(handler, RecordingChecker(ok=False)) == (False, "command exited 1")


def test_http_and_tcp_hooks_go_to_the_pod_address_with_named_ports() -> None:
    checker = RecordingChecker()
    http = core_pb2.LifecycleHandler(http_get=core_pb2.HTTPGetAction(path="/drain", port=meta_pb2.IntOrString(str_val="http")))
    tcp = core_pb2.LifecycleHandler(tcp_socket=core_pb2.TCPSocketAction(port=meta_pb2.IntOrString(int_val=9000)))
    assert _run(http, checker)[0] and _run(tcp, checker)[0]
    assert checker.calls == [("http", "10.244.0.5", 8080, "/drain"), ("tcp", "10.244.0.5", 9000)]
    unknown = core_pb2.LifecycleHandler(http_get=core_pb2.HTTPGetAction(port=meta_pb2.IntOrString(str_val="nope")))
    ok, message = _run(unknown, checker)
    assert not ok and "'nope' is not a named port" in message


def test_sleep_hook_waits_at_most_the_timeout_and_an_empty_hook_fails() -> None:
    checker = RecordingChecker()
    assert _run(core_pb2.LifecycleHandler(sleep=core_pb2.SleepAction(seconds=3600)), checker, timeout=0.01) == (True, "")
    assert checker.calls == []
    assert _run(core_pb2.LifecycleHandler(), checker) == (False, "the hook has no handler (exec, httpGet, tcpSocket or sleep)")


def test_has_hook() -> None:
    c = core_pb2.Container(name="c")
    assert not hooks.has_hook(c, "pre_stop")
    c.lifecycle.pre_stop.exec.command.append("true")
    assert hooks.has_hook(c, "pre_stop") and not hooks.has_hook(c, "post_start")
