"""The verdict, tables and plots of an evaluation (terminal, markdown, self-contained HTML).

Every report opens with one sentence: which policy met the SLO attainment goal at the fewest GPU-hours, and by
how much it beat the next policy that met it. The tables mark which policies met the goal, and show GPU-hours
against the oracle only beside attainment (a cheap policy that misses the goal is not a cheaper way to the same
result). Plots share their y-scale across panels, and no policy's line is drawn over another's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import numpy as np  # noqa: E402
from rich.table import Table  # noqa: E402

from burstpilot.htmlreport import write_html  # noqa: E402

# (key, heading, format); "met" is derived
COLUMNS = (
    ("met", "goal met", "{}"),
    ("slo_attainment", "SLO att.", "{:.2%}"),
    ("hours_under_goal", "hours < goal", "{}"),
    ("worst_hour_attainment", "worst hour", "{:.2%}"),
    ("gpu_hours_vs_oracle", "x oracle", "{:.2f}"),
    ("gpu_hours", "GPU-h", "{:.2f}"),
    ("slo_violations", "violations", "{:,}"),
    ("ttft_p99_s", "TTFT p99 s", "{:.2f}"),
    ("tpot_p99_s", "TPOT p99 s", "{:.3f}"),
    ("scale_events", "scale ev.", "{}"),
    ("peak_replicas", "peak", "{}"),
    ("capacity_source", "capacity", "{}"),
)
REFERENCE = ("oracle",)  # rows that are references, not policies one can run


def _fmt(fmt: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return fmt.format(v)


def _goal(results: dict[str, Any]) -> float:
    return float(results["meta"]["slo"]["attainment"])


def _row(results: dict[str, Any], name: str, m: dict[str, Any]) -> list[str]:
    met = m.get("slo_attainment") is not None and m["slo_attainment"] >= _goal(results)
    cells = []
    for key, _, fmt in COLUMNS:
        if key == "met":
            cells.append("yes" if met else "no")
        elif key == "hours_under_goal" and m.get("hours"):
            cells.append(f"{m[key]} of {m['hours']}")
        elif key == "gpu_hours_vs_oracle" and name in REFERENCE:
            cells.append("1.00" if m.get(key) else "-")
        else:
            cells.append(_fmt(fmt, m.get(key)))
    return cells


def verdict(results: dict[str, Any]) -> str:
    """One sentence: who met the goal at the fewest GPU-hours, and by how much they beat the next."""
    goal = _goal(results)
    pol = {n: m for n, m in results["policies"].items() if n not in REFERENCE}
    met = sorted((m["gpu_hours"], n) for n, m in pol.items() if m["slo_attainment"] >= goal)
    if not met:
        if not pol:
            return "No policy was run."
        top = max(m["slo_attainment"] for m in pol.values())
        # a tie is said as one: the first of several equal rows is not "the closest"
        tied = sorted(
            (pol[n]["gpu_hours"], n) for n in pol if f"{pol[n]['slo_attainment']:.2%}" == f"{top:.2%}"
        )
        who = " and ".join(f"{n} ({g:.2f} GPU-h)" for g, n in tied)
        closest = f"the closest was {who}" if len(tied) == 1 else f"the closest were {who}, tied"
        return f"No policy met the {goal:.1%} attainment goal; {closest} at {top:.2%}."
    gh, name = met[0]
    if len(met) == 1:
        return (
            f"{name} was the only policy to meet the {goal:.1%} attainment goal "
            f"({pol[name]['slo_attainment']:.2%} at {gh:.2f} GPU-h)."
        )
    same = [n for g, n in met if f"{g:.2f}" == f"{gh:.2f}"]
    if len(same) > 1:
        return f"{' and '.join(same)} met the {goal:.1%} attainment goal at the same fewest GPU-hours ({gh:.2f})."
    gh2, name2 = met[1]
    saving = 1.0 - gh / gh2 if gh2 > 0 else 0.0
    return (
        f"{name} met the {goal:.1%} attainment goal at the fewest GPU-hours ({gh:.2f}), {saving:.1%} fewer than "
        f"the next policy that met it, {name2} ({gh2:.2f})."
    )


def oracle_sentence(results: dict[str, Any]) -> str | None:
    o = results["meta"].get("oracle")
    if not o:
        return None
    m = results["policies"].get("oracle", {})
    what = (
        f"a constant pool of {o['param']:g} replicas"
        if o["family"] == "constant"
        else f"the {o['family']} schedule at planning capacity scale {o['param']:.3f}"
    )
    goal = _goal(results)
    if o["meets_goal"]:
        return (
            f"Oracle (clairvoyant, a reference no online policy can run): {what}, {m.get('gpu_hours', 0):.2f} "
            f"GPU-h at {m.get('slo_attainment', 0):.2%}, the fewest GPU-hours of the {o['simulations']} "
            f"simulated schedules that meet {goal:.1%}."
        )
    return f"Oracle: no clairvoyant schedule tried meets {goal:.1%}; {what} came closest."


def rich_table(results: dict[str, Any], title: str = "") -> Table:
    t = Table(title=title or None)
    t.add_column("policy")
    for _, head, _ in COLUMNS:
        t.add_column(head, justify="right")
    for name, m in results["policies"].items():
        t.add_row(name, *_row(results, name, m))
    return t


def markdown_table(results: dict[str, Any]) -> str:
    lines = ["| policy | " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, m in results["policies"].items():
        cells = _row(results, name, m)
        cells[0] = "**yes**" if cells[0] == "yes" else "no"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def case_title(results: dict[str, Any]) -> str:
    m = results["meta"]
    return (
        f"{m.get('label') or m.get('case') or 'workload'}: {m['requests']:,} requests over "
        f"{m['duration_s'] / 3600:.2f} h, {m['profile']} ({m['gpus_per_replica']} GPU/replica, "
        f"{m['min_replicas']}-{m['max_replicas']} replicas), cold start {m['cold_start_s']:.0f} s "
        f"({m.get('cold_start_draws', 'exact')}), capacity {m['capacity']['source']}"
    )


# --------------------------------------------------------------------------- plots


def plot(results: dict[str, Any], out_dir: Path, prefix: str = "") -> list[Path]:
    """PREFIXreplicas.png (each policy's replicas over time against the arrival rate) and PREFIXttft.png (each
    policy's TTFT p99 per bin of arrival time against the SLO), one panel per policy, every panel on the same
    y-scale."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = results["meta"]
    pl = meta.get("plot") or {}
    names = [n for n in results["policies"] if n in pl.get("timeline", {})]
    if not names:
        return []
    bin_s = float(pl["bin_s"])
    rate = np.asarray(pl["rate"], dtype=float)
    end = float(meta["duration_s"])
    hours = end >= 3 * 3600
    unit, scale = ("hours", 3600.0) if hours else ("minutes", 60.0)
    edges = np.arange(len(rate) + 1) * bin_s
    n = len(names)
    peak = max(max((r + s) for _, r, s in pl["timeline"][nm]) for nm in names)
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.35 * n + 1.0), sharex=True, sharey=True, squeeze=False)
    rate_top = float(rate.max()) * 1.05 if len(rate) and rate.max() > 0 else 1.0
    for ax, name in zip(axes[:, 0], names, strict=True):
        ax2 = ax.twinx()
        ax2.fill_between(edges[:-1] / scale, rate, step="post", color="0.88", lw=0)
        ax2.set_ylim(0, rate_top)
        ax2.tick_params(labelsize=7)
        ax2.set_ylabel("req/s", fontsize=7)
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        tl = np.array(pl["timeline"][name] + [[end, *pl["timeline"][name][-1][1:]]], dtype=float)
        total = tl[:, 1] + tl[:, 2]
        # starting replicas as the band between ready and ready+starting: both stay visible
        ax.fill_between(tl[:, 0] / scale, tl[:, 1], total, step="post", color="tab:orange", alpha=0.45, lw=0)
        ax.step(tl[:, 0] / scale, tl[:, 1], where="post", color="tab:blue", lw=1.0)
        m = results["policies"][name]
        ax.set_title(
            f"{name}: {m['slo_attainment']:.2%} attainment, {m['gpu_hours']:.1f} GPU-h",
            fontsize=8, loc="left",
        )  # fmt: skip
        ax.set_ylabel("replicas", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_ylim(0, peak * 1.1 + 0.5)
    from matplotlib.patches import Patch

    axes[0, 0].legend(
        handles=[
            plt.Line2D([], [], color="tab:blue", label="ready"),
            Patch(color="tab:orange", alpha=0.45, label="starting (cold start)"),
            Patch(color="0.88", label="arrivals/s (right axis)"),
        ],
        loc="upper left", fontsize=7, ncol=3,
    )  # fmt: skip
    axes[-1, 0].set_xlabel(unit)
    fig.tight_layout()
    p1 = out_dir / f"{prefix}replicas.png"
    fig.savefig(p1, dpi=100)
    plt.close(fig)

    slo = meta["slo"]["ttft_s"]
    series = {
        nm: np.array([np.nan if v is None else v for v in pl["ttft_p99"][nm]], dtype=float) for nm in names
    }
    vals = np.concatenate([v[np.isfinite(v)] for v in series.values()] or [np.array([slo])])
    lo = max(min(float(vals.min()) if len(vals) else slo, slo) * 0.8, 1e-3)
    hi = max(float(vals.max()) if len(vals) else slo, slo) * 1.25
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.2 * n + 1.0), sharex=True, sharey=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        y = series[name]
        over = np.where(y > slo, y, np.nan)
        ax.step(edges[: len(y)] / scale, y, where="post", color="tab:blue", lw=0.9)
        ax.step(edges[: len(y)] / scale, over, where="post", color="tab:red", lw=1.2)
        ax.axhline(slo, color="k", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        ax.set_title(
            f"{name}: TTFT p99 per {bin_s:.0f} s (red: above the {slo:g} s SLO)", fontsize=8, loc="left"
        )
        ax.tick_params(labelsize=7)
        ax.set_ylabel("s", fontsize=7)
    axes[-1, 0].set_xlabel(f"{unit} (arrival time)")
    fig.tight_layout()
    p2 = out_dir / f"{prefix}ttft.png"
    fig.savefig(p2, dpi=100)
    plt.close(fig)
    return [p1, p2]


# --------------------------------------------------------------------------- reports


def markdown(
    results: dict[str, Any], figures: Sequence[Path], out_dir: Path, notes: Sequence[str] = ()
) -> str:
    lines = [f"# Evaluation: {case_title(results)}", "", f"**{verdict(results)}**", ""]
    o = oracle_sentence(results)
    if o:
        lines += [o, ""]
    lines += [markdown_table(results), "", *notes]
    for f in figures:
        lines += [f"![{f.stem}]({f.relative_to(out_dir).as_posix()})", ""]
    return "\n".join(lines)


def write_reports(results: dict[str, Any], out_dir: Path, notes: Sequence[str] = ()) -> list[Path]:
    """plots, report.md and report.html in ``out_dir``; returns every file written."""
    figs = plot(results, out_dir)
    md = out_dir / "report.md"
    md.write_text(markdown(results, figs, out_dir, notes))
    page = write_html(md, f"Evaluation: {case_title(results)}", verdict=verdict(results))
    return [*figs, md, page]
