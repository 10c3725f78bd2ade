"""kubectl's table columns and AGE, from deploy/cli/kubectl/printers.py (pure: objects and now in)."""
from __future__ import annotations

from typing import Any

import pytest
import yaml

from controlplane.client import codec, scheme
from controlplane.client.timeutil import format_time
from deploy.cli.kubectl import printers
from deploy.cli.kubectl.printers import TableOptions, format_age, render_table, table_rows, tabwrite

NOW = 1_800_000_000.0


def obj(text: str) -> Any:
    return codec.decode_object(yaml.safe_load(text))


def created(seconds_ago: float) -> str:
    return format_time(NOW - seconds_ago)


@pytest.mark.parametrize("seconds, text", [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (5, "5s"), (59, "59s"), (119, "119s"),
    (120, "2m"), (182, "3m2s"), (599, "9m59s"), (600, "10m"), (3 * 3600 - 1, "179m"),
    (3 * 3600, "3h"), (4 * 3600, "4h"), (4 * 3600 + 30 * 60, "4h30m"), (8 * 3600, "8h"),
    (47 * 3600 + 59 * 60, "47h"), (48 * 3600, "2d"), (2 * 86400 + 5 * 3600, "2d5h"),
    (8 * 86400, "8d"), (400 * 86400, "400d"), (730 * 86400, "2y"), (740 * 86400, "2y10d"),
    (9 * 365 * 86400, "9y"),
])
def test_format_age_is_kubectls_human_duration(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def test_age_of_unset_or_bad_timestamp() -> None:
    assert printers.age("", NOW) == "<unknown>"
    assert printers.age("yesterday", NOW) == "<unknown>"
    assert printers.age(created(65), NOW) == "65s"


def pod(name: str = "web-1", age: float = 5) -> Any:
    p = obj(f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, creationTimestamp: "{created(age)}", labels: {{app: web, tier: fe}}}}
spec:
  nodeName: node-1
  containers: [{{name: a, image: nginx}}, {{name: b, image: busybox}}]
status:
  phase: Running
  podIP: 10.244.1.5
  conditions: [{{type: Ready, status: "True"}}]
  containerStatuses:
  - {{name: a, ready: true, restartCount: 2, state: {{running: {{startedAt: "{created(30)}"}}}},
     lastState: {{terminated: {{exitCode: 1, finishedAt: "{created(182)}"}}}}}}
  - {{name: b, ready: false, restartCount: 0, state: {{waiting: {{reason: CrashLoopBackOff}}}}}}
""")
    return p


def test_pod_columns_status_and_restarts() -> None:
    kind = scheme.by_resource("pods")
    rows = table_rows(kind, [pod()], NOW, TableOptions())
    assert rows[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert rows[1] == ["web-1", "1/2", "CrashLoopBackOff", "2 (3m2s ago)", "5s"]
    wide = table_rows(kind, [pod()], NOW, TableOptions(wide=True))
    assert wide[0][5:] == ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    assert wide[1][5:] == ["10.244.1.5", "node-1", "<none>", "<none>"]


def test_pod_pending_and_terminating() -> None:
    p = obj("""
apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {containers: [{name: a, image: x}]}
status: {phase: Pending}
""")
    kind = scheme.by_resource("po")
    assert table_rows(kind, [p], NOW, TableOptions(headers=False))[0][1:4] == ["0/1", "Pending", "0"]
    p.metadata.deletion_timestamp = created(-30)
    assert table_rows(kind, [p], NOW, TableOptions(headers=False))[0][2] == "Terminating"


def test_pod_init_containers_and_exit_codes() -> None:
    p = obj("""
apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {initContainers: [{name: i, image: x}], containers: [{name: a, image: x}]}
status:
  phase: Pending
  initContainerStatuses: [{name: i, state: {running: {}}}]
""")
    kind = scheme.by_resource("pods")
    assert table_rows(kind, [p], NOW, TableOptions(headers=False))[0][2] == "Init:0/1"
    p.status.init_container_statuses[0].state.Clear()
    p.status.init_container_statuses[0].state.terminated.exit_code = 0
    p.status.container_statuses.add(name="a").state.terminated.exit_code = 137
    assert table_rows(kind, [p], NOW, TableOptions(headers=False))[0][2] == "ExitCode:137"


def test_namespace_first_with_all_namespaces_and_labels_last() -> None:
    rows = table_rows(scheme.by_resource("pods"), [pod()], NOW,
                      TableOptions(with_namespace=True, show_labels=True))
    assert rows[0][0] == "NAMESPACE" and rows[0][-1] == "LABELS"
    assert rows[1][0] == "default" and rows[1][-1] == "app=web,tier=fe"
    ns = obj(f'{{apiVersion: v1, kind: Namespace, metadata: {{name: x, creationTimestamp: "{created(90000)}"}}, '
             f'status: {{phase: Active}}}}')
    # Cluster-scoped kinds get no NAMESPACE column even with -A, as in kubectl.
    assert table_rows(scheme.by_resource("ns"), [ns], NOW, TableOptions(with_namespace=True)) == [
        ["NAME", "STATUS", "AGE"], ["x", "Active", "25h"]]


DEPLOY = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: nginx, creationTimestamp: "{created(4 * 3600)}"}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: nginx}}}}
  template:
    metadata: {{labels: {{app: nginx}}}}
    spec: {{containers: [{{name: nginx, image: "nginx:1.14.2"}}]}}
status: {{replicas: 3, updatedReplicas: 3, readyReplicas: 2, availableReplicas: 2}}
"""


