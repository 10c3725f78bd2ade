"""Manifests: multi-document YAML, List expansion, and one-line errors that point at a line."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from controlplane.client import manifests
from controlplane.client.manifests import ManifestError, load_manifests, load_path
from protos.skiff.api.v1 import apps_pb2, core_pb2

WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    released: 2026-01-01
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
---
# only a comment
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"""


def test_documents_and_lines() -> None:
    loaded = load_manifests(WEB, "web.yaml")
    assert [type(m.object) for m in loaded] == [apps_pb2.Deployment, core_pb2.Service]
    assert [(m.source, m.index, m.line) for m in loaded] == [("web.yaml", 1, 1), ("web.yaml", 3, 21)]
    deployment = loaded[0].object
    assert isinstance(deployment, apps_pb2.Deployment)
    # An unquoted date in a string field stays the text the user wrote, as in Kubernetes.
    assert deployment.metadata.annotations["released"] == "2026-01-01"
    assert loaded[1].describe() == 'web.yaml: document 3 (Service "web")'


def test_empty_text_and_empty_documents() -> None:
    assert load_manifests("", "x.yaml") == []
    assert load_manifests("---\n---\n# nothing\n", "x.yaml") == []


def test_timestamp_fields_still_decode() -> None:
    text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  creationTimestamp: 2026-11-28T18:00:00Z\n"
    pod = load_manifests(text, "p.yaml")[0].object
    assert isinstance(pod, core_pb2.Pod)
    assert pod.metadata.creation_timestamp == "2026-11-28T18:00:00Z"


def test_list_is_expanded() -> None:
    text = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: a}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: b}
"""
    loaded = load_manifests(text, "list.yaml")
    assert [m.object.metadata.name for m in loaded] == ["a", "b"]  # type: ignore[attr-defined]
    assert [(m.index, m.line) for m in loaded] == [(1, 4), (1, 7)]
    assert load_manifests("apiVersion: v1\nkind: List\nitems: []\n", "l.yaml") == []


def test_list_item_errors_point_at_the_item() -> None:
    text = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: a}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: b}
  dta: {}
"""
    with pytest.raises(ManifestError) as err:
        load_manifests(text, "list.yaml")
    assert str(err.value) == ('list.yaml: document 1, item 2 (ConfigMap "b"): line 10: '
                              'dta: unknown field "dta"')
    with pytest.raises(ManifestError, match=r"line 3: items: expected a list of objects"):
        load_manifests("apiVersion: v1\nkind: List\nitems: {a: 1}\n", "l.yaml")


def test_field_errors_name_the_line_of_the_key() -> None:
    text = WEB.replace("  template:\n", "  template:\n    sepc: {}\n", 1)
    with pytest.raises(ManifestError) as err:
        load_manifests(text, "web.yaml")
    assert str(err.value) == ('web.yaml: document 1 (Deployment "web"): line 12: '
                              'spec.template.sepc: unknown field "sepc"')
    assert err.value.source == "web.yaml" and err.value.document == 1
    assert [e.path for e in err.value.errors] == ["spec.template.sepc"]


def test_every_error_of_the_document_is_listed() -> None:
    text = """\
apiVersion: v1
kind: Pod
metadata:
  name: p
  labels:
    app.kubernetes.io/name: 1
spec:
  containers:
  - name: a
    ports:
    - containerPort: 80
    - containerPort: eighty
"""
    with pytest.raises(ManifestError) as err:
        load_manifests(text, "pod.yaml")
    assert str(err.value) == (
        'pod.yaml: document 1 (Pod "p"): '
        "line 6: metadata.labels[app.kubernetes.io/name]: expected a string, got integer 1; "
        'line 12: spec.containers[0].ports[1].containerPort: expected an integer, got string "eighty"')


