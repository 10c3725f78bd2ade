"""podutil: readiness, availability, ownership, pods from templates, ActivePods order."""
from __future__ import annotations

from controlplane.controllers import podutil
from controlplane.client.timeutil import format_time
from protos.skiff.api.v1 import apps_pb2, core_pb2

T0 = 1_800_000_000.0


def pod(name: str, node: str = "n1", phase: str = "Running", ready: bool | None = True,
        ready_at: float | None = T0, created: float = T0, restarts: int = 0) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, "default"
    p.metadata.creation_timestamp = format_time(created)
    p.spec.node_name = node
    p.status.phase = phase
    if ready is not None:
        c = p.status.conditions.add(type="Ready", status="True" if ready else "False")
        if ready_at is not None:
            c.last_transition_time = format_time(ready_at)
    p.status.container_statuses.add(name="c", restart_count=restarts)
    return p


def test_ready_and_available() -> None:
    p = pod("a", ready_at=T0)
    assert podutil.is_pod_ready(p)
    assert podutil.is_pod_available(p, 0, T0)
    assert not podutil.is_pod_available(p, 10, T0 + 5)
    assert podutil.is_pod_available(p, 10, T0 + 10)
    assert not podutil.is_pod_ready(pod("b", ready=False))
    assert not podutil.is_pod_available(pod("c", ready=None), 0, T0)


def test_active() -> None:
    assert podutil.is_pod_active(pod("a"))
    assert not podutil.is_pod_active(pod("b", phase="Succeeded"))
    gone = pod("c")
    gone.metadata.deletion_timestamp = format_time(T0)
    assert not podutil.is_pod_active(gone)


def test_pod_from_template_sets_controller_ref_and_does_not_touch_template() -> None:
    rs = apps_pb2.ReplicaSet()
    rs.metadata.name, rs.metadata.namespace, rs.metadata.uid = "web", "ns1", "u-1"
    tpl = core_pb2.PodTemplateSpec()
    tpl.metadata.labels["app"] = "web"
    tpl.spec.containers.add(name="c", image="busybox")
    before = tpl.SerializeToString()
    p = podutil.pod_from_template(tpl, rs)
    assert tpl.SerializeToString() == before
    assert p.metadata.generate_name == "web-" and p.metadata.namespace == "ns1"
    assert p.metadata.labels["app"] == "web" and p.spec.containers[0].image == "busybox"
    ref = podutil.get_controller_of(p)
    assert ref is not None and (ref.kind, ref.api_version, ref.name, ref.uid) == ("ReplicaSet", "apps/v1", "web", "u-1")
    assert ref.controller and ref.block_owner_deletion
    assert podutil.is_controlled_by(p, rs)
    named = podutil.pod_from_template(tpl, rs, name="web-0")
    assert named.metadata.name == "web-0" and not named.metadata.generate_name


def test_active_pods_order() -> None:
    pods = [
        pod("old-ready", created=T0 - 100, ready_at=T0 - 100),
        pod("unscheduled", node="", phase="Pending", ready=None),
        pod("pending", phase="Pending", ready=None),
        pod("unknown", phase="Unknown", ready=None),
        pod("not-ready", ready=False),
        pod("ready-recent", ready_at=T0 - 1),
        pod("restarts", created=T0 - 100, ready_at=T0 - 100, restarts=5),
        pod("new-ready", created=T0 - 50, ready_at=T0 - 100),
    ]
    order = [p.metadata.name for p in podutil.sort_active_pods(pods)]
    assert order == ["unscheduled", "pending", "unknown", "not-ready", "ready-recent",
                     "restarts", "new-ready", "old-ready"]


def test_restart_counts() -> None:
    p = pod("a", restarts=2)
    p.status.container_statuses.add(name="d", restart_count=3)
    assert podutil.restart_count(p) == 3 and podutil.total_restarts(p) == 5


def test_template_hash_is_stable_and_differs_by_template() -> None:
    a = core_pb2.PodTemplateSpec()
    a.spec.containers.add(name="c", image="busybox:1")
    b = core_pb2.PodTemplateSpec()
    b.CopyFrom(a)
    assert podutil.template_hash(a) == podutil.template_hash(b)
    b.spec.containers[0].image = "busybox:2"
    assert podutil.template_hash(a) != podutil.template_hash(b)
    assert podutil.template_hash(a) != podutil.template_hash(a, collision_count=1)
    assert set(podutil.template_hash(a)) <= set("bcdfghjklmnpqrstvwxz2456789")
