"""The scheduler: it decides on which node each pod runs, and says why when nothing fits.

This package holds the pure, I/O-free core the driver calls; it never talks to the API server:
- `framework`: Status, PodInfo/NodeInfo (per-pod and per-node facts computed once), Snapshot,
  the plugin protocols and the weights configuration (Kubernetes' default weights).
- `plugins/`: one filter or score plugin per module, each with Kubernetes' name and reasons.
- `cache`: nodes and the pods on them, with pods this scheduler bound but the watch has not yet
  confirmed ("assumed"), so two pods are never placed on the same free capacity.
- `queue`: the scheduling queue (active by priority then FIFO, backoff 1 s doubling to 10 s,
  unschedulable until a cluster event or 5 minutes), asyncio-friendly, driven by a Clock.
- `algorithm`: `schedule(pod, snapshot, plugins, weights, rng)` — filter, score, pick — as a
  pure function of its inputs; Kubernetes' "0/5 nodes are available: ..." message; `recheck`.
- `bench_core`: a micro-benchmark of the pure core (pods/s for N nodes, M pods).

Layering: imports only `protos`, `kvstore.clock` and `controlplane.client` (quantities,
selectors). The driver (watches, binding, events, leader election, metrics) lives elsewhere.
"""
