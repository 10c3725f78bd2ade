"""The kubectl-like commands end to end: the real `skiff` entry point (deploy.cli.main) against a
real store and API server on loopback (tests/apiutil.ApiEnv).

Most commands run in this process through deploy.cli.main.main(argv) with stdout/stderr
captured; the ones whose process behaviour matters (Ctrl-C of `get -w`, an unreachable server)
run as child processes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from controlplane.client import api, codec
from controlplane.client.timeutil import format_time
from deploy.cli import main as cli_main
from kvstore.localcluster import free_ports
from tests.apiutil import ApiEnv, obj
from tests.manifests import NGINX_DEPLOYMENT

REPO = Path(__file__).resolve().parents[2]
HARNESS = "import sys\nfrom deploy.cli import main\nsys.exit(main.main())\n"

# Kubernetes' docs: "Creating a Deployment" and "Defining a Service".
NGINX = NGINX_DEPLOYMENT + """\
---
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app: nginx
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiEnv]:
    e = ApiEnv(tmp_path_factory.mktemp("kubectl"), "skiff")
    try:
        e.start()
        yield e
    finally:
        e.stop()


@pytest.fixture(autouse=True)
def config(env: ApiEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A client config naming the test server, as $SKIFF_CONFIG; the kubectl commands registered."""
    path = tmp_path / "config"
    path.write_text(f"server: {env.address}\n")
    monkeypatch.setenv("SKIFF_CONFIG", str(path))
    monkeypatch.chdir(tmp_path)
    return path


def skiff(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = cli_main.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def write(name: str, text: str) -> str:
    Path(name).write_text(text)
    return name


def test_apply_creates_then_unchanged_then_configured(env: ApiEnv, capsys: pytest.CaptureFixture[str]) -> None:
    write("nginx.yaml", NGINX)
    assert skiff(capsys, "apply", "-f", "nginx.yaml") == (
        0, "deployment.apps/nginx-deployment created\nservice/my-service created\n", "")
    assert skiff(capsys, "apply", "-f", "nginx.yaml") == (
        0, "deployment.apps/nginx-deployment unchanged\nservice/my-service unchanged\n", "")
    deploy = env.run(lambda c: c.get("deploy", "nginx-deployment", "default"))
    assert deploy.metadata.generation == 1  # an unchanged apply writes nothing

    # A controller's annotation survives an apply that changes something else.
    env.run(lambda c: c.patch("deploy", "nginx-deployment",
                              {"metadata": {"annotations": {"deployment.kubernetes.io/revision": "1"}}}, "default"))
    write("nginx.yaml", NGINX.replace("replicas: 3", "replicas: 2"))
    assert skiff(capsys, "apply", "-f", "nginx.yaml")[:2] == (
        0, "deployment.apps/nginx-deployment configured\nservice/my-service unchanged\n")
    deploy = env.run(lambda c: c.get("deploy", "nginx-deployment", "default"))
    assert deploy.spec.replicas == 2 and deploy.metadata.generation == 2
    assert deploy.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    # A label the manifest drops is removed (it was applied before).
    write("nginx.yaml", NGINX.replace("replicas: 3", "replicas: 2").replace("  labels:\n    app: nginx\n", "", 1))
    assert skiff(capsys, "apply", "-f", "nginx.yaml")[1].startswith("deployment.apps/nginx-deployment configured")
    assert "app" not in env.run(lambda c: c.get("deploy", "nginx-deployment", "default")).metadata.labels
    write("nginx.yaml", NGINX)
    assert skiff(capsys, "apply", "-f", "nginx.yaml")[0] == 0


def test_apply_keeps_an_allocated_node_port(env: ApiEnv, capsys: pytest.CaptureFixture[str]) -> None:
    svc = ("apiVersion: v1\nkind: Service\nmetadata: {name: np}\n"
           "spec: {type: NodePort, selector: {app: x}, ports: [{port: 80, targetPort: 8080}]}\n")
    write("np.yaml", svc)
    assert skiff(capsys, "apply", "-f", "np.yaml")[1] == "service/np created\n"
    before = env.run(lambda c: c.get("svc", "np", "default"))
    write("np.yaml", svc.replace("8080", "8081"))
    assert skiff(capsys, "apply", "-f", "np.yaml")[1] == "service/np configured\n"
    after = env.run(lambda c: c.get("svc", "np", "default"))
    assert after.spec.ports[0].target_port.int_val == 8081
    assert after.spec.ports[0].node_port == before.spec.ports[0].node_port != 0
    assert after.spec.cluster_ip == before.spec.cluster_ip
    assert skiff(capsys, "delete", "svc", "np")[1] == 'service "np" deleted\n'


def test_get_all_and_output_formats(env: ApiEnv, capsys: pytest.CaptureFixture[str]) -> None:
    write("nginx.yaml", NGINX)
    skiff(capsys, "apply", "-f", "nginx.yaml")
    status, out, _ = skiff(capsys, "get", "all")
    assert status == 0
    sections = out.split("\n\n")
    assert sections[0].startswith("NAME ") and "TYPE" in sections[0] and "service/my-service " in sections[0]
    assert sections[1].split()[:5] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert "deployment.apps/nginx-deployment   0/3 " in sections[1]
    status, out, _ = skiff(capsys, "get", "deploy", "-o", "wide")
    assert out.splitlines()[1].split()[:2] == ["nginx-deployment", "0/3"] and "nginx:1.14.2" in out
    assert skiff(capsys, "get", "svc,deploy", "-o", "name")[1] == (
        "service/my-service\ndeployment.apps/nginx-deployment\n")

    status, out, _ = skiff(capsys, "get", "deploy", "nginx-deployment", "-o", "yaml")
    stored = env.run(lambda c: c.get("deploy", "nginx-deployment", "default"))
    assert codec.decode_object(yaml.safe_load(out)) == stored
    status, out, _ = skiff(capsys, "get", "deploy", "-o", "json")
    listed = json.loads(out)
    assert listed["kind"] == "List" and [i["metadata"]["name"] for i in listed["items"]] == ["nginx-deployment"]
    assert codec.decode_object(listed["items"][0]) == stored


def test_get_namespaces_errors_and_empty(env: ApiEnv, capsys: pytest.CaptureFixture[str]) -> None:
    assert skiff(capsys, "create", "namespace", "team-a") == (0, "namespace/team-a created\n", "")
    assert skiff(capsys, "create", "namespace", "team-a") == (1, "", 'skiff: namespaces "team-a" already exists\n')
    assert skiff(capsys, "get", "pods", "-n", "team-a") == (0, "", "No resources found in team-a namespace.\n")
    write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: team-a}\ndata: {a: '1'}\n")
    assert skiff(capsys, "create", "-f", "cm.yaml")[1] == "configmap/cfg created\n"
    status, out, _ = skiff(capsys, "get", "cm", "-A")
    assert ["team-a", "cfg", "1"] in [line.split()[:3] for line in out.splitlines()]
    assert out.splitlines()[0].split() == ["NAMESPACE", "NAME", "DATA", "AGE"]
    status, out, err = skiff(capsys, "get", "cm", "cfg", "nope", "-n", "team-a")
    assert status == 1 and out.splitlines()[1].startswith("cfg ")
    assert err == 'skiff: configmaps "nope" not found\n'
    assert skiff(capsys, "get", "widgets") == (1, "", 'skiff: the server doesn\'t have a resource type "widgets" '
                                                      "(known: namespaces, nodes, pods, services, endpoints, "
                                                      "replicationcontrollers, configmaps, secrets, events, "
                                                      "replicasets, deployments, daemonsets, statefulsets, leases, "
                                                      "runtimeclasses)\n")
    status, _, err = skiff(capsys, "apply", "-f", "cm.yaml", "-n", "default")
    assert status == 1 and err.count("\n") == 1 and 'namespace from the provided object "team-a"' in err


def test_describe_with_events(env: ApiEnv, capsys: pytest.CaptureFixture[str]) -> None:
    write("pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: described, labels: {app: d, tier: x}}\n"
                      "spec: {containers: [{name: a, image: 'busybox:1.36', ports: [{containerPort: 8080}]}]}\n")
    assert skiff(capsys, "apply", "-f", "pod.yaml")[1] == "pod/described created\n"
    status, out, _ = skiff(capsys, "describe", "pod", "described")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["Name:", "described"] and "Status:           Pending" in lines
    assert "Labels:           app=d" in lines and "                  tier=x" in lines
    assert ["Port:", "8080/TCP"] in [line.split() for line in lines]
    assert lines[-1] == "Events:           <none>"

    pod = env.run(lambda c: c.get("pods", "described", "default"))
    seen = format_time(time.time() - 100)
    event = obj(f"""{{apiVersion: v1, kind: Event, metadata: {{name: described.1, namespace: default}},
        involvedObject: {{kind: Pod, name: described, namespace: default, uid: {pod.metadata.uid}}},
        reason: Scheduled, message: "Successfully assigned default/described to node-1", type: Normal,
        source: {{component: default-scheduler}}, firstTimestamp: "{seen}", lastTimestamp: "{seen}"}}""")
    other = obj("""{apiVersion: v1, kind: Event, metadata: {name: described.2, namespace: default},
        involvedObject: {kind: Pod, name: described, namespace: default, uid: not-this-pod}, reason: Old}""")
    env.run(lambda c: c.create(event, "default"))
    env.run(lambda c: c.create(other, "default"))
    out = skiff(capsys, "describe", "pods/described")[1]
    tail = out.splitlines()[-4:]
    assert tail[0] == "Events:"
    assert tail[1].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert tail[3].split()[:4] == ["Normal", "Scheduled", tail[3].split()[2], "default-scheduler"]
    assert tail[3].endswith("Successfully assigned default/described to node-1")

    write("nginx.yaml", NGINX)
    skiff(capsys, "apply", "-f", "nginx.yaml")
    out = skiff(capsys, "describe", "deploy", "nginx-deployment")[1]
    assert "Replicas:               3 desired | 0 updated | 0 total | 0 available | 0 unavailable" in out
    assert "RollingUpdateStrategy:  25% max unavailable, 25% max surge" in out
    assert "kubectl.kubernetes.io/last-applied-configuration" not in out
    assert skiff(capsys, "describe", "svc", "nope") == (1, "", 'skiff: services "nope" not found\n')


def test_label(env: ApiEnv, capsys: pytest.CaptureFixture[str]) -> None:
    write("nginx.yaml", NGINX)
    skiff(capsys, "apply", "-f", "nginx.yaml")
    assert skiff(capsys, "label", "deploy", "nginx-deployment", "team=web") == (
        0, "deployment.apps/nginx-deployment labeled\n", "")
    assert skiff(capsys, "label", "deploy", "nginx-deployment", "team=db") == (
        1, "", "skiff: 'team' already has a value (web), and --overwrite is false\n")
    assert skiff(capsys, "label", "deploy/nginx-deployment", "team=db", "--overwrite")[1].endswith(" labeled\n")
    assert env.run(lambda c: c.get("deploy", "nginx-deployment", "default")).metadata.labels["team"] == "db"
    assert skiff(capsys, "label", "deploy", "nginx-deployment", "team-", "gone-") == (
        0, "deployment.apps/nginx-deployment labeled\n", 'skiff: warning: label "gone" not found.\n')
    assert "team" not in env.run(lambda c: c.get("deploy", "nginx-deployment", "default")).metadata.labels
    assert skiff(capsys, "label", "deploy", "nginx-deployment", "Bad Key=1")[0] == 1
    status, out, _ = skiff(capsys, "get", "deploy", "--show-labels")
    assert out.splitlines()[0].split()[-1] == "LABELS" and out.splitlines()[1].split()[-1] == "app=nginx"


def test_delete_by_name_file_and_wait(env: ApiEnv, capsys: pytest.CaptureFixture[str]) -> None:
    write("nginx.yaml", NGINX)
    skiff(capsys, "apply", "-f", "nginx.yaml")
    assert skiff(capsys, "delete", "-f", "nginx.yaml") == (
        0, 'deployment.apps "nginx-deployment" deleted\nservice "my-service" deleted\n', "")
    assert skiff(capsys, "get", "deploy,svc", "nginx-deployment")[0] == 1
    assert skiff(capsys, "delete", "deploy", "nginx-deployment") == (
        1, "", 'skiff: deployments.apps "nginx-deployment" not found\n')
    assert skiff(capsys, "delete", "deploy", "nginx-deployment", "--ignore-not-found") == (0, "", "")

    # An object held by a finalizer: --wait returns once it is really gone.
    cm = obj("{apiVersion: v1, kind: ConfigMap, metadata: {name: held, finalizers: [example.com/hold]}}")
    env.run(lambda c: c.create(cm, "default"))
    assert skiff(capsys, "delete", "cm", "held", "--timeout", "1") == (
        1, 'configmap "held" deleted\n',
        "skiff: timed out after 1s waiting for configmaps/held to be deleted (finalizers: example.com/hold)\n")
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(cli_main.main(["delete", "cm", "held", "--timeout", "60"])))
    waiter.start()
    time.sleep(1.0)
    assert waiter.is_alive() and not result
    env.run(lambda c: c.patch("cm", "held", {"metadata": {"finalizers": None}}, "default"))
    waiter.join(30)
    assert result == [0]
    with pytest.raises(api.NotFoundError):
        env.run(lambda c: c.get("cm", "held", "default"))


GOOD = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\ndata: {a: '1'}\n"


@pytest.mark.parametrize("text, message", [
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    sepc: {}\n",
     'bad.yaml: document 2 (Deployment "web"): line 12: spec.template.sepc: unknown field "sepc"'),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: three\n",
     'bad.yaml: document 2 (Deployment "web"): line 11: spec.replicas: expected an integer, got string "three"'),
    ("kind: ConfigMap\napiVersion: v1\nmetadata: {name: x\n",
     "bad.yaml: document 2: line 9, column 1: expected ',' or '}', but got '<stream end>'"),
])
def test_manifest_errors_are_one_line_and_apply_nothing(env: ApiEnv, capsys: pytest.CaptureFixture[str],
                                                        text: str, message: str) -> None:
    write("bad.yaml", GOOD + "---\n" + text)
    status, out, err = skiff(capsys, "apply", "-f", "bad.yaml")
    assert (status, out, err) == (1, "", f"skiff: {message}\n")
    with pytest.raises(api.NotFoundError):
        env.run(lambda c: c.get("cm", "first", "default"))


def harness(*argv: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", HARNESS, *argv], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]


def test_unreachable_server_is_one_line(config: Path) -> None:
    port = free_ports(1)[0]
    proc = harness("get", "pods", "--server", f"127.0.0.1:{port}")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and out == ""
    assert err.startswith("skiff: cannot reach the API server: ") and err.count("\n") == 1
    proc = harness("get", "pods", env={**os.environ, "SKIFF_CONFIG": str(config.parent / "missing")})
    assert proc.communicate(timeout=60) == ("", f"skiff: client config {config.parent / 'missing'}: no such file\n")


def test_get_watch_prints_changes_until_interrupted(env: ApiEnv, config: Path) -> None:
    proc = harness("get", "configmaps", "-w", "-n", "watched", env={**os.environ, "SKIFF_CONFIG": str(config)})
    try:
        env.run(lambda c: c.create(obj("{apiVersion: v1, kind: Namespace, metadata: {name: watched}}")))
        assert proc.stderr is not None and proc.stdout is not None
        assert proc.stderr.readline() == "No resources found in watched namespace.\n"
        env.run(lambda c: c.create(obj("{apiVersion: v1, kind: ConfigMap, metadata: {name: w1}, data: {a: b}}"),
                                   "watched"))
        line = proc.stdout.readline()  # blocks until the watch prints; the test's timeout guards it
        assert line.split()[:2] == ["w1", "1"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 130
