"""List: from the watch cache when it is consistent, from the store for pages.

- No limit, resourceVersion "" (the default): the latest state. The lister reads the store's
  current revision (one linearizable read of an absent key), waits until the resource's watch
  cache has seen it, and filters the cache — consistent like a quorum read, at the cost of one
  small round trip instead of a range over every object. If the cache cannot catch up in time
  it falls back to a range on the store.
- resourceVersion "0": whatever the cache holds now (may be slightly stale), as Kubernetes.
- With limit (or continue): pages read from the store at one revision, so every page of a
  list is a view of the same moment. The continue token carries that revision and the next
  key; once the store compacts that revision the token is too old (Gone), as in Kubernetes.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Callable

from google.protobuf.message import Message

from controlplane.apiserver import errors
from controlplane.apiserver.storage import StoreClient, StoreCompacted, StoreUnavailable, prefix_end
from controlplane.apiserver.watchcache import ResourceCache
from controlplane.client.scheme import Kind

FRESH_TIMEOUT = 3.0
Matcher = Callable[[Message], bool]


@dataclass
class ListResult:
    items: list[Message]
    resource_version: str
    continue_token: str = ""
    remaining: int | None = None


def encode_continue(rev: int, next_key: bytes) -> str:
    raw = json.dumps({"v": 1, "rv": rev, "start": base64.b64encode(next_key).decode()})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_continue(token: str) -> tuple[int, bytes]:
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(doc["rv"]), base64.b64decode(doc["start"])
    except (ValueError, KeyError, TypeError):
        raise errors.BadRequest("continue key is not valid: malformed token") from None


class Lister:
    def __init__(self, store: StoreClient, caches: dict[str, ResourceCache]) -> None:
        self.store = store
        self.caches = caches

    async def list(self, kind: Kind, namespace: str, matches: Matcher, selective: bool,
                   limit: int = 0, continue_token: str = "", resource_version: str = "") -> ListResult:
        if limit < 0:
            raise errors.BadRequest("limit must not be negative")
        if limit or continue_token:
            return await self._from_store(kind, namespace, matches, selective, limit, continue_token)
        cache = self.caches[kind.resource]
        try:
            if resource_version != "0":
                rev = await self.store.current_revision()
                if not await cache.wait_fresh(rev, FRESH_TIMEOUT):
                    return await self._from_store(kind, namespace, matches, selective, 0, "")
            else:
                await cache.wait_fresh(0, FRESH_TIMEOUT)
        except StoreUnavailable as err:
            raise errors.Unavailable(str(err)) from None
        items = [obj for obj in cache.snapshot(namespace) if matches(obj)]
        return ListResult(items, str(cache.rev))

    async def _from_store(self, kind: Kind, namespace: str, matches: Matcher, selective: bool,
                          limit: int, continue_token: str) -> ListResult:
        prefix = f"/registry/{kind.resource}/" + (f"{namespace}/" if namespace and kind.namespaced else "")
        start, end = prefix.encode(), prefix_end(prefix.encode())
        rev = 0
        if continue_token:
            rev, start = decode_continue(continue_token)
            if not start.startswith(prefix.encode()):
                raise errors.BadRequest("continue key is not valid: it belongs to another list")
        items: list[Message] = []
        page = max(limit, 1) if limit else 1000
        while True:
            try:
                resp = await self.store.range(start, end, limit=page, revision=rev)
            except StoreCompacted:
                raise errors.Gone("The provided continue parameter is too old to display a consistent list "
                                  "result. You can start a new list without the continue parameter.") from None
            except StoreUnavailable as err:
                raise errors.Unavailable(str(err)) from None
            rev = rev or resp.header.revision
            for index, kv in enumerate(resp.kvs):
                obj = kind.message()
                obj.ParseFromString(kv.value)
                obj.metadata.resource_version = str(kv.mod_revision)  # type: ignore[attr-defined]
                if matches(obj):
                    items.append(obj)
                if limit and len(items) == limit:
                    left = resp.count - (index + 1)  # keys after this one in [start, end) at rev
                    if left <= 0:
                        return ListResult(items, str(rev))
                    remaining = None if selective else left
                    return ListResult(items, str(rev), encode_continue(rev, kv.key + b"\0"), remaining)
            if not resp.more or not resp.kvs:
                return ListResult(items, str(rev))
            start = resp.kvs[-1].key + b"\0"
