"""Latency over time against the arrival rate (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from burstpilot.slo import SLO  # noqa: E402

_BINS = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def plot_latency(records: list[dict], path: Path, slo: SLO | None = None, bin_s: float | None = None) -> None:
    """Top: scheduled arrival rate and errors per bin; bottom: TTFT and E2E quantiles per bin of send time."""
    sched = np.array([r["scheduled_s"] for r in records], dtype=np.float64)
    if sched.size == 0:
        return
    span = max(float(sched.max() - sched.min()), 1e-3)
    # the smallest round bin that gives at most 200 bins
    bin_s = bin_s or next((b for b in _BINS if span / b <= 200), span / 200)
    edges = np.arange(sched.min(), sched.max() + bin_s, bin_s)
    if edges.size < 2:
        edges = np.array([sched.min(), sched.min() + bin_s])
    mid = (edges[:-1] + edges[1:]) / 2
    arrivals, _ = np.histogram(sched, edges)
    err = np.array([bool(r.get("error")) for r in records])
    errors, _ = np.histogram(sched[err], edges)
    ok = [r for r in records if not r.get("error") and r.get("ttft_s") is not None]
    sent = np.array([r["sent_s"] for r in ok], dtype=np.float64)
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 6), height_ratios=(1, 2))
    ax1.plot(mid, arrivals / bin_s, drawstyle="steps-mid", label="scheduled arrivals")
    if errors.any():
        ax1.plot(mid, errors / bin_s, drawstyle="steps-mid", color="tab:red", label="failed")
    ax1.set_ylabel("requests / s")
    ax1.legend(loc="upper right")
    for name, color in (("ttft_s", "tab:blue"), ("e2e_s", "tab:green")):
        vals = np.array([r[name] for r in ok], dtype=np.float64)
        idx = np.digitize(sent, edges) - 1
        p50 = np.full(mid.size, np.nan)
        p99 = np.full(mid.size, np.nan)
        for b in np.unique(idx[(idx >= 0) & (idx < mid.size)]):
            v = vals[idx == b]
            p50[b], p99[b] = np.percentile(v, (50, 99))
        label = name.removesuffix("_s").upper()
        marker = "." if mid.size < 40 else None
        ax2.plot(mid, p50, color=color, marker=marker, label=f"{label} p50")
        ax2.plot(mid, p99, color=color, linestyle="--", marker=marker, label=f"{label} p99")
        limit = slo.objectives().get(label.lower()) if slo else None
        if limit is not None:
            ax2.axhline(limit, color=color, linestyle=":", label=f"{label} SLO")
    ax2.set_yscale("log")
    ax2.set_ylabel("latency (s)")
    ax2.set_xlabel(f"time since the first scheduled request (s), bins of {bin_s:g} s")
    ax2.legend(loc="upper right", fontsize="small", ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
