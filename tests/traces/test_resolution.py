"""Effective timestamp resolution found from the data, fits at that grid, and unbiased windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from burstpilot.traces import read_trace
from burstpilot.traces.fit import ResolutionDetector, fit_interarrival, fit_windows
from tests.traces.conftest import gamma_arrivals

MOONCAKE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mooncake" / "conversation_trace.jsonl"
)


def _detect(a, chunks=1):
    det = ResolutionDetector()
    for part in np.array_split(a, chunks):
        det.add(part)
    return det.finish()


@pytest.mark.parametrize("grid", [1.0, 2.0, 5.0])
def test_quantized_grids_found_and_fitted_at_the_grid(grid):
    rng = np.random.default_rng(int(grid))
    shape, rate = 0.5, 0.1  # a gap of 10 s on average: the shape is identifiable at all three grids
    exact = gamma_arrivals(rng, shape, rate, 40_000)
    a = np.floor(exact / grid) * grid
    found = _detect(a)
    assert found["resolution_s"] == grid and found["unit_s"] == 1.0
    assert _detect(a, chunks=7) == found  # streaming in chunks gives the same answer
    fit = fit_interarrival(np.diff(a), found["resolution_s"])
    assert fit["method"] == f"gamma-mle-interval-censored-{grid:g}s"
    assert fit["gamma_shape"] == pytest.approx(shape, abs=0.05)
    lo, hi = fit["gamma_shape_ci95"]
    assert lo <= shape <= hi and fit["identifiable"]
    # fitted as if the grid were the 1-s unit, the shape is further off
    if grid > 1:
        wrong = fit_interarrival(np.diff(a), 1.0)["gamma_shape"]
        assert abs(wrong - shape) > abs(fit["gamma_shape"] - shape) + 0.03


def test_jittered_grid_and_continuous_timestamps():
    rng = np.random.default_rng(4)
    exact = gamma_arrivals(rng, 0.7, 0.2, 20_000)
    jittered = np.round(np.floor(exact / 3) * 3 + rng.integers(-3, 4, len(exact)) / 1000, 3)
    found = _detect(np.sort(jittered))
    assert found["resolution_s"] == 3.0 and found["unit_s"] == 0.001 and found["grid_share"] > 0.99
    assert _detect(exact)["resolution_s"] == 0.0


def test_mooncake_three_second_grid_is_found_and_flagged():
    if not MOONCAKE.exists():
        pytest.skip(f"shared Mooncake trace not found at {MOONCAKE}")
    a = read_trace(MOONCAKE).arrival_s
    found = _detect(a)
    assert found["resolution_s"] == 3.0 and found["unit_s"] == 0.001
    fit = fit_interarrival(np.diff(a), 3.0)
    assert fit["method"] == "gamma-mle-interval-censored-3s"
    assert fit["mean_ticks"] < 0.2 and not fit["identifiable"]


def test_a_small_trace_does_not_invent_a_coarse_grid():
    a = np.array([0.0, 2.0, 4.0, 7.0, 9.0])  # five points, mostly even: chance, not a 2-s grid
    assert _detect(a)["resolution_s"] == 1.0


@pytest.mark.parametrize("shape", [0.2, 0.35, 0.5, 1.0, 1.5, 2.0])
def test_windowed_shapes_unbiased_with_stated_uncertainty(shape):
    """Planted shapes 0.2-2.0, 1-s timestamps, 200 arrivals per 1,200-s window: the median over
    200 windows within 0.05, and the 95% intervals cover the planted shape in about 95% of windows."""
    rng = np.random.default_rng(int(shape * 100))
    rate = 200 / 1200
    a = np.floor(gamma_arrivals(rng, shape, rate, 200 * 200))
    w = fit_windows(a, 1200.0, 1.0)
    k = np.array([np.nan if v is None else v for v in w["gamma_shape"]])
    lo = np.array([np.nan if v is None else v for v in w["gamma_shape_lo"]])
    hi = np.array([np.nan if v is None else v for v in w["gamma_shape_hi"]])
    ok = np.isfinite(k)
    assert ok.sum() >= 190
    assert np.median(k[ok]) == pytest.approx(shape, abs=0.05)
    cover = np.mean((lo[ok] <= shape) & (shape <= hi[ok]))
    assert 0.88 <= cover <= 0.995


def test_windowed_shapes_continuous_timestamps():
    rng = np.random.default_rng(9)
    a = gamma_arrivals(rng, 0.4, 1.0, 1200 * 100)
    w = fit_windows(a, 1200.0, 0.0)
    k = np.array([v for v in w["gamma_shape"] if v is not None])
    assert np.median(k) == pytest.approx(0.4, abs=0.02)


def test_late_continuous_timestamps_are_not_taken_for_a_grid():
    """Timestamps far along the axis (day 120 of a trace) once passed any grid test: the tolerance
    grew with the tick count. Continuous stays continuous; rounded to 1 ms or 1 s is found as such."""
    rng = np.random.default_rng(12)
    a = 120 * 86400 + gamma_arrivals(rng, 0.5, 2.0, 5000)
    assert _detect(a)["resolution_s"] == 0.0
    assert _detect(np.round(a, 3))["resolution_s"] == 0.001
    assert _detect(np.floor(a))["resolution_s"] == 1.0
    b = a.copy()
    b[100] = b[101]  # a repeated timestamp does not make the smallest gap a tick
    assert _detect(b)["resolution_s"] == 0.0
