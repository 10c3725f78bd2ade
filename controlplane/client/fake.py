"""An in-memory API for controller, informer and leader-election tests: `FakeApi`.

It answers the ApiClient calls controllers use (create, get, list, update, update_status, patch,
delete, bind, watch) with the same signatures, return types and error classes, over dicts in
this process. What it keeps of the API server's semantics:

- one revision counter, like the store's: every write bumps it and becomes the object's
  metadata.resourceVersion; list returns the current revision;
- create fills uid (deterministic: 00000000-0000-0000-0000-000000000001, ...), generation 1,
  creationTimestamp, a generateName suffix; namespaced kinds default to namespace "default";
- update is optimistic on metadata.resourceVersion (ConflictError when stale; empty means
  unconditional), keeps status for kinds with a status subresource, bumps generation when a
  spec field changed, and returns the object unchanged (same revision) when nothing changed;
  update_status changes only status; patch is a JSON merge patch (then update or update_status);
- delete honours uid/resourceVersion preconditions, finalizers (the object stays with a
  deletionTimestamp until an update removes the last one), Orphan/Foreground propagation
  finalizers, and a bound pod's grace period; otherwise the object goes at once. Nothing
  cascades: garbage collection is a controller's job;
- bind sets a pending pod's spec.nodeName once and its PodScheduled condition;
- watch replays events after a resourceVersion from a bounded history (GoneError when older:
  the caller relists), or starts with the current objects as ADDED for "" / "0"; selectors turn
  MODIFIED into ADDED/DELETED as an object enters or leaves them, as the real watch cache does.

What it adds for tests: `actions` records every call as (verb, resource, namespace, name) -
list and watch with name "" - even calls that fail; `fail(verb, resource, error, times)` makes
the next matching calls raise; `break_watches(error)` ends every open watch (UnavailableError
by default, or GoneError), `end_watches()` ends them cleanly; `compact()` drops the event
history; `send_bookmarks()`; `seed(*objs)` stores objects without recording actions;
`stored(...)` reads without recording.

`FakeTimers` is simulated time for the asyncio code that sleeps (informers, leader election):
pass its `sleep` where they take one; `run_until(t)` moves a FakeClock from timer to timer,
letting every task run between steps, so minutes of leases and backoffs take milliseconds.

Objects handed out are copies; the fake never shares a message with its caller.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, TypeVar

import grpc
from google.protobuf.message import Message

from controlplane.client import codec, scheme, selectors
from controlplane.client.api import (AlreadyExistsError, ApiStatusError, ConflictError, GoneError,
                                     InvalidError, NotFoundError, ObjectList, UnavailableError,
                                     WatchEvent)
from controlplane.client.mergepatch import merge_patch
from controlplane.client.pods import awaiting_grace, deletion_grace
from controlplane.client.scheme import Kind
from controlplane.client.timeutil import FakeWallClock, WallClock, format_time
from kvstore.clock import FakeClock

M = TypeVar("M", bound=Message)
Action = tuple[str, str, str, str]  # (verb, resource, namespace, name)
WRITE_VERBS = frozenset({"create", "update", "update_status", "patch", "delete", "bind"})
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet


def copy_of(obj: M) -> M:
    out = type(obj)()
    out.CopyFrom(obj)
    return out


def _meta(obj: Message) -> Any:
    return obj.metadata  # type: ignore[attr-defined]


def _kind(resource: str | Kind) -> Kind:
    return resource if isinstance(resource, Kind) else scheme.by_resource(resource)


def _unavailable(message: str = "injected failure") -> ApiStatusError:
    return UnavailableError(grpc.StatusCode.UNAVAILABLE, message)


def _conflict(kind: Kind, name: str) -> ConflictError:
    return ConflictError(grpc.StatusCode.ABORTED,
                         f'Operation cannot be fulfilled on {kind.group_resource} "{name}": the object has '
                         "been modified; please apply your changes to the latest version and try again")


def _not_found(kind: Kind, name: str) -> NotFoundError:
    return NotFoundError(grpc.StatusCode.NOT_FOUND, f'{kind.group_resource} "{name}" not found')


@dataclass(frozen=True)
class _Event:
    type: str
    rev: int
    resource: str
    obj: Message
    prev: Message | None


@dataclass
class _Failure:
    verb: str
    resource: str
    name: str
    error: ApiStatusError
    times: int | None  # None: forever


@dataclass(eq=False)
class _Watcher:
    resource: str
    namespace: str
    labels: selectors.LabelSelector
    fields: selectors.FieldSelector
    bookmarks: bool
    queue: asyncio.Queue[WatchEvent | ApiStatusError | None] = field(default_factory=asyncio.Queue)

    def matches(self, obj: Message) -> bool:
        return self.labels.matches(_meta(obj).labels) and self.fields.matches(obj)

    def offer(self, ev: _Event) -> None:
        """Queue ev as this watch sees it (entering or leaving the selectors)."""
        if ev.resource != self.resource or (self.namespace and _meta(ev.obj).namespace != self.namespace):
            return
        now = self.matches(ev.obj)
        before = ev.prev is not None and self.matches(ev.prev)
        if ev.type == "DELETED":
            kind = "DELETED" if (now or before) else None
        elif now:
            kind = "MODIFIED" if before else "ADDED"
        else:
            kind = "DELETED" if before else None
        if kind is not None:
            obj = copy_of(ev.obj if now or ev.type == "DELETED" else ev.prev)  # type: ignore[arg-type]
            _meta(obj).resource_version = str(ev.rev)
            self.queue.put_nowait(WatchEvent(kind, obj))


class FakeApi:
    """In-memory stand-in for ApiClient; see the module docstring."""

    def __init__(self, clock: WallClock | None = None, history_size: int = 1000, seed: int = 0) -> None:
        self.clock: WallClock = clock or FakeWallClock()
        self.actions: list[Action] = []
        self.rev = 1
        self._objects: dict[tuple[str, str, str], Message] = {}
        self._history: deque[_Event] = deque(maxlen=history_size)
        self._floor = self.rev  # a watch from an older revision is Gone
        self._watchers: set[_Watcher] = set()
        self._failures: list[_Failure] = []
        self._uids = 0
        self._random = random.Random(seed)

    # ---- test controls ---------------------------------------------------------------------

    def fail(self, verb: str, resource: str = "*", error: ApiStatusError | None = None,
             times: int | None = 1, name: str = "*") -> None:
        """The next `times` calls of verb on resource (and name) raise error (None: forever)."""
        res = resource if resource == "*" else _kind(resource).resource
        self._failures.append(_Failure(verb, res, name, error or _unavailable(), times))

    def clear_failures(self) -> None:
        self._failures.clear()

    def writes(self) -> list[Action]:
        """The recorded actions that change state (no get/list/watch)."""
        return [a for a in self.actions if a[0] in WRITE_VERBS]

    def clear_actions(self) -> None:
        self.actions.clear()

    def seed(self, *objs: Message) -> list[Message]:
        """Store objects as if created, without recording actions; returns the stored copies."""
        return [self._create(_kind_of(o), _meta(o).namespace, o) for o in objs]

    def stored(self, resource: str | Kind, name: str, namespace: str = "") -> Message | None:
        """A copy of the stored object, or None; not recorded as an action."""
        kind = _kind(resource)
        obj = self._objects.get((kind.resource, self._ns(kind, namespace), name))
        return None if obj is None else copy_of(obj)

    def break_watches(self, error: ApiStatusError | None = None) -> None:
        """End every open watch with error (default: UnavailableError, a broken stream)."""
        for w in list(self._watchers):
            w.queue.put_nowait(error or _unavailable("watch stream broken (injected)"))
        self._watchers.clear()

    def end_watches(self) -> None:
        """End every open watch cleanly, as a server-side watch timeout does."""
        for w in list(self._watchers):
            w.queue.put_nowait(None)
        self._watchers.clear()

    def compact(self) -> None:
        """Forget the event history: watches from any earlier revision get GoneError."""
        self._history.clear()
        self._floor = self.rev

    def send_bookmarks(self) -> None:
        for w in self._watchers:
            if w.bookmarks:
                mark = scheme.by_resource(w.resource).message()
                _meta(mark).resource_version = str(self.rev)
                w.queue.put_nowait(WatchEvent("BOOKMARK", mark))

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    async def close(self) -> None:
        self.break_watches()

    # ---- plumbing --------------------------------------------------------------------------

    def _ns(self, kind: Kind, namespace: str) -> str:
        return (namespace or "default") if kind.namespaced else ""

    def _call(self, verb: str, kind: Kind, namespace: str, name: str) -> None:
        """Record the action, then raise an injected failure if one matches."""
        self.actions.append((verb, kind.resource, namespace, name))
        for f in self._failures:
            if f.verb == verb and f.resource in ("*", kind.resource) and f.name in ("*", name):
                if f.times is not None:
                    f.times -= 1
                    if f.times <= 0:
                        self._failures.remove(f)
                raise f.error

    def _emit(self, type_: str, kind: Kind, obj: Message, prev: Message | None) -> None:
        if len(self._history) == self._history.maxlen:
            self._floor = self._history[0].rev
        ev = _Event(type_, self.rev, kind.resource, copy_of(obj), prev)
        self._history.append(ev)
        for w in self._watchers:
            w.offer(ev)

    def _write(self, kind: Kind, obj: Message, prev: Message | None) -> Message:
        self.rev += 1
        stored = copy_of(obj)
        _meta(stored).resource_version = str(self.rev)
        m = _meta(stored)
        self._objects[(kind.resource, m.namespace, m.name)] = stored
        self._emit("ADDED" if prev is None else "MODIFIED", kind, stored, prev)
        return copy_of(stored)

    def _remove(self, kind: Kind, current: Message) -> Message:
        self.rev += 1
        m = _meta(current)
        del self._objects[(kind.resource, m.namespace, m.name)]
        gone = copy_of(current)
        _meta(gone).resource_version = str(self.rev)
        self._emit("DELETED", kind, gone, current)
        return copy_of(gone)

    def _current(self, kind: Kind, namespace: str, name: str) -> Message:
        obj = self._objects.get((kind.resource, self._ns(kind, namespace), name))
        if obj is None:
            raise _not_found(kind, name)
        return obj

    def _create(self, kind: Kind, namespace: str, obj: Message) -> Message:
        new = copy_of(obj)
        m = _meta(new)
        if kind.namespaced:
            m.namespace = m.namespace or namespace or "default"
        elif m.namespace:
            raise InvalidError(grpc.StatusCode.INVALID_ARGUMENT, f'{kind.qualified} "{m.name}": metadata.namespace: '
                               f"{kind.kind} is cluster-scoped and has no namespace")
        if not m.name and m.generate_name:
            m.name = m.generate_name + "".join(self._random.choice(_ALPHABET) for _ in range(5))
        if not m.name:
            raise InvalidError(grpc.StatusCode.INVALID_ARGUMENT, f'{kind.qualified} "": metadata.name: '
                               "Required value: name or generateName is required")
        if (kind.resource, m.namespace, m.name) in self._objects:
            raise AlreadyExistsError(grpc.StatusCode.ALREADY_EXISTS,
                                     f'{kind.group_resource} "{m.name}" already exists')
        self._uids += 1
        m.uid = m.uid or str(uuid.UUID(int=self._uids))
        m.generation = m.generation or 1
        m.creation_timestamp = m.creation_timestamp or format_time(self.clock.now())
        return self._write(kind, new, None)

    # ---- the ApiClient surface -------------------------------------------------------------

    async def create(self, obj: M, namespace: str = "", dry_run: bool = False) -> M:
        kind = _kind_of(obj)
        self._call("create", kind, self._ns(kind, namespace or _meta(obj).namespace), _meta(obj).name)
        return self._create(kind, namespace, obj)  # type: ignore[return-value]

    async def get(self, resource: str | Kind, name: str, namespace: str = "") -> Message:
        kind = _kind(resource)
        self._call("get", kind, self._ns(kind, namespace), name)
        return copy_of(self._current(kind, namespace, name))

    async def list(self, resource: str | Kind, namespace: str = "", label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "",
                   resource_version: str = "") -> ObjectList:
        kind = _kind(resource)
        ns = namespace if kind.namespaced else ""
        self._call("list", kind, ns, "")
        w = _Watcher(kind.resource, ns, *_selectors(kind, label_selector, field_selector), False)
        items = [copy_of(o) for (res, o_ns, _), o in sorted(self._objects.items())
                 if res == kind.resource and (not ns or o_ns == ns) and w.matches(o)]
        return ObjectList(items, str(self.rev))

    async def update(self, obj: M, dry_run: bool = False) -> M:
        kind = _kind_of(obj)
        m = _meta(obj)
        self._call("update", kind, self._ns(kind, m.namespace), m.name)
        return self._update(kind, obj, status_only=False)  # type: ignore[return-value]

    async def update_status(self, obj: M) -> M:
        kind = _kind_of(obj)
        m = _meta(obj)
        self._call("update_status", kind, self._ns(kind, m.namespace), m.name)
        if not kind.has_status:
            raise NotFoundError(grpc.StatusCode.NOT_FOUND, f"{kind.group_resource} has no status subresource")
        return self._update(kind, obj, status_only=True)  # type: ignore[return-value]

    def _update(self, kind: Kind, obj: Message, status_only: bool) -> Message:
        m = _meta(obj)
        current = self._current(kind, m.namespace, m.name)
        if m.resource_version and m.resource_version != _meta(current).resource_version:
            raise _conflict(kind, m.name)
        if status_only:
            new = copy_of(current)
            new.status.CopyFrom(obj.status)  # type: ignore[attr-defined]
        else:
            new = copy_of(obj)
            _keep_server_fields(kind, new, current)
        if new == current:
            return copy_of(current)
        nm = _meta(new)
        if nm.deletion_timestamp and not nm.finalizers and not awaiting_grace(new):
            return self._remove(kind, current)
        return self._write(kind, new, current)

    async def patch(self, resource: str | Kind, name: str, patch: dict[str, Any], namespace: str = "",
                    subresource: str = "") -> Message:
        kind = _kind(resource)
        self._call("patch", kind, self._ns(kind, namespace), name)
        current = self._current(kind, namespace, name)
        merged = merge_patch(codec.encode(current), json.loads(json.dumps(patch)))
        try:
            new = codec.decode(merged, kind.message)
        except codec.DecodeError as err:
            raise InvalidError(grpc.StatusCode.INVALID_ARGUMENT,
                               f'{kind.qualified} "{name}" is invalid: {err}') from None
        new.api_version, new.kind = current.api_version, current.kind  # type: ignore[attr-defined]
        _meta(new).resource_version = str((patch.get("metadata") or {}).get("resourceVersion") or
                                          _meta(current).resource_version)
        return self._update(kind, new, status_only=subresource == "status")

    async def delete(self, resource: str | Kind, name: str, namespace: str = "",
                     grace_period_seconds: int | None = None, propagation_policy: str = "",
                     uid: str = "", resource_version: str = "") -> tuple[Message, bool]:
        kind = _kind(resource)
        self._call("delete", kind, self._ns(kind, namespace), name)
        current = self._current(kind, namespace, name)
        m = _meta(current)
        if uid and m.uid != uid:
            raise ConflictError(grpc.StatusCode.ABORTED, f"Precondition failed: UID in precondition: {uid}, "
                                f"UID in object meta: {m.uid}")
        if resource_version and m.resource_version != resource_version:
            raise ConflictError(grpc.StatusCode.ABORTED, "Precondition failed: ResourceVersion in precondition: "
                                f"{resource_version}, ResourceVersion in object meta: {m.resource_version}")
        new = copy_of(current)
        nm = _meta(new)
        wanted = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}.get(propagation_policy)
        if wanted and wanted not in nm.finalizers:
            nm.finalizers.append(wanted)
        grace = deletion_grace(current, grace_period_seconds)
        if grace <= 0 and not nm.finalizers:
            return self._remove(kind, current), True
        if not nm.deletion_timestamp:
            nm.deletion_timestamp = format_time(self.clock.now() + grace)
            nm.deletion_grace_period_seconds = grace
        return self._write(kind, new, current), False

    async def bind(self, namespace: str, name: str, node_name: str, uid: str = "") -> Message:
        kind = scheme.by_resource("pods")
        self._call("bind", kind, self._ns(kind, namespace), name)
        pod: Any = copy_of(self._current(kind, namespace, name))
        prefix = f'Operation cannot be fulfilled on pods/binding "{name}": '
        if uid and pod.metadata.uid != uid:
            raise ConflictError(grpc.StatusCode.ABORTED, f"{prefix}the pod's uid is {pod.metadata.uid}, not {uid}")
        if pod.spec.node_name:
            raise ConflictError(grpc.StatusCode.ABORTED,
                                f'{prefix}pod {name} is already assigned to node "{pod.spec.node_name}"')
        current = self._current(kind, namespace, name)
        pod.spec.node_name = node_name
        conds = [c for c in pod.status.conditions if c.type == "PodScheduled"]
        cond = conds[0] if conds else pod.status.conditions.add(type="PodScheduled")
        cond.status = "True"
        cond.last_transition_time = format_time(self.clock.now())
        return self._write(kind, pod, current)

    async def watch(self, resource: str | Kind, namespace: str = "", label_selector: str = "",
                    field_selector: str = "", resource_version: str = "",
                    bookmarks: bool = False) -> AsyncGenerator[WatchEvent, None]:
        kind = _kind(resource)
        ns = namespace if kind.namespaced else ""
        self._call("watch", kind, ns, "")
        w = _Watcher(kind.resource, ns, *_selectors(kind, label_selector, field_selector), bookmarks)
        if resource_version in ("", "0"):
            for (res, _, _), obj in sorted(self._objects.items()):
                w.offer(_Event("ADDED", int(_meta(obj).resource_version), res, obj, None))
        else:
            since = int(resource_version)
            if since < self._floor:
                raise GoneError(grpc.StatusCode.OUT_OF_RANGE, f"too old resource version: {since} ({self._floor})")
            for ev in self._history:
                if ev.rev > since:
                    w.offer(ev)
        self._watchers.add(w)
        try:
            while True:
                item = await w.queue.get()
                if item is None:
                    return
                if isinstance(item, ApiStatusError):
                    raise item
                yield item
        finally:
            self._watchers.discard(w)


def _kind_of(obj: Message) -> Kind:
    return scheme.by_message(obj)


def _selectors(kind: Kind, label_selector: str, field_selector: str
               ) -> tuple[selectors.LabelSelector, selectors.FieldSelector]:
    try:
        labels = selectors.parse_label_selector(label_selector)
        fields = selectors.parse_field_selector(field_selector)
        fields.validate(kind.message.DESCRIPTOR)
    except selectors.SelectorError as err:
        raise InvalidError(grpc.StatusCode.INVALID_ARGUMENT, f"{kind.group_resource}: {err}") from None
    return labels, fields


def _keep_server_fields(kind: Kind, new: Message, current: Message) -> None:
    """What an update may not change: identity, timestamps, status; generation follows spec."""
    nm, cm = _meta(new), _meta(current)
    nm.uid, nm.creation_timestamp = cm.uid, cm.creation_timestamp
    nm.deletion_timestamp = cm.deletion_timestamp
    if cm.HasField("deletion_grace_period_seconds"):
        nm.deletion_grace_period_seconds = cm.deletion_grace_period_seconds
    nm.resource_version = cm.resource_version
    if kind.has_status:
        new.status.CopyFrom(current.status)  # type: ignore[attr-defined]
    nm.generation = cm.generation + (1 if _desired(new) != _desired(current) else 0)


def _desired(obj: Message) -> Message:
    """obj without the fields that are not desired state (see scheme.spec_fields)."""
    out = copy_of(obj)
    for name in ("api_version", "kind", "metadata", "status"):
        if name in out.DESCRIPTOR.fields_by_name:
            out.ClearField(name)
    return out


class FakeTimers:
    """Simulated time: `sleep(d)` waits until `run_until` has moved the FakeClock d further.

    Between timer steps every runnable task gets `settle` turns of the loop; code that awaits
    real I/O (sockets) does not belong under simulated time. The wall clock, when given, moves
    with the monotonic one."""

    def __init__(self, clock: FakeClock, wall_clock: FakeWallClock | None = None, settle: int = 50) -> None:
        self.clock = clock
        self.wall_clock = wall_clock
        self.settle = settle
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def sleep(self, delay: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.clock.now() + max(delay, 0.0), next(self._seq), fut))
        await fut

    async def idle(self) -> None:
        """Let every task run until it blocks (on a timer, a queue, a future)."""
        for _ in range(self.settle):
            await asyncio.sleep(0)

    def _move_to(self, t: float) -> None:
        step = t - self.clock.now()
        if step > 0:
            self.clock.advance(step)
            if self.wall_clock is not None:
                self.wall_clock.advance(step)

    async def run_until(self, t: float) -> None:
        """Fire every timer due up to clock time t, in order; the clock ends at t."""
        await self.idle()
        while self._timers and self._timers[0][0] <= t:
            due, _, fut = heapq.heappop(self._timers)
            self._move_to(due)
            if not fut.done():  # a cancelled sleeper leaves a cancelled future behind
                fut.set_result(None)
            await self.idle()
        self._move_to(t)
        await self.idle()

    async def run_for(self, seconds: float) -> None:
        await self.run_until(self.clock.now() + seconds)

    @property
    def pending(self) -> int:
        return sum(1 for _, _, fut in self._timers if not fut.done())
