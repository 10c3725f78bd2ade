"""Deployment controller: its arithmetic (table tests) and whole rollouts stepped deterministically
with the ReplicaSet controller and a one-call kubelet (tests/ctrlutil.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Callable

import pytest

from controlplane.client import codec
from controlplane.controllers import deployment_util as du
from controlplane.controllers.deployment import DeploymentController
from controlplane.controllers.replicaset import ReplicaSetController
from protos.skiff.api.v1 import apps_pb2, meta_pb2
from tests.ctrlutil import (Harness, deployment, finish_terminating, make_ready, replica_set, run,
                            template)

KEY = "default/web"


def ios(value: int | str) -> meta_pb2.IntOrString:
    return meta_pb2.IntOrString(int_val=value) if isinstance(value, int) else meta_pb2.IntOrString(str_val=value)


@pytest.mark.parametrize("surge,unavailable,desired,expected", [
    ("25%", "25%", 4, (1, 1)), ("25%", "25%", 10, (3, 2)), ("25%", "25%", 1, (1, 0)),
    (0, 0, 5, (0, 1)), ("0%", "0%", 5, (0, 1)), (2, "50%", 3, (2, 1)), ("100%", 0, 3, (3, 0)),
])
def test_fenceposts_round_surge_up_and_unavailable_down(surge: Any, unavailable: Any, desired: int,
                                                        expected: tuple[int, int]) -> None:
    assert du.resolve_fenceposts(ios(surge), ios(unavailable), desired) == expected


def test_bad_percentage_is_an_error_a_person_can_read() -> None:
    with pytest.raises(ValueError, match="percentage"):
        du.scaled_value(ios("abc"), 10, True)


def test_template_hash_ignores_its_label_and_is_the_same_in_another_process() -> None:
    t = template({"app": "web"})
    h = du.template_hash(t)
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789") and 1 <= len(h) <= 10
    labelled = template({"app": "web", du.POD_TEMPLATE_HASH: h})
    assert du.template_hash(labelled) == h
    assert du.template_hash(t, 1) != h
    assert du.template_hash(template({"app": "web"}, image="nginx:1")) != h
    code = ("from tests.ctrlutil import template; from controlplane.controllers.deployment_util import "
            "template_hash; print(template_hash(template({'app': 'web'})))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                           cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), timeout=60)
    assert other.stdout.strip() == h, other.stderr


def test_proportional_sizes_share_a_resize_mid_rollout() -> None:
    d = deployment("web", 15, surge=3, unavailable=2)
    old, new = replica_set("web-old", 8), replica_set("web-new", 5)
    old.metadata.creation_timestamp, new.metadata.creation_timestamp = "2027-01-01T00:00:00Z", "2027-01-02T00:00:00Z"
    for rs in (old, new):
        rs.metadata.annotations[du.MAX_REPLICAS] = "13"
    assert du.proportional_sizes(d, [old, new]) == {"web-old": 11, "web-new": 7}
    d.spec.replicas = 5  # shrink: 13 -> 8 (5 + 3 surge)
    sizes = du.proportional_sizes(d, [old, new])
    assert sum(sizes.values()) == 8 and sizes["web-old"] > sizes["web-new"]


def test_rollout_status_messages_follow_kubectl() -> None:
    d = deployment("web", 3)
    d.metadata.generation = 2
    assert du.rollout_status_message(d) == ("Waiting for deployment spec update to be observed...", False)
    d.status.observed_generation = 2
    d.status.replicas, d.status.updated_replicas = 4, 1
    assert du.rollout_status_message(d)[0] == ('Waiting for deployment "web" rollout to finish: 1 out of 3 new '
                                              "replicas have been updated...")
    d.status.updated_replicas = 3
    assert "1 old replicas are pending termination" in du.rollout_status_message(d)[0]
    d.status.replicas, d.status.available_replicas = 3, 1
    assert du.rollout_status_message(d)[0] == ('Waiting for deployment "web" rollout to finish: 1 of 3 updated '
                                              "replicas are available...")
    d.status.available_replicas = 3
    assert du.rollout_status_message(d) == ('deployment "web" successfully rolled out', True)
    d.status.conditions.add(type="Progressing", status="False", reason="ProgressDeadlineExceeded")
    with pytest.raises(ValueError, match="exceeded its progress deadline"):
        du.rollout_status_message(d)


# ---- whole rollouts, stepped -----------------------------------------------------------------

class World:
    """The Deployment and ReplicaSet controllers over one harness, stepped by hand."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.dc = DeploymentController(h.ctx)
        self.rsc = ReplicaSetController(h.ctx)
        self.checks: list[Callable[[], None]] = []

    async def step(self, kubelet: bool = True) -> None:
        h = self.h
        await h.refresh()
        for key in sorted(self.dc.deployments.keys()):
            await self.dc.sync(key)
            self.check()
        for _ in range(2):  # once to act, once to see the result in status
            await h.refresh()
            for key in sorted(self.rsc.owners.keys()):
                await self.rsc.sync(key)
                self.check()
        if kubelet:
            await make_ready(h)
            await finish_terminating(h)
            self.check()

    def check(self) -> None:
        for fn in self.checks:
            fn()

    async def settle(self, steps: int = 30, kubelet: bool = True) -> None:
        for _ in range(steps):
            before = self.h.fake.rev
            await self.step(kubelet)
            if self.h.fake.rev == before:
                return
        raise AssertionError("did not settle")

    def d(self) -> Any:
        return self.h.fake.stored("deployments", "web", "default")

    def rs_sizes(self) -> dict[str, tuple[int, int]]:
        """name -> (spec.replicas, revision)"""
        return {rs.metadata.name: (rs.spec.replicas, du.revision(rs)) for rs in self.h.replica_sets()}


