"""Tests for kvstore.raft_safety.SafeLogMixin (pysyncobj 0.3.17 log-truncation fix).

Two layers:

* deterministic: crafted ``append_entries`` / ``next_node_idx`` messages fed straight into the
  message handler of a node with ``autoTick=False`` and a recording in-process transport (no
  sockets), checked against the same messages on a plain ``SyncObj``;
* a real cluster: three processes on 127.0.0.1, tens of thousands of asynchronous writes submitted
  on a follower. This file doubles as the per-node worker (``python test_raft_safety.py worker``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # when run as the worker script
    sys.path.insert(0, str(REPO))

import pytest  # noqa: E402
from pysyncobj import SyncObj, SyncObjConf, replicated  # noqa: E402
from pysyncobj.node import TCPNode  # noqa: E402
from pysyncobj.pickle import dumps as pso_dumps  # noqa: E402
from pysyncobj.transport import Transport  # noqa: E402

from kvstore import raft_safety  # noqa: E402
from kvstore.localcluster import free_ports  # noqa: E402
from kvstore.raft_safety import SafeLogMixin  # noqa: E402

NOOP = b"\x01"  # _COMMAND_TYPE.NO_OP: never applied to user state
SELF, PEER_A, PEER_B = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"


# ---------------------------------------------------------------------------------------------
# deterministic layer
# ---------------------------------------------------------------------------------------------

class RecordingTransport(Transport):
    """A transport that is always ready and records what the node sends."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        self.sent: list[tuple[Any, dict[str, Any]]] = []

    def send(self, node: Any, message: Any) -> bool:
        self.sent.append((node, message))
        return True


class PlainNode(SyncObj):
    pass


class SafeNode(SafeLogMixin, SyncObj):
    pass


def make(cls: type, tmp_path: Path | None = None, **conf: Any) -> Any:
    journal = str(tmp_path / f"{cls.__name__}.journal") if tmp_path else None
    return cls(SELF, [PEER_A, PEER_B], conf=SyncObjConf(autoTick=False, journalFile=journal, **conf),
               transportClass=RecordingTransport)


def transport(node: Any) -> RecordingTransport:
    return node._SyncObj__transport


def log_of(node: Any) -> list[tuple[int, int]]:
    j = node._SyncObj__raftLog
    return [(j[i][1], j[i][2]) for i in range(len(j))]


def entries(first: int, last: int, term: int, command: bytes = NOOP) -> list[tuple[bytes, int, int]]:
    return [(command, i, term) for i in range(first, last + 1)]


def append(node: Any, prev: int, prev_term: int, ents: list, term: int = 1, commit: int = 1,
           leader: str = PEER_A, **extra: Any) -> dict[str, Any]:
    """Deliver one append_entries from `leader` and return the node's reply."""
    message = {"type": "append_entries", "term": term, "commit_index": commit,
               "entries": ents, "prevLogIdx": prev, "prevLogTerm": prev_term, **extra}
    if not ents:
        del message["entries"]
    sent = transport(node).sent
    before = len(sent)
    node._SyncObj__onMessageReceived(TCPNode(leader), message)
    replies = [m for _, m in sent[before:] if m["type"] == "next_node_idx"]
    assert len(replies) <= 1
    return replies[0] if replies else {}


def follower_with_log(cls: type, last: int = 10, term: int = 1, tmp_path: Path | None = None,
                      **conf: Any) -> Any:
    """A follower whose log holds the initial no-op (1, 0) and entries 2..last of `term`."""
    node = make(cls, tmp_path, **conf)
    reply = append(node, 1, 0, entries(2, last, term), term=term)
    assert reply["success"] and reply["next_node_idx"] == last + 1
    assert log_of(node)[-1] == (last, term)
    return node


@pytest.fixture(params=["memory", "file"])
def journal_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    return tmp_path if request.param == "file" else None


def test_override_is_the_transport_callback() -> None:
    node = make(SafeNode)
    callback = transport(node)._onMessageReceivedCallback
    assert callback.__func__ is SafeLogMixin._SyncObj__onMessageReceived
    append(node, 1, 0, entries(2, 10, 1))
    # delivered the way TCPTransport does it
    transport(node)._onMessageReceived(TCPNode(PEER_A), {
        "type": "append_entries", "term": 1, "commit_index": 1, "prevLogIdx": 3,
        "prevLogTerm": 1, "entries": entries(4, 5, 1)})
    assert node.safelog_stats.kept_tails == 1
    assert log_of(node)[-1] == (10, 1)
    # and with pysyncobj's real TCP transport (bound to a free loopback port, peers not running)
    port = free_ports(1)[0]
    tcp = SafeNode(f"127.0.0.1:{port}", [PEER_A, PEER_B], conf=SyncObjConf(autoTick=False))
    try:
        bound = tcp._SyncObj__transport._onMessageReceivedCallback
        assert bound.__func__ is SafeLogMixin._SyncObj__onMessageReceived and bound.__self__ is tcp
    finally:
        tcp.destroy()


