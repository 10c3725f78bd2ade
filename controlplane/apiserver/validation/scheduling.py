"""Scheduling constraints: tolerations, taints, node and pod affinity, topology spread.

Kubernetes' rules and messages (core/validation):
- a toleration with an empty key must use operator Exists; operator Equal (or empty) needs a
  valid label value, Exists an empty value; tolerationSeconds only with effect NoExecute;
  effects NoSchedule, PreferNoSchedule, NoExecute (empty matches all);
- a taint needs a qualified-name key, a label value and an effect; key+effect unique per node;
- node selector requirements: In/NotIn need values, Exists/DoesNotExist take none, Gt/Lt take
  exactly one (an integer: skiff checks that too, since a non-integer can never match);
  matchFields only on metadata.name with In/NotIn and one value; required node affinity needs at
  least one term; preferred terms' weights are 1-100;
- pod (anti-)affinity terms need a topologyKey and a valid label selector;
- topology spread: maxSkew > 0, a topologyKey, whenUnsatisfiable DoNotSchedule|ScheduleAnyway,
  each {topologyKey, whenUnsatisfiable} once.
"""
from __future__ import annotations

from typing import Sequence

from controlplane.apiserver.validation import names
from controlplane.apiserver.validation.field import ErrorList, GoLiteral, Path, go_quote
from controlplane.apiserver.validation.meta import validate_label_selector
from protos.skiff.api.v1 import core_pb2

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TOLERATION_OPERATORS = ("Equal", "Exists")
SCHEDULE_ACTIONS = ("DoNotSchedule", "ScheduleAnyway")


def _go_toleration(t: core_pb2.Toleration) -> GoLiteral:
    seconds = f"&{t.toleration_seconds}" if t.HasField("toleration_seconds") else "(*int64)(nil)"
    return GoLiteral(f"core.Toleration{{Key:{go_quote(t.key)}, Operator:{go_quote(t.operator)}, "
                     f"Value:{go_quote(t.value)}, Effect:{go_quote(t.effect)}, TolerationSeconds:{seconds}}}")


def validate_taint_effect(errs: ErrorList, effect: str, allow_empty: bool, path: Path) -> None:
    if not effect:
        if not allow_empty:
            errs.required(path)
        return
    if effect not in TAINT_EFFECTS:
        errs.not_supported(path, effect, TAINT_EFFECTS)


def validate_tolerations(errs: ErrorList, tolerations: Sequence[core_pb2.Toleration], path: Path) -> None:
    for i, t in enumerate(tolerations):
        p = path.index(i)
        if t.key:
            names.validate_label_name(errs, p.child("key"), t.key)
        if not t.key and t.operator != "Exists":
            errs.invalid(p.child("operator"), t.operator,
                         "operator must be Exists when `key` is empty, which means \"match all values and all keys\"")
        if t.HasField("toleration_seconds") and t.effect != "NoExecute":
            errs.invalid(p.child("effect"), t.effect, "effect must be 'NoExecute' when `tolerationSeconds` is set")
        if t.operator in ("Equal", ""):
            msgs = names.is_valid_label_value(t.value)
            if msgs:
                errs.invalid(p.child("operator"), t.value, ";".join(msgs))
        elif t.operator == "Exists":
            if t.value:
                errs.invalid(p.child("operator"), _go_toleration(t), "value must be empty when `operator` is 'Exists'")
        else:
            errs.not_supported(p.child("operator"), t.operator, TOLERATION_OPERATORS)
        validate_taint_effect(errs, t.effect, True, p.child("effect"))


def validate_taints(errs: ErrorList, taints: Sequence[core_pb2.Taint], path: Path) -> None:
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(taints):
        p = path.index(i)
        names.validate_label_name(errs, p.child("key"), taint.key)
        msgs = names.is_valid_label_value(taint.value)
        if msgs:
            errs.invalid(p.child("value"), taint.value, ";".join(msgs))
        validate_taint_effect(errs, taint.effect, False, p.child("effect"))
        if (taint.key, taint.effect) in seen:
            literal = GoLiteral(f"core.Taint{{Key:{go_quote(taint.key)}, Value:{go_quote(taint.value)}, "
                                f"Effect:{go_quote(taint.effect)}, TimeAdded:(*v1.Time)(nil)}}")
            errs.duplicate(p, literal, "taints must be unique by key and effect pair")
        seen.add((taint.key, taint.effect))


# --- node affinity -------------------------------------------------------------------------

