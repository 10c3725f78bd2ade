r"""Label selectors and field selectors, with Kubernetes' grammar and matching semantics.

Label selectors (`app=web,tier!=db,env in (a,b),!canary`):
- requirements: `k=v`, `k==v`, `k!=v`, `k in (v1,v2)`, `k notin (v1)`, `k` (exists), `!k` (does
  not exist); commas AND them; whitespace around tokens is ignored. Keys are qualified names
  (`[prefix/]name`), values label values (63 characters at most, may be empty).
- `!=` and `notin` match objects that lack the key, as in Kubernetes.
- `LabelSelector.everything()` (also the empty string and `from_set({})`) matches every object;
  `LabelSelector.nothing()` (and `from_label_selector_proto(None)`) matches none. The nothing
  selector has no text form: its `str()` is "<nothing>", which does not parse, so it can never
  turn into "match everything" by a round trip through a string.
- `str()` is canonical: requirements sorted by key (stable), values sorted, `==` written `=`;
  parsing it gives an equal selector.

Field selectors (`metadata.name=web,status.phase!=Running`):
- terms `k=v`, `k==v`, `k!=v` joined by commas; `\\`, `\,`, `\=` escape those characters in a
  value. A key is a dotted path of JSON field names to a scalar field of the object
  (`spec.nodeName`); a path that does not name one is `field label not supported: <path>`.
  Unset fields read as their zero value ("", "0", "false"), as Kubernetes' field sets do.

Every error is a SelectorError (a ValueError) naming the offending part of the text.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, NamedTuple

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from protos.skiff.api.v1 import meta_pb2

LabelOp = Literal["=", "!=", "in", "notin", "exists", "!"]
FieldOp = Literal["=", "!="]


class SelectorError(ValueError):
    """A selector that cannot be parsed or built; the message names the offending part."""


_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def validate_label_key(key: str) -> None:
    """SelectorError unless key is a qualified name: optional DNS-subdomain prefix, "/", name."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise SelectorError(f"invalid label key {key!r}: the prefix must be a DNS subdomain "
                            "(lower-case alphanumerics, '-' and '.')")
    if not name or len(name) > 63 or not _NAME.fullmatch(name):
        raise SelectorError(f"invalid label key {key!r}: a name must be 63 characters or less, "
                            "begin and end with an alphanumeric, and contain only alphanumerics, "
                            "'-', '_' and '.'")


