"""Hostile input: every forecaster answers any sequence of counts with a forecast or a BurstpilotError.

Issue 15: a request count of about 3e15 in one tick aborted the operator (a C++ ``std::domain_error``
from scipy's negative binomial quantile) and 1e16 made one forecast spin for 40 s. Counts above
``MAX_COUNT`` are now rejected by name; anything at or below it gives finite, ordered quantiles.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from burstpilot.errors import BurstpilotError
from burstpilot.forecasting import MAX_COUNT, MODELS, from_state, make_forecaster

STEP = 10.0
WINDOW = 600.0  # a short calibration ring keeps each example fast; the code paths are the same

# Values a scrape can produce: ordinary counts, fractions (counts split over steps), missing samples and
# the pathological ones (non-finite, negative, denormal, beyond the limit, beyond float64's integers).
SPECIAL = [0.0, -0.0, 5e-324, 1e-300, 1e-9, 0.5, 1.0, 7.0, 1e6, 1e9, MAX_COUNT, 3e15, 1e16, 1e300]
SPECIAL += [-1.0, -1e-300, math.inf, -math.inf, math.nan, None]
values = st.one_of(
    st.sampled_from(SPECIAL),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.integers(min_value=0, max_value=2000),
)
# A plausible history (so the calibration, rise detector and statsmodels refits all run) with hostile
# values injected at random places.
histories = st.tuples(
    st.lists(st.integers(min_value=0, max_value=500), min_size=0, max_size=90),
    st.lists(st.tuples(st.integers(min_value=0, max_value=200), values), max_size=12),
)


def is_valid(v) -> bool:
    if v is None:
        return True
    x = float(v)
    return math.isnan(x) or 0.0 <= x <= MAX_COUNT


def check_forecast(f, horizon_s: float, quantiles: tuple[float, ...]) -> None:
    if f.n_observed == 0:
        with pytest.raises(BurstpilotError, match="no observed samples"):
            f.forecast(horizon_s, quantiles)
        return
    fc = f.forecast(horizon_s, quantiles)
    assert math.isfinite(fc.mean_rate) and fc.mean_rate >= 0.0
    for band in (fc.rate_quantiles, fc.peak_quantiles):
        got = [band[q] for q in sorted(quantiles)]
        assert all(math.isfinite(v) and v >= 0.0 for v in got), got
        assert got == sorted(got), got  # monotone in the level
    for q in quantiles:
        assert fc.peak_quantiles[q] >= fc.rate_quantiles[q]


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(
    max_examples=25,
    deadline=timedelta(seconds=30),  # a bound against hangs (one forecast spun for 40 s), not a speed test
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    history=histories,
    horizon_s=st.floats(min_value=0.001, max_value=WINDOW),
    quantiles=st.lists(st.floats(min_value=1e-6, max_value=1 - 1e-6), min_size=1, max_size=4, unique=True),
)
def test_any_sequence_gives_a_forecast_or_a_clear_error(name, history, horizon_s, quantiles):
    base, injected = history
    series: list = [float(v) for v in base]
    for pos, v in injected:
        series.insert(min(pos, len(series)), v)
    params = {"refit_every": 20, "min_fit": 10} if name in ("holt", "ets") else {}
    f = make_forecaster(name, STEP, calib_window_s=WINDOW, **params)
    qs = tuple(quantiles)
    for i, v in enumerate(series):
        before = json.dumps(f.to_state(), allow_nan=False)
        if is_valid(v):
            f.update(v)
        else:
            with pytest.raises(BurstpilotError, match=f"step {f.n_steps}"):
                f.update(v)
            assert json.dumps(f.to_state(), allow_nan=False) == before  # a rejected count changes nothing
        if i % 7 == 0 or i == len(series) - 1:
            check_forecast(f, horizon_s, qs)
    g = from_state(json.loads(json.dumps(f.to_state(), allow_nan=False)))
    if f.n_observed:
        assert g.forecast(horizon_s, qs) == f.forecast(horizon_s, qs)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("value", [3e15, 1e16, 1e300, float(10**20)])
def test_a_count_beyond_the_limit_is_rejected_by_value(name, value):
    f = make_forecaster(name, STEP)
    rng = np.random.default_rng(0)
    for c in rng.poisson(30.0, 100):
        f.update(float(c))
    before = f.forecast(120)
    with pytest.raises(BurstpilotError, match=r"count at step 100 \(.*\) is above"):
        f.update(value)
    assert f.forecast(120) == before and f.n_steps == 100


@pytest.mark.parametrize("name", sorted(MODELS))
def test_counts_at_the_limit_give_finite_ordered_bands(name):
    f = make_forecaster(name, STEP)
    rng = np.random.default_rng(1)
    for c in rng.poisson(30.0, 80):
        f.update(float(c))
    for v in [MAX_COUNT, MAX_COUNT, 0.0, MAX_COUNT / 3, 1e-300, MAX_COUNT]:
        f.update(v)
        check_forecast(f, 130.0, (0.5, 0.9, 0.95, 0.99))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"step_s": 1e-300}, "calibration window"),
        ({"calib_window_s": 1e300}, "calibration window"),
    ],
)
def test_a_ring_too_large_to_hold_is_refused(kwargs, match):
    args = {"step_s": STEP, **kwargs}
    with pytest.raises(BurstpilotError, match=match):
        make_forecaster("burst", args.pop("step_s"), **args)


@pytest.mark.parametrize("horizon", [1e300, 1e7])
def test_an_unbounded_horizon_is_refused(horizon):
    f = make_forecaster("burst", STEP)
    f.update(3)
    with pytest.raises(BurstpilotError, match="horizon_s"):
        f.forecast(horizon)


def test_a_horizon_longer_than_the_calibration_window_falls_back_to_the_parametric_bands():
    f = make_forecaster("burst", STEP, calib_window_s=WINDOW)
    for c in np.random.default_rng(2).poisson(30.0, 100):
        f.update(float(c))
    check_forecast(f, 2 * WINDOW, (0.5, 0.9))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    path=st.lists(
        st.sampled_from(["model", "version", "ring", "params", "model_state", "n_steps"]), max_size=1
    ),
    junk=st.one_of(st.none(), st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2)),
)
def test_a_damaged_state_document_gives_a_clear_error(path, junk):
    f = make_forecaster("burst", STEP, calib_window_s=WINDOW)
    for c in range(40):
        f.update(float(c % 7))
    state = f.to_state()
    for key in path:
        state[key] = junk
    try:
        g = from_state(state)
    except BurstpilotError:
        return
    g.update(3.0)  # whatever loaded must work
    check_forecast(g, 60.0, (0.5, 0.9))


@pytest.mark.parametrize(
    "rows",
    [
        "flat",  # the rows' numbers without their rows
        "short",  # a row one number short
        "text",  # a number written as text that is not one
    ],
)
def test_damaged_ring_rows_give_a_clear_error(rows):
    f = make_forecaster("burst", STEP, calib_window_s=WINDOW)
    for c in range(40):
        f.update(float(c % 7))
    state = json.loads(json.dumps(f.to_state()))
    held = state["ring"]["rows"]
    if rows == "flat":
        state["ring"]["rows"] = [v for row in held for v in row][: len(held[0])]
    elif rows == "short":
        held[-1] = held[-1][:-1]
    else:
        held[-1][0] = "twelve"
    with pytest.raises(BurstpilotError, match="damaged"):
        from_state(state)
