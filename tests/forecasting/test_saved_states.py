"""States saved by earlier versions of the forecasters still load, forecast and keep learning.

The operator stores each pool's forecaster state (``Forecaster.to_state()``) in the ServingPool's status; an
upgraded operator must resume from what the previous version wrote. ``data/state_v1_*.json`` were written by
the code before the calibrated bands (state version 1), one per model, after 120 steps with a burst and gaps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from burstpilot.forecasting import MODELS, from_state

DATA = Path(__file__).parent / "data"


def saved(name: str) -> dict:
    return json.loads((DATA / f"state_v1_{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_saved_state_loads_and_forecasts(name):
    doc = saved(name)
    f = from_state(doc["state"])
    assert f.name == name and f.n_steps == doc["state"]["n_steps"]
    fc = f.forecast(60, (0.5, 0.9))
    old = doc["forecast_60s"]
    # The level the old code forecast is kept (the state carries it); the bands may be computed differently.
    assert fc.mean_rate == pytest.approx(old["mean_rate"], rel=0.25)
    for quantiles in (fc.rate_quantiles, fc.peak_quantiles):
        values = list(quantiles.values())
        assert all(math.isfinite(v) and v >= 0 for v in values) and values == sorted(values)
    assert fc.rate_quantiles[0.9] > fc.mean_rate > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_saved_state_keeps_learning_and_round_trips(name):
    f = from_state(saved(name)["state"])
    rng = np.random.default_rng(3)
    for v in rng.poisson(60.0, 40):  # the rate doubles after the save
        f.update(float(v))
    assert f.forecast(60).mean_rate > 4.0  # 30 per 10 s before, 60 after: the level moved up
    doc = json.loads(json.dumps(f.to_state(), allow_nan=False))
    g = from_state(doc)
    assert g.forecast(120) == f.forecast(120)
