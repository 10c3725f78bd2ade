"""Table tests for every role: what each may do, what each may not, and the refusal's wording."""
from __future__ import annotations

import pytest

from controlplane.apiserver.auth.authn import ANONYMOUS, UserInfo
from controlplane.apiserver.auth.authz import Authorizer, RequestAttributes, authorize

AUTH = "system:authenticated"
ADMIN = UserInfo("admin", ("system:masters", AUTH))
VIEWER = UserInfo("alice", ("skiff:view", AUTH))
CONFIGURED_VIEWER = UserInfo("carol", (AUTH,))
NODE = UserInfo("system:node:n1", ("system:nodes", AUTH))
SCHEDULER = UserInfo("system:kube-scheduler", (AUTH,))
CM = UserInfo("system:kube-controller-manager", (AUTH,))
BOB = UserInfo("bob", (AUTH,))
# A node name without the group, and the group without a node name, are not nodes.
FAKE_NODE = UserInfo("system:node:n1", (AUTH,))
NODES_GROUP_ONLY = UserInfo("mallory", ("system:nodes", AUTH))


def req(user: UserInfo, verb: str, resource: str, namespace: str = "default", name: str = "x",
        sub: str = "", pod_node: str | None = None) -> RequestAttributes:
    return RequestAttributes(user, verb, resource, namespace, name, sub, pod_node)


# (request, allowed)
CASES = [
    # admin: everything
    (req(ADMIN, "delete", "nodes", "", "n1"), True),
    (req(ADMIN, "create", "secrets"), True),
    (req(ADMIN, "update", "pods", sub="status"), True),
    (req(ADMIN, "create", "pods", sub="binding"), True),
    (req(ADMIN, "watch", "deployments", ""), True),
    # view (group skiff:view, or a user configured as view)
    (req(VIEWER, "get", "pods"), True),
    (req(VIEWER, "list", "deployments", ""), True),
    (req(VIEWER, "watch", "nodes", ""), True),
    (req(VIEWER, "get", "pods", sub="status"), True),
    (req(VIEWER, "get", "secrets"), False),
    (req(VIEWER, "list", "secrets", ""), False),
    (req(VIEWER, "create", "pods"), False),
    (req(VIEWER, "delete", "pods"), False),
    (req(VIEWER, "update", "pods", sub="status"), False),
    (req(CONFIGURED_VIEWER, "list", "pods"), True),
    (req(CONFIGURED_VIEWER, "list", "secrets"), False),
    (req(CONFIGURED_VIEWER, "update", "pods"), False),
    # node: reads
    (req(NODE, "get", "nodes", "", "n2"), True),
    (req(NODE, "list", "pods", ""), True),
    (req(NODE, "watch", "services", ""), True),
    (req(NODE, "get", "endpoints"), True),
    (req(NODE, "get", "configmaps"), True),
    (req(NODE, "get", "secrets"), True),
    (req(NODE, "list", "runtimeclasses", ""), True),
    (req(NODE, "get", "namespaces", "", "default"), True),
    (req(NODE, "list", "deployments", ""), False),
    (req(NODE, "get", "leases", "kube-system", "kube-scheduler"), False),
    # node: its own Node and status only
    (req(NODE, "create", "nodes", "", "n1"), True),
    (req(NODE, "update", "nodes", "", "n1"), True),
    (req(NODE, "patch", "nodes", "", "n1"), True),
    (req(NODE, "update", "nodes", "", "n1", sub="status"), True),
    (req(NODE, "patch", "nodes", "", "n1", sub="status"), True),
    (req(NODE, "create", "nodes", "", "n2"), False),
    (req(NODE, "update", "nodes", "", "n2", sub="status"), False),
    (req(NODE, "delete", "nodes", "", "n1"), False),
    # node: its own Lease in kube-node-lease
    (req(NODE, "create", "leases", "kube-node-lease", "n1"), True),
    (req(NODE, "update", "leases", "kube-node-lease", "n1"), True),
    (req(NODE, "get", "leases", "kube-node-lease", "n1"), True),
    (req(NODE, "update", "leases", "kube-node-lease", "n2"), False),
    (req(NODE, "create", "leases", "default", "n1"), False),
    (req(NODE, "delete", "leases", "kube-node-lease", "n1"), False),
    # node: status and deletion of pods bound to it
    (req(NODE, "update", "pods", sub="status", pod_node="n1"), True),
    (req(NODE, "patch", "pods", sub="status", pod_node="n1"), True),
    (req(NODE, "delete", "pods", pod_node="n1"), True),
    (req(NODE, "update", "pods", sub="status", pod_node="n2"), False),
    (req(NODE, "delete", "pods", pod_node="n2"), False),
    (req(NODE, "delete", "pods", pod_node=""), False),
    (req(NODE, "delete", "pods", pod_node=None), False),
    (req(NODE, "update", "pods", pod_node="n1"), False),
    (req(NODE, "create", "pods"), False),
    (req(NODE, "create", "pods", sub="binding"), False),
    # node: events
    (req(NODE, "create", "events"), True),
    (req(NODE, "patch", "events"), True),
    (req(NODE, "delete", "events"), False),
    (req(NODE, "create", "configmaps"), False),
    (req(FAKE_NODE, "get", "pods"), False),
    (req(NODES_GROUP_ONLY, "get", "pods"), False),
    # scheduler
    (req(SCHEDULER, "list", "pods", ""), True),
    (req(SCHEDULER, "watch", "nodes", ""), True),
    (req(SCHEDULER, "get", "persistentvolumeclaims"), True),
    (req(SCHEDULER, "get", "secrets"), False),
    (req(SCHEDULER, "create", "pods", sub="binding"), True),
    (req(SCHEDULER, "update", "pods", sub="status"), True),
    (req(SCHEDULER, "patch", "pods", sub="status"), True),
    (req(SCHEDULER, "create", "events"), True),
    (req(SCHEDULER, "patch", "events"), True),
    (req(SCHEDULER, "get", "leases", "kube-system", "kube-scheduler"), True),
    (req(SCHEDULER, "create", "leases", "kube-system", "kube-scheduler"), True),
    (req(SCHEDULER, "update", "leases", "kube-system", "kube-scheduler"), True),
    (req(SCHEDULER, "update", "leases", "default", "kube-scheduler"), False),
    (req(SCHEDULER, "create", "pods"), False),
    (req(SCHEDULER, "update", "pods"), False),
    (req(SCHEDULER, "delete", "pods"), False),
    (req(SCHEDULER, "update", "nodes", "", "n1"), False),
    # controller manager: everything but creating nodes
    (req(CM, "create", "pods"), True),
    (req(CM, "delete", "replicasets"), True),
    (req(CM, "get", "secrets"), True),
    (req(CM, "create", "secrets"), True),
    (req(CM, "update", "deployments", sub="status"), True),
    (req(CM, "update", "nodes", "", "n1"), True),
    (req(CM, "patch", "nodes", "", "n1", sub="status"), True),
    (req(CM, "delete", "nodes", "", "n1"), True),
    (req(CM, "list", "nodes", ""), True),
    (req(CM, "create", "nodes", "", "n9"), False),
    # anyone else: nothing
    (req(BOB, "get", "pods"), False),
    (req(BOB, "list", "namespaces", ""), False),
    (req(ANONYMOUS, "get", "pods"), False),
    (req(ANONYMOUS, "create", "nodes", "", "n1"), False),
]


