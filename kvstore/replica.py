"""One store replica: the Raft node, group commit, watches, leases, membership, and forwarding.

The gRPC services (`kvstore.server`) call into `Replica`; `Replica` owns the policies:

- **Consistency over availability.** Writes and linearizable reads are proposed on the leader
  only; a replica that is not the leader forwards the request to the leader it knows. When no
  leader is known, or the proposal does not commit, the request fails with UNAVAILABLE before the
  client's deadline (never a success that did not commit, never a hang).
- **Linearizable reads** use ReadIndex (kvstore.readindex): the leader confirms with a heartbeat
  round that it still leads and serves the read once it has applied what was committed when the
  read arrived; a follower asks the leader for that point (batched) and serves the read itself.
  No log entry is written for a read. Serializable reads are served locally under the store lock.
- **Leases** are counted down by the leader's `Lessor` and expired by proposing a revoke.
- **Compaction**: the leader proposes `Compact(revision - retention)` periodically, so MVCC
  history stays bounded; pysyncobj compacts its log into snapshots by entry count.
"""
from __future__ import annotations

import asyncio
import logging
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import grpc

from kvstore import errors
from kvstore.client import Stubs, TLSFiles, aio_stubs
from kvstore.clock import Clock, MonotonicClock
from kvstore.forward import ForwardBatcher
from kvstore.commands import Applied, Compact, Event, KVError, LeaseGrant, LeaseRevoke, Operation, PublishMember
from kvstore.lessor import Lessor, effective_ttl
from kvstore.raft import GroupCommitter, ProposalFailed, RaftReplica, RaftSettings, member_id_for
from kvstore.watch import WatchHub
from protos.etcd.etcdserverpb import rpc_pb2
from protos.skiff.kvstore.v1 import peer_pb2

log = logging.getLogger("skiff.kvstore")

# Budget for a request whose client set no deadline (etcd: 5 s plus election time).
DEFAULT_REQUEST_TIMEOUT = 5.0
# Answer this long before the client's deadline, so it sees our UNAVAILABLE, not its own timeout.
DEADLINE_MARGIN = 0.05
FORWARDED = "skiff-forwarded"


class Unavailable(Exception):
    """A request could not be served with the required consistency: answer UNAVAILABLE."""

    def __init__(self, error: KVError = errors.NO_LEADER) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class ReplicaConfig:
    name: str
    data_dir: Path
    listen_client: str
    listen_peer: str
    initial_cluster: dict[str, str]
    secret: str
    advertise_client: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    # MVCC history kept, in revisions; 0 disables automatic compaction.
    compaction_retention: int = 10_000
    compaction_interval: float = 30.0
    progress_notify_interval: float = 600.0
    raft: RaftSettings = field(default_factory=RaftSettings)
    max_in_flight: int = 2

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.advertise_client or self.listen_client}"


