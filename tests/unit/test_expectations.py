"""Expectations: a controller waits for its own creates and deletes to show up in its cache."""
from __future__ import annotations

from controlplane.client.expectations import EXPECTATIONS_TTL, Expectations
from kvstore.clock import FakeClock


def test_no_record_is_satisfied() -> None:
    assert Expectations(FakeClock()).satisfied("default/web")


def test_creations_must_all_be_observed() -> None:
    e = Expectations(FakeClock())
    e.expect_creations("default/web", 3)
    assert not e.satisfied("default/web") and e.pending("default/web") == (3, 0)
    e.creation_observed("default/web")
    e.creation_observed("default/web")
    assert not e.satisfied("default/web")
    e.creation_observed("default/web")
    assert e.satisfied("default/web") and e.pending("default/web") == (0, 0)
    e.creation_observed("default/web")  # a late extra observation does not break anything
    assert e.satisfied("default/web") and e.pending("default/web") == (0, 0)
    assert e.satisfied("default/other")


def test_deletions_count_once_per_expected_uid() -> None:
    e = Expectations(FakeClock())
    e.expect_deletions("ns/rs", ["u1", "u2"])
    assert e.pending("ns/rs") == (0, 2)
    e.deletion_observed("ns/rs", "u1")
    e.deletion_observed("ns/rs", "u1")       # the same deletion seen twice (watch, relist)
    e.deletion_observed("ns/rs", "stranger")  # a pod we did not delete
    assert not e.satisfied("ns/rs") and e.pending("ns/rs") == (0, 1)
    e.deletion_observed("ns/rs", "u2")
    assert e.satisfied("ns/rs")


def test_expectations_expire_after_five_minutes() -> None:
    clock = FakeClock()
    e = Expectations(clock)
    assert EXPECTATIONS_TTL == 300.0
    e.expect_creations("k", 2)
    clock.advance(300.0)
    assert not e.satisfied("k") and not e.expired("k")
    clock.advance(0.001)
    assert e.expired("k") and e.satisfied("k")  # a lost event must not stall the controller


def test_setting_again_replaces_the_record_and_restarts_the_ttl() -> None:
    clock = FakeClock()
    e = Expectations(clock)
    e.expect_creations("k", 1)
    clock.advance(299)
    e.expect_deletions("k", ["u"])
    clock.advance(10)
    assert e.pending("k") == (0, 1) and not e.satisfied("k")


def test_lower_and_delete() -> None:
    e = Expectations(FakeClock())
    e.expect_creations("k", 5)
    e.lower("k", adds=5)  # the controller skipped the creates (e.g. a slow-start batch failed)
    assert e.satisfied("k")
    e.expect_creations("k", 1)
    e.delete("k")
    assert e.pending("k") is None and e.satisfied("k")
    e.lower("missing", adds=1)  # no record: nothing to lower
    e.creation_observed("missing")
    e.deletion_observed("missing", "u")
    assert e.pending("missing") is None
