"""The watch cache's indexed triggers: a node agent's pod watch (spec.nodeName=N) is asked only
about pods on N, before or after the change; other watchers see everything as before."""
from __future__ import annotations

from controlplane.apiserver.watchcache import ADDED, DELETED, MODIFIED, CacheEvent, ResourceCache
from controlplane.client import scheme, selectors
from protos.etcd.mvccpb import kv_pb2
from protos.skiff.api.v1 import core_pb2


def _put(name: str, node: str, rev: int, created: int) -> kv_pb2.Event:
    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace = name, "default"
    pod.spec.node_name = node
    kv = kv_pb2.KeyValue(key=f"/registry/pods/default/{name}".encode(), value=pod.SerializeToString(),
                         mod_revision=rev, create_revision=created)
    return kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv)


def _delete(name: str, rev: int) -> kv_pb2.Event:
    return kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=f"/registry/pods/default/{name}".encode(),
                                                                     mod_revision=rev))


class Counting:
    """A field-selector matcher that counts how often it is asked."""

    def __init__(self, selector: str) -> None:
        self.selector = selectors.parse_field_selector(selector)
        self.calls = 0

    def __call__(self, obj: object) -> bool:
        self.calls += 1
        return self.selector.matches(obj)  # type: ignore[arg-type]


def _drain(w: object) -> list[tuple[str, str]]:
    out = []
    queue = w.queue  # type: ignore[attr-defined]
    while not queue.empty():
        event = queue.get_nowait()
        assert isinstance(event, CacheEvent)
        out.append((event.type, event.obj.spec.node_name))  # type: ignore[attr-defined]
    return out


def test_node_watchers_are_asked_only_about_their_nodes_pods() -> None:
    cache = ResourceCache(scheme.by_resource("pods"), store=None)  # type: ignore[arg-type]
    on_a, on_b = Counting("spec.nodeName=a"), Counting("spec.nodeName=b")
    w_a = cache.watch("", on_a, None, trigger="a")
    w_b = cache.watch("", on_b, None, trigger="b")
    w_all = cache.watch("", lambda obj: True, None)

    cache._apply(_put("p1", "", 10, 10))          # created, unbound
    cache._apply(_put("p1", "a", 11, 10))         # bound to a
    cache._apply(_put("p2", "a", 12, 12))
    assert on_b.calls == 0  # never asked about pods that were never on b
    cache._apply(_put("p1", "b", 13, 10))         # moved (a test of before/after, not a real move)
    cache._apply(_delete("p1", 14))
    assert _drain(w_a) == [(ADDED, "a"), (ADDED, "a"), (DELETED, "a")]
    assert _drain(w_b) == [(ADDED, "b"), (DELETED, "b")]
    assert [t for t, _ in _drain(w_all)] == [ADDED, MODIFIED, ADDED, MODIFIED, DELETED]

    cache.unwatch(w_a)
    cache._apply(_put("p3", "a", 15, 15))
    assert _drain(w_a) == [] and cache._triggered.keys() == {"b"}


def test_a_trigger_is_ignored_for_kinds_without_an_index() -> None:
    cache = ResourceCache(scheme.by_resource("services"), store=None)  # type: ignore[arg-type]
    w = cache.watch("", lambda obj: True, None, trigger="x")
    assert w.trigger is None and w in cache._untriggered
