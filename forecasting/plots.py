"""Plots of backtested forecast bands over the actual rate, with burst episodes zoomed in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def burst_episodes(actual: np.ndarray, k: int, n: int = 3) -> list[int]:
    """Indices (into ``actual``, the realized horizon rate per origin) of up to ``n`` burst episodes: the
    largest rises of the realized rate above its trailing median, at least 6 horizons apart."""
    if len(actual) == 0:
        return []
    width = max(6 * k, 1)
    trailing = np.array([np.median(actual[max(0, i - width) : i + 1]) for i in range(len(actual))])
    excess = actual - trailing
    picked: list[int] = []
    for i in np.argsort(excess)[::-1]:
        if excess[i] <= 0 or len(picked) >= n:
            break
        if all(abs(int(i) - j) >= width for j in picked):
            picked.append(int(i))
    return sorted(picked)


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
) -> None:
    """One PNG: the whole series on top, up to three burst episodes zoomed in below.

    Each forecast is drawn at the end of the window it predicts (origin + horizon), so the band at time t
    is what the model said one horizon earlier about the rate of the window ending at t.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = runs.get(band_model) or next(iter(runs.values()))
    name = band_model if band_model in runs else next(iter(runs))
    x_end = (main["origin"] + horizon_steps + 1) * step_s
    qi = {q: i for i, q in enumerate(quantiles)}
    lo_q = 0.5 if 0.5 in qi else quantiles[0]
    hi_q = 0.9 if 0.9 in qi else quantiles[-1]
    top_q = max(quantiles)
    episodes = burst_episodes(main["actual"], horizon_steps)
    fig = plt.figure(figsize=(14, 8 if episodes else 4.5))
    grid = fig.add_gridspec(2 if episodes else 1, max(len(episodes), 1))
    axes = [fig.add_subplot(grid[0, :])] + [fig.add_subplot(grid[1, i]) for i in range(len(episodes))]
    t_step = (np.arange(len(counts)) + 1) * step_s
    for n_ax, ax in enumerate(axes):
        ax.plot(t_step, counts / step_s, color="0.75", lw=0.7, label="actual rate per step")
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
            step=None,
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
        other = runs.get(compare_model)
        if other is not None and compare_model != name:
            ax.plot(
                (other["origin"] + horizon_steps + 1) * step_s,
                other["rate_q"][:, qi[hi_q]],
                color="tab:orange",
                lw=0.9,
                ls=":",
                label=f"{compare_model} q{hi_q:g}",
            )
        ax.set_ylabel("events / s")
        ax.set_xlabel("time (s)")
        if n_ax == 0:
            ax.set_title(title)
            ax.legend(loc="upper left", fontsize=7, ncol=3)
        else:
            centre = x_end[episodes[n_ax - 1]]
            half = 5 * horizon_steps * step_s
            ax.set_xlim(centre - half, centre + half)
            inside = (t_step >= centre - half) & (t_step <= centre + half)
            ymax = max(float((counts[inside] / step_s).max(initial=0.0)), 1e-9)
            ax.set_ylim(0, ymax * 1.25)
            ax.set_title(f"burst episode at {centre:.0f} s", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