def test_plain_syncobj_truncates_a_matching_tail(journal_dir: Path | None) -> None:
    """The original behaviour, so the suite notices if pysyncobj changes under the mixin."""
    node = follower_with_log(PlainNode, tmp_path=journal_dir)
    reply = append(node, 3, 1, entries(4, 5, 1))
    assert reply == {"type": "next_node_idx", "next_node_idx": 6, "reset": False, "success": True}
    assert log_of(node)[-1] == (5, 1)  # entries 6..10 (same terms) deleted
    append(node, 3, 1, [])  # heartbeat with a lagging prevLogIdx
    assert log_of(node)[-1] == (3, 1)


def test_matching_tail_is_kept(journal_dir: Path | None) -> None:
    node = follower_with_log(SafeNode, tmp_path=journal_dir)
    before = log_of(node)
    reply = append(node, 3, 1, entries(4, 5, 1))
    assert reply == {"type": "next_node_idx", "next_node_idx": 6, "reset": False, "success": True}
    assert log_of(node) == before
    reply = append(node, 3, 1, [])
    assert reply["success"] and reply["next_node_idx"] == 4
    assert log_of(node) == before
    # a message overlapping the tail and extending it appends only the new entries
    reply = append(node, 7, 1, entries(8, 14, 1))
    assert reply["next_node_idx"] == 15
    assert log_of(node) == before + [(i, 1) for i in range(11, 15)]
    stats = node.safelog_stats
    assert stats.kept_tails == 2 and stats.trimmed_entries == 2 + 3 and stats.conflicts == 0


def test_conflict_still_truncates_from_first_conflicting_entry(journal_dir: Path | None) -> None:
    node = follower_with_log(SafeNode, tmp_path=journal_dir)
    # new leader (term 2) whose log matches through 5 and has term-2 entries from 6 on
    reply = append(node, 3, 1, entries(4, 5, 1) + entries(6, 7, 2), term=2)
    assert reply["success"] and reply["next_node_idx"] == 8
    assert log_of(node) == [(1, 0)] + [(i, 1) for i in range(2, 6)] + [(6, 2), (7, 2)]
    assert node.safelog_stats.conflicts == 1 and node.safelog_stats.trimmed_entries == 2


def test_unverified_tail_is_neither_acknowledged_nor_committed() -> None:
    """Tail from an old term beyond the message: kept, but not acked and not committed."""
    node = follower_with_log(SafeNode)  # entries 2..10 of term 1, not committed
    reply = append(node, 5, 1, [], term=2, commit=10)
    assert reply["success"] and reply["next_node_idx"] == 6  # acknowledges only what it verified
    assert node.raftCommitIndex == 5  # min(leaderCommit, last verified), not 10
    assert node._SyncObj__leaderCommitIndex == 10  # still known: not "ready" until applied to 10
    assert log_of(node)[-1] == (10, 1) and node.safelog_stats.clamped_commits == 1
    # the leader then sends its own entry 6: conflict, truncate there
    append(node, 5, 1, entries(6, 6, 2), term=2, commit=6)
    assert log_of(node)[-1] == (6, 2) and node.raftCommitIndex == 6


def test_commit_index_is_clamped_but_never_lowered() -> None:
    node = follower_with_log(SafeNode)
    append(node, 3, 1, entries(4, 5, 1), commit=9)
    assert node.raftCommitIndex == 5
    append(node, 9, 1, entries(10, 10, 1), commit=8)
    assert node.raftCommitIndex == 8
    append(node, 3, 1, [], commit=8)  # lagging heartbeat verifies only up to 3
    assert node.raftCommitIndex == 8
    assert log_of(node)[-1] == (10, 1)
    # plain pysyncobj, same sequence: the heartbeat deletes committed entries 4..10
    plain = follower_with_log(PlainNode)
    append(plain, 9, 1, entries(10, 10, 1), commit=8)
    append(plain, 3, 1, [], commit=8)
    assert log_of(plain)[-1] == (3, 1) and plain.raftCommitIndex == 3


