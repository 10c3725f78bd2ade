"""Label and field selectors: grammar, canonical form, Kubernetes' matching semantics."""
from __future__ import annotations

import pytest

from controlplane.client.selectors import (
    FieldRequirement, LabelSelector, SelectorError, field_value, from_label_selector_proto,
    from_set, parse_field_selector, parse_label_selector,
)
from protos.skiff.api.v1 import core_pb2, meta_pb2

# text -> canonical str
PARSE = [
    ("", ""),
    ("   ", ""),
    ("a=b", "a=b"),
    ("a==b", "a=b"),
    ("a!=b", "a!=b"),
    (" a = b ", "a=b"),
    ("a=", "a="),
    ("a in (x,y)", "a in (x,y)"),
    ("a in (y, x)", "a in (x,y)"),
    ("a in(x)", "a in (x)"),
    ("a notin (x)", "a notin (x)"),
    ("a", "a"),
    ("!a", "!a"),
    ("! a", "!a"),
    ("tier!=db,app=web", "app=web,tier!=db"),
    ("app=web,tier!=db,env in (a,b),!canary", "app=web,!canary,env in (a,b),tier!=db"),
    ("example.com/app=web", "example.com/app=web"),
    ("app.kubernetes.io/name=x-y_z.1", "app.kubernetes.io/name=x-y_z.1"),
    ("a in (x,,y)", "a in (,x,y)"),
    ("a=in", "a=in"),
]


@pytest.mark.parametrize("text,canonical", PARSE)
def test_parse_canonical(text: str, canonical: str) -> None:
    selector = parse_label_selector(text)
    assert str(selector) == canonical
    assert parse_label_selector(str(selector)) == selector


@pytest.mark.parametrize("text,fragment", [
    ("a in (x", "missing ')'"),
    ("a in x", "expected '('"),
    ("a in ()", "can't be empty"),
    ("a b", "'b'"),
    ("a=b c", "'c'"),
    ("=b", "expected a label key at the start"),
    (",a", "expected a label key"),
    ("a=b,", "trailing"),
    ("a,,b", "expected a label key after ','"),
    ("!", "expected a label key after '!'"),
    ("a=b=c", "'='"),
    ("-a=b", "invalid label key '-a'"),
    ("a=-b", "invalid label value '-b'"),
    ("a=" + "x" * 64, "invalid label value"),
    ("Example.com/a=b", "prefix must be a DNS subdomain"),
    ("/a=b", "prefix"),
    ("a in (x,!)", "unexpected '!'"),
    ("a > 1", "found '>'"),
])
def test_parse_errors_name_the_part(text: str, fragment: str) -> None:
    with pytest.raises(SelectorError) as err:
        parse_label_selector(text)
    assert fragment in str(err.value)
    assert str(err.value).startswith("invalid label selector")


LABELS = {"app": "web", "tier": "front", "env": "prod"}
MATCH = [
    ("", True),
    ("app=web", True),
    ("app=db", False),
    ("app!=db", True),
    ("app!=web", False),
    ("missing!=x", True),  # != matches when the key is absent
    ("missing=x", False),
    ("env in (prod,dev)", True),
    ("env in (dev)", False),
    ("missing in (x)", False),
    ("env notin (dev)", True),
    ("env notin (prod)", False),
    ("missing notin (x)", True),  # notin matches when the key is absent
    ("app", True),
    ("missing", False),
    ("!missing", True),
    ("!app", False),
    ("app=web,tier=front", True),
    ("app=web,tier=back", False),
    ("app=", False),
]


@pytest.mark.parametrize("text,expected", MATCH)
def test_matches(text: str, expected: bool) -> None:
    assert parse_label_selector(text).matches(LABELS) is expected


def test_empty_label_value_matches_empty() -> None:
    assert parse_label_selector("a=").matches({"a": ""})
    assert parse_label_selector("a in (x,)").matches({"a": ""})


def test_everything_and_nothing() -> None:
    everything, nothing = LabelSelector.everything(), LabelSelector.nothing()
    assert everything.empty and everything.matches({}) and everything.matches(LABELS)
    assert not nothing.empty and nothing.matches_nothing
    assert not nothing.matches({}) and not nothing.matches(LABELS)
    assert everything != nothing
    assert str(nothing) == "<nothing>"
    with pytest.raises(SelectorError):
        parse_label_selector(str(nothing))  # never round-trips into "everything"


def test_from_set() -> None:
    selector = from_set({"b": "2", "a": "1"})
    assert str(selector) == "a=1,b=2"
    assert selector.matches({"a": "1", "b": "2", "c": "3"})
    assert not selector.matches({"a": "1"})
    assert from_set({}).empty and from_set({}).matches({"x": "y"})
    with pytest.raises(SelectorError):
        from_set({"a": "not valid!"})


def test_from_proto() -> None:
    proto = meta_pb2.LabelSelector(
        match_labels={"app": "web"},
        match_expressions=[
            meta_pb2.LabelSelectorRequirement(key="env", operator="In", values=["prod", "dev"]),
            meta_pb2.LabelSelectorRequirement(key="tier", operator="NotIn", values=["db"]),
            meta_pb2.LabelSelectorRequirement(key="team", operator="Exists"),
            meta_pb2.LabelSelectorRequirement(key="canary", operator="DoesNotExist"),
        ])
    selector = from_label_selector_proto(proto)
    assert str(selector) == "app=web,!canary,env in (dev,prod),team,tier notin (db)"
    assert selector.matches({"app": "web", "env": "dev", "team": "x"})
    assert not selector.matches({"app": "web", "env": "dev", "team": "x", "canary": "1"})
    assert not selector.matches({"app": "web", "env": "dev"})


