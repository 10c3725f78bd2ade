"""The PNG timeline of a chaos run (matplotlib, Agg backend: no display needed).

Top panel: one row per logical client (after an unknown outcome a client continues under a new
process id, on the same row); each operation is a horizontal bar from invoke to
completion, green = ok, red = fail, orange = info (unknown outcome, drawn to the moment the
client gave up). Bottom panel: latency of every completed operation over time, log scale, same
colours. In both panels each nemesis period is shaded and labelled with its kind and hosts.
Times are seconds since the start of the workload.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.collections import LineCollection  # noqa: E402

COLOURS = {"ok": "#2ca02c", "fail": "#d62728", "info": "#ff7f0e"}
SHADES = {"partition": "#9ecae1", "partition-leader": "#6baed6", "isolate": "#c6dbef", "bridge": "#bcbddc",
          "ring": "#dadaeb", "kill": "#fdae6b", "kill-leader": "#fd8d3c", "kill-all": "#e6550d", "pause": "#d9d9d9",
          "pause-leader": "#bdbdbd"}


def _pairs(events: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    pending: dict[int, dict[str, Any]] = {}
    out: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    for e in events:
        if e["type"] == "invoke":
            pending[e["process"]] = e
        elif e["process"] in pending:
            out.append((pending.pop(e["process"]), e))
    out.extend((inv, None) for inv in pending.values())
    return out


def render_timeline(path: Path, events: Sequence[dict[str, Any]], periods: Sequence[Any], t0_ns: int,
                    title: str = "") -> None:
    """Write the timeline PNG to `path` (see module doc). `periods` have kind, hosts, start_ns, end_ns."""
    ops = _pairs(events)
    end_ns = max((e["time"] for e in events), default=t0_ns)
    # One row per logical client (its successive process ids share the row), in first-use order.
    labels: dict[str, str] = {}
    for e in events:
        labels.setdefault(e.get("client") or f"p{e['process']}", e.get("node", ""))
    rows = {c: i for i, c in enumerate(labels)}
    fig, (ax_ops, ax_lat) = plt.subplots(2, 1, figsize=(14, 8), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 2]})
    min_bar = max((end_ns - t0_ns) / 1e9 / 600, 0.002)  # so a 1 ms op is still visible
    # Collect per colour and draw each colour once: one artist per op takes seconds per run.
    bars: dict[str, list[list[tuple[float, float]]]] = {k: [] for k in COLOURS}
    lat_x: dict[str, list[float]] = {k: [] for k in COLOURS}
    lat_y: dict[str, list[float]] = {k: [] for k in COLOURS}
    for inv, done in ops:
        kind = done["type"] if done else "info"
        x0 = (inv["time"] - t0_ns) / 1e9
        x1 = ((done["time"] if done else end_ns) - t0_ns) / 1e9
        y = rows[inv.get("client") or f"p{inv['process']}"]
        bars[kind].append([(x0, y), (max(x1, x0 + min_bar), y)])
        if done:
            lat_x[kind].append(x1)
            lat_y[kind].append(max((done["time"] - inv["time"]) / 1e6, 0.01))
    for kind, colour in COLOURS.items():
        if bars[kind]:
            ax_ops.add_collection(LineCollection(bars[kind], colors=colour, linewidths=4, capstyle="butt"))
        if lat_x[kind]:
            ax_lat.scatter(lat_x[kind], lat_y[kind], color=colour, s=4)
    ax_ops.autoscale_view()
    for period in periods:
        p = period if isinstance(period, dict) else vars(period)
        x0, x1 = (p["start_ns"] - t0_ns) / 1e9, ((p["end_ns"] or end_ns) - t0_ns) / 1e9
        for ax in (ax_ops, ax_lat):
            ax.axvspan(x0, x1, color=SHADES.get(p["kind"], "#dddddd"), alpha=0.5, zorder=0)
        label = f"{p['kind']} {p.get('detail') or ','.join(p['hosts'])}"
        ax_ops.text(x0, len(rows) - 0.4 if rows else 0, label, fontsize=7, va="bottom", rotation=0)
    ax_ops.set_yticks(list(rows.values()))
    ax_ops.set_yticklabels([f"{c} @{labels[c]}" for c in rows], fontsize=6 if len(rows) > 20 else 8)
    ax_ops.set_ylabel("client @ replica")
    ax_ops.set_ylim(-1, len(rows) + 0.5)
    for kind, colour in COLOURS.items():
        ax_ops.plot([], [], color=colour, linewidth=4, label=kind if kind != "info" else "info (unknown)")
    ax_ops.legend(loc="upper right", fontsize=8)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_xlabel("seconds since start")
    ax_ops.set_title(title or "chaos run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
