"""Expectations: what a controller is waiting to see in its cache before it acts again.

A controller that creates 3 pods must not create 3 more on its next sync just because its
informer has not delivered them yet. Kubernetes' ControllerExpectations solve that, and this is
the same idea (with UID tracking for deletions, as its UIDTrackingControllerExpectations):

- before acting, `expect_creations(key, n)` / `expect_deletions(key, uids)` record what the
  controller is about to cause for its object `key`;
- its informer handlers call `creation_observed(key)` when an owned object appears and
  `deletion_observed(key, uid)` when one goes; a failed create or delete is also reported as
  observed (it will never show up), so the count still reaches zero;
- `sync(key)` acts only when `satisfied(key)`: nothing is expected any more, no record exists
  (a new controller object), or the record is older than `ttl` (5 minutes, as in Kubernetes) -
  a lost watch event must not stall a controller forever.

Invariants: counts never go below zero in effect (satisfied is `adds <= 0 and dels <= 0`); a
deletion counts once per UID (a UID not expected, or already observed, changes nothing); setting
expectations replaces the previous record and restarts its TTL. Times come from the injected
Clock. Not thread-safe by design: it lives on the controller's event loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from kvstore.clock import Clock, MonotonicClock

EXPECTATIONS_TTL = 300.0  # Kubernetes' ExpectationsTimeout


@dataclass
class Expectation:
    adds: int
    dels: int
    timestamp: float
    uids: set[str] = field(default_factory=set)  # objects whose deletion is awaited

    @property
    def fulfilled(self) -> bool:
        return self.adds <= 0 and self.dels <= 0


class Expectations:
    def __init__(self, clock: Clock | None = None, ttl: float = EXPECTATIONS_TTL) -> None:
        self.clock: Clock = clock or MonotonicClock()
        self.ttl = ttl
        self._records: dict[str, Expectation] = {}

    def expect_creations(self, key: str, count: int) -> None:
        """key's controller is about to create `count` objects (replaces any record)."""
        self._records[key] = Expectation(count, 0, self.clock.now())

    def expect_deletions(self, key: str, uids: Iterable[str]) -> None:
        """key's controller is about to delete the objects with these UIDs (replaces any record)."""
        wanted = set(uids)
        self._records[key] = Expectation(0, len(wanted), self.clock.now(), wanted)

    def creation_observed(self, key: str) -> None:
        """One expected object appeared (or its create failed)."""
        record = self._records.get(key)
        if record is not None:
            record.adds -= 1

    def deletion_observed(self, key: str, uid: str) -> None:
        """The object with this UID went away (or its delete failed); counted once per UID."""
        record = self._records.get(key)
        if record is not None and uid in record.uids:
            record.uids.discard(uid)
            record.dels -= 1

    def lower(self, key: str, adds: int = 0, dels: int = 0) -> None:
        """Stop expecting `adds` creations and `dels` untracked deletions (e.g. calls skipped)."""
        record = self._records.get(key)
        if record is not None:
            record.adds -= adds
            record.dels -= dels

    def satisfied(self, key: str) -> bool:
        """True when key's controller may act: no record, all observed, or the record expired."""
        record = self._records.get(key)
        if record is None:
            return True
        return record.fulfilled or self.expired(key)

    def expired(self, key: str) -> bool:
        record = self._records.get(key)
        return record is not None and self.clock.now() - record.timestamp > self.ttl

    def pending(self, key: str) -> tuple[int, int] | None:
        """(creations, deletions) still expected for key, or None when there is no record."""
        record = self._records.get(key)
        return None if record is None else (max(record.adds, 0), max(record.dels, 0))

    def delete(self, key: str) -> None:
        """Forget key (its controller object was deleted)."""
        self._records.pop(key, None)