def test_from_proto_bad_match_labels() -> None:
    with pytest.raises(SelectorError, match=r"^matchLabels: invalid label value 'a b'"):
        from_label_selector_proto(meta_pb2.LabelSelector(match_labels={"app": "a b"}))


def test_from_proto_nil_and_empty() -> None:
    assert from_label_selector_proto(None).matches_nothing
    assert not from_label_selector_proto(None).matches({})
    empty = from_label_selector_proto(meta_pb2.LabelSelector())
    assert empty.empty and empty.matches({"a": "b"})


@pytest.mark.parametrize("expr,fragment", [
    (meta_pb2.LabelSelectorRequirement(key="a", operator="Equals", values=["x"]),
     "matchExpressions[0].operator: 'Equals' is not a valid label selector operator"),
    (meta_pb2.LabelSelectorRequirement(key="a", operator="In"), "can't be empty"),
    (meta_pb2.LabelSelectorRequirement(key="a", operator="Exists", values=["x"]), "take no values"),
    (meta_pb2.LabelSelectorRequirement(key="a b", operator="Exists"), "invalid label key"),
])
def test_from_proto_errors(expr: meta_pb2.LabelSelectorRequirement, fragment: str) -> None:
    with pytest.raises(SelectorError) as err:
        from_label_selector_proto(meta_pb2.LabelSelector(match_expressions=[expr]))
    assert fragment in str(err.value)


def test_selectors_are_hashable_values() -> None:
    assert parse_label_selector("b=1,a=2") == parse_label_selector("a=2, b==1")
    assert len({parse_label_selector("b=1,a=2"), parse_label_selector("a=2,b=1")}) == 1


# --- field selectors -----------------------------------------------------------------------

def _pod(name: str = "web-1", namespace: str = "default", node: str = "n1",
         phase: str = "Running") -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace = name, namespace
    pod.spec.node_name = node
    pod.status.phase = phase
    return pod


def test_field_selector_parse() -> None:
    sel = parse_field_selector("metadata.name=web-1,spec.nodeName==n1,status.phase!=Failed")
    assert sel.requirements == (
        FieldRequirement("metadata.name", "=", "web-1"),
        FieldRequirement("spec.nodeName", "=", "n1"),
        FieldRequirement("status.phase", "!=", "Failed"),
    )
    key, op, value = sel.requirements[0]
    assert (key, op, value) == ("metadata.name", "=", "web-1")
    assert str(sel) == "metadata.name=web-1,spec.nodeName=n1,status.phase!=Failed"
    assert sel.exact("spec.nodeName") == "n1" and sel.exact("status.phase") is None
    assert parse_field_selector("").empty and parse_field_selector("a=b,,").requirements == (
        FieldRequirement("a", "=", "b"),)


def test_field_selector_empty_value_and_escapes() -> None:
    assert parse_field_selector("spec.nodeName=").requirements[0].value == ""
    sel = parse_field_selector(r"metadata.name=a\,b\=c\\d,x=y")
    assert sel.requirements[0].value == "a,b=c\\d"
    assert len(sel.requirements) == 2
    assert parse_field_selector(str(sel)) == sel
    assert parse_field_selector("a=b!=c").requirements[0] == FieldRequirement("a", "=", "b!=c")


@pytest.mark.parametrize("text", ["metadata.name", "=x", r"a=b\c", "  !=x"])
def test_field_selector_errors(text: str) -> None:
    with pytest.raises(SelectorError) as err:
        parse_field_selector(text)
    assert "invalid field selector" in str(err.value)


@pytest.mark.parametrize("text,expected", [
    ("", True),
    ("metadata.name=web-1", True),
    ("metadata.name=web-2", False),
    ("metadata.namespace=default,spec.nodeName=n1", True),
    ("spec.nodeName!=n1", False),
    ("spec.nodeName=", False),
    ("status.phase!=Failed", True),
    ("metadata.generation=0", True),  # unset scalars read as their zero value
    ("spec.hostNetwork=false", True),
    ("spec.node_name=n1", True),  # the proto name works too
])
def test_field_selector_matches(text: str, expected: bool) -> None:
    assert parse_field_selector(text).matches(_pod()) is expected


def test_field_selector_unbound_node() -> None:
    assert parse_field_selector("spec.nodeName=").matches(_pod(node=""))


@pytest.mark.parametrize("key", ["spec.nope", "metadata", "spec.containers", "metadata.labels",
                                 "metadata.name.x", "status"])
def test_unsupported_field_label(key: str) -> None:
    sel = parse_field_selector(f"{key}=x")
    with pytest.raises(SelectorError, match=f"field label not supported: {key}$"):
        sel.matches(_pod())
    with pytest.raises(SelectorError, match="field label not supported"):
        sel.validate(core_pb2.Pod.DESCRIPTOR)


def test_field_value_of_event() -> None:
    event = core_pb2.Event()
    event.involved_object.name = "web-1"
    event.involved_object.kind = "Pod"
    assert field_value(event, "involvedObject.name") == "web-1"
    assert parse_field_selector("involvedObject.kind=Pod,involvedObject.name=web-1").matches(event)
