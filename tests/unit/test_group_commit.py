"""GroupCommitter: every op waiting at one moment goes in one Raft entry."""
from __future__ import annotations

import asyncio

import pytest
from pysyncobj import FAIL_REASON

from kvstore.commands import Applied, Batch, Put, PutResult
from kvstore.raft import GroupCommitter, ProposalFailed


class FakeRaft:
    """Records proposed batches; the test decides when each commits."""

    def __init__(self) -> None:
        self.proposed: list[tuple[Batch, object]] = []

    def propose(self, batch: Batch, callback) -> None:
        self.proposed.append((batch, callback))

    def commit(self, index: int, reason: int = FAIL_REASON.SUCCESS) -> None:
        batch, callback = self.proposed[index]
        results = [Applied(PutResult(), 7) for _op in batch.ops]
        callback(results if reason == FAIL_REASON.SUCCESS else None, reason)


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_next_batch_forms_while_one_is_in_flight() -> None:
    async def scenario() -> None:
        raft = FakeRaft()
        committer = GroupCommitter(raft, asyncio.get_running_loop(), max_in_flight=1)
        first = committer.submit(Put(b"a"))
        waiting = [committer.submit(Put(b"k%d" % i)) for i in range(5)]
        assert len(raft.proposed) == 1 and len(raft.proposed[0][0].ops) == 1
        raft.commit(0)
        await settle()
        assert first.result().revision == 7
        assert len(raft.proposed) == 2 and len(raft.proposed[1][0].ops) == 5  # everything that waited
        raft.commit(1)
        await settle()
        assert all(f.done() and not f.exception() for f in waiting)

    asyncio.run(scenario())


def test_failed_batch_and_abandon_fail_their_futures() -> None:
    async def scenario() -> None:
        raft = FakeRaft()
        committer = GroupCommitter(raft, asyncio.get_running_loop(), max_in_flight=1)
        lost = committer.submit(Put(b"a"))
        queued = committer.submit(Put(b"b"))
        raft.commit(0, FAIL_REASON.DISCARDED)
        await settle()
        with pytest.raises(ProposalFailed):
            lost.result()
        committer.abandon_all()
        with pytest.raises(ProposalFailed):
            queued.result()
        raft.commit(1)  # a late result after abandoning is ignored
        await settle()
        assert committer.in_flight == {}

    asyncio.run(scenario())


def test_callers_that_gave_up_are_not_proposed() -> None:
    async def scenario() -> None:
        raft = FakeRaft()
        committer = GroupCommitter(raft, asyncio.get_running_loop(), max_in_flight=1)
        committer.submit(Put(b"a"))
        gone = committer.submit(Put(b"gone"))
        gone.cancel()
        kept = committer.submit(Put(b"kept"))
        raft.commit(0)
        await settle()
        assert [op.key for op in raft.proposed[1][0].ops] == [b"kept"]
        raft.commit(1)
        await settle()
        assert kept.done()

    asyncio.run(scenario())
