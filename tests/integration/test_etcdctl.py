"""etcdctl 3.4 (ETCDCTL_API=3) against a real 3-replica skiff store: the wire is etcd's."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.conftest import require_etcdctl


def etcdctl(cluster, *args: str, endpoint: int | None = None, stdin: str | None = None, timeout: float = 20,
            merge: bool = False) -> str:
    endpoints = cluster.endpoints[endpoint] if endpoint is not None else ",".join(cluster.endpoints)
    env = dict(os.environ, ETCDCTL_API="3")
    proc = subprocess.run([require_etcdctl(), "--endpoints", endpoints, *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"etcdctl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout + (proc.stderr if merge else "")


def test_put_get_on_any_replica(shared_cluster):
    assert etcdctl(shared_cluster, "put", "/a/one", "1", endpoint=0).strip() == "OK"
    for i in range(3):  # a write on one replica is visible to linearizable reads on every replica
        assert etcdctl(shared_cluster, "get", "/a/one", "--print-value-only", endpoint=i).strip() == "1"


def test_prefix_limit_and_revision(shared_cluster):
    revs = []
    for i in range(5):
        out = json.loads(etcdctl(shared_cluster, "put", f"/b/k{i}", f"v{i}", "-w", "json", endpoint=i % 3))
        revs.append(out["header"]["revision"])
    assert revs == sorted(revs) and len(set(revs)) == 5
    listed = json.loads(etcdctl(shared_cluster, "get", "/b/", "--prefix", "--limit", "2", "-w", "json"))
    assert [bytes.fromhex(kv["key"].encode().hex()) for kv in listed["kvs"]]  # present
    assert listed["count"] == 5 and listed["more"] is True and len(listed["kvs"]) == 2
    etcdctl(shared_cluster, "put", "/b/k0", "changed")
    old = etcdctl(shared_cluster, "get", "/b/k0", f"--rev={revs[0]}", "--print-value-only").strip()
    assert old == "v0"
    assert etcdctl(shared_cluster, "get", "/b/k0", "--print-value-only").strip() == "changed"


def test_delete_and_txn(shared_cluster):
    etcdctl(shared_cluster, "put", "/c/x", "1")
    out = etcdctl(shared_cluster, "txn", stdin='value("/c/x") = "1"\n\nput /c/x 2\n\nput /c/x fail\n\n')
    assert out.splitlines()[0] == "SUCCESS"
    out = etcdctl(shared_cluster, "txn", stdin='value("/c/x") = "1"\n\nput /c/x 3\n\nput /c/y other\n\n')
    assert out.splitlines()[0] == "FAILURE"
    assert etcdctl(shared_cluster, "get", "/c/x", "--print-value-only").strip() == "2"
    assert etcdctl(shared_cluster, "del", "/c/", "--prefix").strip() == "2"
    assert etcdctl(shared_cluster, "get", "/c/", "--prefix").strip() == ""


def test_watch_from_old_revision(shared_cluster):
    first = json.loads(etcdctl(shared_cluster, "put", "/w/k", "a", "-w", "json"))["header"]["revision"]
    etcdctl(shared_cluster, "put", "/w/k", "b")
    etcdctl(shared_cluster, "del", "/w/k")
    env = dict(os.environ, ETCDCTL_API="3")
    proc = subprocess.Popen([require_etcdctl(), "--endpoints", shared_cluster.endpoints[2], "watch", "/w/",
                             "--prefix", f"--rev={first}"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 15
        while len(lines) < 8 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line:
                lines.append(line.strip())
            if len(lines) == 7:
                etcdctl(shared_cluster, "put", "/w/k", "live", endpoint=0)
    finally:
        proc.kill()
        proc.wait()
    assert lines == ["PUT", "/w/k", "a", "PUT", "/w/k", "b", "DELETE", "/w/k"] or lines[:7] == [
        "PUT", "/w/k", "a", "PUT", "/w/k", "b", "DELETE"], lines


def test_lease_keys_vanish_on_expiry_and_revoke(shared_cluster):
    lease = etcdctl(shared_cluster, "lease", "grant", "2").split()[1]
    etcdctl(shared_cluster, "put", "--lease", lease, "/l/expiring", "x", endpoint=1)
    ttl = etcdctl(shared_cluster, "lease", "timetolive", "--keys", lease, endpoint=2)
    assert "/l/expiring" in ttl
    deadline = time.monotonic() + 15
    while etcdctl(shared_cluster, "get", "/l/expiring").strip() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert etcdctl(shared_cluster, "get", "/l/expiring").strip() == ""
    assert "already expired" in etcdctl(shared_cluster, "lease", "timetolive", lease)

    lease = etcdctl(shared_cluster, "lease", "grant", "60").split()[1]
    etcdctl(shared_cluster, "put", "--lease", lease, "/l/kept", "y")
    out = etcdctl(shared_cluster, "lease", "keep-alive", "--once", lease, endpoint=1)
    assert "keepalived with TTL(60)" in out
    assert lease in etcdctl(shared_cluster, "lease", "list")
    etcdctl(shared_cluster, "lease", "revoke", lease, endpoint=2)
    assert etcdctl(shared_cluster, "get", "/l/kept").strip() == ""


def test_member_list_status_health(shared_cluster):
    members = json.loads(etcdctl(shared_cluster, "member", "list", "-w", "json"))["members"]
    assert sorted(m["name"] for m in members) == ["m1", "m2", "m3"]
    assert all(m["clientURLs"] for m in members)
    status = json.loads(etcdctl(shared_cluster, "endpoint", "status", "-w", "json"))
    leaders = {s["Status"]["leader"] for s in status}
    assert len(status) == 3 and len(leaders) == 1 and 0 not in leaders
    health = etcdctl(shared_cluster, "endpoint", "health", merge=True)  # etcdctl prints health on stderr
    assert health.count("is healthy") == 3, health


def test_compaction_and_hashkv(shared_cluster):
    rev = json.loads(etcdctl(shared_cluster, "put", "/h/k", "1", "-w", "json"))["header"]["revision"]
    etcdctl(shared_cluster, "put", "/h/k", "2")
    etcdctl(shared_cluster, "compact", str(rev + 1))
    with pytest.raises(AssertionError, match="required revision has been compacted"):
        etcdctl(shared_cluster, "get", "/h/k", f"--rev={rev}")
    time.sleep(0.5)  # followers apply the compaction right after the leader answers
    hashes = json.loads(etcdctl(shared_cluster, "endpoint", "hashkv", "-w", "json"))
    assert len({h["HashKV"]["hash"] for h in hashes}) == 1
