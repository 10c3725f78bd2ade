"""ObjectMeta, label selectors and int-or-string values: the rules every kind shares.

- `validate_object_meta`: Kubernetes' ValidateObjectMeta. name (or generateName) required and
  valid per the kind's name check; namespace required for namespaced kinds (a DNS-1123 label)
  and forbidden for cluster-scoped ones; generation >= 0; labels, annotations, owner references
  (at most one controller) and finalizers.
- `validate_object_meta_update`: name, namespace, uid and creationTimestamp are immutable; no
  finalizer may be added once deletion has started.
- `validate_label_selector`: Kubernetes' ValidateLabelSelector (operators, values, keys).
- `go_label_selector`: a selector printed as Kubernetes' %#v prints a metav1.LabelSelector,
  the value in "field is immutable" and "empty selector" errors.
- `validate_positive_int_or_percent`, `int_or_percent_value`, `not_more_than_100_percent`:
  the rules for maxSurge/maxUnavailable.

Everything reads the protobuf objects and appends to an ErrorList; nothing mutates its input.
"""
from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver.validation import names
from controlplane.apiserver.validation.field import ErrorList, GoLiteral, Path, go_quote, go_string_list, go_string_map
from protos.skiff.api.v1 import meta_pb2

# Finalizers Kubernetes knows without a domain prefix.
STANDARD_FINALIZERS = frozenset({"kubernetes", "orphan", "foregroundDeletion"})


def validate_object_meta(errs: ErrorList, meta: meta_pb2.ObjectMeta, namespaced: bool,
                         name_check: names.NameCheck, path: Path) -> None:
    if meta.generate_name:
        errs.invalid_each(path.child("generateName"), meta.generate_name,
                          name_check(meta.generate_name, True))
    if not meta.name:
        errs.required(path.child("name"), "name or generateName is required")
    else:
        errs.invalid_each(path.child("name"), meta.name, name_check(meta.name, False))
    if namespaced:
        if not meta.namespace:
            errs.required(path.child("namespace"))
        else:
            errs.invalid_each(path.child("namespace"), meta.namespace,
                              names.name_is_dns_label(meta.namespace, False))
    elif meta.namespace:
        errs.forbidden(path.child("namespace"), "not allowed on this type")
    errs.nonnegative(path.child("generation"), meta.generation)
    names.validate_labels(errs, path.child("labels"), meta.labels)
    names.validate_annotations(errs, path.child("annotations"), meta.annotations)
    _validate_owner_references(errs, meta, path.child("ownerReferences"))
    validate_finalizers(errs, list(meta.finalizers), path.child("finalizers"))


def _validate_owner_references(errs: ErrorList, meta: meta_pb2.ObjectMeta, path: Path) -> None:
    controllers: list[str] = []
    for ref in meta.owner_references:
        if not ref.api_version:
            errs.invalid(path.child("apiVersion"), ref.api_version, "version must not be empty")
        if not ref.kind:
            errs.invalid(path.child("kind"), ref.kind, "kind must not be empty")
        if not ref.name:
            errs.invalid(path.child("name"), ref.name, "name must not be empty")
        if not ref.uid:
            errs.invalid(path.child("uid"), ref.uid, "uid must not be empty")
        if ref.HasField("controller") and ref.controller:
            controllers.append(ref.name)
    if len(controllers) > 1:
        errs.invalid(path, GoLiteral(go_string_list(controllers)),
                     "Only one reference can have Controller set to true. Found \"true\" in "
                     f"references for {' and '.join(controllers)}")


def validate_finalizers(errs: ErrorList, finalizers: list[str], path: Path) -> None:
    """Qualified names; one without a domain must be a standard finalizer."""
    for finalizer in finalizers:
        errs.invalid_each(path, finalizer, names.is_qualified_name(finalizer))
        if "/" not in finalizer and finalizer not in STANDARD_FINALIZERS:
            errs.invalid(path, finalizer,
                         "name is neither a standard finalizer name nor is it fully qualified")


def validate_object_meta_update(errs: ErrorList, new: meta_pb2.ObjectMeta,
                                old: meta_pb2.ObjectMeta, path: Path) -> None:
    errs.immutable(path.child("name"), new.name, old.name)
    errs.immutable(path.child("namespace"), new.namespace, old.namespace)
    errs.immutable(path.child("uid"), new.uid, old.uid)
    errs.immutable(path.child("creationTimestamp"), new.creation_timestamp, old.creation_timestamp)
    if new.deletion_timestamp:
        added = sorted(set(new.finalizers) - set(old.finalizers))
        if added:
            errs.forbidden(path.child("finalizers"),
                           "no new finalizers can be added if the object is being deleted, "
                           f"found new finalizers {go_string_list(added)}")


# --- label selectors -----------------------------------------------------------------------

