"""RFC 7386 JSON merge patch: the RFC's Appendix A examples, and no mutation of inputs."""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from controlplane.client.mergepatch import create_merge_patch, merge_patch

# (target, patch, result) exactly as RFC 7386 Appendix A lists them.
RFC_EXAMPLES = [
    ('{"a":"b"}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
    ('{"a":"b"}', '{"a":null}', '{}'),
    ('{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
    ('{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}', '{"a":{"b":"d"}}'),
    ('{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'),
    ('["a","b"]', '["c","d"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]', '["c"]'),
    ('{"a":"foo"}', 'null', 'null'),
    ('{"a":"foo"}', '"bar"', '"bar"'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
    ('[1,2]', '{"a":"b","c":null}', '{"a":"b"}'),
    ('{}', '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'),
]


@pytest.mark.parametrize("target,patch,result", RFC_EXAMPLES)
def test_rfc7386_appendix_a(target: str, patch: str, result: str) -> None:
    assert merge_patch(json.loads(target), json.loads(patch)) == json.loads(result)


@pytest.mark.parametrize("target,patch,result", RFC_EXAMPLES)
def test_inputs_are_not_mutated(target: str, patch: str, result: str) -> None:
    t, p = json.loads(target), json.loads(patch)
    t0, p0 = copy.deepcopy(t), copy.deepcopy(p)
    merge_patch(t, p)
    assert (t, p) == (t0, p0)


def test_result_shares_nothing_with_inputs() -> None:
    target: dict[str, Any] = {"keep": {"deep": [1]}, "spec": {"x": 1}}
    patch: dict[str, Any] = {"new": {"list": [1, 2]}, "spec": {"y": 2}}
    out = merge_patch(target, patch)
    out["keep"]["deep"].append(2)
    out["new"]["list"].append(3)
    out["spec"]["z"] = 3
    assert target == {"keep": {"deep": [1]}, "spec": {"x": 1}}
    assert patch == {"new": {"list": [1, 2]}, "spec": {"y": 2}}


def test_kubectl_style_scale_patch() -> None:
    deployment = {"metadata": {"name": "web", "labels": {"app": "web", "old": "x"}},
                  "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c"}]}}}}
    out = merge_patch(deployment, {"spec": {"replicas": 3}, "metadata": {"labels": {"old": None}}})
    assert out == {"metadata": {"name": "web", "labels": {"app": "web"}},
                   "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c"}]}}}}


@pytest.mark.parametrize("original,modified", [
    ({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 5}, "e": [1]}),
    ({"a": [1, 2]}, {"a": [2]}),
    ({}, {"a": {"b": {}}}),
    ({"a": {"b": 1}}, {}),
])
def test_create_merge_patch_inverts_merge_patch(original: Any, modified: Any) -> None:
    patch = create_merge_patch(original, modified)
    assert merge_patch(original, patch) == modified


def test_create_merge_patch_is_minimal() -> None:
    assert create_merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"a": 1, "b": {"c": 1, "d": 3}}) == \
        {"b": {"d": 3}}
    assert create_merge_patch({"a": 1}, {"a": 1}) == {}
