"""The report of `skiff bench reconcile`: figures, the printed lines and table, and the PNG plots.

Everything here is a pure function of what the bench recorded (or of its JSON report, so the
plots can be drawn again from a saved run): no cluster, no clock.

The raw record (`report["raw"]`, times in seconds; `running` and `phases` rounded to the ms):
- `series`: one per measured distribution - `{"scenario", "label", "values_s", "total_s"}`
  (values unrounded, so that the table matches the printed lines);
  `total_s` is the scenario's total for that series (None where there is none, e.g. delete-pod).
- `running`: `[[t, count], ...]`, the number of pods Running and not being deleted, after
  every change the pod watch saw; t from the moment the watch opened.
- `phases`: `[{"name", "start_s", "end_s"}, ...]`, each scenario's span on the same axis.

Plots (matplotlib, Agg backend, imported only when drawing so that the bench runs without it):
`reconcile-cdf.png` - the empirical CDF of every series, x in seconds on a log scale since the
values run from tens of milliseconds (startup) to tens of seconds (node lost);
`reconcile-timeline.png` - Running pods over the whole run, a step line, with each scenario's
phase shaded and labelled.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from deploy.bench.loadgen import percentile

CDF_PNG = "reconcile-cdf.png"
TIMELINE_PNG = "reconcile-timeline.png"
PHASE_SHADES = ("#c6dbef", "#fdd0a2", "#c7e9c0", "#dadaeb", "#fcbba1", "#d9d9d9")


def figures(values_s: Sequence[float]) -> dict[str, float]:
    """n, p50/p90/p99 and max (nearest rank) in milliseconds of the given seconds."""
    ordered = sorted(v * 1000 for v in values_s)
    return {"n": len(ordered), **{f"p{q}_ms": round(percentile(ordered, q) or 0.0, 1) for q in (50, 90, 99)},
            "max_ms": round(ordered[-1] if ordered else 0.0, 1)}


def series(scenario: str, label: str, values_s: Sequence[float], total_s: float | None = None) -> dict[str, Any]:
    """One raw series for `report["raw"]["series"]` (see the module docstring)."""
    # Values unrounded: the table computed from them must match the scenario's own line exactly.
    return {"scenario": scenario, "label": label, "values_s": list(values_s),
            "total_s": None if total_s is None else round(total_s, 3)}


def _f(label: str, x: dict[str, float]) -> str:
    return (f"{label} p50 {x['p50_ms']:.0f} / p90 {x['p90_ms']:.0f} / p99 {x['p99_ms']:.0f} / "
            f"max {x['max_ms']:.0f} ms (n={x['n']})")


def format_result(name: str, r: dict[str, Any]) -> str:
    """The one line printed when scenario `name` ends with result `r`."""
    if name == "startup":
        return (f"startup: all Running in {r['total_s']:.2f} s; {_f('per pod', r['pod_startup'])}; "
                f"{_f('from creationTimestamp', r['pod_startup_from_creation_timestamp'])}")
    if name == "scale":
        return (f"scale N->0: all gone in {r['down_total_s']:.2f} s, {_f('per pod', r['down_pod_gone'])}; "
                f"0->N: all Running in {r['up_total_s']:.2f} s, {_f('per pod', r['up_pod_startup'])}")
    if name == "rolling-update":
        return f"rolling update: done in {r['total_s']:.2f} s; {_f('new pods', r['new_pod_startup'])}"
    if name == "delete-pod":
        return f"deleted pod -> replacement Running: {_f('', r['replacement_running'])}"
    if name == "node-lost":
        return (f"node lost ({r['pods_on_lost_node']} pods on it): all replaced and Running in {r['total_s']:.2f} s "
                f"(expected <= {r['expected_within_s']:.0f} s: {'yes' if r['within_expectation'] else 'NO'}); "
                f"{_f('per replacement', r['replacement_running_since_lost'])}")
    handover = "never seen" if r["lease_handover_s"] is None else f"{r['lease_handover_s']:.2f} s"
    return (f"controller manager killed ({r['killed']}), scaled {r['replicas_before']}->{r['replicas_after']}: "
            f"Lease held by {r['new_leader'] or '?'} after {handover}; all new pods Running in {r['total_s']:.2f} s; "
            f"{_f('per new pod since the kill', r['new_pod_running_since_kill'])}")


def summary_table(all_series: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table, one row per series: n, p50/p90/p99/max (ms) and the total (s)."""
    head = ("series", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "total s")
    rows = [head]
    for s in all_series:
        f = figures(s["values_s"])
        total = "-" if s["total_s"] is None else f"{s['total_s']:.2f}"
        rows.append((s["label"], str(f["n"]), *(f"{f[k]:.0f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
                     total))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def cdf_points(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """The empirical CDF as step points: x ascending, y = fraction of values <= x."""
    xs = sorted(values)
    return xs, [(i + 1) / len(xs) for i in range(len(xs))]


def write_plots(raw: dict[str, Any], out_dir: Path, title: str = "") -> list[Path] | str:
    """Draw both PNGs into out_dir; their paths, or a one-line note when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no PNG plots drawn"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    cdf, timeline = out_dir / CDF_PNG, out_dir / TIMELINE_PNG
    _draw_cdf(plt, cdf, raw["series"], title)
    _draw_timeline(plt, timeline, raw["running"], raw["phases"], title)
    return [cdf, timeline]


def _draw_cdf(plt: Any, path: Path, all_series: Sequence[dict[str, Any]], title: str) -> None:
    fig, ax = plt.subplots(figsize=(10, 6))
    for s in all_series:
        if not s["values_s"]:
            continue
        # A log axis cannot show 0; a value under a millisecond is drawn at one.
        xs, ys = cdf_points([max(v, 1e-3) for v in s["values_s"]])
        ax.step(xs, ys, where="post", label=f"{s['label']} (n={len(xs)})", linewidth=1.6)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("seconds (log scale)")
    ax.set_ylabel("fraction of pods")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_lines():  # a run with every scenario skipped or empty still gets its (empty) plot
        # Below the axes: inside, it would hide the slowest scenarios' lines at the right.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8, frameon=False)
    ax.set_title(f"reconcile latency, CDF per scenario{' - ' + title if title else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _draw_timeline(plt: Any, path: Path, running: Sequence[Sequence[float]], phases: Sequence[dict[str, Any]],
                   title: str) -> None:
    fig, ax = plt.subplots(figsize=(14, 5))
    end = max([p["end_s"] for p in phases] + [t for t, _ in running] + [1.0])
    peak = max([n for _, n in running] + [1])
    for i, p in enumerate(phases):
        ax.axvspan(p["start_s"], p["end_s"], color=PHASE_SHADES[i % len(PHASE_SHADES)], alpha=0.6, zorder=0)
        # Labels alternate between two heights so that short neighbouring phases stay legible.
        ax.text(p["start_s"], peak * (1.12 if i % 2 == 0 else 1.04), p["name"], fontsize=8, va="bottom")
    xs = [0.0] + [t for t, _ in running] + [end]
    ys = [0] + [n for _, n in running] + [running[-1][1] if running else 0]
    ax.step(xs, ys, where="post", color="#08519c", linewidth=1.4, label="pods Running (not being deleted)")
    ax.set_xlim(0, end)
    ax.set_ylim(0, peak * 1.22)
    ax.set_xlabel("seconds since the pod watch opened")
    ax.set_ylabel("pods Running")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Running pods over the run, scenarios shaded{' - ' + title if title else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
