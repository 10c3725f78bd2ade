"""Workloads of a chaos run: register, set and watch.

A workload has three phases, driven by deploy.chaos.runner:
  `setup()`                    before the clients and the nemesis start;
  `client(i, stop)`            one client's loop, until `stop` is set (one op in flight at most);
  `finish(endpoints)`          after everything healed and the store converged: final reads
                               (recorded in the history) and workload-specific checks, returned
                               as {"name": {"ok": bool, ...}}.

All keys of a run live under `/chaos/<run id>/`, so runs never see each other's data, and
values are unique ints (str-encoded), so the checker can tell every write apart.

- register: read / write / cas (Txn comparing VALUE) on a few keys; checked for linearizability
  per key by the runner. Final linearizable reads of every key on every replica go into the
  history, so an acknowledged write that was lost shows up as a violation.
- set: each add is a Put of its own key `set/<value>`; the final read is a range over the set's
  prefix on every replica after heal. Every acknowledged add must be present, nothing that was
  never added may be, and every replica must return the same set.
- watch: one watcher per replica streams every event under the prefix from the run's base
  revision, reconnecting from the last revision it saw when its stream breaks. After heal all
  watchers must hold the same events in the same revision order with no gap, and every
  acknowledged write must be among them.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any

import grpc

from deploy.chaos.clients import (
    Client, Recorder, aio_channel_stubs, cas_request, prefix_end, read_prefix_request, read_request,
    write_request,
)
from protos.etcd.etcdserverpb import rpc_pb2

Checks = dict[str, dict[str, Any]]


class Workload:
    """Shared machinery: client placement, pacing, unique values, final reads."""

    name = "base"

    def __init__(self, recorder: Recorder, endpoints: dict[str, str], run_id: str, seed: int,
                 rate: float = 20.0, timeout: float = 1.0, keys: int = 3) -> None:
        self.recorder = recorder
        self.endpoints = endpoints  # replica host -> client endpoint
        self.prefix = f"/chaos/{run_id}/".encode()
        self.seed = seed
        self.rate = rate
        self.timeout = timeout
        self.keys = [f"k{i}" for i in range(keys)]
        self.next_value = 1
        self.clients: list[Client] = []

    def etcd_key(self, key: str) -> bytes:
        return self.prefix + key.encode()

    def unique(self) -> int:
        value = self.next_value
        self.next_value += 1
        return value

    def make_client(self, index: int) -> Client:
        nodes = sorted(self.endpoints)
        node = nodes[index % len(nodes)]  # clients spread round-robin over the replicas
        client = Client(self.recorder, node, self.endpoints[node], self.timeout, f"c{index}")
        self.clients.append(client)
        return client

    async def pace(self, rng: random.Random) -> None:
        # Exponential gaps: a Poisson arrival of about `rate` ops/s per client.
        await asyncio.sleep(rng.expovariate(self.rate) if self.rate > 0 else 0)

    async def setup(self) -> None:
        pass

    async def client(self, index: int, stop: asyncio.Event) -> None:
        raise NotImplementedError

    async def finish(self) -> Checks:
        return {}

    async def final_reads(self, request_for: Any, f: str, keys: list[str]) -> list[dict[str, Any]]:
        """One read of each key on every replica, each by a fresh process; returns the ok events."""
        done = []
        for node in sorted(self.endpoints):
            reader = Client(self.recorder, node, self.endpoints[node], max(self.timeout, 5.0), f"final-{node}")
            for key in keys:
                for _ in range(5):  # a replica just restarted may still be catching up
                    type_, _value = await reader.call(f, key, None, request_for(key))
                    if type_ == "ok":
                        done.append(self.recorder.events[-1])
                        break
                    await asyncio.sleep(0.5)
            await reader.close()
        return done

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


class RegisterWorkload(Workload):
    name = "register"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_seen: dict[str, int] = {}  # a recent value per key, so some cas can succeed

    async def client(self, index: int, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed * 7919 + index)
        client = self.make_client(index)
        while not stop.is_set():
            key = rng.choice(self.keys)
            ek = self.etcd_key(key)
            roll = rng.random()
            if roll < 0.4:
                type_, value = await client.call("read", key, None, read_request(ek))
                if type_ == "ok" and value is not None:
                    self.last_seen[key] = value
            elif roll < 0.7:
                value = self.unique()
                type_, _ = await client.call("write", key, value, write_request(ek, value))
                if type_ == "ok":
                    self.last_seen[key] = value
            else:
                expected = self.last_seen.get(key, 0)
                new = self.unique()
                type_, _ = await client.call("cas", key, [expected, new], cas_request(ek, expected, new))
                if type_ == "ok":
                    self.last_seen[key] = new
            await self.pace(rng)

    async def finish(self) -> Checks:
        reads = await self.final_reads(lambda k: read_request(self.etcd_key(k)), "read", self.keys)
        return {"final_reads": _all_replicas_read(reads, len(self.endpoints) * len(self.keys))}


class SetWorkload(Workload):
    name = "set"
    SET_KEY = "set"

    async def client(self, index: int, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed * 7919 + index)
        client = self.make_client(index)
        while not stop.is_set():
            value = self.unique()
            await client.call("add", self.SET_KEY, value, write_request(self.etcd_key(f"set/{value:010d}"), value))
            await self.pace(rng)

    async def finish(self) -> Checks:
        prefix = self.etcd_key("set/")
        reads = await self.final_reads(lambda k: read_prefix_request(prefix), "read", [self.SET_KEY])
        check = _all_replicas_read(reads, len(self.endpoints))
        check["same_on_every_replica"] = len({tuple(e["value"]) for e in reads}) <= 1
        check["ok"] = check["ok"] and check["same_on_every_replica"]
        check["size"] = len(reads[0]["value"]) if reads else 0
        return {"final_reads": check}


class WatchWorkload(Workload):
    name = "watch"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.base_revision = 0
        self.seen: dict[str, list[tuple[int, str, int | None, str]]] = {}
        self.reconnects: dict[str, int] = {}
        self.problems: dict[str, list[str]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def setup(self) -> None:
        node = sorted(self.endpoints)[0]
        stubs = aio_channel_stubs(self.endpoints[node])
        try:
            resp = await stubs.kv.Put(rpc_pb2.PutRequest(key=self.etcd_key("base"), value=b"0"), timeout=10)
        finally:
            await stubs.channel.close()
        self.base_revision = resp.header.revision
        for node, endpoint in sorted(self.endpoints.items()):
            self.seen[node], self.reconnects[node], self.problems[node] = [], 0, []
            self.tasks.append(asyncio.create_task(self._watch(node, endpoint)))

    async def _watch(self, node: str, endpoint: str) -> None:
        stubs = aio_channel_stubs(endpoint)
        watch_prefix = self.etcd_key("w/")
        next_rev = self.base_revision + 1
        try:
            while True:
                call = stubs.watch.Watch()
                try:
                    await call.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                        key=watch_prefix, range_end=prefix_end(watch_prefix), start_revision=next_rev)))
                    async for resp in call:
                        if resp.canceled:
                            self.problems[node].append(f"watch canceled at {next_rev}: {resp.cancel_reason or resp.compact_revision}")
                            break
                        for ev in resp.events:
                            kind = "delete" if ev.type == ev.DELETE else "put"
                            value = int(ev.kv.value) if ev.kv.value else None
                            self.seen[node].append((ev.kv.mod_revision, ev.kv.key.decode()[len(watch_prefix):], value, kind))
                            next_rev = ev.kv.mod_revision + 1
                except grpc.RpcError:
                    pass  # replica killed or restarting: resume from next_rev below
                finally:
                    call.cancel()
                self.reconnects[node] += 1
                await asyncio.sleep(0.2)
        finally:
            await stubs.channel.close()

    async def client(self, index: int, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed * 7919 + index)
        client = self.make_client(index)
        while not stop.is_set():
            key = rng.choice(self.keys)
            value = self.unique()
            await client.call("write", key, value, write_request(self.etcd_key(f"w/{key}"), value))
            await self.pace(rng)

    async def finish(self) -> Checks:
        reads = await self.final_reads(lambda k: read_request(self.etcd_key(f"w/{k}")), "read", self.keys)
        checks = {"final_reads": _all_replicas_read(reads, len(self.endpoints) * len(self.keys))}
        final_rev = await self._final_revision()
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            if all((evs[-1][0] if evs else self.base_revision) >= final_rev for evs in self.seen.values()):
                break
            await asyncio.sleep(0.2)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        checks["watch"] = self.compare(final_rev)
        return checks

    async def _final_revision(self) -> int:
        """The newest mod revision under the watched prefix (linearizable read)."""
        watch_prefix = self.etcd_key("w/")
        for node in sorted(self.endpoints):
            stubs = aio_channel_stubs(self.endpoints[node])
            try:
                resp = await stubs.kv.Range(rpc_pb2.RangeRequest(key=watch_prefix, range_end=prefix_end(watch_prefix)), timeout=5)
                return max((kv.mod_revision for kv in resp.kvs), default=self.base_revision)
            except grpc.RpcError:
                continue
            finally:
                await stubs.channel.close()
        return self.base_revision

    def compare(self, final_rev: int) -> dict[str, Any]:
        """The watch check (see module doc). Assumes the run is the only writer to the store, so
        every revision after the base is one of its writes: a missing revision is a gap."""
        errors: list[str] = []
        written = {(e["key"], e["value"]) for e in self.recorder.events if e["f"] == "write" and e["type"] == "invoke"}
        acked = {(e["key"], e["value"]) for e in self.recorder.events if e["f"] == "write" and e["type"] == "ok"}
        reference: list[tuple[int, str, int | None, str]] | None = None
        for node, events in sorted(self.seen.items()):
            revs = [e[0] for e in events]
            if any(b <= a for a, b in zip(revs, revs[1:])):
                errors.append(f"{node}: revisions not strictly increasing")
            expected = list(range(self.base_revision + 1, final_rev + 1))
            if revs != expected:
                missing = sorted(set(expected) - set(revs))
                errors.append(f"{node}: {len(revs)} events, expected revisions {self.base_revision + 1}..{final_rev}; "
                              f"missing {missing[:10]}{'...' if len(missing) > 10 else ''}")
            seen_kv = {(k, v) for _, k, v, _ in events}
            lost = acked - seen_kv
            if lost:
                errors.append(f"{node}: {len(lost)} acknowledged writes never seen, e.g. {sorted(lost)[:5]}")
            phantom = seen_kv - written
            if phantom:
                errors.append(f"{node}: {len(phantom)} events of writes never made, e.g. {sorted(phantom, key=str)[:5]}")
            if reference is None:
                reference = events
            elif events != reference:
                first = next((i for i, (a, b) in enumerate(zip(events, reference)) if a != b), min(len(events), len(reference)))
                errors.append(f"{node}: differs from {sorted(self.seen)[0]} at event {first}")
            errors.extend(f"{node}: {p}" for p in self.problems[node])
        return {"ok": not errors, "errors": errors, "base_revision": self.base_revision, "final_revision": final_rev,
                "events": {n: len(e) for n, e in self.seen.items()}, "reconnects": dict(self.reconnects)}


def _all_replicas_read(reads: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    return {"ok": len(reads) == expected, "reads": len(reads), "expected": expected}


WORKLOADS: dict[str, type[Workload]] = {"register": RegisterWorkload, "set": SetWorkload, "watch": WatchWorkload}