@pytest.mark.parametrize("attrs,allowed", CASES,
                         ids=[f"{a.user.name}-{a.verb}-{a.resource}{'/' + a.subresource if a.subresource else ''}"
                              f"-{a.namespace or 'cluster'}-{a.name}-{a.pod_node_name}" for a, _ in CASES])
def test_role_table(attrs: RequestAttributes, allowed: bool) -> None:
    decision = Authorizer(view_users=["carol"]).authorize(attrs)
    assert decision.allowed is allowed, decision.reason


def test_configured_view_user_needs_configuration() -> None:
    assert not authorize(req(CONFIGURED_VIEWER, "list", "pods")).allowed
    assert authorize(req(CONFIGURED_VIEWER, "list", "pods"), view_users={"carol"}).allowed


def test_refusal_reads_like_kubernetes_cluster_scope() -> None:
    d = authorize(req(BOB, "list", "secrets", ""))
    assert d.reason == 'User "bob" cannot list resource "secrets" in API group "" at the cluster scope'


def test_refusal_names_api_group_subresource_and_namespace() -> None:
    d = authorize(req(BOB, "update", "deployments", "web", sub="status"))
    assert d.reason == ('User "bob" cannot update resource "deployments/status" in API group "apps" '
                        'in the namespace "web"')


def test_node_refusal_says_whose_pod_it_is() -> None:
    d = authorize(req(NODE, "update", "pods", sub="status", pod_node="n2"))
    assert d.reason == ('User "system:node:n1" cannot update resource "pods/status" in API group "" '
                        'in the namespace "default": pod is bound to node "n2"')


def test_node_refusal_for_another_nodes_object() -> None:
    d = authorize(req(NODE, "update", "leases", "kube-node-lease", "n2"))
    assert d.reason.endswith(': node "n1" may only modify its own Lease "n1", not "n2"')
    d = authorize(req(NODE, "delete", "pods", pod_node=""))
    assert d.reason.endswith(': pod is not bound to node "n1"')


def test_allowed_decision_names_the_role() -> None:
    assert authorize(req(ADMIN, "get", "pods")).reason == 'allowed by role "admin"'
    assert authorize(req(NODE, "delete", "pods", pod_node="n1")).reason == 'allowed by role "node"'


def test_roles_add_up() -> None:
    # A node that is also a viewer may still read what a viewer reads.
    both = UserInfo("system:node:n1", ("system:nodes", "skiff:view", AUTH))
    assert authorize(req(both, "list", "deployments", "")).allowed
    assert not authorize(req(both, "update", "pods", sub="status", pod_node="n2")).allowed


def test_unknown_verb_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown verb 'remove'"):
        req(ADMIN, "remove", "pods")
