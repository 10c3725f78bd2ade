"""etcd v3 gRPC services (KV, Watch, Lease, Cluster, Maintenance) over a `Replica`.

Every write and every linearizable read is either served by this replica because it leads, or
forwarded, unchanged, to the leader's client URL (marked so it is forwarded at most once).
Errors go out as gRPC statuses with etcd's messages, so etcd clients recognise them.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc

from kvstore import errors
from kvstore.client import strip_scheme
from kvstore.commands import Applied, DeleteRange, KVError, LeaseRevoke, Put, PublishMember, Range, Txn
from kvstore.commands import Compact as CompactOp
from kvstore.convert import (
    delete_from_pb, delete_result_to_pb, put_from_pb, put_result_to_pb, range_from_pb,
    range_result_to_pb, txn_from_pb, txn_result_to_pb,
)
from kvstore.forward import STATUS_BY_NUMBER, serve_forward
from kvstore.txncheck import validate_txn
from kvstore.raft import member_id_for
from kvstore.replica import FORWARDED, LeaderIsSelf, Replica, Unavailable, request_budget
from protos.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from protos.skiff.kvstore.v1 import peer_pb2, peer_pb2_grpc

MAX_REQUEST_BYTES = int(1.5 * 1024 * 1024)
# gRPC's own limit leaves room for framing, as etcd's does; our check gives etcd's message.
GRPC_RECV_LIMIT = MAX_REQUEST_BYTES + 512 * 1024
VERSION = "3.4.0"

Local = Callable[[float], Awaitable[Any]]


async def abort_with(context: grpc.aio.ServicerContext, error: KVError) -> None:
    await context.abort(grpc.StatusCode[error.code], error.message)


class Base:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    async def on_leader(self, context: grpc.aio.ServicerContext, service: str, method: str,
                        request: Any, local: Local) -> Any:
        """Serve with `local(budget)` if this replica leads, else forward to the leader."""
        budget = request_budget(context)
        try:
            if self.replica.is_leader():
                return await local(budget)
            if _was_forwarded(context):
                raise Unavailable(errors.LEADER_CHANGED)
            try:
                stubs = await self.replica.leader_stubs(budget)
            except LeaderIsSelf:
                return await local(budget)
            call = getattr(getattr(stubs, service), method)
            return await call(request, timeout=max(request_budget(context), 0.001),
                              metadata=((FORWARDED, "1"),))
        except Unavailable as err:
            await abort_with(context, err.error)
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                await abort_with(context, errors.TIMEOUT)
            await context.abort(err.code(), err.details() or "")

    async def checked(self, context: grpc.aio.ServicerContext, applied: Applied) -> Applied:
        if isinstance(applied.result, KVError):
            await abort_with(context, applied.result)
        return applied


def _was_forwarded(context: grpc.aio.ServicerContext) -> bool:
    return any(k == FORWARDED for k, _v in (context.invocation_metadata() or ()))


async def _too_large(context: grpc.aio.ServicerContext, request: Any) -> None:
    if request.ByteSize() > MAX_REQUEST_BYTES:
        await abort_with(context, errors.REQUEST_TOO_LARGE)


class KVService(Base, rpc_pb2_grpc.KVServicer):
    async def Range(self, request: rpc_pb2.RangeRequest, context) -> rpc_pb2.RangeResponse:  # noqa: N802
        if not request.key:
            await abort_with(context, errors.EMPTY_KEY)
        op = range_from_pb(request)

        def read(m) -> tuple[Any, int]:
            return m.range(op), m.revision

        if request.serializable:
            res, revision = self.replica.read(read)
        else:
            try:
                res, revision = await self.replica.linearizable(read, request_budget(context))
            except Unavailable as err:
                await abort_with(context, err.error)
        if isinstance(res, KVError):
            await abort_with(context, res)
        return range_result_to_pb(res, self.replica.header(revision))

    async def write(self, context, op: Any, request_op: rpc_pb2.RequestOp, to_pb: Callable) -> Any:
        """Propose `op` here if this replica leads, else batch `request_op` to the leader."""
        problem = validate_write(op)
        if problem is not None:
            await abort_with(context, problem)
        budget = request_budget(context)
        try:
            if self.replica.is_leader():
                applied = await self.checked(context, await self.replica.propose(op, budget))
                return to_pb(applied.result, self.replica.header(applied.revision))
            result = await self.replica.forward_write(request_op, budget)
        except Unavailable as err:
            await abort_with(context, err.error)
        if result.code:
            await context.abort(STATUS_BY_NUMBER[result.code], result.message)
        return getattr(result.response, result.response.WhichOneof("response"))

    async def Put(self, request: rpc_pb2.PutRequest, context) -> rpc_pb2.PutResponse:  # noqa: N802
        await _too_large(context, request)
        if request.ignore_value and request.value:
            await abort_with(context, errors.VALUE_PROVIDED)
        if request.ignore_lease and request.lease:
            await abort_with(context, errors.LEASE_PROVIDED)
        return await self.write(context, put_from_pb(request), rpc_pb2.RequestOp(request_put=request),
                                put_result_to_pb)

    async def DeleteRange(self, request: rpc_pb2.DeleteRangeRequest, context) -> rpc_pb2.DeleteRangeResponse:  # noqa: N802
        return await self.write(context, delete_from_pb(request),
                                rpc_pb2.RequestOp(request_delete_range=request), delete_result_to_pb)

    async def Txn(self, request: rpc_pb2.TxnRequest, context) -> rpc_pb2.TxnResponse:  # noqa: N802
        await _too_large(context, request)
        try:
            op = txn_from_pb(request)
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return await self.write(context, op, rpc_pb2.RequestOp(request_txn=request), txn_result_to_pb)

    async def Compact(self, request: rpc_pb2.CompactionRequest, context) -> rpc_pb2.CompactionResponse:  # noqa: N802
        async def local(budget: float) -> rpc_pb2.CompactionResponse:
            applied = await self.checked(context, await self.replica.propose(CompactOp(request.revision), budget))
            return rpc_pb2.CompactionResponse(header=self.replica.header(applied.revision))

        return await self.on_leader(context, "kv", "Compact", request, local)


def validate_write(op: Any) -> KVError | None:
    """What etcd refuses before proposing: empty keys, oversized or duplicate-key txns."""
    if isinstance(op, Txn):
        return validate_txn(op) or _empty_keys(op)
    if isinstance(op, (Put, DeleteRange, Range)) and not op.key:
        return errors.EMPTY_KEY
    return None


def _empty_keys(op: Txn) -> KVError | None:
    for sub in (*op.success, *op.failure):
        if isinstance(sub, Txn):
            nested = _empty_keys(sub)
            if nested is not None:
                return nested
        elif not sub.key:
            return errors.EMPTY_KEY
    return None


class WatchService(Base, rpc_pb2_grpc.WatchServicer):
    async def Watch(self, request_iterator: AsyncIterator[rpc_pb2.WatchRequest], context) -> AsyncIterator[rpc_pb2.WatchResponse]:  # noqa: N802
        hub = self.replica.hub
        assert hub is not None
        stream = hub.open_stream()

        async def read_requests() -> None:
            async for req in request_iterator:
                which = req.WhichOneof("request_union")
                if which == "create_request":
                    hub.create(stream, req.create_request)
                elif which == "cancel_request":
                    hub.cancel(stream, req.cancel_request.watch_id)
                elif which == "progress_request":
                    hub.progress(stream)

        reader = asyncio.create_task(read_requests())
        try:
            while True:
                response = await stream.queue.get()
                yield response
                if stream.queue.empty():
                    hub.resume_lagging(stream)
        finally:
            reader.cancel()
            hub.close_stream(stream)


class LeaseService(Base, rpc_pb2_grpc.LeaseServicer):
    async def LeaseGrant(self, request: rpc_pb2.LeaseGrantRequest, context) -> rpc_pb2.LeaseGrantResponse:  # noqa: N802
        async def local(budget: float) -> rpc_pb2.LeaseGrantResponse:
            applied, lease_id, ttl = await self.replica.grant_lease(request.ID, request.TTL, budget)
            await self.checked(context, applied)
            return rpc_pb2.LeaseGrantResponse(header=self.replica.header(applied.revision), ID=lease_id, TTL=ttl)

        return await self.on_leader(context, "lease", "LeaseGrant", request, local)

    async def LeaseRevoke(self, request: rpc_pb2.LeaseRevokeRequest, context) -> rpc_pb2.LeaseRevokeResponse:  # noqa: N802
        async def local(budget: float) -> rpc_pb2.LeaseRevokeResponse:
            applied = await self.checked(context, await self.replica.propose(LeaseRevoke(request.ID), budget))
            self.replica.lessor.forget(request.ID)
            return rpc_pb2.LeaseRevokeResponse(header=self.replica.header(applied.revision))

        return await self.on_leader(context, "lease", "LeaseRevoke", request, local)

    async def LeaseKeepAlive(self, request_iterator, context) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:  # noqa: N802
        async for req in request_iterator:
            try:
                yield await self._keep_alive(req)
            except Unavailable as err:
                await abort_with(context, err.error)

    async def _keep_alive(self, req: rpc_pb2.LeaseKeepAliveRequest) -> rpc_pb2.LeaseKeepAliveResponse:
        replica = self.replica
        if replica.is_leader():
            ttl = replica.lessor.renew(req.ID)
            if ttl is None:
                granted = replica.read(lambda m: m.leases[req.ID].ttl if req.ID in m.leases else None)
                if granted is not None:
                    replica.lessor.granted(req.ID, granted)
                ttl = granted or 0
            return rpc_pb2.LeaseKeepAliveResponse(header=replica.header(), ID=req.ID, TTL=ttl)
        try:
            stubs = await replica.leader_stubs(2.0)
        except LeaderIsSelf:
            return await self._keep_alive(req)
        call = stubs.lease.LeaseKeepAlive(timeout=2.0)
        try:
            await call.write(req)
            response = await call.read()
            await call.done_writing()
            return response
        except grpc.aio.AioRpcError:
            raise Unavailable(errors.NO_LEADER) from None
        finally:
            call.cancel()

    async def LeaseTimeToLive(self, request: rpc_pb2.LeaseTimeToLiveRequest, context) -> rpc_pb2.LeaseTimeToLiveResponse:  # noqa: N802
        async def local(budget: float) -> rpc_pb2.LeaseTimeToLiveResponse:
            info = await self.replica.linearizable(
                lambda m: (m.leases[request.ID].ttl, m.lease_keys(request.ID)) if request.ID in m.leases else None,
                budget)
            if info is None:
                return rpc_pb2.LeaseTimeToLiveResponse(header=self.replica.header(), ID=request.ID, TTL=-1)
            granted, keys = info
            remaining = self.replica.lessor.remaining(request.ID)
            return rpc_pb2.LeaseTimeToLiveResponse(
                header=self.replica.header(), ID=request.ID, TTL=granted if remaining is None else remaining,
                grantedTTL=granted, keys=keys if request.keys else [])

        return await self.on_leader(context, "lease", "LeaseTimeToLive", request, local)

    async def LeaseLeases(self, request: rpc_pb2.LeaseLeasesRequest, context) -> rpc_pb2.LeaseLeasesResponse:  # noqa: N802
        async def local(budget: float) -> rpc_pb2.LeaseLeasesResponse:
            ids = await self.replica.linearizable(lambda m: sorted(m.leases), budget)
            return rpc_pb2.LeaseLeasesResponse(header=self.replica.header(),
                                               leases=[rpc_pb2.LeaseStatus(ID=i) for i in ids])

        return await self.on_leader(context, "lease", "LeaseLeases", request, local)


class ClusterService(Base, rpc_pb2_grpc.ClusterServicer):
    def members(self) -> list[rpc_pb2.Member]:
        raft = self.replica.raft
        assert raft is not None
        published = self.replica.read(lambda m: dict(m.members))
        result = []
        for peer in raft.peers():
            member_id = member_id_for(peer)
            info = published.get(member_id)
            result.append(rpc_pb2.Member(ID=member_id, name=info.name if info else "",
                                         peerURLs=[f"http://{peer}"],
                                         clientURLs=list(info.client_urls) if info else []))
        return result

    async def MemberList(self, request: rpc_pb2.MemberListRequest, context) -> rpc_pb2.MemberListResponse:  # noqa: N802
        return rpc_pb2.MemberListResponse(header=self.replica.header(), members=self.members())

    async def MemberAdd(self, request: rpc_pb2.MemberAddRequest, context) -> rpc_pb2.MemberAddResponse:  # noqa: N802
        if len(request.peerURLs) != 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: exactly one peer URL is supported")
        peer = strip_scheme(request.peerURLs[0])

        async def local(budget: float) -> rpc_pb2.MemberAddResponse:
            raft = self.replica.raft
            assert raft is not None
            if peer in raft.peers():
                await abort_with(context, errors.PEER_URL_EXIST)
            await self._change(context, raft.add_member, peer, budget)
            added = rpc_pb2.Member(ID=member_id_for(peer), peerURLs=[f"http://{peer}"])
            return rpc_pb2.MemberAddResponse(header=self.replica.header(), member=added, members=self.members())

        return await self.on_leader(context, "cluster", "MemberAdd", request, local)

    async def MemberRemove(self, request: rpc_pb2.MemberRemoveRequest, context) -> rpc_pb2.MemberRemoveResponse:  # noqa: N802
        async def local(budget: float) -> rpc_pb2.MemberRemoveResponse:
            raft = self.replica.raft
            assert raft is not None
            peers = [p for p in raft.peers() if member_id_for(p) == request.ID]
            if not peers:
                await abort_with(context, errors.MEMBER_NOT_FOUND)
            if peers[0] == raft.self_peer:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    "etcdserver: removing the leader itself is not supported; remove it from another member after a leader change")
            await self._change(context, raft.remove_member, peers[0], budget)
            return rpc_pb2.MemberRemoveResponse(header=self.replica.header(), members=self.members())

        return await self.on_leader(context, "cluster", "MemberRemove", request, local)

    async def _change(self, context, action: Callable, peer: str, budget: float) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def settle(reason: int) -> None:
            if not done.done():
                done.set_result(reason)

        def callback(_result: Any, reason: int) -> None:
            loop.call_soon_threadsafe(settle, reason)

        action(peer, callback)
        try:
            reason = await asyncio.wait_for(done, timeout=budget)
        except asyncio.TimeoutError:
            await abort_with(context, errors.TIMEOUT)
        if reason != 0:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"etcdserver: membership change refused (pysyncobj reason {reason}); one change at a time")


class MaintenanceService(Base, rpc_pb2_grpc.MaintenanceServicer):
    async def Status(self, request: rpc_pb2.StatusRequest, context) -> rpc_pb2.StatusResponse:  # noqa: N802
        replica = self.replica
        raft = replica.raft
        assert raft is not None
        data = replica.config.data_dir
        db_size = sum(p.stat().st_size for p in Path(data).glob("raft.*") if p.is_file())
        return rpc_pb2.StatusResponse(
            header=replica.header(), version=VERSION, dbSize=db_size, leader=replica.leader_id(),
            raftIndex=raft.commit_index, raftTerm=raft.term, raftAppliedIndex=raft.applied_index,
            dbSizeInUse=replica.read(lambda m: m.size_bytes))

    async def HashKV(self, request: rpc_pb2.HashKVRequest, context) -> rpc_pb2.HashKVResponse:  # noqa: N802
        def compute(m) -> tuple[Any, int, int, int]:
            problem = m.check_revision(request.revision)
            if problem is None and 0 < request.revision <= m.compact_revision:
                problem = errors.COMPACTED  # etcd refuses to hash at the compact revision itself
            return problem, (0 if problem else m.hash_kv(request.revision)), m.compact_revision, m.revision

        problem, hash_value, compacted, revision = self.replica.read(compute)
        if problem is not None:
            await abort_with(context, problem)
        return rpc_pb2.HashKVResponse(header=self.replica.header(revision), hash=hash_value,
                                      compact_revision=compacted)

    async def Alarm(self, request: rpc_pb2.AlarmRequest, context) -> rpc_pb2.AlarmResponse:  # noqa: N802
        # skiff raises no alarms (no space quota, no corruption checker): the list is always empty.
        return rpc_pb2.AlarmResponse(header=self.replica.header(), alarms=[])


class PeerService(Base, peer_pb2_grpc.PeerServicer):
    async def Forward(self, request: peer_pb2.ForwardRequest, context) -> peer_pb2.ForwardResponse:  # noqa: N802
        try:
            if not self.replica.is_leader():
                # Never forwarded twice: the follower retries with whoever leads now.
                raise Unavailable(errors.LEADER_CHANGED)
            return await serve_forward(self.replica, request, request_budget(context), validate_write)
        except Unavailable as err:
            await abort_with(context, err.error)
            raise  # abort raises; this line only tells type checkers so

    async def Publish(self, request: peer_pb2.PublishRequest, context) -> peer_pb2.PublishResponse:  # noqa: N802
        op = PublishMember(request.member_id, request.name, request.peer_url, tuple(request.client_urls))

        async def local(budget: float) -> peer_pb2.PublishResponse:
            await self.checked(context, await self.replica.propose(op, budget))
            return peer_pb2.PublishResponse()

        return await self.on_leader(context, "peer", "Publish", request, local)


def add_services(server: grpc.aio.Server, replica: Replica) -> None:
    rpc_pb2_grpc.add_KVServicer_to_server(KVService(replica), server)
    rpc_pb2_grpc.add_WatchServicer_to_server(WatchService(replica), server)
    rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseService(replica), server)
    rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterService(replica), server)
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceService(replica), server)
    peer_pb2_grpc.add_PeerServicer_to_server(PeerService(replica), server)


def make_server(replica: Replica) -> grpc.aio.Server:
    """A gRPC server with every service, listening on the replica's client address (TLS if set)."""
    cfg = replica.config
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", GRPC_RECV_LIMIT),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
    ])
    add_services(server, replica)
    if cfg.tls_cert and cfg.tls_key:
        creds = grpc.ssl_server_credentials(
            [(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())],
            root_certificates=cfg.client_ca.read_bytes() if cfg.client_ca else None,
            require_client_auth=cfg.client_ca is not None)
        server.add_secure_port(cfg.listen_client, creds)
    else:
        server.add_insecure_port(cfg.listen_client)
    return server