def test_rejections_are_unchanged() -> None:
    for cls in (PlainNode, SafeNode):
        node = follower_with_log(cls)
        assert append(node, 12, 1, entries(13, 13, 1)) == {
            "type": "next_node_idx", "next_node_idx": 11, "reset": True, "success": False}
        assert append(node, 4, 2, entries(5, 5, 2), term=2) == {
            "type": "next_node_idx", "next_node_idx": 4, "reset": True, "success": False}
        assert log_of(node)[-1] == (10, 1)


def test_transmitted_large_entry_keeps_tail() -> None:
    big = (b"\x00" + b"x" * 5000, 4, 1)
    results = {}
    for cls in (PlainNode, SafeNode):
        node = follower_with_log(cls, last=3)
        append(node, 3, 1, [big] + entries(5, 10, 1))
        data = pso_dumps(big)
        append(node, 3, 1, [], transmission="start", data=data[:3000])
        reply = append(node, 3, 1, [], transmission="finish", data=data[3000:])
        assert reply["success"] and reply["next_node_idx"] == 5
        results[cls] = log_of(node)[-1]
    assert results == {PlainNode: (4, 1), SafeNode: (10, 1)}


def test_cluster_change_in_kept_tail_is_not_rolled_back() -> None:
    new_peer = TCPNode("127.0.0.1:4")
    add = b"\x02" + pso_dumps(["add", new_peer.id, new_peer])  # _COMMAND_TYPE.MEMBERSHIP
    outcome = {}
    for cls in (PlainNode, SafeNode):
        node = make(cls, dynamicMembershipChange=True)
        append(node, 1, 0, entries(2, 5, 1) + [(add, 6, 1)] + entries(7, 8, 1))
        assert new_peer in node.otherNodes
        append(node, 3, 1, entries(4, 4, 1))
        outcome[cls] = (new_peer in node.otherNodes, log_of(node)[-1])
    assert outcome == {PlainNode: (False, (4, 1)), SafeNode: (True, (8, 1))}


@pytest.mark.parametrize("cls", [PlainNode, SafeNode])
def test_stale_resend_and_pending_compaction(cls: type, caplog: pytest.LogCaptureFixture) -> None:
    """The chain behind the empty journal: compaction cut point beyond a truncated log."""
    node = follower_with_log(cls, last=100)
    append(node, 100, 1, [], commit=100)
    node.doTick()  # applies 2..100 (no-ops)
    assert node.raftLastApplied == 100
    node.forceLogCompaction()
    node.doTick()  # in-memory snapshot taken at lastApplied - 1 = 99, cut applied next tick
    with caplog.at_level(logging.CRITICAL, logger="pysyncobj"):
        append(node, 10, 1, entries(11, 20, 1), commit=100)  # re-send of an old, short batch
    truncated = any("already-applied" in r.getMessage() for r in caplog.records)
    node.doTick()  # deleteEntriesTo(99)
    if cls is PlainNode:
        assert truncated and len(node._SyncObj__raftLog) == 0
        with pytest.raises(IndexError):
            append(node, 100, 1, [], commit=100)
    else:
        assert not truncated and log_of(node) == [(99, 1), (100, 1)]
        assert append(node, 100, 1, [], commit=100)["success"]


def leader_with_log(cls: type, last: int = 60) -> Any:
    node = make(cls)
    j = node._SyncObj__raftLog
    for _, idx, term in entries(2, last, 1):
        j.add(NOOP, idx, term)
    node._SyncObj__setCurrentTerm(2, None)
    node._SyncObj__onBecomeLeader()  # appends the term-2 no-op at last + 1
    assert node._isLeader()
    return node


def reply(node: Any, next_idx: int, success: bool, reset: bool = False) -> tuple[int, int]:
    peer = TCPNode(PEER_A)
    node._SyncObj__onMessageReceived(peer, {"type": "next_node_idx", "next_node_idx": next_idx,
                                            "success": success, "reset": reset})
    return node._SyncObj__raftNextIndex[peer], node._SyncObj__raftMatchIndex[peer]


@pytest.mark.parametrize("cls", [PlainNode, SafeNode])
def test_leader_next_index(cls: type) -> None:
    node = leader_with_log(cls)
    peer = TCPNode(PEER_A)
    node._SyncObj__raftNextIndex[peer] = 50  # batches up to 49 already sent (pipelined)
    safe = cls is SafeNode
    # ack of an older batch: matchIndex grows; nextIndex keeps its pipelined value
    assert reply(node, 21, True) == ((50, 20) if safe else (21, 20))
    node._SyncObj__raftNextIndex[peer] = 50
    # stale / bogus reset below matchIndex + 1
    assert reply(node, 10, False, reset=True) == ((21, 20) if safe else (10, 20))
    # a legitimate reset above matchIndex is honoured
    assert reply(node, 30, False, reset=True) == (30, 20)
    # matchIndex never shrinks, an ack beyond nextIndex moves it forward
    assert reply(node, 15, True) == (30, 20)
    assert reply(node, 45, True) == (45, 44)


