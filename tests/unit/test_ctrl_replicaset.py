"""ReplicaSet / ReplicationController controller: filled caches, sync(key), the API calls made."""
from __future__ import annotations

from typing import Any

from controlplane.client import api
from controlplane.controllers.replicaset import (ReplicaSetController, ReplicationManager, deletion_order_key,
                                                 pods_to_delete, slow_start_batch)
from protos.skiff.api.v1 import core_pb2
from tests.ctrlutil import Harness, finish_terminating, make_ready, pod, replica_set, run, template

KEY = "default/web"


async def start(h: Harness, *objs: Any, cls: type = ReplicaSetController) -> Any:
    h.fake.seed(*objs)
    ctrl = cls(h.ctx)
    await h.refresh()
    h.fake.clear_actions()
    return ctrl


def stored_rs(h: Harness, name: str = "web") -> Any:
    return h.fake.stored("replicasets", name, "default")


def test_scale_up_creates_pods_from_the_template_with_owner_and_generate_name() -> None:
    async def body(h: Harness) -> None:
        ctrl = await start(h, replica_set("web", 3))
        await ctrl.sync(KEY)
        creates = [a for a in h.writes("pods") if a[0] == "create"]
        assert len(creates) == 3
        pods = h.pods()
        rs = stored_rs(h)
        for p in pods:
            assert p.metadata.name.startswith("web-") and len(p.metadata.name) == len("web-") + 5
            assert p.metadata.labels["app"] == "web"
            ref = p.metadata.owner_references[0]
            assert (ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == \
                ("ReplicaSet", "web", rs.metadata.uid, True, True)
            assert p.spec.containers[0].image == "busybox:1.36"
        reasons = [e.reason for (res, _, _), e in h.fake._objects.items() if res == "events"]
        assert "SuccessfulCreate" in reasons  # (a fake wall clock gives events one name: some merge)
    run(body)


def test_expectations_prevent_a_second_create_while_the_cache_lags() -> None:
    async def body(h: Harness) -> None:
        ctrl = await start(h, replica_set("web", 3))
        await ctrl.sync(KEY)
        assert len(h.pods()) == 3
        await ctrl.sync(KEY)          # the pod cache has not seen the 3 pods yet
        assert len(h.pods()) == 3
        assert ctrl.expectations.pending(KEY) == (3, 0)
        await h.refresh()             # now it has: expectations are met
        assert ctrl.expectations.satisfied(KEY)
        h.fake.clear_actions()
        await ctrl.sync(KEY)
        assert [a for a in h.writes("pods")] == []
        assert stored_rs(h).status.replicas == 3
    run(body)


def test_expectations_expire_after_their_ttl() -> None:
    async def body(h: Harness) -> None:
        ctrl = await start(h, replica_set("web", 2))
        await ctrl.sync(KEY)
        for p in h.pods():  # the pods vanish without the cache ever seeing them
            await h.fake.delete("pods", p.metadata.name, "default")
        await ctrl.sync(KEY)
        assert h.pods() == []
        h.advance(301)
        await ctrl.sync(KEY)
        assert len(h.pods()) == 2
    run(body)


def test_slow_start_batches_stop_at_the_first_failing_batch() -> None:
    async def body(h: Harness) -> None:
        calls: list[int] = []

        async def fn() -> None:
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("boom")

        done, err = await slow_start_batch(10, 1, fn)
        assert (done, len(calls), str(err)) == (2, 3, "boom")   # batches 1 and 2; no batch of 4
        calls.clear()
        done, err = await slow_start_batch(10, 1, lambda: _noop())
        assert (done, err) == (10, None)
    run(body)


async def _noop() -> None:
    return None


def test_failed_creates_set_replica_failure_and_lower_expectations() -> None:
    async def body(h: Harness) -> None:
        ctrl = await start(h, replica_set("web", 5))
        h.fake.fail("create", "pods", times=None)
        try:
            await ctrl.sync(KEY)
            raise AssertionError("sync should raise the create error")
        except api.UnavailableError:
            pass
        assert len([a for a in h.writes("pods") if a[0] == "create"]) == 1  # slow start: one try
        assert ctrl.expectations.satisfied(KEY)
        cond = [c for c in stored_rs(h).status.conditions if c.type == "ReplicaFailure"]
        assert cond and cond[0].reason == "FailedCreate" and cond[0].status == "True"
        h.fake.clear_failures()
        await h.refresh()
        await ctrl.sync(KEY)
        assert len(h.pods()) == 5
        assert not [c for c in stored_rs(h).status.conditions if c.type == "ReplicaFailure"]
    run(body)


def test_scale_down_deletes_in_active_pods_order() -> None:
    async def body(h: Harness) -> None:
        [rs] = h.fake.seed(replica_set("web", 2))
        labels = {"app": "web"}
        h.fake.seed(
            pod("running-ready-old", labels, rs, "n1", "Running", True, "2027-01-01T00:00:00Z"),
            pod("running-ready-new", labels, rs, "n1", "Running", True, "2027-01-02T00:00:00Z"),
            pod("running-notready", labels, rs, "n1", "Running", False),
            pod("pending-scheduled", labels, rs, "n2", "Pending"),
            pod("unscheduled", labels, rs, "", "Pending"),
        )
        ctrl = ReplicaSetController(h.ctx)
        await h.refresh()
        h.fake.clear_actions()
        await ctrl.sync(KEY)
        deleted = sorted(a[3] for a in h.writes("pods") if a[0] == "delete")
        assert deleted == ["pending-scheduled", "running-notready", "unscheduled"]
        assert ctrl.expectations.pending(KEY) == (0, 3)
        h.fake.clear_actions()
        await ctrl.sync(KEY)  # the cache has not seen the deletions yet: no second round
        assert h.writes("pods") == []
        await h.refresh()
        assert ctrl.expectations.satisfied(KEY)
        await ctrl.sync(KEY)
        assert h.writes("pods") == []
    run(body)


def test_deletion_order_key_follows_kubernetes_ranking() -> None:
    labels = {"app": "web"}
    older = pod("older", labels, None, "n1", "Running", True, "2027-01-01T00:00:00Z", "2027-01-01T00:00:10Z")
    newer = pod("newer", labels, None, "n1", "Running", True, "2027-01-01T00:00:00Z", "2027-01-01T00:05:00Z")
    restarts = pod("restarts", labels, None, "n1", "Running", True, "2027-01-01T00:00:00Z",
                   "2027-01-01T00:00:10Z", restarts=4)
    unknown = pod("unknown", labels, None, "n1", "Unknown")
    pending = pod("pending", labels, None, "n1", "Pending")
    ordered = sorted([older, restarts, newer, unknown, pending], key=deletion_order_key)
    assert [p.metadata.name for p in ordered] == ["pending", "unknown", "newer", "restarts", "older"]
    created_new = pod("b", labels, None, "n1", "Running", False, "2027-01-02T00:00:00Z")
    created_old = pod("a", labels, None, "n1", "Running", False, "2027-01-01T00:00:00Z")
    assert sorted([created_old, created_new], key=deletion_order_key)[0].metadata.name == "b"
    cheap = pod("cheap", labels, None, "n1", "Running", True)
    cheap.metadata.annotations["controller.kubernetes.io/pod-deletion-cost"] = "-5"
    assert sorted([older, cheap], key=deletion_order_key)[0].metadata.name == "cheap"


def test_pods_doubled_up_on_a_node_go_first() -> None:
    labels = {"app": "web"}
    a = pod("a", labels, None, "n1", "Running", True)
    b = pod("b", labels, None, "n1", "Running", True)
    c = pod("c", labels, None, "n2", "Running", True)
    a.metadata.uid, b.metadata.uid, c.metadata.uid = "1", "2", "3"
    victims = pods_to_delete([c, a, b], [a, b, c], 1)
    assert victims[0].metadata.name in ("a", "b")


def test_adopts_matching_orphans_and_releases_pods_that_stop_matching() -> None:
    async def body(h: Harness) -> None:
        [rs] = h.fake.seed(replica_set("web", 2))
        h.fake.seed(pod("orphan", {"app": "web"}),
                    pod("mine-relabeled", {"app": "other"}, rs),
                    pod("mine", {"app": "web"}, rs),
                    pod("not-matching-orphan", {"app": "db"}))
        ctrl = ReplicaSetController(h.ctx)
        await h.refresh()
        h.fake.clear_actions()
        await ctrl.sync(KEY)
        assert ("get", "replicasets", "default", "web") in h.fake.actions  # fresh read before adopting
        patched = sorted(a[3] for a in h.writes("pods") if a[0] == "patch")
        assert patched == ["mine-relabeled", "orphan"]
        assert [a for a in h.writes("pods") if a[0] != "patch"] == []   # 2 claimed: nothing to create
        orphan: Any = h.fake.stored("pods", "orphan", "default")
        assert [(r.uid, r.controller) for r in orphan.metadata.owner_references] == [(rs.metadata.uid, True)]
        released: Any = h.fake.stored("pods", "mine-relabeled", "default")
        assert list(released.metadata.owner_references) == []
        assert stored_rs(h).status.replicas == 2
    run(body)


def test_pods_controlled_by_another_owner_are_left_alone() -> None:
    async def body(h: Harness) -> None:
        [other] = h.fake.seed(replica_set("other", 1, {"app": "web"}))
        h.fake.seed(pod("theirs", {"app": "web"}, other))
        ctrl = await start(h, replica_set("web", 1))
        await ctrl.sync(KEY)
        writes = h.writes("pods")
        assert [a[0] for a in writes] == ["create"]  # it makes its own, never takes "theirs"
        theirs: Any = h.fake.stored("pods", "theirs", "default")
        assert theirs.metadata.owner_references[0].uid == other.metadata.uid
    run(body)


def test_an_owner_being_deleted_neither_creates_nor_adopts() -> None:
    async def body(h: Harness) -> None:
        rs = replica_set("web", 3)
        rs.metadata.finalizers.append("foregroundDeletion")
        [stored] = h.fake.seed(rs, pod("orphan", {"app": "web"}))[:1]
        await h.fake.delete("replicasets", "web", "default")
        ctrl = ReplicaSetController(h.ctx)
        await h.refresh()
        h.fake.clear_actions()
        await ctrl.sync(KEY)
        assert h.writes("pods") == []
    run(body)


def test_status_counts_ready_available_and_fully_labeled() -> None:
    async def body(h: Harness) -> None:
        rs = replica_set("web", 3, {"app": "web"}, min_ready=10)
        rs.spec.template.metadata.labels["tier"] = "front"
        ctrl = await start(h, rs)
        await ctrl.sync(KEY)
        await h.refresh()
        await make_ready(h)
        await h.refresh()
        await ctrl.sync(KEY)
        st = stored_rs(h).status
        assert (st.replicas, st.fully_labeled_replicas, st.ready_replicas, st.available_replicas) == (3, 3, 3, 0)
        assert st.observed_generation == stored_rs(h).metadata.generation
        assert "default/web" in ctrl.queue.waiting()   # looked at again once they may be available
        h.advance(11)
        await ctrl.sync(KEY)
        assert stored_rs(h).status.available_replicas == 3
    run(body)


def test_status_is_not_written_when_unchanged() -> None:
    async def body(h: Harness) -> None:
        ctrl = await start(h, replica_set("web", 1))
        await ctrl.sync(KEY)
        await h.refresh()
        await ctrl.sync(KEY)
        h.fake.clear_actions()
        await h.refresh()
        await ctrl.sync(KEY)
        assert h.writes() == []
    run(body)


def test_deleted_pod_is_replaced_and_terminating_pods_do_not_count() -> None:
    async def body(h: Harness) -> None:
        ctrl = await start(h, replica_set("web", 2))
        await ctrl.sync(KEY)
        await h.refresh()
        await make_ready(h)
        await h.refresh()
        victim = h.pods()[0]
        await h.fake.delete("pods", victim.metadata.name, "default")  # bound: graceful, stays a while
        await h.refresh()
        assert ctrl.queue.get_nowait() == KEY
        ctrl.queue.done(KEY)
        h.fake.clear_actions()
        await ctrl.sync(KEY)
        assert [a[0] for a in h.writes("pods")] == ["create"]
        assert await finish_terminating(h) == 1
    run(body)


def test_pod_events_enqueue_the_owner() -> None:
    async def body(h: Harness) -> None:
        ctrl = await start(h, replica_set("web", 1))
        while (key := ctrl.queue.get_nowait()) is not None:
            ctrl.queue.done(key)
        h.fake.seed(pod("orphan", {"app": "web"}))
        await h.refresh()
        assert ctrl.queue.get_nowait() == KEY
    run(body)


def test_replication_controller_uses_its_equality_selector() -> None:
    async def body(h: Harness) -> None:
        rc = core_pb2.ReplicationController(api_version="v1", kind="ReplicationController")
        rc.metadata.name, rc.metadata.namespace = "web", "default"
        rc.spec.replicas = 2
        rc.spec.selector["app"] = "web"
        rc.spec.template.CopyFrom(template({"app": "web", "v": "1"}))
        h.fake.seed(pod("orphan", {"app": "web"}), pod("other", {"app": "db"}))
        ctrl = await start(h, rc, cls=ReplicationManager)
        await ctrl.sync(KEY)
        writes = h.writes("pods")
        assert sorted(a[0] for a in writes) == ["create", "patch"]
        made = [p for p in h.pods() if p.metadata.name.startswith("web-")]
        assert made[0].metadata.owner_references[0].kind == "ReplicationController"
        assert made[0].metadata.owner_references[0].api_version == "v1"
        await h.refresh()
        await ctrl.sync(KEY)
        rc_now: Any = h.fake.stored("replicationcontrollers", "web", "default")
        assert (rc_now.status.replicas, rc_now.status.fully_labeled_replicas) == (2, 1)
    run(body)