class Replica:
    def __init__(self, config: ReplicaConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or MonotonicClock()
        self.member_id = member_id_for(config.listen_peer)
        cluster_spec = ",".join(sorted(f"{n}={p}" for n, p in config.initial_cluster.items()))
        self.cluster_id = zlib.crc32(cluster_spec.encode()) | (zlib.adler32(cluster_spec.encode()) << 32)
        self.lessor = Lessor(self.clock)
        self._leader_stubs: dict[str, Stubs] = {}
        self._tasks: list[asyncio.Task] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.raft: RaftReplica | None = None
        self.committer: GroupCommitter | None = None
        self.hub: WatchHub | None = None
        self._was_leader = False
        self._revision_waiters: list[tuple[int, asyncio.Future]] = []
        self._leader_peer: str | None = None
        self.forwarder = ForwardBatcher(self, Unavailable)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        loop = self.loop

        def in_loop(fn: Callable[..., None]) -> Callable[..., None]:
            """Run `fn` in the event loop; called from the Raft tick thread."""
            def call(*args: Any) -> None:
                loop.call_soon_threadsafe(fn, *args)
            return call

        self.raft = RaftReplica(
            self.config.listen_peer, list(self.config.initial_cluster.values()), self.config.data_dir,
            self.config.secret, on_events=in_loop(self._publish), on_restored=in_loop(self._restored),
            on_role_change=in_loop(self._role_changed), settings=self.config.raft,
        )
        self.committer = GroupCommitter(self.raft, loop, max_in_flight=self.config.max_in_flight)
        self.hub = WatchHub(self.raft.machine, self.header)
        self.raft.start()
        for body in (self._lease_loop, self._publish_loop, self._compaction_loop, self._progress_loop):
            self._tasks.append(asyncio.create_task(body()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.committer is not None:
            self.committer.abandon_all()
        if self.raft is not None:
            await asyncio.to_thread(self.raft.stop)
        for stubs in self._leader_stubs.values():
            await stubs.channel.close()

    # ---- state seen by the services --------------------------------------------------------

    @property
    def machine(self):
        assert self.raft is not None
        return self.raft.machine

    def read(self, fn: Callable[[Any], Any]) -> Any:
        """Run `fn(mvcc)` against local state under the store lock (serializable)."""
        with self.machine.lock:
            return fn(self.machine.mvcc)

    def revision(self) -> int:
        return self.read(lambda m: m.revision)

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        assert self.raft is not None
        return rpc_pb2.ResponseHeader(cluster_id=self.cluster_id, member_id=self.member_id,
                                      revision=self.revision() if revision is None else revision,
                                      raft_term=self.raft.term)

    def is_leader(self) -> bool:
        return self.raft is not None and self.raft.is_leader()

    def leader_id(self) -> int:
        peer = self.raft.leader_peer() if self.raft else None
        return member_id_for(peer) if peer else 0

    # ---- proposing ---------------------------------------------------------------------------

    def submit(self, op: Operation) -> asyncio.Future:
        """Queue `op` for the next group-commit batch (leader only); settle the future with `settle`."""
        if not self.is_leader():
            raise Unavailable(errors.NO_LEADER)
        assert self.committer is not None
        return self.committer.submit(op)

    async def settle(self, future: asyncio.Future, budget: float) -> Any:
        """Await `future`, failing with UNAVAILABLE after `budget` seconds or on a lost proposal."""
        assert self.loop is not None
        timer = self.loop.call_later(max(budget, 0.001), _expire, future)
        try:
            return await future
        except ProposalFailed:
            raise Unavailable(errors.LEADER_CHANGED) from None
        finally:
            timer.cancel()

    async def propose(self, op: Operation, budget: float) -> Applied:
        """Commit `op` through Raft on this replica (which must lead); UNAVAILABLE otherwise."""
        return await self.settle(self.submit(op), budget)

    async def linearizable(self, fn: Callable[[Any], Any], budget: float) -> Any:
        """Run `fn(mvcc)` once every write acknowledged before this call is visible here.

        On the leader: after ReadIndex confirms it still leads and has applied everything
        committed when the read arrived (kvstore.readindex). On a follower: after the leader's
        read revision has been applied locally (see kvstore.forward).
        """
        if self.is_leader():
            await self.read_point(budget)
            return self.read(fn)
        started = self.clock.now()
        revision = await self.settle(self.forwarder.barrier(), budget)
        await self.wait_revision(revision, budget - (self.clock.now() - started))
        return self.read(fn)

    async def read_point(self, budget: float) -> int:
        """Leader only: wait until a linearizable read may be served; the store revision then."""
        assert self.loop is not None and self.raft is not None
        loop = self.loop
        future = loop.create_future()

        def decided(ok: bool) -> None:
            loop.call_soon_threadsafe(_settle_read_point, future, ok)

        self.raft.read_index(decided)
        await self.settle(future, budget)
        return self.revision()

    async def forward_write(self, op: rpc_pb2.RequestOp, budget: float) -> Any:
        """A follower's write, batched to the leader; the leader's `ForwardResult`."""
        return await self.settle(self.forwarder.write(op), budget)

    async def wait_revision(self, revision: int, budget: float) -> None:
        """Wait until this replica has applied the store revision `revision`."""
        if self.revision() >= revision:
            return
        assert self.loop is not None
        future = self.loop.create_future()
        self._revision_waiters.append((revision, future))
        await self.settle(future, budget)

    async def leader_stubs(self, budget: float) -> Stubs:
        """Stubs to the current leader's client URL, waiting up to `budget` for a leader."""
        deadline = self.clock.now() + budget
        while True:
            peer = self.raft.leader_peer() if self.raft else None
            if peer is not None and peer != self.config.listen_peer:
                url = self._client_url_of(peer)
                if url is not None:
                    return self._stubs_for(url)
            elif peer is not None and self.is_leader():
                raise LeaderIsSelf()
            if self.clock.now() >= deadline:
                raise Unavailable(errors.NO_LEADER)
            await asyncio.sleep(0.02)

    def current_leader_stubs(self) -> Stubs | None:
        """Stubs to the leader this replica knows now (not itself), or None."""
        peer = self.raft.leader_peer() if self.raft else None
        if peer is None or peer == self.config.listen_peer:
            return None
        url = self._client_url_of(peer)
        return None if url is None else self._stubs_for(url)

    def _client_url_of(self, peer: str) -> str | None:
        member = self.read(lambda m: m.members.get(member_id_for(peer)))
        return member.client_urls[0] if member and member.client_urls else None

    def _stubs_for(self, url: str) -> Stubs:
        stubs = self._leader_stubs.get(url)
        if stubs is None:
            tls = None
            if url.startswith("https://"):
                assert self.config.client_ca is not None, "TLS peers need --client-ca to verify each other"
                tls = TLSFiles(self.config.client_ca, self.config.tls_cert, self.config.tls_key)
            stubs = self._leader_stubs[url] = aio_stubs(url, tls)
        return stubs

    # ---- events from the Raft thread -----------------------------------------------------------

    def _publish(self, events: list[Event], revision: int) -> None:
        if self.hub is not None:
            self.hub.publish(events, revision)
        self._wake_revision_waiters(revision)

    def _wake_revision_waiters(self, revision: int) -> None:
        if not self._revision_waiters:
            return
        waiting = []
        for wanted, future in self._revision_waiters:
            if wanted <= revision:
                if not future.done():
                    future.set_result(None)
            elif not future.done():
                waiting.append((wanted, future))
        self._revision_waiters = waiting

    def _restored(self) -> None:
        if self.hub is not None:
            self.hub.restored()
        self._wake_revision_waiters(self.revision())

    def _role_changed(self) -> None:
        leader_peer = self.raft.leader_peer() if self.raft else None
        if leader_peer != self._leader_peer:
            self._leader_peer = leader_peer
            self.forwarder.leader_changed()
        leader = self.is_leader()
        if leader == self._was_leader:
            return
        self._was_leader = leader
        if leader:
            log.info("%s became leader (term %d)", self.config.name, self.raft.term if self.raft else 0)
            self.lessor.promote({})
        else:
            self.lessor.demote()
            if self.committer is not None:
                self.committer.abandon_all()

    # ---- background duties -------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Leader only: keep the lessor in step with replicated leases; revoke expired ones."""
        while True:
            await asyncio.sleep(0.25)
            if not self.is_leader():
                continue
            leases = self.read(lambda m: {i: r.ttl for i, r in m.leases.items()})
            for lease_id, ttl in leases.items():
                if lease_id not in self.lessor.ttls:
                    self.lessor.granted(lease_id, ttl)
            for lease_id in [i for i in self.lessor.ttls if i not in leases]:
                self.lessor.forget(lease_id)
            for lease_id in self.lessor.expired():
                self._spawn(self._revoke_expired(lease_id))

    async def _revoke_expired(self, lease_id: int) -> None:
        try:
            await self.propose(LeaseRevoke(lease_id), DEFAULT_REQUEST_TIMEOUT)
            self.lessor.forget(lease_id)
        except Unavailable:
            self.lessor.revoke_failed(lease_id)

    async def grant_lease(self, lease_id: int, ttl: int, budget: float) -> tuple[Applied, int, int]:
        """Leader only: replicate a new lease (choosing an ID if 0) and start its countdown."""
        ttl = effective_ttl(ttl)
        if lease_id == 0:
            existing = self.read(lambda m: set(m.leases))
            lease_id = random.getrandbits(63) or 1
            while lease_id in existing:
                lease_id = random.getrandbits(63) or 1
        applied = await self.propose(LeaseGrant(lease_id, ttl), budget)
        if not isinstance(applied.result, KVError):
            self.lessor.granted(lease_id, ttl)
        return applied, lease_id, ttl

    async def _publish_loop(self) -> None:
        """Make sure the replicated member list has this replica's name and client URL."""
        mine = PublishMember(self.member_id, self.config.name, self.config.listen_peer,
                             (self.config.client_url,))
        while True:
            await asyncio.sleep(0.2)
            if self.read(lambda m: m.members.get(self.member_id)) == mine:
                await asyncio.sleep(2.0)
                continue
            try:
                if self.is_leader():
                    await self.propose(mine, DEFAULT_REQUEST_TIMEOUT)
                else:
                    stubs = await self.leader_stubs(1.0)
                    await stubs.peer.Publish(peer_pb2.PublishRequest(
                        member_id=mine.member_id, name=mine.name, peer_url=mine.peer_url,
                        client_urls=list(mine.client_urls)), timeout=2.0)
            except (Unavailable, LeaderIsSelf, grpc.aio.AioRpcError) as err:
                log.debug("publishing member info: %s", err)

    async def _compaction_loop(self) -> None:
        retention = self.config.compaction_retention
        while retention > 0:
            await asyncio.sleep(self.config.compaction_interval)
            if not self.is_leader():
                continue
            revision, compacted = self.read(lambda m: (m.revision, m.compact_revision))
            target = revision - retention
            if target > compacted:
                try:
                    await self.propose(Compact(target), DEFAULT_REQUEST_TIMEOUT)
                except Unavailable:
                    pass

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.progress_notify_interval)
            if self.hub is not None:
                self.hub.notify_progress()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)


def _settle_read_point(future: asyncio.Future, ok: bool) -> None:
    if future.done():
        return
    if ok:
        future.set_result(None)
    else:
        future.set_exception(Unavailable(errors.LEADER_CHANGED))


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(Unavailable(errors.TIMEOUT))


class LeaderIsSelf(Exception):
    """Raised by leader_stubs when this replica is the leader: serve locally instead."""


def request_budget(context: grpc.aio.ServicerContext) -> float:
    """Seconds this request may take: the client's deadline less a margin, or the default."""
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e6:
        return DEFAULT_REQUEST_TIMEOUT
    return max(remaining - DEADLINE_MARGIN, 0.001)