def validate_label_value(value: str) -> None:
    """SelectorError unless value is a valid label value (may be empty)."""
    if value and (len(value) > 63 or not _NAME.fullmatch(value)):
        raise SelectorError(f"invalid label value {value!r}: must be 63 characters or less, "
                            "begin and end with an alphanumeric, and contain only alphanumerics, "
                            "'-', '_' and '.'")


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector. `values` is sorted; one value for = and !=, none for
    exists and !."""

    key: str
    op: LabelOp
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        if self.op in ("!=", "notin"):
            return not present or labels[self.key] not in self.values
        return present if self.op == "exists" else not present

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        return f"{self.key} {self.op} ({','.join(self.values)})"


def _requirement(key: str, op: LabelOp, values: Iterable[str]) -> Requirement:
    """A validated requirement; the single place the per-operator rules live."""
    validate_label_key(key)
    vals = tuple(sorted(set(values)))
    if op in ("=", "!=") and len(vals) != 1:
        raise SelectorError(f"invalid requirement for {key!r}: {op!r} takes exactly one value")
    if op in ("in", "notin") and not vals:
        raise SelectorError(f"invalid requirement for {key!r}: the values of 'in' and 'notin' "
                            "can't be empty")
    if op in ("exists", "!") and vals:
        raise SelectorError(f"invalid requirement for {key!r}: exists and does-not-exist "
                            "take no values")
    for value in vals:
        validate_label_value(value)
    return Requirement(key, op, vals)


class LabelSelector:
    """An immutable AND of requirements, or the selector that matches nothing."""

    __slots__ = ("_requirements", "_nothing")

    def __init__(self, requirements: Iterable[Requirement] = (), *, _nothing: bool = False) -> None:
        self._requirements = tuple(sorted(requirements, key=lambda r: r.key))
        self._nothing = _nothing

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def nothing(cls) -> LabelSelector:
        return cls(_nothing=True)

    @property
    def requirements(self) -> tuple[Requirement, ...]:
        return self._requirements

    @property
    def empty(self) -> bool:
        """True when the selector matches every object (no requirements)."""
        return not self._nothing and not self._requirements

    @property
    def matches_nothing(self) -> bool:
        return self._nothing

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self._nothing:
            return False
        return all(r.matches(labels) for r in self._requirements)

    def __str__(self) -> str:
        return "<nothing>" if self._nothing else ",".join(str(r) for r in self._requirements)

    def __repr__(self) -> str:
        return f"LabelSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelSelector):
            return NotImplemented
        return (self._nothing, self._requirements) == (other._nothing, other._requirements)

    def __hash__(self) -> int:
        return hash((self._nothing, self._requirements))


Selector = LabelSelector

# --- label selector text -------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(!=|==|=|!|,|\(|\))|([^\s!=,()]+))")
_SYMBOLS = frozenset({"!=", "==", "=", "!", ",", "(", ")"})


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        assert match is not None  # every non-space character starts some token
        tokens.append(match.group(1) or match.group(2))
        pos = match.end()
    return tokens


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def error(self, detail: str) -> SelectorError:
        return SelectorError(f"invalid label selector {self.text!r}: {detail}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.pos += 1
        return token

    def word(self, what: str) -> str:
        after = f"after {self.tokens[self.pos - 1]!r}" if self.pos else "at the start"
        token = self.take()
        if token is None or token in _SYMBOLS:
            found = "the end" if token is None else repr(token)
            raise self.error(f"expected {what} {after}, found {found}")
        return token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while self.peek() is not None:
            requirements.append(self.requirement())
            token = self.take()
            if token not in (None, ","):
                raise self.error(f"expected ',' or the end after {str(requirements[-1])!r}, "
                                 f"found {token!r}")
            if token == "," and self.peek() is None:
                raise self.error("a trailing ',' must be followed by a requirement")
        return requirements

    def build(self, key: str, op: LabelOp, values: Iterable[str]) -> Requirement:
        try:
            return _requirement(key, op, values)
        except SelectorError as err:
            raise self.error(str(err)) from None

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            return self.build(self.word("a label key"), "!", ())
        key = self.word("a label key")
        op = self.peek()
        if op is None or op == ",":
            return self.build(key, "exists", ())
        self.take()
        if op in ("=", "==", "!="):
            value = "" if self.peek() in (None, ",") else self.word("a value")
            return self.build(key, "!=" if op == "!=" else "=", [value])
        if op in ("in", "notin"):
            return self.build(key, "in" if op == "in" else "notin", self.value_set(op))
        raise self.error(f"expected an operator (=, ==, !=, in, notin) after {key!r}, found {op!r}")

    def value_set(self, op: str) -> list[str]:
        if self.take() != "(":
            raise self.error(f"expected '(' after {op!r}")
        values: list[str] = []
        expect_value = True
        while True:
            token = self.take()
            if token is None:
                raise self.error(f"missing ')' after {op!r} values")
            if token == ")":
                if values and expect_value:
                    values.append("")  # "(a,)" ends with an empty value, as Kubernetes reads it
                return values
            if token == ",":
                if expect_value:
                    values.append("")
                expect_value = True
            elif expect_value and token not in _SYMBOLS:
                values.append(token)
                expect_value = False
            else:
                raise self.error(f"unexpected {token!r} in the values of {op!r}")


def parse_label_selector(text: str) -> LabelSelector:
    """Parse Kubernetes' label selector syntax; "" (or only whitespace) matches everything."""
    return LabelSelector(_LabelParser(text).parse())


def from_set(labels: Mapping[str, str]) -> LabelSelector:
    """Equality on every pair (ReplicationController's and Service's selectors). An empty map
    gives the selector that matches everything; callers for whom "no selector" means "select
    nothing" (a Service without a selector) must check for emptiness first."""
    return LabelSelector(_requirement(k, "=", [v]) for k, v in labels.items())


_PROTO_OPS: dict[str, LabelOp] = {"In": "in", "NotIn": "notin", "Exists": "exists",
                                  "DoesNotExist": "!"}


