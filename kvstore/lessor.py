"""The leader's lease countdowns (etcd's lessor), kept outside the replicated state.

Which leases exist and their granted TTLs are replicated (`MVCCStore.leases`); *when* a lease
expires is decided by the current leader alone, from its own clock, and carried out by proposing a
`LeaseRevoke` through Raft. A new leader restarts every lease's countdown from its full TTL (as
etcd does), so a lease never expires early because of a leader change, only possibly late.

Pure: time comes from a `Clock`; the replica's driver calls `expired()` periodically.
"""
from __future__ import annotations

from kvstore.clock import Clock

# etcd's minimum TTL for its default 100 ms heartbeat / 1 s election timeout.
MIN_TTL = 2


def effective_ttl(requested: int) -> int:
    return max(int(requested), MIN_TTL)


class Lessor:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.deadlines: dict[int, float] = {}
        self.ttls: dict[int, int] = {}
        self.revoking: set[int] = set()

    def promote(self, leases: dict[int, int]) -> None:
        """This replica became leader: every known lease gets its full TTL from now."""
        now = self.clock.now()
        self.ttls = dict(leases)
        self.deadlines = {lease_id: now + ttl for lease_id, ttl in leases.items()}
        self.revoking.clear()

    def demote(self) -> None:
        self.deadlines.clear()
        self.ttls.clear()
        self.revoking.clear()

    def granted(self, lease_id: int, ttl: int) -> None:
        self.ttls[lease_id] = ttl
        self.deadlines[lease_id] = self.clock.now() + ttl

    def forget(self, lease_id: int) -> None:
        self.deadlines.pop(lease_id, None)
        self.ttls.pop(lease_id, None)
        self.revoking.discard(lease_id)

    def renew(self, lease_id: int) -> int | None:
        """Restart the countdown and return the TTL granted; None if this lessor does not know the
        lease. A lease already past its deadline is not renewed: 0 (etcd refuses to renew an
        expired lease and answers the keep-alive as for a missing one, with TTL 0)."""
        ttl = self.ttls.get(lease_id)
        if ttl is None:
            return None
        now = self.clock.now()
        if lease_id in self.revoking or self.deadlines[lease_id] <= now:
            return 0
        self.deadlines[lease_id] = now + ttl
        return ttl

    def remaining(self, lease_id: int) -> int | None:
        """Whole seconds left, truncated toward zero as etcd does (so 59 just after a 60 s grant,
        and negative once overdue by a second or more), or None if unknown."""
        deadline = self.deadlines.get(lease_id)
        if deadline is None:
            return None
        return int(deadline - self.clock.now())

    def expired(self) -> list[int]:
        """Leases past their deadline not yet being revoked; marks them as being revoked."""
        now = self.clock.now()
        due = sorted(i for i, d in self.deadlines.items() if d <= now and i not in self.revoking)
        self.revoking.update(due)
        return due

    def revoke_failed(self, lease_id: int) -> None:
        """The revoke did not commit: try again at the next check."""
        self.revoking.discard(lease_id)
