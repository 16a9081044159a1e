"""Tables and plots of an evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from burstpilot.evaluation.harness import PolicyRun

COLUMNS = (
    ("slo_attainment", "SLO att.", "{:.2%}"),
    ("ttft_p50_s", "TTFT p50 s", "{:.2f}"),
    ("ttft_p99_s", "TTFT p99 s", "{:.2f}"),
    ("tpot_p99_s", "TPOT p99 s", "{:.3f}"),
    ("gpu_hours", "GPU-h", "{:.2f}"),
    ("gpu_hours_vs_oracle", "x oracle", "{:.2f}"),
    ("scale_events", "scale ev.", "{}"),
    ("preemptions", "preempt.", "{}"),
    ("rejected", "rejected", "{}"),
)


def _fmt(fmt: str, v: Any) -> str:
    return "-" if v is None else fmt.format(v)


def rich_table(results: dict[str, Any], title: str = "") -> Table:
    t = Table(title=title or None)
    t.add_column("policy")
    for _, head, _ in COLUMNS:
        t.add_column(head, justify="right")
    for name, m in results["policies"].items():
        t.add_row(name, *[_fmt(fmt, m.get(key)) for key, _, fmt in COLUMNS])
    return t


def markdown_table(results: dict[str, Any]) -> str:
    lines = ["| policy | " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, m in results["policies"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(fmt, m.get(key)) for key, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def plot(
    runs: Sequence[PolicyRun], out_dir: Path, ttft_slo_s: float, bin_s: float = 30.0, prefix: str = ""
) -> list[Path]:
    """PREFIXreplicas.png (replicas over time per policy vs the arrival rate) and PREFIXttft.png (TTFT p99 per
    bin of arrival time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    if not runs:
        return []
    arr = runs[0].arrival_s
    end = float(arr.max()) if len(arr) else 1.0
    edges = np.arange(0.0, end + bin_s, bin_s)
    rate = np.histogram(arr, bins=edges)[0] / bin_s
    n = len(runs)
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.9 * n + 0.6), sharex=True, squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        ax2 = ax.twinx()
        ax2.fill_between(edges[:-1] / 60, rate, step="post", color="0.85", label="arrivals/s")
        ax2.set_ylabel("req/s", fontsize=7)
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        tl = np.array(run.timeline + [(end, run.timeline[-1][1], run.timeline[-1][2])], dtype=float)
        ax.step(tl[:, 0] / 60, tl[:, 1] + tl[:, 2], where="post", color="tab:orange", label="ready+starting")
        ax.step(tl[:, 0] / 60, tl[:, 1], where="post", color="tab:blue", label="ready")
        ax.set_ylabel("replicas", fontsize=7)
        ax.set_title(run.name, fontsize=9, loc="left")
    axes[0, 0].legend(loc="upper left", fontsize=7)
    axes[-1, 0].set_xlabel("minutes")
    fig.tight_layout()
    p1 = out_dir / f"{prefix}replicas.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4))
    for run in runs:
        idx = np.minimum((run.arrival_s // bin_s).astype(int), len(edges) - 2)
        p99 = np.full(len(edges) - 1, np.nan)
        for b in np.unique(idx):
            v = run.ttft_s[idx == b]
            v = np.where(np.isnan(v), np.inf, v)
            p99[b] = np.quantile(v, 0.99)
        p99 = np.minimum(p99, 1e4)
        ax.step(edges[:-1] / 60, p99, where="post", label=run.name)
    ax.axhline(ttft_slo_s, color="k", ls="--", lw=1, label="TTFT SLO")
    ax.set_yscale("log")
    ax.set_xlabel("minutes")
    ax.set_ylabel(f"TTFT p99 per {bin_s:.0f}s (s)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    p2 = out_dir / f"{prefix}ttft.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]
