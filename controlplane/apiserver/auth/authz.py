"""Authorization: may this user do this verb on this resource? Pure: no I/O, no clock.

Roles are data — a table of `Rule`s per role — plus one small function for what a table cannot
say: a node may touch only its own Node, its own Lease and the pods bound to it (Kubernetes' Node
authorizer and NodeRestriction admission, folded into one place). A request is allowed when any
role the user holds allows it; nothing is denied explicitly, so roles only add.

    role                     who                                     may
    admin                    group system:masters                    everything
    view                     group skiff:view, or a configured user  get/list/watch all but secrets
    node                     user system:node:<n> in system:nodes    see NODE_RULES below
    scheduler                user system:kube-scheduler              see SCHEDULER_RULES
    controller-manager       user system:kube-controller-manager     all but creating nodes
    anyone else                                                      nothing

Resources are Kubernetes' lower-case plurals; a rule's resource `pods/status` names a
subresource, `*` every resource and subresource, `nodes/*` every subresource of nodes (RBAC's
spelling). The API server maps its RPCs onto Kubernetes' verbs: Bind is `create` on
`pods/binding`, UpdateStatus is `update` on `<resource>/status`, Watch is `watch`.

A refusal's reason is Kubernetes' forbidden message — `User "bob" cannot list resource
"secrets" in API group "" at the cluster scope` — with the node rule's reason appended when it
was the obstacle: `...in the namespace "default": pod is bound to node "n2"`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Iterable

from controlplane.apiserver.auth.authn import UserInfo

VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "bind"})
READ = frozenset({"get", "list", "watch"})
ALL = frozenset({"*"})

MASTERS_GROUP = "system:masters"
VIEW_GROUP = "skiff:view"
NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
SCHEDULER_USER = "system:kube-scheduler"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
NODE_LEASE_NAMESPACE = "kube-node-lease"

# API groups, for the forbidden message only (skiff serves every kind through one service).
API_GROUPS = {
    "deployments": "apps", "replicasets": "apps", "statefulsets": "apps", "daemonsets": "apps",
    "controllerrevisions": "apps", "jobs": "batch", "cronjobs": "batch",
    "leases": "coordination.k8s.io", "runtimeclasses": "node.k8s.io",
    "endpointslices": "discovery.k8s.io", "networkpolicies": "networking.k8s.io",
    "ingresses": "networking.k8s.io", "horizontalpodautoscalers": "autoscaling",
    "poddisruptionbudgets": "policy", "priorityclasses": "scheduling.k8s.io",
}


@dataclass(frozen=True)
class RequestAttributes:
    """What is asked. `name` is the object's (for create: the new object's); `pod_node_name` is
    the existing pod's spec.nodeName, filled by the server for pod requests from nodes ("" when
    unbound, None when not looked up)."""

    user: UserInfo
    verb: str
    resource: str
    namespace: str
    name: str
    subresource: str = ""
    pod_node_name: str | None = None

    def __post_init__(self) -> None:
        if self.verb not in VERBS:
            raise ValueError(f"unknown verb {self.verb!r}; expected one of {', '.join(sorted(VERBS))}")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


@dataclass(frozen=True)
class Rule:
    """Verbs on resources, optionally only in some namespaces and only for some objects.

    `owner` names a check of the node rule (`own-node`, `own-lease`, `bound-pod`): the request
    must concern the node's own object. `except_resources` are left out of a `*`.
    """

    verbs: frozenset[str]
    resources: frozenset[str]
    namespaces: frozenset[str] | None = None
    owner: str = ""
    except_resources: frozenset[str] = field(default_factory=frozenset)

    def matches(self, attrs: RequestAttributes) -> bool:
        if not ("*" in self.verbs or attrs.verb in self.verbs):
            return False
        if attrs.resource in self.except_resources:
            return False
        if self.namespaces is not None and attrs.namespace not in self.namespaces:
            return False
        return any(_resource_matches(r, attrs.resource, attrs.subresource) for r in self.resources)


def _resource_matches(pattern: str, resource: str, subresource: str) -> bool:
    if pattern == "*":
        return True
    base, _, sub = pattern.partition("/")
    if base not in ("*", resource):
        return False
    return sub == subresource or (sub == "*" and subresource != "")


def rule(verbs: Iterable[str], resources: Iterable[str], namespaces: Iterable[str] | None = None,
         owner: str = "", except_resources: Iterable[str] = ()) -> Rule:
    return Rule(frozenset(verbs), frozenset(resources),
                None if namespaces is None else frozenset(namespaces), owner, frozenset(except_resources))


ADMIN_RULES = (rule(ALL, ["*"]),)

VIEW_RULES = (rule(READ, ["*"], except_resources=["secrets"]),)

NODE_RULES = (
    rule(READ, ["nodes", "pods", "services", "endpoints", "configmaps", "secrets", "runtimeclasses",
                "namespaces"]),
    rule(["create", "update", "patch"], ["nodes", "nodes/status"], owner="own-node"),
    rule(["get", "create", "update"], ["leases"], namespaces=[NODE_LEASE_NAMESPACE], owner="own-lease"),
    rule(["update", "patch"], ["pods/status"], owner="bound-pod"),
    rule(["delete"], ["pods"], owner="bound-pod"),
    rule(["create", "patch"], ["events"]),
)

SCHEDULER_RULES = (
    rule(READ, ["*"], except_resources=["secrets"]),
    rule(["create"], ["pods/binding"]),
    # Kubernetes' system:kube-scheduler role may patch as well as update a pod's status.
    rule(["update", "patch"], ["pods/status"]),
    rule(["create", "patch"], ["events"]),
    rule(["get", "create", "update"], ["leases"], namespaces=["kube-system"]),
)

CONTROLLER_MANAGER_RULES = (
    rule(ALL, ["*"], except_resources=["nodes"]),
    rule(VERBS - {"create"}, ["nodes", "nodes/*"]),
)


@dataclass(frozen=True)
class Role:
    name: str
    rules: tuple[Rule, ...]
    holds: Callable[[UserInfo, frozenset[str]], bool]


def _node_name(user: UserInfo) -> str | None:
    """The node a user speaks for: `system:node:<name>` in group system:nodes, else None."""
    if NODES_GROUP in user.groups and user.name.startswith(NODE_USER_PREFIX):
        return user.name[len(NODE_USER_PREFIX):] or None
    return None


ROLES = (
    Role("admin", ADMIN_RULES, lambda u, views: MASTERS_GROUP in u.groups),
    Role("view", VIEW_RULES, lambda u, views: VIEW_GROUP in u.groups or u.name in views),
    Role("node", NODE_RULES, lambda u, views: _node_name(u) is not None),
    Role("scheduler", SCHEDULER_RULES, lambda u, views: u.name == SCHEDULER_USER),
    Role("controller-manager", CONTROLLER_MANAGER_RULES, lambda u, views: u.name == CONTROLLER_MANAGER_USER),
)


def node_obstacle(owner: str, node: str, attrs: RequestAttributes) -> str:
    """Why `node` may not make this request under an `owner` rule; "" when it may."""
    if owner == "own-node" or owner == "own-lease":
        kind = "Node" if owner == "own-node" else "Lease"
        if attrs.name != node:
            return f'node "{node}" may only modify its own {kind} "{node}", not "{attrs.name}"'
        return ""
    if owner == "bound-pod":
        if attrs.pod_node_name is None:
            return "the pod's node is not known"
        if attrs.pod_node_name == "":
            return f'pod is not bound to node "{node}"'
        if attrs.pod_node_name != node:
            return f'pod is bound to node "{attrs.pod_node_name}"'
        return ""
    raise ValueError(f"unknown owner check {owner!r}")


def authorize(attrs: RequestAttributes, view_users: Collection[str] = ()) -> Decision:
    """Allow when any role the user holds has a matching rule whose owner check passes."""
    views = frozenset(view_users)
    obstacle = ""
    for role in ROLES:
        if not role.holds(attrs.user, views):
            continue
        for r in role.rules:
            if not r.matches(attrs):
                continue
            if not r.owner:
                return Decision(True, f'allowed by role "{role.name}"')
            node = _node_name(attrs.user)
            why = node_obstacle(r.owner, node, attrs) if node is not None else "not a node"
            if not why:
                return Decision(True, f'allowed by role "{role.name}"')
            obstacle = obstacle or why
    message = forbidden_message(attrs)
    return Decision(False, f"{message}: {obstacle}" if obstacle else message)


def forbidden_message(attrs: RequestAttributes) -> str:
    """Kubernetes' wording for a refused resource request."""
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    group = API_GROUPS.get(attrs.resource, "")
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return f'User "{attrs.user.name}" cannot {attrs.verb} resource "{resource}" in API group "{group}" {where}'


class Authorizer:
    """`authorize` with the server's configuration bound: the users given the view role."""

    def __init__(self, view_users: Collection[str] = ()) -> None:
        self.view_users = frozenset(view_users)

    def authorize(self, attrs: RequestAttributes) -> Decision:
        return authorize(attrs, self.view_users)
