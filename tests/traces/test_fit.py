"""Planted inter-arrival parameters are recovered, including with 1-second timestamps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from burstpilot.traces.fit import detect_resolution, fit_interarrival, fit_windows
from tests.traces.conftest import gamma_arrivals


@pytest.mark.parametrize(("shape", "rate"), [(0.25, 0.5), (0.4, 1.0), (0.7, 2.0), (1.0, 1.0), (2.5, 0.8)])
def test_gamma_shape_recovered_from_1s_timestamps(shape, rate):
    rng = np.random.default_rng(int(shape * 100))
    a = gamma_arrivals(rng, shape, rate, 30_000, resolution=1.0)
    assert detect_resolution(a) == 1.0
    gaps = np.diff(a)
    assert (gaps == 0).mean() > 0.1  # many zero gaps: a naive continuous fit cannot be used
    fit = fit_interarrival(gaps, 1.0)
    assert fit["method"] == "gamma-mle-interval-censored-1s"
    assert fit["gamma_shape"] == pytest.approx(shape, abs=0.1)
    assert fit["gamma_shape"] * fit["gamma_scale"] == pytest.approx(1 / rate, rel=0.05)  # mean gap
    assert fit["ks_gamma"] < 0.02
    if shape < 0.5:
        assert fit["ks_exponential"] > 5 * fit["ks_gamma"]  # bursty traffic is not Poisson


def test_naive_fit_of_rounded_gaps_is_biased_and_interval_fit_is_not():
    rng = np.random.default_rng(7)
    a = gamma_arrivals(rng, 0.5, 1.0, 30_000, resolution=1.0)
    gaps = np.diff(a)
    pos = gaps[gaps > 0]
    naive_shape = stats.gamma.fit(pos, floc=0)[0]  # dropping the zero gaps, as a naive fit must
    assert abs(naive_shape - 0.5) > 0.3
    assert fit_interarrival(gaps, 1.0)["gamma_shape"] == pytest.approx(0.5, abs=0.05)


def test_continuous_fits():
    rng = np.random.default_rng(1)
    a = gamma_arrivals(rng, 0.6, 3.0, 20_000)
    assert detect_resolution(a) == 0.0
    fit = fit_interarrival(np.diff(a), 0.0)
    assert fit["method"] == "gamma-mle"
    assert fit["gamma_shape"] == pytest.approx(0.6, abs=0.03)
    assert fit["cv"] == pytest.approx(1 / np.sqrt(0.6), rel=0.05)
    w = rng.weibull(0.7, 20_000) * 2.0
    wf = fit_interarrival(w, 0.0)
    assert wf["weibull_shape"] == pytest.approx(0.7, abs=0.03)
    assert wf["weibull_scale"] == pytest.approx(2.0, rel=0.05)
    assert wf["ks_weibull"] < wf["ks_gamma"]


def test_millisecond_resolution_detected():
    a = np.round(np.cumsum(np.random.default_rng(2).exponential(0.5, 1000)), 3)
    assert detect_resolution(a) == 0.001
    assert fit_interarrival(np.diff(a), 0.001)["gamma_shape"] == pytest.approx(1.0, abs=0.1)


def test_windowed_refits_follow_a_planted_change():
    rng = np.random.default_rng(3)
    first = gamma_arrivals(rng, 0.3, 1.0, 7200)
    second = first[-1] + gamma_arrivals(rng, 1.5, 2.0, 14400)
    a = np.floor(np.concatenate([first, second]))
    w = fit_windows(a, 1200.0, 1.0)
    k = np.array([np.nan if v is None else v for v in w["gamma_shape"]])
    rate = np.array(w["rate"])
    change = int(first[-1] // 1200)
    assert np.nanmedian(k[: change - 1]) == pytest.approx(0.3, abs=0.1)
    assert np.nanmedian(k[change + 1 :]) == pytest.approx(1.5, abs=0.3)
    assert np.median(rate[: change - 1]) == pytest.approx(1.0, rel=0.2)
    assert np.median(rate[change + 1 : -1]) == pytest.approx(2.0, rel=0.1)
    assert w["window_s"] == 1200.0 and len(w["start_s"]) == len(k)


def test_too_few_gaps_gives_no_fit():
    fit = fit_interarrival(np.array([1.0, 2.0, 0.5]), 0.0)
    assert fit["gamma_shape"] is None and fit["n"] == 3


@pytest.mark.parametrize("tick", [1.0, 0.0])
def test_regular_arrivals_hit_the_shape_cap(tick):
    a = np.arange(100) * (1.0 if tick else 0.12345678)
    fit = fit_interarrival(np.diff(a), tick)
    assert fit["gamma_shape"] == 1000.0 and fit["gamma_shape"] * fit["gamma_scale"] == pytest.approx(
        np.diff(a)[0]
    )
    w = fit_windows(a, 1200.0, tick)
    assert w["gamma_shape"] == [1000.0]
