"""The pure cores of `skiff apply` (three-way patch, list merging) and `skiff label`."""
from __future__ import annotations


import pytest

from controlplane.client.mergepatch import merge_patch
from deploy.cli.errors import CommandError
from deploy.cli.kubectl.apply_cmd import LAST_APPLIED, last_applied, list_key, three_way_patch, with_last_applied
from deploy.cli.kubectl.common import resolve_targets
from deploy.cli.kubectl.label_cmd import is_change, label_patch, parse_changes


def test_last_applied_round_trips_without_itself() -> None:
    data = with_last_applied({"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}})
    text = data["metadata"]["annotations"][LAST_APPLIED]
    assert text.endswith("\n") and LAST_APPLIED not in text
    assert last_applied(data) == {"kind": "ConfigMap", "metadata": {"annotations": {}, "name": "x"}, "data": {"a": "1"}}
    assert last_applied({"metadata": {"annotations": {LAST_APPLIED: "not json"}}}) == {}


def test_patch_changes_what_the_manifest_sets_and_drops_what_it_stopped_setting() -> None:
    original = {"metadata": {"labels": {"app": "web", "old": "x"}}, "spec": {"replicas": 3, "paused": True}}
    modified = {"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 2}}
    current = {"metadata": {"labels": {"app": "web", "old": "x", "team": "a"},
                            "annotations": {"revision": "4"}},
               "spec": {"replicas": 3, "paused": True, "strategy": {"type": "RollingUpdate"}}}
    patch = three_way_patch(original, modified, current)
    assert patch == {"metadata": {"labels": {"old": None}}, "spec": {"replicas": 2, "paused": None}}
    # What nobody applied (team label, controller annotation, defaulted strategy) stays.
    assert merge_patch(current, patch) == {
        "metadata": {"labels": {"app": "web", "team": "a"}, "annotations": {"revision": "4"}},
        "spec": {"replicas": 2, "strategy": {"type": "RollingUpdate"}}}
    assert three_way_patch(modified, modified, merge_patch(current, patch)) == {}


def test_keyed_lists_merge_item_by_item_keeping_server_values() -> None:
    current = {"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}],
                        "containers": [{"name": "a", "image": "x:1", "imagePullPolicy": "IfNotPresent"},
                                       {"name": "sidecar", "image": "s"}]}}
    same = {"spec": {"ports": [{"port": 80, "targetPort": 8080}], "containers": [{"name": "a", "image": "x:1"}]}}
    assert three_way_patch(same, same, current) == {}  # defaults and others' items are not a change
    changed = {"spec": {"ports": [{"port": 80, "targetPort": 8081}], "containers": [{"name": "a", "image": "x:2"}]}}
    patch = three_way_patch(same, changed, current)
    assert patch["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 8081, "nodePort": 30080}]
    assert patch["spec"]["containers"] == [{"name": "a", "image": "x:2", "imagePullPolicy": "IfNotPresent"},
                                           {"name": "sidecar", "image": "s"}]
    # A container the last apply had and the manifest dropped goes; one it never had stays.
    before = {"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y"}]}}
    now = {"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y"},
                                   {"name": "injected", "image": "z"}]}}
    after = three_way_patch(before, same, now)
    assert [c["name"] for c in after["spec"]["containers"]] == ["a", "injected"]


def test_lists_without_a_merge_key_are_replaced() -> None:
    assert list_key([{"key": "a"}], [{"key": "b"}]) is None
    assert list_key([{"name": "a"}, {"name": "a"}], []) is None  # not unique
    assert list_key([{"containerPort": 80}], [{"containerPort": 80, "protocol": "TCP"}]) == "containerPort"
    current = {"tolerations": [{"key": "a", "operator": "Equal"}]}
    assert three_way_patch({}, {"tolerations": [{"key": "b"}]}, current) == {"tolerations": [{"key": "b"}]}
    assert three_way_patch({}, {"args": ["x"]}, {"args": ["x"]}) == {}


def test_label_changes() -> None:
    assert [is_change(w) for w in ("pods", "web", "a=b", "a=", "a-", "-")] == [False, False, True, True, True, False]
    assert parse_changes(["app=web", "tier=", "old-"]) == ({"app": "web", "tier": ""}, ["old"])
    with pytest.raises(CommandError, match="invalid label key"):
        parse_changes(["bad key=1"])
    with pytest.raises(CommandError, match="both modify and remove"):
        parse_changes(["a=1", "a-"])
    current = {"app": "web", "team": "a"}
    assert label_patch(current, {"app": "web", "new": "1"}, ["team", "gone"], False) == (
        {"new": "1", "team": None}, ['label "gone" not found.'])
    with pytest.raises(CommandError, match=r"^'app' already has a value \(web\), and --overwrite is false$"):
        label_patch(current, {"app": "db"}, [], False)
    assert label_patch(current, {"app": "db"}, [], True) == ({"app": "db"}, [])


def test_resource_arguments() -> None:
    [t] = resolve_targets(["deploy", "a", "b"])
    assert (t.kind.kind, t.names) == ("Deployment", ("a", "b"))
    assert [(t.kind.kind, t.names) for t in resolve_targets(["po/x", "svc/y"])] == [("Pod", ("x",)), ("Service", ("y",))]
    assert [t.kind.resource for t in resolve_targets(["svc,deploy"])] == ["services", "deployments"]
    for bad in (["po/x", "y"], ["svc,deploy", "x"], [], ["widgets"]):
        with pytest.raises(CommandError):
            resolve_targets(bad)
