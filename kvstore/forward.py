"""Forwarding from followers to the leader, batched (group commit across the forwarding hop).

A follower does not send each client's write to the leader in its own RPC. `ForwardBatcher`
collects every write waiting at one moment, plus one read barrier for all waiting linearizable
reads, into a single `Peer.Forward` call, and lets the next batch form while up to
`max_in_flight` calls are out. The leader (`serve_forward`) submits the batch's operations to its
group committer together, so they usually share one Raft entry.

Linearizable reads on a follower work like etcd's: the leader confirms a read point
(kvstore.readindex) and answers with its store revision then; the follower serves the read
locally once it has applied that revision. Every write acknowledged before the read began has a
revision at or below it, so the read sees them all.

Only protobuf crosses the client port (nothing is unpickled there).
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

import grpc

from kvstore import errors
from kvstore.commands import Applied, KVError
from kvstore.convert import request_op_from_pb, response_op_to_pb
from protos.etcd.etcdserverpb import rpc_pb2
from protos.skiff.kvstore.v1 import peer_pb2

STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
FORWARD_RPC_TIMEOUT = 5.0


class ForwardBatcher:
    """Follower side. `replica` provides `leader_stubs(budget)`; errors become `unavailable(err)`."""

    def __init__(self, replica, unavailable: Callable[[KVError], Exception],
                 max_in_flight: int = 2, max_ops: int = 1000) -> None:
        self.replica = replica
        self.unavailable = unavailable
        self.max_in_flight = max_in_flight
        self.max_ops = max_ops
        self.writes: list[tuple[rpc_pb2.RequestOp, asyncio.Future]] = []
        self.reads: list[asyncio.Future] = []
        self.in_flight = 0
        self.sent: dict[asyncio.Task, Any] = {}  # calls already sent, and the stubs they went to

    def write(self, op: rpc_pb2.RequestOp) -> asyncio.Future:
        """Future of the leader's `ForwardResult` for this write."""
        future = asyncio.get_running_loop().create_future()
        self.writes.append((op, future))
        self._kick()
        return future

    def barrier(self) -> asyncio.Future:
        """Future of the leader's revision after a read barrier committed after this call."""
        future = asyncio.get_running_loop().create_future()
        self.reads.append(future)
        self._kick()
        return future

    def _kick(self) -> None:
        while (self.writes or self.reads) and self.in_flight < self.max_in_flight:
            writes = [(op, f) for op, f in self.writes[: self.max_ops] if not f.done()]
            del self.writes[: self.max_ops]
            reads = [f for f in self.reads if not f.done()]
            self.reads = []
            if not writes and not reads:
                continue
            self.in_flight += 1
            asyncio.ensure_future(self._send(writes, reads))

    def leader_changed(self) -> None:
        """Drop the calls sent to a former leader once another leads (it may be cut off and never
        answer): their callers get UNAVAILABLE at once (outcome unknown), and new batches go to
        the new leader. While no leader is known (an election, or this replica merely lagging
        behind heartbeats) calls in flight are kept: the leader they went to may still answer."""
        if self.replica.is_leader():
            current = None
        else:
            current = self.replica.current_leader_stubs()
            if current is None:
                return
        for call, stubs in list(self.sent.items()):
            if stubs is not current:
                call.cancel()

    async def _send(self, writes: list[tuple[rpc_pb2.RequestOp, asyncio.Future]], reads: list[asyncio.Future]) -> None:
        me = asyncio.current_task()
        try:
            stubs = await self.replica.leader_stubs(FORWARD_RPC_TIMEOUT)
            if me is not None:
                self.sent[me] = stubs
            response = await stubs.peer.Forward(
                peer_pb2.ForwardRequest(ops=[op for op, _f in writes], read_barrier=bool(reads)),
                timeout=FORWARD_RPC_TIMEOUT)
        except (Exception, asyncio.CancelledError) as err:  # leader unknown, unreachable, changed, or us now
            failure = self.unavailable(_why(err))
            for future in [f for _op, f in writes] + reads:
                if not future.done():
                    future.set_exception(failure)
        else:
            for (_op, future), result in zip(writes, response.results):
                if not future.done():
                    future.set_result(result)
            for future in reads:
                if not future.done():
                    future.set_result(response.barrier_revision)
        finally:
            self.sent.pop(me, None)  # type: ignore[arg-type]
            self.in_flight -= 1
            self._kick()


def _why(err: BaseException) -> KVError:
    if isinstance(err, grpc.aio.AioRpcError):
        if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return errors.TIMEOUT
        if err.code() == grpc.StatusCode.UNAVAILABLE and err.details():
            return KVError("UNAVAILABLE", err.details())
        return errors.LEADER_CHANGED
    if isinstance(err, asyncio.CancelledError):
        return errors.LEADER_CHANGED
    return getattr(err, "error", errors.NO_LEADER)


def result_to_pb(applied: Applied, header: Callable[[int], rpc_pb2.ResponseHeader]) -> peer_pb2.ForwardResult:
    if isinstance(applied.result, KVError):
        code = grpc.StatusCode[applied.result.code].value[0]
        return peer_pb2.ForwardResult(code=code, message=applied.result.message)
    return peer_pb2.ForwardResult(response=response_op_to_pb(applied.result, header(applied.revision)))


def error_result(error: KVError) -> peer_pb2.ForwardResult:
    return peer_pb2.ForwardResult(code=grpc.StatusCode[error.code].value[0], message=error.message)


async def serve_forward(replica, request: peer_pb2.ForwardRequest, budget: float,
                        validate: Callable[[object], KVError | None]) -> peer_pb2.ForwardResponse:
    """Leader side: submit every op (and the barrier) at once, then collect the results in order."""
    pending: list[asyncio.Future | peer_pb2.ForwardResult] = []
    for op_pb in request.ops:
        try:
            op = request_op_from_pb(op_pb)
        except ValueError as err:
            pending.append(peer_pb2.ForwardResult(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=str(err)))
            continue
        problem = validate(op)
        pending.append(error_result(problem) if problem else replica.submit(op))
    # The read point runs alongside the writes: the reads it serves are concurrent with them.
    barrier = asyncio.ensure_future(replica.read_point(budget)) if request.read_barrier else None
    response = peer_pb2.ForwardResponse()
    for item in pending:
        if isinstance(item, peer_pb2.ForwardResult):
            response.results.append(item)
            continue
        try:
            applied = await replica.settle(item, budget)
            response.results.append(result_to_pb(applied, replica.header))
        except Exception as err:
            response.results.append(error_result(getattr(err, "error", errors.TIMEOUT)))
    if barrier is not None:
        response.barrier_revision = await barrier
    return response