def validate_label_selector(errs: ErrorList, selector: meta_pb2.LabelSelector, path: Path) -> None:
    names.validate_labels(errs, path.child("matchLabels"), selector.match_labels)
    for i, req in enumerate(selector.match_expressions):
        req_path = path.child("matchExpressions").index(i)
        if req.operator in ("In", "NotIn"):
            if not req.values:
                errs.required(req_path.child("values"),
                              "must be specified when `operator` is 'In' or 'NotIn'")
        elif req.operator in ("Exists", "DoesNotExist"):
            if req.values:
                errs.forbidden(req_path.child("values"),
                               "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        else:
            errs.invalid(req_path.child("operator"), req.operator, "not a valid selector operator")
        names.validate_label_name(errs, req_path.child("key"), req.key)
        for j, value in enumerate(req.values):
            errs.invalid_each(req_path.child("values").index(j), value,
                              names.is_valid_label_value(value))


def go_label_selector(selector: meta_pb2.LabelSelector | None) -> GoLiteral:
    """%#v of a metav1.LabelSelector, as in `spec.selector: Invalid value: v1.LabelSelector{...}`."""
    if selector is None:
        return GoLiteral("null")
    if selector.match_expressions:
        reqs = ", ".join(
            f"v1.LabelSelectorRequirement{{Key:{go_quote(r.key)}, Operator:{go_quote(r.operator)}, "
            f"Values:{go_string_list(list(r.values))}}}" for r in selector.match_expressions)
        exprs = "[]v1.LabelSelectorRequirement{" + reqs + "}"
    else:
        exprs = "[]v1.LabelSelectorRequirement(nil)"
    return GoLiteral(f"v1.LabelSelector{{MatchLabels:{go_string_map(dict(selector.match_labels))}, "
                     f"MatchExpressions:{exprs}}}")


# --- int-or-string -------------------------------------------------------------------------

def go_int_or_string(value: meta_pb2.IntOrString) -> GoLiteral:
    """%#v of an intstr.IntOrString (Kubernetes prints the struct in these errors)."""
    if value.WhichOneof("value") == "str_val":
        return GoLiteral(f"intstr.IntOrString{{Type:1, IntVal:0, StrVal:{go_quote(value.str_val)}}}")
    return GoLiteral(f"intstr.IntOrString{{Type:0, IntVal:{value.int_val}, StrVal:\"\"}}")


def int_or_percent_value(value: meta_pb2.IntOrString) -> int:
    """The number in 5 or "5%"; an unparsable string counts as 0, as in Kubernetes."""
    if value.WhichOneof("value") == "str_val":
        text = value.str_val
        if text.endswith("%") and text[:-1].isdigit():
            return int(text[:-1])
        return 0
    return value.int_val


def validate_positive_int_or_percent(errs: ErrorList, value: meta_pb2.IntOrString, path: Path) -> None:
    if value.WhichOneof("value") == "str_val":
        errs.invalid_each(path, go_int_or_string(value), names.is_valid_percent(value.str_val))
    else:
        errs.nonnegative(path, value.int_val)


def not_more_than_100_percent(errs: ErrorList, value: meta_pb2.IntOrString, path: Path) -> None:
    if value.WhichOneof("value") == "str_val" and names.is_valid_percent(value.str_val) == []:
        if int(value.str_val[:-1]) > 100:
            errs.invalid(path, go_int_or_string(value), "must not be greater than 100%")


def validate_port_num_or_name(errs: ErrorList, port: meta_pb2.IntOrString, path: Path) -> None:
    """A port number (1-65535) or an IANA service name; unset reads as the number 0."""
    if port.WhichOneof("value") == "str_val":
        errs.invalid_each(path, port.str_val, names.is_valid_port_name(port.str_val))
    else:
        errs.invalid_each(path, port.int_val, names.is_valid_port_num(port.int_val))


# --- diffs ---------------------------------------------------------------------------------

def changed_fields(old: Message, new: Message, path: Path, limit: int = 10) -> list[str]:
    """The paths (JSON names) where new differs from old, leaves first found, at most `limit`;
    used to say what an update tried to change, in place of Kubernetes' struct diff."""
    out: list[str] = []
    _diff(old, new, path, out, limit)
    return out


def _diff(old: Message, new: Message, path: Path, out: list[str], limit: int) -> None:
    for fd in old.DESCRIPTOR.fields:
        if len(out) >= limit:
            return
        a, b = getattr(old, fd.name), getattr(new, fd.name)
        if a == b:
            continue
        child = path.child(fd.json_name)
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        if fd.message_type is None or is_map:
            out.append(str(child))
        elif fd.is_repeated:
            if len(a) != len(b):
                out.append(str(child))
                continue
            for i, (x, y) in enumerate(zip(a, b)):
                if x != y:
                    _diff(x, y, child.index(i), out, limit)
        else:
            _diff(a, b, child, out, limit)
