"""Resource quantities with Kubernetes' resource.Quantity semantics: "100m", "1.5Gi", "1e3".

Grammar (Kubernetes'): `<sign>? <digits>? ( "." <digits>? )? <suffix>` with at least one digit,
where the suffix is one of
- decimal SI: n u m "" k M G T P E (powers of 1000; note "1E" is exa, and "K" is not a suffix),
- binary SI:  Ki Mi Gi Ti Pi Ei (powers of 1024),
- a decimal exponent: e<int> or E<int> ("1e3", "5E-3").
No whitespace is allowed. Negative quantities parse ("-1"); validators reject them where a
resource amount must be positive, so that arithmetic (free = capacity - used) stays closed.

Invariants:
- A `Quantity` is exact: an integer count of nano-units (10^-9). Parsing rounds values finer
  than 1n *away from zero*, as Kubernetes does ("if you ask for some, you get some"), so
  "0.1n" is 1n. There are no floats anywhere.
- Equality, ordering and hashing use the value only: Quantity("1Gi") == Quantity("1073741824").
  The remembered format (the kind of suffix it was written with) only shapes `str()`.
- `str()` is Kubernetes' canonical form: the largest suffix of the remembered kind that keeps
  the mantissa an integer ("1.5" -> "1500m", "1.5Gi" -> "1536Mi", "1000" -> "1k"); binary
  quantities below 1024 or with a fraction print as decimal SI. `parse(str(q)) == q` always.
- `milli_value()` and `value()` round away from zero, as Kubernetes' MilliValue/Value do.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

Format = Literal["DecimalSI", "BinarySI", "DecimalExponent"]
DECIMAL_SI: Format = "DecimalSI"
BINARY_SI: Format = "BinarySI"
DECIMAL_EXPONENT: Format = "DecimalExponent"

NANO = 10**9
# Kubernetes refuses magnitudes above an int64; checked on parse only, so sums may exceed it.
MAX_UNITS = 2**63 - 1

_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_BY_EXPONENT = {e: s for s, e in _DECIMAL_SUFFIXES.items()}
_BINARY_BY_POWER = {p // 10: s for s, p in _BINARY_SUFFIXES.items()}

_QUANTITY = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(.*)", re.DOTALL)
_EXPONENT = re.compile(r"[eE]([+-]?[0-9]+)")
# Beyond this a decimal exponent cannot produce a value Kubernetes accepts; bounding it keeps a
# hostile "1e999999999" from costing a huge integer power.
_MAX_EXPONENT = 40


def _round_away(value: Fraction) -> int:
    """The integer nearest to value away from zero when value has a fraction."""
    magnitude = -(-abs(value.numerator) // value.denominator)
    return magnitude if value >= 0 else -magnitude


@dataclass(frozen=True, order=True)
class Quantity:
    """An exact amount in nano-units; `format` is remembered for printing only."""

    nanos: int
    format: Format = field(default=DECIMAL_SI, compare=False)

    @classmethod
    def from_int(cls, units: int, format: Format = DECIMAL_SI) -> Quantity:
        """`units` whole units (bytes, cores, pods)."""
        return cls(units * NANO, format)

    @classmethod
    def from_milli(cls, millis: int) -> Quantity:
        """`millis` thousandths of a unit (millicores)."""
        return cls(millis * 10**6, DECIMAL_SI)

    def milli_value(self) -> int:
        """The value in thousandths, rounded away from zero (Kubernetes' MilliValue)."""
        return _round_away(Fraction(self.nanos, 10**6))

    def value(self) -> int:
        """The value in whole units, rounded away from zero (Kubernetes' Value)."""
        return _round_away(Fraction(self.nanos, NANO))

    def is_zero(self) -> bool:
        return self.nanos == 0

    def __add__(self, other: Quantity) -> Quantity:
        if not isinstance(other, Quantity):
            return NotImplemented
        # Kubernetes keeps the receiver's format unless the receiver is zero.
        return Quantity(self.nanos + other.nanos, other.format if self.nanos == 0 else self.format)

    def __sub__(self, other: Quantity) -> Quantity:
        if not isinstance(other, Quantity):
            return NotImplemented
        return Quantity(self.nanos - other.nanos, self.format)

    def __neg__(self) -> Quantity:
        return Quantity(-self.nanos, self.format)

    def __str__(self) -> str:
        if self.nanos == 0:
            return "0"
        fmt = self.format
        if fmt == BINARY_SI and (abs(self.nanos) < 1024 * NANO or self.nanos % NANO):
            fmt = DECIMAL_SI  # binary suffixes cannot show fractions, and "512" reads better than "0.5Ki"
        if fmt == BINARY_SI:
            return _binary_string(self.nanos // NANO)
        return _decimal_string(self.nanos, fmt)

    def __repr__(self) -> str:
        return f"Quantity({str(self)!r})"


def _binary_string(units: int) -> str:
    sign, mantissa, power = ("-" if units < 0 else ""), abs(units), 0
    while power < 6 and mantissa % 1024 == 0:
        mantissa //= 1024
        power += 1
    return f"{sign}{mantissa}{_BINARY_BY_POWER.get(power, '')}"


def _decimal_string(nanos: int, fmt: Format) -> str:
    sign, mantissa, exponent = ("-" if nanos < 0 else ""), abs(nanos), -9
    # Decimal SI stops at E (10^18); an exponent form can keep growing.
    while mantissa % 1000 == 0 and (fmt == DECIMAL_EXPONENT or exponent < 18):
        mantissa //= 1000
        exponent += 3
    if fmt == DECIMAL_EXPONENT:
        suffix = f"e{exponent}" if exponent else ""
    else:
        suffix = _DECIMAL_BY_EXPONENT[exponent]
    return f"{sign}{mantissa}{suffix}"


def _suffix_scale(suffix: str, text: str) -> tuple[Fraction, Format]:
    """The multiplier a suffix stands for, and the format it implies."""
    if suffix in _DECIMAL_SUFFIXES:
        return Fraction(10) ** _DECIMAL_SUFFIXES[suffix], DECIMAL_SI
    if suffix in _BINARY_SUFFIXES:
        return Fraction(2 ** _BINARY_SUFFIXES[suffix]), BINARY_SI
    match = _EXPONENT.fullmatch(suffix)
    if match is None:
        raise ValueError(f"invalid quantity {text!r}: unknown suffix {suffix!r} "
                         "(use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or e<exponent>)")
    exponent = int(match.group(1))
    if exponent > _MAX_EXPONENT:
        raise ValueError(f"invalid quantity {text!r}: too large (at most 2^63-1)")
    return Fraction(10) ** max(exponent, -_MAX_EXPONENT), DECIMAL_EXPONENT


def parse(text: str) -> Quantity:
    """Parse a quantity string; ValueError naming the text when it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"invalid quantity {text!r}: expected a string")
    match = _QUANTITY.fullmatch(text)
    if match is None or not (match.group(2) or match.group(3)):
        raise ValueError(f"invalid quantity {text!r}: expected a number with an optional suffix, "
                         "like 100m, 0.5, 128Mi or 1e3")
    sign, whole, frac, suffix = match.group(1), match.group(2), match.group(3) or "", match.group(4)
    scale, fmt = _suffix_scale(suffix, text)
    number = Fraction(int(whole or "0") * 10 ** len(frac) + int(frac or "0"), 10 ** len(frac))
    amount = number * scale
    if abs(amount) > MAX_UNITS:
        raise ValueError(f"invalid quantity {text!r}: too large (at most 2^63-1)")
    nanos = _round_away(amount * NANO)
    if fmt == BINARY_SI and 0 < amount < 1:
        fmt = DECIMAL_SI  # as Kubernetes: a fraction of a byte has no binary spelling
    return Quantity(-nanos if sign == "-" else nanos, fmt)


def parse_cpu_millis(text: str) -> int:
    """A CPU quantity in millicores, rounded up: "100m" -> 100, "0.5" -> 500, "2" -> 2000."""
    return parse(text).milli_value()


def parse_bytes(text: str) -> int:
    """A memory/storage quantity in bytes, rounded up: "1Ki" -> 1024, "1.5k" -> 1500."""
    return parse(text).value()