def world(body: Callable[[World], Any]) -> None:
    async def main(h: Harness) -> None:
        await body(World(h))
    run(main)


async def set_image(w: World, image: str) -> None:
    d = w.d()
    d.spec.template.spec.containers[0].image = image
    await w.h.fake.update(d)


def conditions(d: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in d.status.conditions}


def test_create_makes_a_hashed_replica_set_with_revision_and_annotations() -> None:
    async def body(w: World) -> None:
        w.h.fake.seed(deployment("web", 3))
        await w.step(kubelet=False)
        [rs] = w.h.replica_sets()
        h = du.template_hash(deployment("web", 3).spec.template)
        assert rs.metadata.name == f"web-{h}"
        assert rs.metadata.labels[du.POD_TEMPLATE_HASH] == h
        assert rs.spec.selector.match_labels == {"app": "web", du.POD_TEMPLATE_HASH: h}
        assert rs.spec.template.metadata.labels[du.POD_TEMPLATE_HASH] == h
        assert rs.metadata.owner_references[0].kind == "Deployment"
        assert (rs.spec.replicas, rs.metadata.annotations[du.REVISION]) == (3, "1")
        assert rs.metadata.annotations[du.DESIRED_REPLICAS] == "3"
        assert rs.metadata.annotations[du.MAX_REPLICAS] == "4"
        d = w.d()
        assert d.metadata.annotations[du.REVISION] == "1"
        assert conditions(d)["Progressing"] == ("True", du.NEW_RS_CREATED)
        assert len(w.h.pods()) == 3
        await w.settle()
        d = w.d()
        assert (d.status.replicas, d.status.updated_replicas, d.status.ready_replicas,
                d.status.available_replicas, d.status.unavailable_replicas) == (3, 3, 3, 3, 0)
        assert d.status.observed_generation == d.metadata.generation
        assert conditions(d) == {"Progressing": ("True", du.NEW_RS_AVAILABLE),
                                 "Available": ("True", du.MIN_AVAILABLE)}
        assert du.rollout_status_message(d)[1]
    world(body)


@pytest.mark.parametrize("replicas,surge,unavailable", [(4, 1, 1), (5, "25%", "25%"), (3, 0, 1), (3, 2, 0)])
def test_rolling_update_stays_within_surge_and_unavailable(replicas: int, surge: Any, unavailable: Any) -> None:
    async def body(w: World) -> None:
        w.h.fake.seed(deployment("web", replicas, surge=surge, unavailable=unavailable))
        await w.settle()
        d = w.d()
        max_pods = replicas + du.max_surge(d)
        min_ready = replicas - du.max_unavailable(d)
        seen: list[tuple[int, int]] = []

        def bounds() -> None:
            pods = w.h.pods()
            ready = sum(1 for p in pods if p.status.phase == "Running")
            seen.append((len(pods), ready))
            assert len(pods) <= max_pods, f"{len(pods)} pods > {max_pods}"
            assert ready >= min_ready, f"{ready} ready < {min_ready}"
        w.checks.append(bounds)
        await set_image(w, "busybox:2")
        await w.settle()
        sizes = sorted(w.rs_sizes().values(), key=lambda v: v[1])
        assert sizes == [(0, 1), (replicas, 2)]
        assert all(p.spec.containers[0].image == "busybox:2" for p in w.h.pods())
        d = w.d()
        assert d.metadata.annotations[du.REVISION] == "2"
        assert (d.status.updated_replicas, d.status.available_replicas, d.status.replicas) == (replicas,) * 3
        assert conditions(d)["Progressing"] == ("True", du.NEW_RS_AVAILABLE)
        assert len(seen) > 3
    world(body)


def test_recreate_removes_every_old_pod_before_creating_new_ones() -> None:
    async def body(w: World) -> None:
        w.h.fake.seed(deployment("web", 3, strategy="Recreate"))
        await w.settle()

        def never_both() -> None:
            images = {p.spec.containers[0].image for p in w.h.pods()}
            assert len(images) <= 1, images
        w.checks.append(never_both)
        await set_image(w, "busybox:2")
        await w.step(kubelet=False)
        assert len(w.h.replica_sets()) == 1  # old scaled down; new not made while old pods exist
        await w.settle()
        assert sorted(v for v in w.rs_sizes().values()) == [(0, 1), (3, 2)]
        assert {p.spec.containers[0].image for p in w.h.pods()} == {"busybox:2"}
    world(body)