def test_guards() -> None:
    with pytest.raises(TypeError):
        class WrongOrder(SyncObj, SafeLogMixin):
            pass
    assert SafeNode._SyncObj__onMessageReceived is not SyncObj._SyncObj__onMessageReceived
    saved = raft_safety.PYSYNCOBJ_VERSION
    raft_safety.PYSYNCOBJ_VERSION = "0.3.18"
    try:
        with pytest.raises(RuntimeError, match="0.3.18"):
            raft_safety._check_pysyncobj()
    finally:
        raft_safety.PYSYNCOBJ_VERSION = saved
    raft_safety._check_pysyncobj()


# ---------------------------------------------------------------------------------------------
# multi-process layer
# ---------------------------------------------------------------------------------------------

class _Counter(SyncObj):
    """Replicated state: how many writes, an order-sensitive hash, and which values were seen."""

    def __init__(self, n: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count = 0
        self.digest = b""
        self.seen = bytearray(n)
        self.duplicates = 0

    @replicated
    def put(self, value: int) -> int:
        self.count += 1
        self.digest = hashlib.blake2b(self.digest + value.to_bytes(4, "big"), digest_size=16).digest()
        if self.seen[value]:
            self.duplicates += 1
        self.seen[value] = 1
        return self.count


class _SafeCounter(SafeLogMixin, _Counter):
    pass


class _LogWatch(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.critical = self.index_errors = self.other_errors = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.CRITICAL and "truncating" in record.getMessage():
            self.critical += 1
        elif record.levelno >= logging.ERROR:
            exc = record.exc_info[1] if record.exc_info else None
            if isinstance(exc, IndexError):
                self.index_errors += 1
            else:
                self.other_errors += 1
        else:
            return
        if len(self.samples) < 5:
            self.samples.append(record.getMessage())


def _worker(a: argparse.Namespace) -> None:
    watch = _LogWatch()
    logging.getLogger().addHandler(watch)
    ports = [int(p) for p in a.ports.split(",")]
    me = f"127.0.0.1:{ports[a.idx]}"
    others = [f"127.0.0.1:{p}" for i, p in enumerate(ports) if i != a.idx]
    d = Path(a.dir)
    conf = SyncObjConf(journalFile=str(d / f"n{a.idx}.journal"), appendEntriesUseBatch=bool(a.batch))
    cls = _SafeCounter if a.safe else _Counter
    if a.follower_only:
        plain = SyncObj._SyncObj__onMessageReceived
        SafeLogMixin._safelog_next_node_idx = lambda self, node, msg: plain(self, node, msg)
    node = cls(a.n, me, others, conf=conf)
    results: dict[int, int] = {}
    acked = bytearray(a.n)
    submitted = False

    def done(value: int):
        def cb(res: Any, err: int) -> None:
            results[err] = results.get(err, 0) + 1
            if err == 0:
                acked[value] = 1
        return cb

    def report(final: bool) -> None:
        raft_log = node._SyncObj__raftLog
        leader = node._getLeader()
        st = {"idx": a.idx, "me": me, "leader": str(leader) if leader else None,
              "term": node.raftCurrentTerm, "last_applied": node.raftLastApplied,
              "count": node.count, "digest": node.digest.hex(), "duplicates": node.duplicates,
              "submitted": submitted, "callbacks": sum(results.values()),
              "results": {str(k): v for k, v in results.items()},
              "critical": watch.critical, "index_errors": watch.index_errors,
              "other_errors": watch.other_errors, "samples": watch.samples,
              "tick_alive": node.tick_thread_alive()}
        if final:
            st.update(journal_len=len(raft_log), seen=node.seen.hex(), acked=acked.hex(),
                      safelog=vars(node.safelog_stats) if a.safe else None)
        tmp = d / f"status{a.idx}.tmp"
        tmp.write_text(json.dumps(st))
        os.replace(tmp, d / f"status{a.idx}.json")

    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline and not (d / "stop").exists():
        report(False)
        go = d / "go.json"
        if not submitted and go.exists():
            if json.loads(go.read_text())["writer"] == a.idx:
                for i in range(a.n):
                    node.put(i, callback=done(i))
            submitted = True
        time.sleep(0.1)
    time.sleep(0.3)
    report(True)
    node.destroy()
    time.sleep(0.2)
    os._exit(0)


def _status(d: Path, i: int) -> dict[str, Any] | None:
    try:
        return json.loads((d / f"status{i}.json").read_text())
    except (OSError, ValueError):
        return None


def run_cluster(d: Path, safe: bool, n: int, batch: bool = True, budget: float = 55.0,
                follower_only: bool = False) -> list[dict[str, Any]]:
    """Start 3 nodes, submit `n` async writes on a follower, wait until they agree (or `budget`)."""
    ports = free_ports(3)
    cmd = [sys.executable, __file__, "worker", "--ports", ",".join(map(str, ports)), "--dir", str(d),
           "--n", str(n), "--batch", str(int(batch)), "--timeout", str(budget + 5)] + (["--safe"] if safe else []) \
        + (["--follower-only"] if follower_only else [])
    procs = [subprocess.Popen(cmd + ["--idx", str(i)]) for i in range(3)]
    try:
        t0 = time.monotonic()
        writer = None
        last_key, t_change = None, t0
        while time.monotonic() - t0 < budget:
            sts = [_status(d, i) for i in range(3)]
            if all(sts):
                leaders = {s["leader"] for s in sts}
                if writer is None and len(leaders) == 1 and None not in leaders:
                    leader = [s["me"] for s in sts].index(leaders.pop())
                    writer = (leader + 1) % 3
                    (d / "go.json").write_text(json.dumps({"writer": writer}))
                key = tuple((s["count"], s["last_applied"]) for s in sts)
                if key != last_key:
                    last_key, t_change = key, time.monotonic()
                # done once every write has an outcome and the nodes agree and are quiescent
                # (a LEADER_CHANGED outcome can arrive before the write settles either way)
                if writer is not None and sts[writer]["callbacks"] >= n and len(set(key)) == 1 \
                        and time.monotonic() - t_change > 2:
                    break
            time.sleep(0.2)
        (d / "stop").write_text("")
        for p in procs:
            p.wait(15)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    final = [_status(d, i) for i in range(3)]
    assert all(s and "seen" in s for s in final), final
    for s in final:
        s["writer"] = s["idx"] == writer
    return final


def describe(final: list[dict[str, Any]]) -> str:
    keys = ("idx", "writer", "term", "count", "last_applied", "callbacks", "results", "critical",
            "index_errors", "other_errors", "journal_len", "safelog", "samples")
    return json.dumps([{k: s.get(k) for k in keys} for s in final], indent=1)


N_WRITES = 20000


def test_cluster_with_safe_log_converges(tmp_path: Path) -> None:
    final = run_cluster(tmp_path, safe=True, n=N_WRITES, batch=False)
    info = describe(final)
    assert sum(s["critical"] for s in final) == 0, info
    assert sum(s["index_errors"] for s in final) == 0, info
    assert all(s["journal_len"] > 0 and s["tick_alive"] for s in final), info
    assert len({(s["count"], s["digest"], s["last_applied"], s["seen"]) for s in final}) == 1, info
    writer = next(s for s in final if s["writer"])
    assert writer["results"].get("0", 0) > 0, info
    acked = int(writer["acked"], 16)
    seen = int(final[0]["seen"], 16)
    assert acked & ~seen == 0, "a write acknowledged as committed is missing\n" + info
    assert all(s["duplicates"] == 0 for s in final), info
    assert final[0]["count"] == bin(seen).count("1") <= N_WRITES


def test_cluster_follower_rules_alone_prevent_truncation(tmp_path: Path) -> None:
    """Leader rules switched off in the workers: re-sends happen, the follower rules absorb them."""
    final = run_cluster(tmp_path, safe=True, n=N_WRITES, batch=False, follower_only=True)
    info = describe(final)
    assert sum(s["critical"] for s in final) == 0, info
    assert len({(s["count"], s["digest"], s["seen"]) for s in final}) == 1, info
    assert sum(s["safelog"]["trimmed_entries"] for s in final) > 0, info  # re-sends did arrive


def test_raw_pysyncobj_truncates_applied_entries_under_load(tmp_path: Path) -> None:
    """Same load on unmodified pysyncobj: a follower truncates already-applied entries.

    Takes 15-30 s. Observed in every one of 20 runs of this configuration (follower writer,
    appendEntriesUseBatch=False); with batching it is less reliable, so it is not used here.
    """
    final = run_cluster(tmp_path, safe=False, n=N_WRITES, batch=False)
    assert sum(s["critical"] for s in final) > 0, describe(final)


def _main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["worker"])
    p.add_argument("--idx", type=int, required=True)
    p.add_argument("--ports", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--safe", action="store_true")
    p.add_argument("--follower-only", action="store_true", help="disable the leader-side rules")
    _worker(p.parse_args())


if __name__ == "__main__":
    _main()
