"""Rolling-origin backtests of the forecasters on binned traces.

Every model is fed the series one step at a time, exactly as the operator feeds it; at each origin t
(after the warm-up) it forecasts the next h steps, and the forecast is scored against what happened in
steps t+1 .. t+h: the realized mean rate (events/s over the horizon) and the realized peak per-step rate.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.forecasting import DEFAULT_QUANTILES, MODELS, make_forecaster

SERIES = ("requests", "prompt_tokens", "output_tokens", "tokens")


def time_grid_s(arrival_s: np.ndarray) -> float | None:
    """The grid the timestamps were recorded on, in seconds, or None when they look continuous.

    Some traces round arrivals to a coarse grid (Mooncake's lie on a 3 s grid, BurstGPT's on whole seconds).
    The grid is the typical smallest gap between distinct timestamps, accepted when nearly every gap
    (95%) is within 2% of a whole multiple of it; gaps of continuous arrival times are not.
    """
    t = np.unique(np.asarray(arrival_s, dtype=float))
    gaps = np.diff(t)
    gaps = gaps[gaps > 0]
    if len(gaps) < 20:
        return None
    low = float(np.quantile(gaps, 0.01))
    if not low > 0:
        return None
    grid = float(np.median(gaps[gaps < 1.5 * low]))
    ratio = gaps / grid
    near = np.abs(ratio - np.round(ratio)) <= 0.02
    return grid if float(np.mean(near)) >= 0.95 else None


def bin_trace(
    trace, step_s: float, names: Sequence[str] = ("requests", "tokens"), dequantize: bool = True
) -> dict[str, np.ndarray]:
    """Counts per ``step_s`` step of a ``burstpilot.traces.Trace``: requests, prompt tokens, output tokens
    or all tokens. Steps start at the first arrival; the last, incomplete step is dropped.

    With ``dequantize`` (the default), arrivals recorded on a coarse time grid (``time_grid_s``) are spread
    uniformly over their grid cell first (a fixed seed: the same counts every run). Without it a step that
    is not a multiple of the grid aliases: Mooncake's 3 s ticks fall 4, 3, 3 to a 10 s step, a 33% swing
    that is an artefact of the recording, not traffic a forecaster could learn."""
    if not step_s > 0:
        raise BurstpilotError(f"step must be a positive number of seconds, got {step_s!r}")
    for name in names:
        if name not in SERIES:
            raise BurstpilotError(f"unknown series {name!r} (choose from {', '.join(SERIES)})")
    if len(trace) == 0:
        raise BurstpilotError("the trace has no requests")
    arrival = np.asarray(trace.arrival_s, dtype=float)
    span = float(arrival[-1] - arrival[0])
    n = int(span // step_s)
    if n < 2:
        raise BurstpilotError(f"the trace spans {span:.1f} s: fewer than two {step_s:g} s steps")
    grid = time_grid_s(arrival) if dequantize else None
    if grid is not None:
        arrival = arrival + np.random.default_rng(0).uniform(0.0, grid, len(arrival))
    idx = np.floor((arrival - arrival[0]) / step_s).astype(np.int64)
    keep = (idx >= 0) & (idx < n)
    idx = idx[keep]
    prompt = np.asarray(trace.request_tokens, dtype=float)[keep]
    output = np.asarray(trace.response_tokens, dtype=float)[keep]
    weights = {"requests": None, "prompt_tokens": prompt, "output_tokens": output, "tokens": prompt + output}
    return {name: np.bincount(idx, weights=weights[name], minlength=n).astype(float) for name in names}


def _pinball(y: np.ndarray, f: np.ndarray, q: float) -> float:
    d = y - f
    return float(np.mean(np.maximum(q * d, (q - 1.0) * d)))


def score(
    mean: np.ndarray,
    rate_q: dict[float, np.ndarray],
    peak_q: dict[float, np.ndarray],
    actual: np.ndarray,
    actual_peak: np.ndarray,
) -> dict[str, Any]:
    """Accuracy of forecasts against realized horizon rates (all per second)."""
    denom = np.abs(mean) + np.abs(actual)
    ratio = np.divide(2.0 * np.abs(mean - actual), denom, out=np.zeros_like(denom), where=denom > 0)
    return {
        "n_origins": len(actual),
        "mae": float(np.mean(np.abs(mean - actual))),
        "smape": float(100.0 * np.mean(ratio)),
        "pinball": {str(q): _pinball(actual, f, q) for q, f in rate_q.items()},
        "coverage": {str(q): float(np.mean(actual <= f)) for q, f in rate_q.items()},
        "peak_exceed_rate": {str(q): float(np.mean(actual_peak > f)) for q, f in peak_q.items()},
        "peak_pinball": {str(q): _pinball(actual_peak, f, q) for q, f in peak_q.items()},
    }


def run_model(
    counts: np.ndarray,
    step_s: float,
    model: str,
    horizons_s: Sequence[float],
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    warmup_s: float = 600.0,
    stride: int = 1,
    params: dict[str, Any] | None = None,
    advance: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Backtest one model on one series at several horizons; returns per horizon the scores and the
    forecast arrays (for plots)."""
    if model not in MODELS:
        raise BurstpilotError(f"unknown model {model!r} (choose from {', '.join(MODELS)})")
    if stride < 1:
        raise BurstpilotError(f"stride must be >= 1, got {stride}")
    f = make_forecaster(model, step_s, **(params or {}))
    t_count = len(counts)
    warm = int(math.ceil(warmup_s / step_s))
    steps = {h: f.horizon_steps(h) for h in horizons_s}
    if warm + max(steps.values()) >= t_count:
        raise BurstpilotError(
            f"the series has {t_count} steps: too short for a {warmup_s:g} s warm-up and a "
            f"{max(horizons_s):g} s horizon"
        )
    qs = tuple(quantiles)
    rows: dict[float, list] = {h: [] for h in horizons_s}
    update_ns = np.zeros(t_count)
    forecast_ns: list[int] = []
    for t in range(t_count):
        t0 = time.perf_counter_ns()
        f.update(counts[t])
        update_ns[t] = time.perf_counter_ns() - t0
        if t >= warm and (t - warm) % stride == 0:
            for h in horizons_s:
                if t + steps[h] < t_count:
                    t1 = time.perf_counter_ns()
                    fc = f.forecast(h, qs)
                    forecast_ns.append(time.perf_counter_ns() - t1)
                    rows[h].append(
                        (
                            t,
                            fc.mean_rate,
                            [fc.rate_quantiles[q] for q in qs],
                            [fc.peak_quantiles[q] for q in qs],
                        )
                    )
        if advance is not None:
            advance(1)
    out: dict[str, Any] = {"update_ns": update_ns, "forecast_ns": np.asarray(forecast_ns), "horizons": {}}
    for h in horizons_s:
        k = steps[h]
        origin = np.array([r[0] for r in rows[h]], dtype=int)
        mean = np.array([r[1] for r in rows[h]])
        rq = np.array([r[2] for r in rows[h]]).reshape(len(origin), len(qs))
        pq = np.array([r[3] for r in rows[h]]).reshape(len(origin), len(qs))
        window = np.stack([counts[origin + i] for i in range(1, k + 1)], axis=1)
        actual = window.mean(axis=1) / step_s
        actual_peak = window.max(axis=1) / step_s
        scores = score(
            mean,
            {q: rq[:, i] for i, q in enumerate(qs)},
            {q: pq[:, i] for i, q in enumerate(qs)},
            actual,
            actual_peak,
        )
        out["horizons"][h] = {
            "scores": scores,
            "origin": origin,
            "mean": mean,
            "rate_q": rq,
            "peak_q": pq,
            "actual": actual,
            "actual_peak": actual_peak,
        }
    return out


def timing(run: dict[str, Any]) -> dict[str, float]:
    upd = run["update_ns"] / 1e6
    fc = run["forecast_ns"] / 1e6
    return {
        "update_ms": float(upd.mean()),
        "update_ms_p99": float(np.quantile(upd, 0.99)),
        "update_ms_max": float(upd.max()),
        "forecast_ms": float(fc.mean()) if len(fc) else math.nan,
    }


def model_entry(run: dict[str, Any], horizon_s: float) -> dict[str, Any]:
    return {**run["horizons"][horizon_s]["scores"], **timing(run)}


def write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(clean(doc), indent=2, allow_nan=False))
    tmp.replace(path)


def clean(value: Any) -> Any:
    """NaN -> None, recursively (so the document is strict JSON)."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