def test_many_errors_are_capped() -> None:
    fields = "".join(f"  bad{i}: 1\n" for i in range(8))
    with pytest.raises(ManifestError) as err:
        load_manifests(f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n{fields}", "p.yaml")
    message = str(err.value)
    assert message.count("unknown field") == manifests.MAX_LISTED
    assert message.endswith("; and 3 more") and "\n" not in message
    assert len(err.value.errors) == 8


def test_yaml_syntax_error_names_document_line_and_column() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: x: y\n"
    with pytest.raises(ManifestError) as err:
        load_manifests(text, "web.yaml")
    assert str(err.value) == "web.yaml: document 2: line 6, column 8: mapping values are not allowed here"
    assert err.value.document == 2


def test_duplicate_keys_are_errors() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n"
    with pytest.raises(ManifestError) as err:
        load_manifests(text, "cm.yaml")
    assert str(err.value) == 'cm.yaml: document 1: line 5, column 3: duplicate key "name"'


def test_merge_keys_may_be_overridden() -> None:
    text = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
            "data:\n  <<: {x: '1', y: '2'}\n  y: '3'\n")
    cm = load_manifests(text, "cm.yaml")[0].object
    assert dict(cm.data) == {"x": "1", "y": "3"}  # type: ignore[attr-defined]


@pytest.mark.parametrize("text,message", [
    ("- a\n- b\n", "x.yaml: document 1: line 1: expected an object with apiVersion and kind, got a list"),
    ("kind: Pod\n", "x.yaml: document 1 (Pod): line 1: apiVersion: required field is missing"),
    ("apiVersion: v1\nkind: Deployment\nmetadata: {name: d}\n",
     'x.yaml: document 1 (Deployment "d"): line 2: kind: no kind "Deployment" is registered for '
     'version "v1"; Deployment is served as apiVersion apps/v1'),
])
def test_wrong_objects(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as err:
        load_manifests(text, "x.yaml")
    assert str(err.value) == message


def test_json_with_tabs_keeps_lines() -> None:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "dta": {}}
    text = json.dumps(doc, indent="\t")
    with pytest.raises(ManifestError) as err:
        load_manifests(text, "cm.json")
    assert str(err.value) == 'cm.json: document 1 (ConfigMap "cm"): line 7: dta: unknown field "dta"'
    doc.pop("dta")
    assert load_manifests(json.dumps(doc, indent="\t"), "cm.json")[0].line == 1


def test_line_of() -> None:
    node = manifests._Loader("a:\n  b:\n  - x: 1\n  - y: 2\n    z: 3\n").get_single_node()
    assert manifests.line_of(node, "a.b[1].z") == 5
    assert manifests.line_of(node, "a.b[1]") == 4
    assert manifests.line_of(node, "a.b[7].z") == 2  # the deepest node that exists
    assert manifests.line_of(node, "a.nope") == 1
    assert manifests.line_of(node, "") == 1


def test_load_path_file_directory_and_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\n"
    (tmp_path / "b.yaml").write_text(cm % "b")
    (tmp_path / "a.yml").write_text(cm % "a")
    (tmp_path / "c.json").write_text(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                                 "metadata": {"name": "c"}}))
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text(cm % "d")
    names = [m.object.metadata.name for m in load_path(str(tmp_path))]  # type: ignore[attr-defined]
    assert names == ["a", "b", "c"]
    one = load_path(str(tmp_path / "b.yaml"))
    assert one[0].source == str(tmp_path / "b.yaml")
    monkeypatch.setattr("sys.stdin", io.StringIO(cm % "s"))
    from_stdin = load_path("-")
    assert from_stdin[0].source == "<stdin>" and from_stdin[0].object.metadata.name == "s"  # type: ignore[attr-defined]
    assert load_path(str(tmp_path / "sub" / "..")) != []
    (tmp_path / "empty").mkdir()
    assert load_path(str(tmp_path / "empty")) == []


def test_load_path_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"missing\.yaml: no such file or directory$"):
        load_path(str(tmp_path / "missing.yaml"))
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ManifestError, match=r"bin\.yaml: not UTF-8 text"):
        load_path(str(tmp_path / "bin.yaml"))
