"""Forecaster behaviour: calibration on planted processes, rise detection, exact resume, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.forecasting import MODELS, Forecast, from_state, make_forecaster
from burstpilot.forecasting.backtest import run_model

STEP = 10.0


def gamma_renewal_counts(rng, rate: float, shape: float, n_steps: int) -> np.ndarray:
    """Counts per STEP of a Gamma-renewal process (inter-arrival CV = 1/sqrt(shape))."""
    total = n_steps * STEP
    gaps = rng.gamma(shape, 1.0 / (shape * rate), size=int(total * rate * 1.5) + 100)
    t = np.cumsum(gaps)
    t = t[t < total]
    return np.bincount((t // STEP).astype(int), minlength=n_steps).astype(float)


def coverage(counts: np.ndarray, horizon_s: float, model: str = "burst") -> dict:
    """Rolling-origin scores at non-overlapping origins (independent windows for a binomial tolerance)."""
    h = int(horizon_s // STEP)
    run = run_model(counts, STEP, model, [horizon_s], warmup_s=400 * STEP, stride=h)
    return run["horizons"][horizon_s]["scores"]


# Tolerance for an empirical coverage from ~150 independent windows: binomial sd ~0.025 at q = 0.9,
# so +-0.06 is about 2.5 sd (the seeds are fixed; a calibration bug moves coverage far more).
N_STEPS = 1300
TOL = 0.06


@pytest.mark.parametrize("seed", [1, 2])
def test_poisson_quantiles_reach_nominal_coverage(seed):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(20.0, N_STEPS).astype(float)
    s = coverage(counts, 60.0)
    assert s["n_origins"] >= 140
    assert abs(s["coverage"]["0.9"] - 0.9) <= TOL
    assert abs(s["coverage"]["0.5"] - 0.5) <= 0.1
    assert abs(s["peak_exceed_rate"]["0.9"] - 0.1) <= TOL


@pytest.mark.parametrize("shape", [0.25, 0.5])
def test_gamma_renewal_dispersion_and_coverage(shape):
    rng = np.random.default_rng(7)
    counts = gamma_renewal_counts(rng, rate=5.0, shape=shape, n_steps=N_STEPS)
    f = make_forecaster("burst", STEP)
    for c in counts:
        f.update(c)
    # Index of dispersion of a renewal process's counts is about CV^2 = 1/shape.
    assert f.dispersion() == pytest.approx(1.0 / shape, rel=0.35)
    s = coverage(counts, 60.0)
    assert abs(s["coverage"]["0.9"] - 0.9) <= TOL
    assert abs(s["peak_exceed_rate"]["0.9"] - 0.1) <= TOL


def test_the_prior_bands_do_not_rest_on_a_young_historys_dispersion():
    # An idle step, then 93: the dispersion read from that one difference is above 2000. Until the bands are
    # fitted on MIN_CALIBRATION origins they are the prior (Poisson around the point forecast, level_cv): the
    # busiest step's q0.999 over 19 steps within twice the point forecast, where the measured dispersion put
    # it at 120 times.
    f = make_forecaster("burst", STEP)
    f.update(0.0)
    f.update(93.0)
    assert f.dispersion() > 2000
    fc = f.forecast(horizon_s=190.0, quantiles=(0.9, 0.999))
    assert fc.mean_rate < fc.rate_quantiles[0.9] < fc.peak_quantiles[0.999] <= 2 * fc.mean_rate, fc


# A step change from 50 to 150 per step: the 120 s mean forecast crosses the midpoint within this many steps.
RISE_STEPS = 2


@pytest.mark.parametrize("seed", range(4))
def test_step_change_detected_within_two_steps(seed):
    rng = np.random.default_rng(seed)
    f = make_forecaster("burst", STEP)
    for c in rng.poisson(50.0, 300):
        f.update(c)
    assert f.forecast(120).mean_rate * STEP < 70
    after = None
    for i, c in enumerate(rng.poisson(150.0, 10)):
        f.update(c)
        if f.forecast(120).mean_rate * STEP > 100:
            after = i + 1
            break
    assert after is not None and after <= RISE_STEPS


def test_statsmodels_smoother_is_slower_on_the_same_step():
    rng = np.random.default_rng(0)
    f = make_forecaster("ets", STEP)
    for c in rng.poisson(50.0, 300):
        f.update(c)
    for c in rng.poisson(150.0, RISE_STEPS):
        f.update(c)
    assert f.forecast(120).mean_rate * STEP < 100  # the contrast the rise detector exists for


def test_few_false_rises_on_a_stationary_series():
    rng = np.random.default_rng(3)
    f = make_forecaster("burst", STEP)
    for c in rng.poisson(50.0, 2000):
        f.update(c)
    assert f.rises <= 20  # < 1% of steps


def feed(f, values):
    for v in values:
        f.update(v)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_state_round_trip_gives_identical_forecasts(name):
    rng = np.random.default_rng(11)
    params = {"refit_every": 40} if name in ("holt", "ets") else {}
    if name == "seasonal":
        params = {"season_s": 1200.0, "bucket_s": 100.0}  # two "days" fit in the test
    f = make_forecaster(name, STEP, calib_window_s=1000.0, **params)
    series = rng.poisson(30.0, 260).astype(float)
    series[[50, 51, 52, 120]] = np.nan  # gaps are part of the state
    feed(f, series)
    doc = json.loads(json.dumps(f.to_state(), allow_nan=False))
    g = from_state(doc)
    assert g.forecast(90) == f.forecast(90)
    more = rng.poisson(45.0, 60).astype(float)
    for v in more:  # crosses a refit for holt/ets
        f.update(v)
        g.update(v)
        assert g.forecast(60, (0.5, 0.9)) == f.forecast(60, (0.5, 0.9))
    assert json.dumps(g.to_state()) == json.dumps(f.to_state())


def test_forecast_fields_and_units():
    f = make_forecaster("burst", STEP)
    feed(f, [40.0] * 100)
    fc = f.forecast(120, (0.5, 0.9, 0.95, 0.99))
    assert isinstance(fc, Forecast) and fc.model == "burst" and fc.horizon_s == 120
    assert fc.mean_rate == pytest.approx(4.0, rel=0.05)  # 40 per 10 s step = 4 per second
    assert list(fc.rate_quantiles) == [0.5, 0.9, 0.95, 0.99]
    values = list(fc.rate_quantiles.values())
    assert values == sorted(values)
    assert all(fc.peak_quantiles[q] >= fc.rate_quantiles[q] for q in fc.rate_quantiles)
    assert fc.to_dict()["rate_quantiles"]["0.9"] == fc.rate_quantiles[0.9]


@pytest.mark.parametrize("bad", [-1, -0.5, math.inf, "x", [1]])
def test_bad_counts_raise_clear_errors(bad):
    f = make_forecaster("burst", STEP)
    f.update(3)
    with pytest.raises(BurstpilotError, match="step 1"):
        f.update(bad)


def test_empty_and_all_missing_histories_cannot_forecast():
    f = make_forecaster("ewma", STEP)
    with pytest.raises(BurstpilotError, match="no observed samples"):
        f.forecast(60)
    feed(f, [math.nan, None])
    with pytest.raises(BurstpilotError, match="2 missing"):
        f.forecast(60)
    f.update(5)
    assert f.forecast(60).mean_rate == pytest.approx(0.5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_missing_samples_hold_the_estimate_and_count_as_stale(name):
    rng = np.random.default_rng(5)
    f = make_forecaster(name, STEP)
    feed(f, rng.poisson(20.0, 80))
    before = f.forecast(60)
    feed(f, [math.nan] * 3)
    assert f.stale_steps == 3 and f.n_steps == 83 and f.n_observed == 80
    after = f.forecast(60)
    assert after.mean_rate == pytest.approx(before.mean_rate, rel=0.05)
    f.update(20)
    assert f.stale_steps == 0


def test_gappy_history_is_calibrated_on_complete_windows_only():
    rng = np.random.default_rng(9)
    counts = rng.poisson(20.0, 900).astype(float)
    counts[rng.random(900) < 0.1] = np.nan  # one step in ten missing
    f = make_forecaster("burst", STEP)
    feed(f, counts)
    fc = f.forecast(60)
    assert 1.5 < fc.mean_rate < 2.5
    assert fc.rate_quantiles[0.9] > fc.mean_rate


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "prophet"}, "unknown forecasting model"),
        ({"step_s": 0}, "step_s"),
        ({"step_s": math.nan}, "step_s"),
        ({"alpha": 2.0, "name": "ewma"}, "alpha"),
        ({"bogus": 1}, "unknown parameter 'bogus'"),
        ({"alphas": []}, "alphas"),
        ({"calib_window_s": 1.0}, "calib_window_s"),
    ],
)
def test_bad_construction(kwargs, match):
    args = {"name": "burst", "step_s": STEP, **kwargs}
    with pytest.raises(BurstpilotError, match=match):
        make_forecaster(args.pop("name"), args.pop("step_s"), **args)


@pytest.mark.parametrize(
    ("horizon", "quantiles", "match"),
    [(0, (0.9,), "horizon_s"), (-5, (0.9,), "horizon_s"), (60, (1.0,), "outside"), (60, (), "at least one")],
)
def test_bad_forecast_arguments(horizon, quantiles, match):
    f = make_forecaster("last", STEP)
    f.update(1)
    with pytest.raises(BurstpilotError, match=match):
        f.forecast(horizon, quantiles)


def test_bad_state_documents():
    f = make_forecaster("ewma", STEP)
    f.update(1)
    state = f.to_state()
    with pytest.raises(BurstpilotError, match="'ring' is missing"):
        from_state({k: v for k, v in state.items() if k != "ring"})
    with pytest.raises(BurstpilotError, match="version"):
        from_state({**state, "version": 99})
    with pytest.raises(BurstpilotError, match="unknown model"):
        from_state({**state, "model": "nope"})
    with pytest.raises(BurstpilotError, match="JSON object"):
        from_state([state])


def test_horizon_rounds_up_to_whole_steps():
    f = make_forecaster("last", STEP)
    assert f.horizon_steps(5) == 1 and f.horizon_steps(10) == 1 and f.horizon_steps(11) == 2


def test_seasonal_uses_the_daily_profile_after_two_days():
    day, step = 86400.0, 300.0
    per_day = int(day / step)
    hours = (np.arange(4 * per_day) * step % day) / 3600.0
    counts = np.where((hours >= 8) & (hours < 20), 100.0, 10.0)
    f = make_forecaster("seasonal", step)
    e = make_forecaster("ewma", step)
    cut = 2 * per_day + int(7.5 * 3600 / step)  # 07:30 on day 3, before the morning rise
    for c in counts[:per_day]:
        f.update(c)
        e.update(c)
    assert f.forecast(3600).mean_rate == e.forecast(3600).mean_rate  # < 2 days: the documented fallback
    for c in counts[per_day:cut]:
        f.update(c)
        e.update(c)
    # The next hour is half night (10) and half day (100) per step: 55 per step on average.
    assert f.forecast(3600).mean_rate * step == pytest.approx(55.0, rel=0.1)
    assert e.forecast(3600).mean_rate * step == pytest.approx(10.0, rel=0.1)


@pytest.mark.parametrize("name", ["holt", "ets"])
def test_statsmodels_models_survive_a_constant_series(name):
    f = make_forecaster(name, STEP, refit_every=20)
    feed(f, [0.0] * 120)
    assert f.forecast(60).mean_rate == pytest.approx(0.0, abs=1e-6)
    feed(f, [7.0] * 60)
    assert f.forecast(60).mean_rate == pytest.approx(0.7, rel=0.05)
