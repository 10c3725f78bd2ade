"""Pod facts that the API server, the fake API and the node agent must compute alike."""
from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

DEFAULT_TERMINATION_GRACE = 30  # Kubernetes' default terminationGracePeriodSeconds


def termination_grace(spec: Any) -> int:
    """A PodSpec's terminationGracePeriodSeconds, or Kubernetes' default when unset."""
    if spec.HasField("termination_grace_period_seconds"):
        return int(spec.termination_grace_period_seconds)
    return DEFAULT_TERMINATION_GRACE


def _bound_pod(obj: Message) -> bool:
    return obj.DESCRIPTOR.name == "Pod" and bool(obj.spec.node_name)  # type: ignore[attr-defined]


def deletion_grace(obj: Message, asked: int | None) -> int:
    """Seconds a deletion of `obj` waits: only a pod bound to a node waits (for its agent to stop
    it), `asked` when given (at least 0), else its terminationGracePeriodSeconds."""
    if not _bound_pod(obj):
        return 0
    return max(asked, 0) if asked is not None else termination_grace(obj.spec)  # type: ignore[attr-defined]


def awaiting_grace(obj: Message) -> bool:
    """A bound pod being deleted with a grace period: it stays until its agent deletes it."""
    return _bound_pod(obj) and obj.metadata.deletion_grace_period_seconds > 0  # type: ignore[attr-defined]