def test_deployment_columns_with_kind_prefix() -> None:
    kind = scheme.by_resource("deploy")
    rows = table_rows(kind, [obj(DEPLOY)], NOW, TableOptions(wide=True, with_kind=True))
    assert rows == [["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
                    ["deployment.apps/nginx", "2/3", "3", "2", "4h", "nginx", "nginx:1.14.2", "app=nginx"]]


def test_replicaset_daemonset_statefulset_rc_columns() -> None:
    rs = obj(f"""{{apiVersion: apps/v1, kind: ReplicaSet, metadata: {{name: rs, creationTimestamp: "{created(10)}"}},
               spec: {{replicas: 2, template: {{spec: {{containers: [{{name: c, image: i}}]}}}}}},
               status: {{replicas: 2, readyReplicas: 1}}}}""")
    assert table_rows(scheme.by_resource("rs"), [rs], NOW, TableOptions()) == [
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"], ["rs", "2", "2", "1", "10s"]]
    ds = obj(f"""{{apiVersion: apps/v1, kind: DaemonSet, metadata: {{name: ds, creationTimestamp: "{created(10)}"}},
               spec: {{template: {{spec: {{nodeSelector: {{disk: ssd}}, containers: [{{name: c, image: i}}]}}}}}},
               status: {{desiredNumberScheduled: 3, currentNumberScheduled: 3, numberReady: 2,
                         updatedNumberScheduled: 3, numberAvailable: 2}}}}""")
    assert table_rows(scheme.by_resource("ds"), [ds], NOW, TableOptions()) == [
        ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"],
        ["ds", "3", "3", "2", "3", "2", "disk=ssd", "10s"]]
    sts = obj(f"""{{apiVersion: apps/v1, kind: StatefulSet, metadata: {{name: db, creationTimestamp: "{created(10)}"}},
                spec: {{replicas: 3}}, status: {{readyReplicas: 1}}}}""")
    assert table_rows(scheme.by_resource("sts"), [sts], NOW, TableOptions()) == [
        ["NAME", "READY", "AGE"], ["db", "1/3", "10s"]]
    rc = obj(f"""{{apiVersion: v1, kind: ReplicationController, metadata: {{name: rc, creationTimestamp: "{created(10)}"}},
               spec: {{selector: {{app: x}}}}}}""")
    assert table_rows(scheme.by_resource("rc"), [rc], NOW, TableOptions(wide=True))[1] == [
        "rc", "1", "0", "0", "10s", "", "", "app=x"]


def test_service_columns() -> None:
    svc = obj(f"""
apiVersion: v1
kind: Service
metadata: {{name: web, creationTimestamp: "{created(3)}"}}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  selector: {{app: web}}
  ports: [{{port: 80, nodePort: 30080, protocol: TCP}}, {{port: 53, protocol: UDP}}]
""")
    rows = table_rows(scheme.by_resource("svc"), [svc], NOW, TableOptions(wide=True))
    assert rows == [["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"],
                    ["web", "NodePort", "10.96.0.10", "<none>", "80:30080/TCP,53/UDP", "3s", "app=web"]]
    headless = obj('{apiVersion: v1, kind: Service, metadata: {name: h}, spec: {clusterIP: None}}')
    lb = obj('{apiVersion: v1, kind: Service, metadata: {name: lb}, spec: {type: LoadBalancer, ports: [{port: 443}]}}')
    rows = table_rows(scheme.by_resource("svc"), [headless, lb], NOW, TableOptions(headers=False))
    assert rows[0][1:5] == ["ClusterIP", "None", "<none>", "<none>"]
    assert rows[1][1:5] == ["LoadBalancer", "<none>", "<pending>", "443/TCP"]


def test_node_columns() -> None:
    node = obj(f"""
apiVersion: v1
kind: Node
metadata:
  name: n1
  creationTimestamp: "{created(2 * 86400)}"
  labels: {{node-role.kubernetes.io/control-plane: "", node-role.kubernetes.io/worker: ""}}
spec: {{unschedulable: true}}
status:
  conditions: [{{type: Ready, status: "True"}}]
  addresses: [{{type: InternalIP, address: 10.0.0.1}}]
  nodeInfo: {{kubeletVersion: v1.30.0-skiff, osImage: Debian, kernelVersion: "6.1"}}
""")
    rows = table_rows(scheme.by_resource("nodes"), [node], NOW, TableOptions(wide=True))
    assert rows[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE",
                       "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    assert rows[1] == ["n1", "Ready,SchedulingDisabled", "control-plane,worker", "2d", "v1.30.0-skiff",
                       "10.0.0.1", "<none>", "Debian", "6.1", "<unknown>"]
    bare = obj("{apiVersion: v1, kind: Node, metadata: {name: n2}}")
    assert table_rows(scheme.by_resource("no"), [bare], NOW, TableOptions(headers=False))[0][1:3] == [
        "Unknown", "<none>"]


def test_event_columns_interleave_wide_ones() -> None:
    ev = obj(f"""
apiVersion: v1
kind: Event
metadata: {{name: web.1, namespace: default}}
involvedObject: {{kind: Pod, name: web, namespace: default, fieldPath: "spec.containers{{a}}"}}
reason: Pulled
message: pulled the image
source: {{component: kubelet, host: node-1}}
firstTimestamp: "{created(600)}"
lastTimestamp: "{created(60)}"
count: 3
type: Normal
""")
    kind = scheme.by_resource("events")
    assert table_rows(kind, [ev], NOW, TableOptions()) == [
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        ["60s", "Normal", "Pulled", "pod/web", "pulled the image"]]
    wide = table_rows(kind, [ev], NOW, TableOptions(wide=True, with_kind=True))
    assert wide[0] == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "SUBOBJECT", "SOURCE", "MESSAGE", "FIRST SEEN",
                       "COUNT", "NAME"]
    assert wide[1][4:] == ["spec.containers{a}", "kubelet, node-1", "pulled the image", "10m", "3", "event/web.1"]


def test_small_kinds() -> None:
    cm = obj(f'{{apiVersion: v1, kind: ConfigMap, metadata: {{name: c, creationTimestamp: "{created(1)}"}}, '
             f'data: {{a: "1", b: "2"}}}}')
    secret = obj(f'{{apiVersion: v1, kind: Secret, metadata: {{name: s, creationTimestamp: "{created(1)}"}}, '
                 f'data: {{k: aGk=}}}}')
    lease = obj('{apiVersion: coordination.k8s.io/v1, kind: Lease, metadata: {name: l}, spec: {holderIdentity: me}}')
    rc = obj('{apiVersion: node.k8s.io/v1, kind: RuntimeClass, metadata: {name: runc}, handler: runc}')
    ep = obj("""{apiVersion: v1, kind: Endpoints, metadata: {name: e},
               subsets: [{addresses: [{ip: 10.0.0.1}, {ip: 10.0.0.2}, {ip: 10.0.0.3}, {ip: 10.0.0.4}],
                          ports: [{port: 80}]}]}""")
    assert table_rows(scheme.by_resource("cm"), [cm], NOW, TableOptions()) == [["NAME", "DATA", "AGE"], ["c", "2", "1s"]]
    assert table_rows(scheme.by_resource("secrets"), [secret], NOW, TableOptions())[1] == ["s", "Opaque", "1", "1s"]
    assert table_rows(scheme.by_resource("leases"), [lease], NOW, TableOptions()) == [
        ["NAME", "HOLDER", "AGE"], ["l", "me", "<unknown>"]]
    assert table_rows(scheme.by_resource("runtimeclasses"), [rc], NOW, TableOptions())[0] == ["NAME", "HANDLER", "AGE"]
    assert table_rows(scheme.by_resource("ep"), [ep], NOW, TableOptions())[1][1] == (
        "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more...")


def test_every_kind_has_rows_as_wide_as_its_header() -> None:
    for kind in scheme.KINDS:
        empty = kind.message()
        for wide in (False, True):
            rows = table_rows(kind, [empty], NOW, TableOptions(wide=wide, with_namespace=True, show_labels=True))
            assert len(rows[0]) == len(rows[1]), kind.kind


def test_render_table_pads_like_kubectl() -> None:
    text = render_table([["NAME", "READY", "STATUS", "AGE"], ["web-1", "1/1", "Running", "5s"],
                         ["a", "0/1", "Pending", "10m"]])
    assert text == ("NAME    READY   STATUS    AGE\n"
                    "web-1   1/1     Running   5s\n"
                    "a       0/1     Pending   10m\n")


def test_tabwrite_aligns_blocks_of_consecutive_lines() -> None:
    lines = ["Name:\tweb", "Namespace:\tdefault", "Containers:", "  nginx:", "    Image:\tnginx",
             "    Restart Count:\t0", "Volumes:", "Labels:\tapp=web", "\ttier=fe"]
    assert tabwrite(lines, minwidth=0, padding=2) == (
        "Name:       web\n"
        "Namespace:  default\n"
        "Containers:\n"
        "  nginx:\n"
        "    Image:          nginx\n"
        "    Restart Count:  0\n"
        "Volumes:\n"
        "Labels:  app=web\n"
        "         tier=fe\n")


def test_widths_carry_over_to_later_rows() -> None:
    widths: list[int] = []
    render_table([["NAME", "STATUS"], ["a-long-name", "Running"]], widths)
    assert render_table([["b", "Pending"]], widths) == "b             Pending\n"
