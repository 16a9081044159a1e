"""Latency over time against the arrival rate, and the target's own state when it was captured (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from burstpilot.slo import SLO  # noqa: E402

_BINS = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_KV = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_QUEUE = "vllm:num_requests_waiting"
_RUNNING = "vllm:num_requests_running"


def _bins(start: float, end: float) -> tuple[np.ndarray, float]:
    span = max(end - start, 1e-3)
    # the smallest round bin that gives at most 120 bins
    bin_s = next((b for b in _BINS if span / b <= 120), span / 120)
    edges = np.arange(start, end + bin_s, bin_s)
    if edges.size < 2:
        edges = np.array([start, start + bin_s])
    return edges, bin_s


def plot_latency(
    records: list[dict],
    path: Path,
    slo: SLO | None = None,
    server: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> None:
    """Top: scheduled arrivals and failures per second; middle: TTFT and E2E p50/p99 per bin of send time (log
    scale, with the SLO's lines); bottom, when the target's /metrics were captured: KV-cache usage and the
    requests waiting and running."""
    sched = np.array(
        [r["scheduled_s"] for r in records if r.get("scheduled_s") is not None], dtype=np.float64
    )
    if sched.size == 0:
        return
    start, end = float(sched.min()), float(sched.max())
    edges, bin_s = _bins(start, end)
    mid = (edges[:-1] + edges[1:]) / 2
    # the last bin is only partly inside the schedule: divide by the time it covers, not by a whole bin
    covered = np.minimum(edges[1:], max(end, start + 1e-3)) - edges[:-1]
    covered = np.where(covered > bin_s * 1e-3, covered, bin_s)
    arrivals, _ = np.histogram(sched, edges)
    err = np.array([bool(r.get("error")) for r in records if r.get("scheduled_s") is not None])
    errors, _ = np.histogram(sched[err], edges)
    ok = [
        r
        for r in records
        if not r.get("error") and r.get("ttft_s") is not None and r.get("sent_s") is not None
    ]
    sent = np.array([r["sent_s"] for r in ok], dtype=np.float64)
    kv = next((server[k] for k in _KV if server and k in server), None)
    queue = (server or {}).get(_QUEUE)
    running = (server or {}).get(_RUNNING)
    panels = 3 if (kv is not None or queue is not None) else 2
    fig, axes = plt.subplots(
        panels, 1, sharex=True, figsize=(11, 7.5 if panels == 3 else 6),
        height_ratios=(1, 2, 1.2)[:panels], layout="constrained",
    )  # fmt: skip
    ax1, ax2 = axes[0], axes[1]
    ax1.plot(mid, arrivals / covered, drawstyle="steps-mid", color="tab:gray", label="scheduled arrivals")
    if errors.any():
        ax1.plot(mid, errors / covered, drawstyle="steps-mid", color="tab:red", label="failed")
    ax1.set_ylabel("requests / s")
    ax1.set_ylim(bottom=0)
    ax1.legend(loc="upper right", fontsize="small")
    ax1.set_title(
        f"{len(records):,} requests, {int(err.sum()):,} failed; latencies per {bin_s:g} s bin of send time",
        fontsize="medium",
    )
    for name, color in (("ttft_s", "tab:blue"), ("e2e_s", "tab:green")):
        vals = np.array([r[name] for r in ok], dtype=np.float64)
        idx = np.digitize(sent, edges) - 1
        p50 = np.full(mid.size, np.nan)
        p99 = np.full(mid.size, np.nan)
        for b in np.unique(idx[(idx >= 0) & (idx < mid.size)]):
            v = vals[idx == b]
            v = v[np.isfinite(v) & (v > 0)]
            if v.size:
                p50[b], p99[b] = np.percentile(v, (50, 99))
        label = name.removesuffix("_s").upper()
        marker = "." if mid.size < 40 else None
        ax2.plot(mid, p50, color=color, marker=marker, label=f"{label} p50")
        ax2.plot(mid, p99, color=color, linestyle="--", marker=marker, label=f"{label} p99")
        limit = slo.objectives().get(label.lower()) if slo else None
        if limit is not None:
            ax2.axhline(limit, color=color, linestyle=":", linewidth=1.5, label=f"{label} SLO {limit:g} s")
    if np.isfinite(sent).any() and ok:
        ax2.set_yscale("log")
    else:
        ax2.text(0.5, 0.5, "no successful request", transform=ax2.transAxes, ha="center", va="center")
    ax2.set_ylabel("latency (s)")
    ax2.legend(loc="upper left", fontsize="small", ncols=3)
    ax2.grid(True, which="major", alpha=0.3)
    bottom = ax2
    if panels == 3:
        ax3 = axes[2]
        bottom = ax3
        lines = []
        if kv is not None:
            lines += ax3.plot(
                kv[0], kv[1] * 100, color="tab:purple", label="KV-cache usage (mean of replicas)"
            )
            ax3.set_ylabel("KV-cache usage (%)", color="tab:purple")
            ax3.set_ylim(0, 105)
        counts = ax3.twinx() if kv is not None else ax3
        if queue is not None:
            lines += counts.plot(
                queue[0], queue[1], color="tab:orange", label="requests waiting (all replicas)"
            )
        if running is not None:
            lines += counts.plot(running[0], running[1], color="tab:olive", linestyle="--",
                                 label="requests running (all replicas)")  # fmt: skip
        if queue is not None or running is not None:
            counts.set_ylabel("requests")
            counts.set_ylim(bottom=0)
        ax3.legend(lines, [ln.get_label() for ln in lines], loc="upper left", fontsize="small", ncols=3)
        ax3.set_title("the target's /metrics", fontsize="small", loc="left")
    bottom.set_xlabel("time since the first scheduled request (s)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
