"""Field paths and field errors, printed exactly as Kubernetes' apimachinery prints them.

A `Path` names a field the way Kubernetes' error messages do: JSON field names joined by ".",
list indexes as "[0]" and map keys as "[cpu]" (`spec.containers[0].resources.limits[cpu]`).

A `FieldError` is one problem at one path. `str()` gives Kubernetes' text:

    <path>: <Type>[: <value>][: <detail>]

- the type words are Kubernetes': "Required value", "Invalid value", "Unsupported value",
  "Duplicate value", "Not found", "Forbidden", "Too long", "Too many";
- Required, Forbidden and Too long never print the value (Kubernetes omits it);
- values print as Go's fmt does in Kubernetes' ErrorBody: strings quoted like Go's %q, numbers
  and booleans bare, None as `null`, string maps and lists as Go literals
  (`map[string]string{"app":"x"}`, `[]string{"a", "b"}`), and a `GoLiteral` verbatim (for the
  struct values Kubernetes prints with %#v).

`ErrorList` is a list of FieldErrors with one constructor method per type, so validators read
like Kubernetes' (`errs.required(path.child("image"))`). Invariant: a FieldError is immutable
and its text depends only on its fields.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

REQUIRED = "Required value"
INVALID = "Invalid value"
NOT_SUPPORTED = "Unsupported value"
DUPLICATE = "Duplicate value"
NOT_FOUND = "Not found"
FORBIDDEN = "Forbidden"
TOO_LONG = "Too long"
TOO_MANY = "Too many"

# Types whose message never carries the offending value (apimachinery's ErrorBody).
_VALUE_OMITTED = frozenset({REQUIRED, FORBIDDEN, TOO_LONG})


class Path:
    """An immutable field path; each step returns a new Path."""

    __slots__ = ("_text",)

    def __init__(self, text: str = "") -> None:
        self._text = text

    def child(self, *names: str) -> Path:
        text = self._text
        for name in names:
            text = f"{text}.{name}" if text else name
        return Path(text)

    def index(self, i: int) -> Path:
        return Path(f"{self._text}[{i}]")

    def key(self, k: str) -> Path:
        return Path(f"{self._text}[{k}]")

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Path({self._text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Path) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)


ROOT = Path()


@dataclass(frozen=True)
class GoLiteral:
    """A value already rendered as Go's %#v would render it (printed verbatim)."""

    text: str


def go_quote(text: str) -> str:
    """`text` quoted as Go's strconv.Quote (%q) does: \\" \\\\ \\n escaped, printable kept."""
    named = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n",
             "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    out = []
    for ch in text:
        code = ord(ch)
        if ch in named:
            out.append(named[ch])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def go_string_map(values: Mapping[str, str]) -> str:
    """A map[string]string as %#v prints it: keys sorted; an empty map prints as Go's nil map
    (protobuf cannot tell an absent map from an empty one, and absent is the common case)."""
    if not values:
        return "map[string]string(nil)"
    inner = ", ".join(f"{go_quote(k)}:{go_quote(values[k])}" for k in sorted(values))
    return "map[string]string{" + inner + "}"


def go_string_list(values: Sequence[str]) -> str:
    if not values:
        return "[]string(nil)"
    return "[]string{" + ", ".join(go_quote(v) for v in values) + "}"


def go_value(value: object) -> str:
    """How Kubernetes' ErrorBody prints a bad value."""
    if value is None:
        return "null"
    if isinstance(value, GoLiteral):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, Mapping):
        return go_string_map({str(k): str(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return go_string_list([str(v) for v in value])
    return str(value)


@dataclass(frozen=True)
class FieldError:
    """One problem: where, what kind, the offending value and a detail for people."""

    path: Path
    type: str
    value: object = None
    detail: str = ""

    def __str__(self) -> str:
        body = self.type if self.type in _VALUE_OMITTED else f"{self.type}: {go_value(self.value)}"
        if self.detail:
            body += f": {self.detail}"
        return f"{self.path}: {body}"


class ErrorList(list[FieldError]):
    """Every problem found, in the order found. The constructors mirror apimachinery's."""

    def required(self, path: Path, detail: str = "") -> None:
        self.append(FieldError(path, REQUIRED, None, detail))

    def invalid(self, path: Path, value: object, detail: str) -> None:
        self.append(FieldError(path, INVALID, value, detail))

    def invalid_each(self, path: Path, value: object, details: Iterable[str]) -> None:
        """One Invalid per message of a name check (Kubernetes reports each separately)."""
        for detail in details:
            self.invalid(path, value, detail)

    def not_supported(self, path: Path, value: object, supported: Sequence[str]) -> None:
        detail = "supported values: " + ", ".join(go_quote(v) for v in supported) if supported else ""
        self.append(FieldError(path, NOT_SUPPORTED, value, detail))

    def duplicate(self, path: Path, value: object, detail: str = "") -> None:
        self.append(FieldError(path, DUPLICATE, value, detail))

    def not_found(self, path: Path, value: object) -> None:
        self.append(FieldError(path, NOT_FOUND, value))

    def forbidden(self, path: Path, detail: str) -> None:
        self.append(FieldError(path, FORBIDDEN, None, detail))

    def too_long(self, path: Path, max_bytes: int) -> None:
        unit = "byte" if max_bytes == 1 else "bytes"
        self.append(FieldError(path, TOO_LONG, None, f"may not be more than {max_bytes} {unit}"))

    def too_many(self, path: Path, actual: int, maximum: int) -> None:
        unit = "item" if maximum == 1 else "items"
        self.append(FieldError(path, TOO_MANY, actual, f"must have at most {maximum} {unit}"))

    def nonnegative(self, path: Path, value: int) -> None:
        """Kubernetes' ValidateNonnegativeField."""
        if value < 0:
            self.invalid(path, value, "must be greater than or equal to 0")

    def immutable(self, path: Path, new: object, old: object) -> None:
        """Kubernetes' ValidateImmutableField: the new value is the one printed."""
        if new != old:
            self.invalid(path, new, "field is immutable")

    def messages(self) -> list[str]:
        return [str(e) for e in self]