def validate_node_selector_requirement(errs: ErrorList, req: core_pb2.NodeSelectorRequirement, path: Path) -> None:
    op, values = req.operator, list(req.values)
    if op in ("In", "NotIn"):
        if not values:
            errs.required(path.child("values"), "must be specified when `operator` is 'In' or 'NotIn'")
    elif op in ("Exists", "DoesNotExist"):
        if values:
            errs.forbidden(path.child("values"), "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
    elif op in ("Gt", "Lt"):
        if len(values) != 1:
            errs.required(path.child("values"), "must be specified single value when `operator` is 'Lt' or 'Gt'")
        elif not _is_int(values[0]):
            errs.invalid(path.child("values").index(0), values[0], "must be an integer when `operator` is 'Lt' or 'Gt'")
    else:
        errs.invalid(path.child("operator"), op, "not a valid selector operator")
    names.validate_label_name(errs, path.child("key"), req.key)


def _is_int(text: str) -> bool:
    try:
        int(text, 10)
    except ValueError:
        return False
    return True


def _validate_field_requirement(errs: ErrorList, req: core_pb2.NodeSelectorRequirement, path: Path) -> None:
    if req.key != "metadata.name":
        errs.invalid(path.child("key"), req.key, "not a valid field selector key")
    if req.operator in ("In", "NotIn"):
        if len(req.values) != 1:
            errs.required(path.child("values"),
                          "must be only one value when `operator` is 'In' or 'NotIn' for node field selector")
    else:
        errs.invalid(path.child("operator"), req.operator, "not a valid selector operator")


def validate_node_selector_term(errs: ErrorList, term: core_pb2.NodeSelectorTerm, path: Path) -> None:
    for j, req in enumerate(term.match_expressions):
        validate_node_selector_requirement(errs, req, path.child("matchExpressions").index(j))
    for j, req in enumerate(term.match_fields):
        _validate_field_requirement(errs, req, path.child("matchFields").index(j))


def validate_node_selector(errs: ErrorList, selector: core_pb2.NodeSelector, path: Path) -> None:
    terms_path = path.child("nodeSelectorTerms")
    if not selector.node_selector_terms:
        errs.required(terms_path, "must have at least one node selector term")
        return
    for i, term in enumerate(selector.node_selector_terms):
        validate_node_selector_term(errs, term, terms_path.index(i))


def _validate_weight(errs: ErrorList, weight: int, path: Path) -> None:
    if not 1 <= weight <= 100:
        errs.invalid(path, weight, "must be in the range 1-100")


def validate_affinity(errs: ErrorList, affinity: core_pb2.Affinity, path: Path) -> None:
    if affinity.HasField("node_affinity"):
        na, na_path = affinity.node_affinity, path.child("nodeAffinity")
        if na.HasField("required_during_scheduling_ignored_during_execution"):
            validate_node_selector(errs, na.required_during_scheduling_ignored_during_execution,
                                   na_path.child("requiredDuringSchedulingIgnoredDuringExecution"))
        for i, pref in enumerate(na.preferred_during_scheduling_ignored_during_execution):
            p = na_path.child("preferredDuringSchedulingIgnoredDuringExecution").index(i)
            _validate_weight(errs, pref.weight, p.child("weight"))
            validate_node_selector_term(errs, pref.preference, p.child("preference"))
    for field_name, json_name in (("pod_affinity", "podAffinity"), ("pod_anti_affinity", "podAntiAffinity")):
        if affinity.HasField(field_name):
            _validate_pod_affinity(errs, getattr(affinity, field_name), path.child(json_name))


def _validate_pod_affinity(errs: ErrorList, aff: core_pb2.PodAffinity | core_pb2.PodAntiAffinity,
                           path: Path) -> None:
    for i, term in enumerate(aff.required_during_scheduling_ignored_during_execution):
        _validate_pod_affinity_term(errs, term, path.child("requiredDuringSchedulingIgnoredDuringExecution").index(i))
    for i, weighted in enumerate(aff.preferred_during_scheduling_ignored_during_execution):
        p = path.child("preferredDuringSchedulingIgnoredDuringExecution").index(i)
        _validate_weight(errs, weighted.weight, p.child("weight"))
        _validate_pod_affinity_term(errs, weighted.pod_affinity_term, p.child("podAffinityTerm"))


def _validate_pod_affinity_term(errs: ErrorList, term: core_pb2.PodAffinityTerm, path: Path) -> None:
    if term.HasField("label_selector"):
        validate_label_selector(errs, term.label_selector, path.child("labelSelector"))
    if term.HasField("namespace_selector"):
        validate_label_selector(errs, term.namespace_selector, path.child("namespaceSelector"))
    for ns in term.namespaces:
        errs.invalid_each(path.child("namespace"), ns, names.is_dns1123_label(ns))
    if not term.topology_key:
        errs.required(path.child("topologyKey"), "can not be empty")
    else:
        names.validate_label_name(errs, path.child("topologyKey"), term.topology_key)


def validate_topology_spread(errs: ErrorList, constraints: Sequence[core_pb2.TopologySpreadConstraint],
                             path: Path) -> None:
    seen: set[tuple[str, str]] = set()
    for i, c in enumerate(constraints):
        p = path.index(i)
        if c.max_skew <= 0:
            errs.invalid(p.child("maxSkew"), c.max_skew, "must be greater than zero")
        if not c.topology_key:
            errs.required(p.child("topologyKey"), "can not be empty")
        else:
            names.validate_label_name(errs, p.child("topologyKey"), c.topology_key)
        if not c.when_unsatisfiable:
            errs.required(p.child("whenUnsatisfiable"))
        elif c.when_unsatisfiable not in SCHEDULE_ACTIONS:
            errs.not_supported(p.child("whenUnsatisfiable"), c.when_unsatisfiable, SCHEDULE_ACTIONS)
        key = (c.topology_key, c.when_unsatisfiable)
        if key in seen:
            errs.duplicate(p, f"{{{c.topology_key}, {c.when_unsatisfiable}}}")
        seen.add(key)
        if c.HasField("label_selector"):
            validate_label_selector(errs, c.label_selector, p.child("labelSelector"))
        if c.HasField("min_domains") and c.min_domains <= 0:
            errs.invalid(p.child("minDomains"), c.min_domains, "must be greater than zero")