def from_label_selector_proto(selector: meta_pb2.LabelSelector | None) -> LabelSelector:
    """matchLabels AND matchExpressions. None (no selector) matches nothing; an empty selector
    matches everything, as Kubernetes' LabelSelectorAsSelector."""
    if selector is None:
        return LabelSelector.nothing()
    try:
        requirements = [_requirement(k, "=", [v]) for k, v in selector.match_labels.items()]
    except SelectorError as err:
        raise SelectorError(f"matchLabels: {err}") from None
    for i, expr in enumerate(selector.match_expressions):
        op = _PROTO_OPS.get(expr.operator)
        if op is None:
            raise SelectorError(f"matchExpressions[{i}].operator: {expr.operator!r} is not a valid "
                                "label selector operator (In, NotIn, Exists, DoesNotExist)")
        try:
            requirements.append(_requirement(expr.key, op, expr.values))
        except SelectorError as err:
            raise SelectorError(f"matchExpressions[{i}]: {err}") from None
    return LabelSelector(requirements)


# --- field selectors -----------------------------------------------------------------------

class FieldRequirement(NamedTuple):
    key: str
    op: FieldOp
    value: str


_SCALAR_TYPES = {
    FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SFIXED64,
}


@functools.lru_cache(maxsize=4096)
def field_path(descriptor: Descriptor, key: str) -> tuple[FieldDescriptor, ...]:
    """The fields a dotted JSON path walks, ending at a scalar; SelectorError otherwise.
    Cached: watch filters resolve the same few paths for every event."""
    path: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for part in key.split("."):
        fd = None
        if current is not None:
            fd = next((f for f in current.fields if part in (f.json_name, f.name)), None)
        if fd is None or fd.is_repeated:
            raise SelectorError(f"field label not supported: {key}")
        path.append(fd)
        current = fd.message_type
    if path[-1].type not in _SCALAR_TYPES:
        raise SelectorError(f"field label not supported: {key}")
    return tuple(path)


def field_value(obj: Message, key: str) -> str:
    """The string form of the scalar at a dotted JSON path (`spec.nodeName`) of obj."""
    value: object = obj
    for fd in field_path(obj.DESCRIPTOR, key):
        value = getattr(value, fd.name)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _unescape(text: str, whole: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            if nxt not in ("\\", ",", "="):
                raise SelectorError(f"invalid field selector {whole!r}: invalid escape sequence "
                                    f"'\\{nxt}' (escape only \\, ',' and '=')")
            ch = nxt
        out.append(ch)
    return "".join(out)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _field_term(term: str, whole: str) -> FieldRequirement:
    """Split at the first unescaped operator, trying != before == before = at each position."""
    i = 0
    while i < len(term):
        if term[i] == "\\":
            i += 2
            continue
        for token, op in (("!=", "!="), ("==", "="), ("=", "=")):
            if term.startswith(token, i):
                key = term[:i].strip()
                if not key:
                    raise SelectorError(f"invalid field selector {whole!r}: missing key in {term!r}")
                value = _unescape(term[i + len(token):], whole)
                return FieldRequirement(key, op, value)  # type: ignore[arg-type]
        i += 1
    raise SelectorError(f"invalid field selector {whole!r}: can't understand {term!r} "
                        "(expected key=value, key==value or key!=value)")


@dataclass(frozen=True)
class FieldSelector:
    """An AND of field requirements; no requirements matches everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def exact(self, key: str) -> str | None:
        """The value a `key=value` term requires, if any (for indexed lookups: spec.nodeName)."""
        return next((r.value for r in self.requirements if r.key == key and r.op == "="), None)

    def validate(self, descriptor: Descriptor) -> None:
        """SelectorError naming the first key that is not a scalar field of the message."""
        for r in self.requirements:
            field_path(descriptor, r.key)

    def matches(self, obj: Message) -> bool:
        """All requirements hold; SelectorError when a key is not a field of obj."""
        for r in self.requirements:
            equal = field_value(obj, r.key) == r.value
            if equal != (r.op == "="):
                return False
        return True

    def __str__(self) -> str:
        return ",".join(f"{r.key}{r.op}{_escape(r.value)}" for r in self.requirements)


def parse_field_selector(text: str) -> FieldSelector:
    """Parse `k=v,k==v,k!=v`; empty terms are skipped; "" matches everything."""
    terms = [t for t in _split_unescaped(text, ",") if t.strip()]
    return FieldSelector(tuple(_field_term(t, text) for t in terms))
