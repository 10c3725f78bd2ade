"""Table tests for controlplane.client.quantity against Kubernetes' documented semantics."""
from __future__ import annotations

import pytest

from controlplane.client.quantity import (
    Quantity, parse, parse_bytes, parse_cpu_millis,
)

# text -> (milli_value, value, canonical str); values from Kubernetes' docs ("Resource units":
# 0.1 CPU = 100m, 1Mi = 2^20, 1M = 10^6, 1E is exa) and resource.Quantity's canonical form
# ("1.5 will be serialized as 1500m", "1.5Gi will be serialized as 1536Mi").
TABLE = [
    ("100m", 100, 1, "100m"),
    ("0.1", 100, 1, "100m"),
    ("0.5", 500, 1, "500m"),
    (".5", 500, 1, "500m"),
    ("5.", 5000, 5, "5"),
    ("1", 1000, 1, "1"),
    ("+1", 1000, 1, "1"),
    ("-1", -1000, -1, "-1"),
    ("1.5", 1500, 2, "1500m"),
    ("2", 2000, 2, "2"),
    ("1000", 1_000_000, 1000, "1k"),
    ("1500", 1_500_000, 1500, "1500"),
    ("1k", 1_000_000, 1000, "1k"),
    ("1000k", 10**9, 10**6, "1M"),
    ("1M", 10**9, 10**6, "1M"),
    ("129M", 129 * 10**9, 129 * 10**6, "129M"),
    ("1G", 10**12, 10**9, "1G"),
    ("1E", 10**21, 10**18, "1E"),
    ("1e3", 1_000_000, 1000, "1e3"),
    ("1E3", 1_000_000, 1000, "1e3"),
    ("129e6", 129 * 10**9, 129 * 10**6, "129e6"),
    ("1500e-3", 1500, 2, "1500e-3"),
    ("1000e-3", 1000, 1, "1"),
    ("128974848", 128974848000, 128974848, "128974848"),
    ("128974848000m", 128974848000, 128974848, "128974848"),
    ("500Ki", 512000 * 1000, 512000, "500Ki"),
    ("1Ki", 1024000, 1024, "1Ki"),
    ("1024Ki", 1024**2 * 1000, 1024**2, "1Mi"),
    ("128Mi", 128 * 1024**2 * 1000, 128 * 1024**2, "128Mi"),
    ("123Mi", 123 * 1024**2 * 1000, 123 * 1024**2, "123Mi"),
    ("1.5Gi", 1536 * 1024**2 * 1000, 1536 * 1024**2, "1536Mi"),
    ("1Ei", 2**60 * 1000, 2**60, "1Ei"),
    ("0.5Ki", 512000, 512, "512"),  # below 1024, a binary quantity prints as decimal
    ("1.5Ki", 1536000, 1536, "1536"),
    ("1n", 1, 1, "1n"),
    ("0.1n", 1, 1, "1n"),  # finer than a nano rounds up to 1n
    ("1u", 1, 1, "1u"),
    ("0.1m", 1, 1, "100u"),
    ("1.0001m", 2, 1, "1000100n"),
    ("0", 0, 0, "0"),
    ("0Gi", 0, 0, "0"),
    ("-0.5", -500, -1, "-500m"),
    ("-1.5Gi", -1536 * 1024**2 * 1000, -1536 * 1024**2, "-1536Mi"),
]


@pytest.mark.parametrize("text,millis,units,canonical", TABLE)
def test_parse_table(text: str, millis: int, units: int, canonical: str) -> None:
    q = parse(text)
    assert q.milli_value() == millis
    assert q.value() == units
    assert str(q) == canonical
    assert parse(str(q)) == q  # the canonical form round-trips


@pytest.mark.parametrize("text", [
    "", " 1", "1 ", "1K", "1k ", "abc", "m", ".", "+", "-", "1.2.3", "1e", "1e3.5", "1Mb",
    "1mi", "1 Gi", "--1", "1e1000", "99999999999999999999", "\u0661\u0660m", "1e\u0663",
])
def test_invalid(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse(text)
    assert repr(text) in str(err.value)


def test_non_string_is_rejected() -> None:
    with pytest.raises(ValueError):
        parse(1)  # type: ignore[arg-type]


def test_equality_ignores_format_and_hash_agrees() -> None:
    assert parse("1Gi") == parse("1073741824")
    assert parse("1k") == parse("1000") == parse("1e3")
    assert parse("0.5") == parse("500m")
    assert len({parse("1Gi"), parse("1073741824"), parse("1024Mi")}) == 1


def test_ordering() -> None:
    values = [parse(t) for t in ("1Gi", "100m", "1G", "-1", "0", "1")]
    assert [str(v) for v in sorted(values)] == ["-1", "0", "100m", "1", "1G", "1Gi"]
    assert parse("999m") < parse("1") <= parse("1000m")


def test_arithmetic_is_exact() -> None:
    total = Quantity.from_int(0)
    for _ in range(10):
        total = total + parse("0.1")
    assert total == parse("1")
    assert str(parse("1Gi") - parse("512Mi")) == "512Mi"
    assert str(parse("100m") + parse("200m")) == "300m"
    assert str(parse("1") - parse("2")) == "-1"
    assert str(Quantity.from_int(0) + parse("1Gi")) == "1Gi"  # a zero receiver takes the format
    assert str(-parse("1Gi")) == "-1Gi"


def test_constructors() -> None:
    assert Quantity.from_milli(250) == parse("250m")
    assert Quantity.from_int(3) == parse("3")
    assert parse("0").is_zero() and not parse("1n").is_zero()


def test_rounding_away_from_zero() -> None:
    assert parse("1.0001").milli_value() == 1001
    assert parse("-1.0001").milli_value() == -1001
    assert parse("1.2").value() == 2
    assert parse("-1.2").value() == -2


@pytest.mark.parametrize("text,millis", [("100m", 100), ("0.5", 500), ("2", 2000), ("1.5", 1500),
                                         ("0.0001", 1), ("250m", 250)])
def test_parse_cpu_millis(text: str, millis: int) -> None:
    assert parse_cpu_millis(text) == millis


@pytest.mark.parametrize("text,n", [("1Ki", 1024), ("128Mi", 134217728), ("1.5k", 1500),
                                    ("1G", 10**9), ("1Gi", 2**30), ("100m", 1), ("0", 0)])
def test_parse_bytes(text: str, n: int) -> None:
    assert parse_bytes(text) == n


def test_repr_shows_canonical_text() -> None:
    assert repr(parse("1.5Gi")) == "Quantity('1536Mi')"
