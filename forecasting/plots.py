"""Plots of backtested forecast bands over the actual rate, with the largest burst episodes zoomed in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# A step is a burst when its count exceeds the trailing median of the counts before it by this many robust
# standard deviations (1.4826 x the median absolute deviation of those counts, at least one Poisson sd).
BURST_SD = 4.0


@dataclass(frozen=True)
class Episode:
    step: int  # index into the counts of the step where the excess peaks
    excess_sd: float  # its excess over the trailing median, in robust standard deviations
    span_steps: int  # 1: a one-step spike; the horizon: a surge of the horizon's mean rate
    scored: bool  # whether it lies after the warm-up (where forecasts are scored)


def _excess(series: np.ndarray, width: int, floor_sd: np.ndarray) -> np.ndarray:
    """Per step: (value - median of the ``width`` values before it) / robust sd of those values."""
    out = np.full(len(series), -np.inf)
    for i in range(1, len(series)):
        past = series[max(0, i - width) : i]
        past = past[~np.isnan(past)]
        if len(past) < width // 2 or np.isnan(series[i]):
            continue
        med = float(np.median(past))
        sd = max(1.4826 * float(np.median(np.abs(past - med))), float(floor_sd[i]), 1e-12)
        out[i] = (series[i] - med) / sd
    return out


def burst_episodes(
    counts: np.ndarray, horizon_steps: int, warmup_steps: int = 0, n: int = 3
) -> list[Episode]:
    """Up to ``n`` burst episodes of a per-step count series, largest first. At two scales, one step and
    the horizon's mean (a surge that lasts), a step is a burst when the value exceeds the median of the
    ``6 * horizon_steps`` values before it by more than ``BURST_SD`` robust standard deviations (1.4826 x
    their median absolute deviation, at least the Poisson sd); episodes are at least ``6 * horizon_steps``
    apart. Missing steps (NaN) are never episodes; the first ``3 * horizon_steps`` steps cannot be."""
    counts = np.asarray(counts, dtype=float)
    width = max(6 * horizon_steps, 6)
    k = max(int(horizon_steps), 1)
    best = np.full(len(counts), -np.inf)
    span = np.ones(len(counts), dtype=int)
    for size in sorted({1, k}):
        if size == 1:
            series = counts
        else:  # mean of the `size` steps ending at each step (NaN where any is missing)
            series = np.full(len(counts), np.nan)
            if len(counts) >= size:
                series[size - 1 :] = np.lib.stride_tricks.sliding_window_view(counts, size).mean(axis=1)
        poisson_sd = np.sqrt(np.maximum(np.nan_to_num(series), 1.0) / size)
        z = _excess(series, width, poisson_sd)
        better = z > best
        best[better], span[better] = z[better], size
    picked: list[Episode] = []
    for i in np.argsort(best)[::-1]:
        if best[i] <= BURST_SD or len(picked) >= n:
            break
        if all(abs(int(i) - e.step) >= width for e in picked):
            picked.append(Episode(int(i), float(best[i]), int(span[i]), bool(i >= warmup_steps)))
    return picked


def plot_bands(
    path: Path,
    title: str,
    counts: np.ndarray,
    step_s: float,
    horizon_steps: int,
    runs: dict[str, dict[str, Any]],
    quantiles: tuple[float, ...],
    band_model: str = "burst",
    compare_model: str = "last",
    warmup_steps: int = 0,
    unit: str = "events",
) -> None:
    """One PNG: the whole series on top (the unscored warm-up shaded), below it the three largest burst
    episodes after the warm-up, zoomed in on a shared y scale.

    Each forecast is drawn at the end of the window it predicts (origin + horizon), so the band at time t
    is what the model said one horizon earlier about the rate of the window ending at t.
    """
    import matplotlib  # imported here: plotting is optional (--no-plots) and matplotlib is slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = band_model if band_model in runs else next(iter(runs))
    main = runs[name]
    x_end = (main["origin"] + horizon_steps + 1) * step_s
    qi = {q: i for i, q in enumerate(quantiles)}
    lo_q = 0.5 if 0.5 in qi else quantiles[0]
    hi_q = 0.9 if 0.9 in qi else quantiles[-1]
    top_q = max(quantiles)
    t_step = (np.arange(len(counts)) + 1) * step_s
    rate = counts / step_s
    found = burst_episodes(counts, horizon_steps, warmup_steps, n=len(counts))
    episodes = [e for e in found if e.scored][:3]
    in_warmup = [e for e in found if not e.scored]

    fig = plt.figure(figsize=(14, 8 if episodes else 4.8))
    grid = fig.add_gridspec(
        2 if episodes else 1, max(len(episodes), 1), height_ratios=(1.1, 1.0) if episodes else None
    )
    top = fig.add_subplot(grid[0, :])
    lower = []
    for i in range(len(episodes)):
        lower.append(fig.add_subplot(grid[1, i], sharey=lower[0] if lower else None))
    other = runs.get(compare_model) if compare_model != name else None
    for ax in [top, *lower]:
        ax.plot(t_step, rate, color="0.7", lw=0.7, label="actual rate per step")
        ax.plot(
            x_end,
            main["actual"],
            color="black",
            lw=1.1,
            label=f"actual mean over {horizon_steps * step_s:g} s",
        )
        ax.fill_between(
            x_end,
            main["rate_q"][:, qi[lo_q]],
            main["rate_q"][:, qi[top_q]],
            color="tab:blue",
            alpha=0.15,
            label=f"{name} q{lo_q:g}-q{top_q:g}",
        )
        ax.plot(x_end, main["rate_q"][:, qi[hi_q]], color="tab:blue", lw=1.2, label=f"{name} q{hi_q:g}")
        ax.plot(
            x_end,
            main["peak_q"][:, qi[hi_q]],
            color="tab:red",
            lw=0.9,
            ls="--",
            label=f"{name} peak q{hi_q:g}",
        )
        if other is not None:
            ax.plot(
                (other["origin"] + horizon_steps + 1) * step_s,
                other["rate_q"][:, qi[hi_q]],
                color="tab:orange",
                lw=0.8,
                ls=":",
                alpha=0.8,
                label=f"{compare_model} q{hi_q:g}",
            )
        ax.set_ylabel(f"{unit} / s")
        ax.set_xlabel("time since the first arrival (s)")
        ax.grid(alpha=0.25)
    if warmup_steps > 0:
        top.axvspan(0, warmup_steps * step_s, color="0.85", alpha=0.6, lw=0, label="warm-up (not scored)")
    top.set_xlim(0, len(counts) * step_s)
    # The scale fits the actual rate and the band model's own quantiles (the comparison model may leave it).
    own = np.concatenate([rate, main["peak_q"][:, qi[hi_q]], main["rate_q"][:, qi[top_q]]])
    top.set_ylim(0, max(float(np.nanmax(own, initial=0.0)), 1e-9) * 1.05)
    for e in episodes:
        top.axvline(t_step[e.step], color="tab:purple", lw=0.8, alpha=0.6)
    notes = []
    if in_warmup and (not episodes or in_warmup[0].excess_sd > episodes[0].excess_sd):
        e = in_warmup[0]
        notes.append(
            f"the largest burst ({e.excess_sd:.0f} sd at {t_step[e.step]:.0f} s) is in the warm-up: not scored"
        )
    if not episodes:
        notes.append(
            f"no burst episode after the warm-up (no step more than {BURST_SD:g} robust sd above the median "
            f"of the {6 * horizon_steps} steps before it)"
        )
    # Notes go under the title, not over the data.
    top.set_title("\n".join([title, *notes]), fontsize=10)
    top.legend(loc="upper left", fontsize=7, ncol=4)
    half = 3 * horizon_steps * step_s
    for ax, e in zip(lower, episodes, strict=True):
        centre = t_step[e.step]
        lo, hi = max(centre - half, 0.0), min(centre + half, len(counts) * step_s)
        ax.set_xlim(lo, hi)
        ax.axvline(centre, color="tab:purple", lw=0.8, alpha=0.6)
        what = "step" if e.span_steps == 1 else f"{e.span_steps * step_s:g} s mean"
        ax.set_title(
            f"burst at {centre:.0f} s: the {what} {e.excess_sd:.0f} robust sd above its trailing median",
            fontsize=9,
        )
    if lower:
        inside = np.zeros(len(counts), dtype=bool)
        inside_fc = np.zeros(len(x_end), dtype=bool)
        for e in episodes:
            c = t_step[e.step]
            inside |= (t_step >= c - half) & (t_step <= c + half)
            inside_fc |= (x_end >= c - half) & (x_end <= c + half)
        bands = (main["peak_q"][:, qi[hi_q]], main["rate_q"][:, qi[top_q]])
        shown = [rate[inside]] + [np.asarray(v)[inside_fc] for v in bands]
        ymax = max(float(np.nanmax(np.concatenate(shown), initial=0.0)), 1e-9)
        lower[0].set_ylim(0, ymax * 1.1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