def test_rollback_reuses_the_old_replica_set_with_a_new_revision() -> None:
    async def body(w: World) -> None:
        w.h.fake.seed(deployment("web", 2))
        await w.settle()
        first = {n for n in w.rs_sizes()}
        await set_image(w, "busybox:2")
        await w.settle()
        old_template = next(rs for rs in w.h.replica_sets() if du.revision(rs) == 1).spec.template
        d = w.d()
        d.spec.template.CopyFrom(du.without_hash(old_template))  # what `skiff rollout undo` does
        await w.h.fake.update(d)
        await w.settle()
        sizes = w.rs_sizes()
        assert len(sizes) == 2                          # no third ReplicaSet
        [back] = first
        assert sizes[back] == (2, 3)
        rs: Any = w.h.fake.stored("replicasets", back, "default")
        assert rs.metadata.annotations[du.REVISION_HISTORY] == "1"
        assert w.d().metadata.annotations[du.REVISION] == "3"
    world(body)


def test_paused_deployment_only_scales_until_resumed() -> None:
    async def body(w: World) -> None:
        w.h.fake.seed(deployment("web", 2))
        await w.settle()
        d = w.d()
        d.spec.paused = True
        d.spec.template.spec.containers[0].image = "busybox:2"
        await w.h.fake.update(d)
        await w.settle()
        assert len(w.h.replica_sets()) == 1
        assert conditions(w.d())["Progressing"] == ("Unknown", du.PAUSED)
        d = w.d()
        d.spec.replicas = 4
        await w.h.fake.update(d)
        await w.settle()
        assert list(w.rs_sizes().values()) == [(4, 1)]
        assert len(w.h.pods()) == 4
        d = w.d()
        d.spec.paused = False
        await w.h.fake.update(d)
        await w.step()
        assert len(w.h.replica_sets()) == 2
        await w.settle()
        assert sorted(w.rs_sizes().values(), key=lambda v: v[1]) == [(0, 1), (4, 2)]
        assert conditions(w.d())["Progressing"] == ("True", du.NEW_RS_AVAILABLE)
    world(body)


def test_scaling_a_settled_deployment_resizes_its_one_replica_set() -> None:
    async def body(w: World) -> None:
        w.h.fake.seed(deployment("web", 3))
        await w.settle()
        d = w.d()
        d.spec.replicas = 5
        await w.h.fake.update(d)
        await w.step()
        [rs] = w.h.replica_sets()
        assert (rs.spec.replicas, rs.metadata.annotations[du.DESIRED_REPLICAS],
                rs.metadata.annotations[du.MAX_REPLICAS]) == (5, "5", "7")
        d = w.d()
        d.spec.replicas = 1
        await w.h.fake.update(d)
        await w.settle()
        assert len(w.h.pods()) == 1
    world(body)


def test_history_is_pruned_to_revision_history_limit() -> None:
    async def body(w: World) -> None:
        w.h.fake.seed(deployment("web", 1, history=1))
        await w.settle()
        for image in ("busybox:2", "busybox:3", "busybox:4"):
            await set_image(w, image)
            await w.settle()
        revisions = sorted(v[1] for v in w.rs_sizes().values())
        assert revisions == [3, 4]
    world(body)


def test_progress_deadline_exceeded_when_pods_never_get_ready() -> None:
    async def body(w: World) -> None:
        w.h.fake.seed(deployment("web", 2, deadline=30))
        await w.settle(kubelet=False)
        d = w.d()
        assert conditions(d)["Progressing"] == ("True", du.RS_UPDATED)  # pods were made: progress
        assert conditions(d)["Available"] == ("False", du.MIN_UNAVAILABLE)
        assert KEY in w.dc.queue.waiting()   # it will look again when the deadline passes
        w.h.advance(31)
        await w.step(kubelet=False)
        assert conditions(w.d())["Progressing"] == ("False", du.TIMED_OUT)
        with pytest.raises(ValueError):
            du.rollout_status_message(w.d())
    world(body)


def test_adopts_an_orphan_replica_set_that_matches() -> None:
    async def body(w: World) -> None:
        d = deployment("web", 2)
        h = du.template_hash(d.spec.template)
        orphan = replica_set(f"web-{h}", 2, {"app": "web", du.POD_TEMPLATE_HASH: h})
        orphan.spec.template.CopyFrom(d.spec.template)
        orphan.spec.template.metadata.labels[du.POD_TEMPLATE_HASH] = h
        orphan.metadata.labels.update(orphan.spec.template.metadata.labels)
        w.h.fake.seed(d, orphan)
        await w.settle()
        [rs] = w.h.replica_sets()
        assert rs.metadata.owner_references[0].kind == "Deployment"
        assert du.revision(rs) == 1
    world(body)


def test_deployment_yaml_roundtrip_of_the_test_fixture() -> None:
    # guards the fixture itself: what the tests build must be a valid Deployment document
    d = deployment("web", 3)
    assert codec.decode(codec.encode(d), apps_pb2.Deployment) == d
