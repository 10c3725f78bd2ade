"""Endpoints controller: ready and not-ready addresses, named target ports, hostnames, updates
only on change, deletion with the service, selector-less services left alone."""
from __future__ import annotations

from controlplane.client.fake import copy_of
from controlplane.controllers import endpoints as ep
from controlplane.controllers.endpoints import EndpointsController
from protos.skiff.api.v1 import core_pb2
from tests.ctrl_more_util import Env, mark_ready, run


def service(name: str = "web", selector: dict[str, str] | None = None, target: int | str | None = "http"
            ) -> core_pb2.Service:
    s = core_pb2.Service()
    s.metadata.name, s.metadata.namespace = name, "default"
    s.metadata.labels["team"] = "a"
    s.spec.selector.update({"app": "web"} if selector is None else selector)
    p = s.spec.ports.add(name="http", port=80, protocol="TCP")
    if isinstance(target, int):
        p.target_port.int_val = target
    elif isinstance(target, str):
        p.target_port.str_val = target
    return s


def pod(name: str, ip: str, ready: bool = True, port: int = 8080, labels: dict[str, str] | None = None,
        hostname: str = "", subdomain: str = "") -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, "default"
    p.metadata.labels.update({"app": "web"} if labels is None else labels)
    p.spec.node_name = "n1"
    p.spec.hostname, p.spec.subdomain = hostname, subdomain
    c = p.spec.containers.add(name="c", image="busybox")
    if port:
        c.ports.add(name="http", container_port=port, protocol="TCP")
    return mark_ready(p, ready, ip=ip)


def test_pure_subsets_group_by_resolved_ports() -> None:
    svc = service()
    pods = [pod("a", "10.0.0.2"), pod("b", "10.0.0.10", ready=False), pod("c", "10.0.0.3", port=9090),
            pod("noip", ""), pod("other", "10.0.0.4", labels={"app": "db"}), pod("noport", "10.0.0.5", port=0)]
    subsets = ep.desired_subsets(svc, pods)
    assert len(subsets) == 2
    s8080 = next(s for s in subsets if s.ports[0].port == 8080)
    s9090 = next(s for s in subsets if s.ports[0].port == 9090)
    assert [a.ip for a in s8080.addresses] == ["10.0.0.2"]
    assert [a.ip for a in s8080.not_ready_addresses] == ["10.0.0.10"]
    assert [a.ip for a in s9090.addresses] == ["10.0.0.3"]
    a = s8080.addresses[0]
    assert (a.target_ref.kind, a.target_ref.name, a.node_name) == ("Pod", "a", "n1")
    assert (s8080.ports[0].name, s8080.ports[0].protocol) == ("http", "TCP")


def test_numeric_and_default_target_ports_and_hostnames() -> None:
    assert ep.resolve_port(service(target=81).spec.ports[0], pod("a", "1.1.1.1")) == 81
    assert ep.resolve_port(service(target=None).spec.ports[0], pod("a", "1.1.1.1")) == 80
    svc = service()
    subsets = ep.desired_subsets(svc, [pod("web-0", "10.0.0.2", hostname="web-0", subdomain="web"),
                                       pod("x", "10.0.0.3", hostname="x", subdomain="elsewhere")])
    assert {a.ip: a.hostname for a in subsets[0].addresses} == {"10.0.0.2": "web-0", "10.0.0.3": ""}


def test_publish_not_ready_addresses() -> None:
    svc = service()
    svc.spec.publish_not_ready_addresses = True
    subsets = ep.desired_subsets(svc, [pod("a", "10.0.0.2", ready=False)])
    assert [a.ip for a in subsets[0].addresses] == ["10.0.0.2"]


def test_sync_creates_then_updates_only_on_change_then_deletes_with_service() -> None:
    async def body(env: Env) -> None:
        env.seed(service(), pod("a", "10.0.0.2"), service("manual", selector={}))
        c = EndpointsController(env.ctx)
        await env.start()
        await c.sync("default/web")
        await c.sync("default/manual")
        assert env.writes() == [("create", "endpoints", "default", "web")]
        made = env.api.stored("endpoints", "web", "default")
        assert isinstance(made, core_pb2.Endpoints)
        assert made.metadata.labels["team"] == "a"
        assert [a.ip for a in made.subsets[0].addresses] == ["10.0.0.2"]
        await env.settle()
        env.api.clear_actions()
        await c.sync("default/web")
        assert env.writes() == []  # nothing changed
        p = copy_of(env.api.stored("pods", "a", "default"))
        await env.api.update_status(mark_ready(p, ready=False, ip="10.0.0.2"))  # type: ignore[arg-type]
        await env.settle()
        assert "default/web" in c.queue._dirty  # the pod change enqueued its service
        env.api.clear_actions()
        await c.sync("default/web")
        assert env.writes() == [("update", "endpoints", "default", "web")]
        got = env.api.stored("endpoints", "web", "default")
        assert [a.ip for a in got.subsets[0].not_ready_addresses] == ["10.0.0.2"]  # type: ignore[union-attr]
        await env.settle()
        await env.api.delete("services", "web", "default")
        await env.settle()
        env.api.clear_actions()
        await c.sync("default/web")
        assert env.writes() == [("delete", "endpoints", "default", "web")]
    run(body)


def test_pod_being_deleted_leaves_the_endpoints() -> None:
    async def body(env: Env) -> None:
        env.seed(service(), pod("a", "10.0.0.2"), pod("b", "10.0.0.3"))
        c = EndpointsController(env.ctx)
        await env.start()
        await env.api.delete("pods", "b", "default")  # graceful: deletionTimestamp set
        await env.settle()
        await c.sync("default/web")
        got = env.api.stored("endpoints", "web", "default")
        assert [a.ip for a in got.subsets[0].addresses] == ["10.0.0.2"]  # type: ignore[union-attr]
    run(body)
