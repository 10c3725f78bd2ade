"""The API server's access to the store: etcd v3 calls over grpc.aio, with endpoint failover.

One `StoreClient` serves a whole API server. It speaks only etcd's v3 API, so it runs unchanged
on skiff's store or on a real etcd cluster.

Failover: every call goes to the endpoint that answered last; when it fails with UNAVAILABLE the
call moves to the next endpoint. Reads are always retried that way (they change nothing). A
write is retried only when the failure shows it never reached a replica that could apply it
(cannot connect, "no leader"); an ambiguous failure (a timeout after sending) is returned to the
caller as `StoreUnavailable` — every write the registry makes is a conditional transaction, so a
caller that retries gets "already exists" or a conflict rather than a duplicate.

Errors come out as `StoreUnavailable` (no quorum, no endpoint) or `StoreCompacted` (a revision
older than the store's compaction); anything else is a bug and propagates as grpc.aio.AioRpcError.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Callable, TypeVar

import grpc

from kvstore.client import Stubs, TLSFiles, aio_stubs
from protos.etcd.etcdserverpb import rpc_pb2

T = TypeVar("T")

# Failures that prove the request was not applied, so a write may go to another endpoint.
_NOT_APPLIED_MARKERS = ("failed to connect", "connection refused", "no leader", "not ready",
                        "dns resolution failed", "connect failed", "unavailable: no")


class StoreUnavailable(Exception):
    """The store cannot answer now (no quorum, no reachable endpoint, or a timeout)."""


class StoreCompacted(Exception):
    """The revision asked for has been compacted away."""

    def __init__(self, message: str, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with prefix"."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


class StoreClient:
    """etcd v3 calls with failover over several endpoints; create inside a running loop."""

    def __init__(self, endpoints: list[str], tls: TLSFiles | None = None, timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("at least one store endpoint is needed")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._tls = tls
        self._stubs: list[Stubs | None] = [None] * len(endpoints)
        self._current = 0

    def stubs(self, index: int | None = None) -> Stubs:
        """Stubs for endpoint `index` (default: the current one), opened on first use."""
        i = self._current if index is None else index
        made = self._stubs[i]
        if made is None:
            made = aio_stubs(self.endpoints[i], self._tls)
            self._stubs[i] = made
        return made

    def rotate(self) -> None:
        """Move on to the next endpoint (after a failure of the current one)."""
        self._current = (self._current + 1) % len(self.endpoints)

    async def prefer_leader(self) -> None:
        """Talk to the Raft leader when one is known: a follower would forward every request
        to it, adding a hop. Best effort: failures leave the current choice."""
        for i in range(len(self.endpoints)):
            try:
                status = await self.stubs(i).maintenance.Status(rpc_pb2.StatusRequest(), timeout=1.0)
            except grpc.aio.AioRpcError:
                continue
            if status.leader and status.leader == status.header.member_id:
                self._current = i
                return

    async def close(self) -> None:
        for stubs in self._stubs:
            if stubs is not None:
                await stubs.channel.close()  # type: ignore[misc]
        self._stubs = [None] * len(self.endpoints)

    async def _call(self, fn: Callable[[Stubs], Awaitable[T]], write: bool) -> T:
        last: grpc.aio.AioRpcError | None = None
        for _ in range(len(self.endpoints)):
            try:
                return await fn(self.stubs())
            except grpc.aio.AioRpcError as err:
                last = err
                if err.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in (err.details() or ""):
                    raise StoreCompacted(err.details() or "compacted") from None
                if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                self.rotate()
                if write and not _not_applied(err):
                    break
        detail = last.details() if last is not None else "no endpoint"
        raise StoreUnavailable(f"the store is unavailable: {detail}")

    async def range(self, key: bytes, range_end: bytes = b"", *, limit: int = 0, revision: int = 0,
                    serializable: bool = False, keys_only: bool = False,
                    count_only: bool = False) -> rpc_pb2.RangeResponse:
        req = rpc_pb2.RangeRequest(key=key, range_end=range_end, limit=limit, revision=revision,
                                   serializable=serializable, keys_only=keys_only,
                                   count_only=count_only)
        return await self._call(lambda s: s.kv.Range(req, timeout=self.timeout), write=False)

    async def get(self, key: bytes) -> tuple[bytes, int] | None:
        """(value, mod_revision) of one key, linearizable; None when absent."""
        resp = await self.range(key)
        if not resp.kvs:
            return None
        return resp.kvs[0].value, resp.kvs[0].mod_revision

    async def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        return await self._call(lambda s: s.kv.Txn(req, timeout=self.timeout), write=True)

    async def current_revision(self) -> int:
        """The store's revision now (a linearizable read of one absent key)."""
        resp = await self.range(b"/registry/\0revision-probe")
        return resp.header.revision

    async def watch(self, key: bytes, range_end: bytes, start_revision: int,
                    progress_requests: asyncio.Queue[None]) -> AsyncIterator[rpc_pb2.WatchResponse]:
        """Watch [key, range_end) from `start_revision` with prev_kv and progress notifications.

        Each item put on `progress_requests` sends a WatchProgressRequest. Yields every
        response (events and progress). Raises StoreCompacted when the start revision is gone,
        StoreUnavailable when the stream breaks (the caller resumes from its own revision).
        """
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=key, range_end=range_end, start_revision=start_revision, prev_kv=True,
            progress_notify=True))
        outgoing: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()
        outgoing.put_nowait(create)

        async def requests() -> AsyncIterator[rpc_pb2.WatchRequest]:
            while True:
                item = await outgoing.get()
                if item is None:
                    return
                yield item

        async def pump_progress() -> None:
            while True:
                await progress_requests.get()
                outgoing.put_nowait(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

        stubs = self.stubs()
        call = stubs.watch.Watch(requests())
        pump = asyncio.create_task(pump_progress())
        try:
            async for resp in call:
                if resp.compact_revision:
                    raise StoreCompacted("too old resource version", resp.compact_revision)
                if resp.canceled:
                    raise StoreUnavailable(f"store watch canceled: {resp.cancel_reason}")
                yield resp
            raise StoreUnavailable("store watch ended")
        except grpc.aio.AioRpcError as err:
            self.rotate()
            raise StoreUnavailable(f"store watch broke: {err.details()}") from None
        finally:
            pump.cancel()
            outgoing.put_nowait(None)
            call.cancel()


def absent(key: bytes) -> rpc_pb2.Compare:
    """A transaction compare: the key does not exist (create_revision 0)."""
    return rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL, create_revision=0)


def unchanged(key: bytes, rev: int) -> rpc_pb2.Compare:
    """A transaction compare: the key's mod_revision is still `rev`."""
    return rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.MOD, result=rpc_pb2.Compare.EQUAL, mod_revision=rev)


def put_op(key: bytes, value: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))


def delete_op(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))


def _not_applied(err: grpc.aio.AioRpcError) -> bool:
    detail = (err.details() or "").lower()
    return err.code() == grpc.StatusCode.UNAVAILABLE and any(m in detail for m in _NOT_APPLIED_MARKERS)
