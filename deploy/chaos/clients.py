"""Chaos clients: record operations as Jepsen events, classify errors, talk to replicas.

Contracts:
- `Recorder` appends events in the history format of deploy.chaos.history (process, type, f,
  key, value, time = time.monotonic_ns(), index) plus two extra fields the checker ignores:
  `node` (the replica the process talks to), `client` (the logical client, e.g. "c3" or
  "final-n2") and, on fail/info, `error` (the gRPC code name) and `detail` (its message).
  Everything runs on one asyncio loop, so appends are ordered without locks.
- A `Client` is one logical client bound to one replica. It keeps the Jepsen invariant: after an
  "info" (unknown outcome) it continues under a fresh process id, because the old operation may
  still take effect at any later time.
- `classify(err, f)`: a read that failed had no effect -> fail. A mutation fails definitely only
  when the request provably never reached a server (connection refused/not established) or the
  server rejected it as invalid; timeouts and "no leader" answers are unknown (info), since the
  replica may have proposed it to Raft before giving up.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from kvstore.client import CHANNEL_OPTIONS, Stubs, strip_scheme
from protos.etcd.etcdserverpb import rpc_pb2

# Reconnect quickly after a host restarts: gRPC's default backoff grows to two minutes, which
# would make a killed-then-started replica look dead for the rest of a run.
CHAOS_CHANNEL_OPTIONS = CHANNEL_OPTIONS + [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_http_proxy", 0),  # the lab subnet is local; never go through a proxy
]

DEFINITE_FAILURES = {
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.ALREADY_EXISTS,
}
NOT_SENT_HINTS = ("failed to connect", "connection refused", "connect failed", "no route to host")


def aio_channel_stubs(endpoint: str) -> Stubs:
    return Stubs(grpc.aio.insecure_channel(strip_scheme(endpoint), options=CHAOS_CHANNEL_OPTIONS))


def sync_channel_stubs(endpoint: str) -> Stubs:
    return Stubs(grpc.insecure_channel(strip_scheme(endpoint), options=CHAOS_CHANNEL_OPTIONS))


def classify(err: BaseException, f: str) -> str:
    """'fail' or 'info' for an operation `f` that raised `err` (see module doc)."""
    if f == "read":
        return "fail"
    if isinstance(err, grpc.RpcError):
        code = err.code()
        if code in DEFINITE_FAILURES:
            return "fail"
        details = error_detail(err).lower()
        if code == grpc.StatusCode.UNAVAILABLE and any(h in details for h in NOT_SENT_HINTS):
            return "fail"
    return "info"


def error_name(err: BaseException) -> str:
    if isinstance(err, grpc.RpcError):
        return err.code().name
    if isinstance(err, asyncio.TimeoutError):
        return "DEADLINE_EXCEEDED"
    return type(err).__name__


def error_detail(err: BaseException) -> str:
    """The server's (or gRPC's) message, shortened: enough to tell 'no leader' from 'refused'."""
    details = getattr(err, "details", None)
    text = details() if callable(details) else str(err)
    return (text or "")[:100]


class Recorder:
    """The run's history (see module doc), plus a process id allocator."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._next_process = 0
        self.process_node: dict[int, str] = {}
        self.process_client: dict[int, str] = {}

    def new_process(self, node: str, client: str) -> int:
        """A fresh process id for logical client `client` talking to replica `node`."""
        pid = self._next_process
        self._next_process += 1
        self.process_node[pid] = node
        self.process_client[pid] = client
        return pid

    def add(self, process: int, type_: str, f: str, key: str, value: Any, **extra: Any) -> dict[str, Any]:
        event = {"process": process, "type": type_, "f": f, "key": key, "value": value,
                 "time": time.monotonic_ns(), "index": len(self.events),
                 "node": self.process_node.get(process, ""), "client": self.process_client.get(process, "")}
        event.update({k: v for k, v in extra.items() if v is not None})
        self.events.append(event)
        return event


class Client:
    """One logical client on one replica. `call` runs one operation and records it."""

    def __init__(self, recorder: Recorder, node: str, endpoint: str, timeout: float, name: str) -> None:
        self.recorder = recorder
        self.name = name
        self.node = node
        self.endpoint = endpoint
        self.timeout = timeout
        self.stubs = aio_channel_stubs(endpoint)
        self.process = recorder.new_process(node, name)

    async def call(self, f: str, key: str, value: Any, request: Any) -> tuple[str, Any]:
        """Record invoke, await `request(stubs, timeout)` -> (type, result value), record it.

        `request` returns ("ok", value) or ("fail", value) for definite outcomes, or raises.
        Returns (type, value) as recorded.
        """
        self.recorder.add(self.process, "invoke", f, key, value)
        try:
            type_, result = await request(self.stubs, self.timeout)
            self.recorder.add(self.process, type_, f, key, result)
            return type_, result
        except (grpc.RpcError, asyncio.TimeoutError) as err:
            type_ = classify(err, f)
            self.recorder.add(self.process, type_, f, key, value if f != "read" else None, error=error_name(err),
                              detail=error_detail(err))
            if type_ == "info":
                self.process = self.recorder.new_process(self.node, self.name)
            return type_, None

    async def close(self) -> None:
        await self.stubs.channel.close()


# --- requests (each returns ("ok"|"fail", value) or raises grpc errors) -----------------------

def read_request(etcd_key: bytes) -> Any:
    async def req(stubs: Stubs, timeout: float) -> tuple[str, Any]:
        resp = await stubs.kv.Range(rpc_pb2.RangeRequest(key=etcd_key), timeout=timeout)
        return "ok", int(resp.kvs[0].value) if resp.kvs else None
    return req


def write_request(etcd_key: bytes, value: int) -> Any:
    async def req(stubs: Stubs, timeout: float) -> tuple[str, Any]:
        await stubs.kv.Put(rpc_pb2.PutRequest(key=etcd_key, value=str(value).encode()), timeout=timeout)
        return "ok", value
    return req


def cas_request(etcd_key: bytes, expected: int, new: int) -> Any:
    """Compare-and-set as a Txn: if value == expected then put new (a failed compare is 'fail')."""
    async def req(stubs: Stubs, timeout: float) -> tuple[str, Any]:
        txn = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.VALUE,
                                     key=etcd_key, value=str(expected).encode())],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=etcd_key, value=str(new).encode()))],
        )
        resp = await stubs.kv.Txn(txn, timeout=timeout)
        return ("ok" if resp.succeeded else "fail"), [expected, new]
    return req


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for 'every key starting with prefix'."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[:i + 1])
    return b"\0"


def read_prefix_request(prefix: bytes) -> Any:
    """Linearizable range over a prefix -> sorted list of int values."""
    async def req(stubs: Stubs, timeout: float) -> tuple[str, Any]:
        resp = await stubs.kv.Range(rpc_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix)), timeout=timeout)
        return "ok", sorted(int(kv.value) for kv in resp.kvs)
    return req
