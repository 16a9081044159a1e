"""The SLO budget (burstpilot.policy.slobudget) on hand-made inputs: short bursts the forecast misses raise the
burst level until the observed attainment meets the goal, a calm stretch lowers it, missing data leaves it."""

from __future__ import annotations

import random

import pytest

from burstpilot.policy.slobudget import LEVEL_MAX, MAX_FALL, MAX_RISE, SloBudget
from tests.policy.fluidpool import FluidPool
from tests.policy.test_learned import MODEL_RATE, spec

GOAL = 0.99
HOUR = 3600.0


def bursts(seed: int = 0, hours: float = 4.0):
    """3 req/s with 10-20 s bursts to 12 req/s at irregular gaps of 1-4 minutes: shorter than the 60 s cold
    start, so only standing replicas meet them, and irregular, so the forecaster does not see them coming."""
    rnd = random.Random(seed)
    spans, t = [], 0.0
    while t < hours * HOUR:
        t += rnd.uniform(60.0, 240.0)
        spans.append((t, t + rnd.choice((10.0, 20.0))))
    return lambda t: 12.0 if any(a <= t < b for a, b in spans) else 3.0


def hourly(pool: FluidPool, rate, hours: int) -> list[tuple[float, float]]:
    """(attainment, mean replicas) of each hour."""
    out = []
    for _ in range(hours):
        a0, l0, k0 = pool.arrived_total, pool.late_total, len(pool.decisions)
        pool.run(HOUR, rate)
        ds = pool.decisions[k0:]
        out.append(
            (1.0 - (pool.late_total - l0) / (pool.arrived_total - a0), sum(d.replicas for d in ds) / len(ds))
        )
    return out


def level(pool: FluidPool) -> float:
    return pool.decisions[-1].evidence["slo_budget"]["level"]


def test_short_bursts_the_forecast_misses_raise_the_headroom_until_the_attainment_meets_the_goal():
    blind = FluidPool(spec(), capacity=MODEL_RATE, replicas=1)  # no attainment reported: no feedback
    without = hourly(blind, bursts(), 4)
    pool = FluidPool(spec(), capacity=MODEL_RATE, replicas=1, report_violations=True)
    levels = []
    with_ = []
    for _ in range(4):
        with_ += hourly(pool, bursts(), 1)
        levels.append(max(d.evidence["slo_budget"]["level"] for d in pool.decisions[-360:]))
    # without feedback the forecast-sized headroom leaves some hour under the goal
    assert min(a for a, _ in without[1:]) < GOAL
    # with it, the first hour's misses raise the level (the slo-budget bound buys replicas) ...
    assert levels[0] > 1.2
    assert any(d.bound == "slo-budget" for d in pool.decisions)
    # ... and the hours after the first meet the goal together (the budget is a rolling hour's: as the level
    # falls back inside the budget an hour may dip just under it, never by more than a fifth of a point), at a
    # bounded cost (within 1.5x the blind pool's)
    assert sum(a for a, _ in with_[1:]) / len(with_[1:]) >= GOAL, with_
    assert all(a >= GOAL - 0.002 for a, _ in with_[1:]), with_
    assert sum(n for _, n in with_[1:]) <= 1.5 * sum(n for _, n in without[1:])
    # the decision says why: the observed attainment, the burn, the level
    ev = pool.decisions[-1].evidence["slo_budget"]
    assert set(ev) >= {"attainment_1h", "attainment_5min", "burn_1h", "burn_5min", "level", "note"}


def test_a_calm_stretch_lowers_the_level_back_to_the_forecasts_headroom():
    pool = FluidPool(spec(), capacity=MODEL_RATE, replicas=1, report_violations=True)
    pool.run(HOUR, bursts())
    raised = max(d.evidence["slo_budget"]["level"] for d in pool.decisions)
    assert raised > 1.2
    pool.run(2 * HOUR, lambda t: 3.0)
    assert level(pool) == 1.0
    assert pool.decisions[-1].replicas == 1 and pool.decisions[-1].bound != "slo-budget"
    # it came down step by step, never faster than MAX_FALL a tick (the evidence rounds to 4 places)
    ls = [d.evidence["slo_budget"]["level"] for d in pool.decisions]
    assert all(
        b >= a * MAX_FALL - 1e-4 and b <= a * MAX_RISE + 1e-4 for a, b in zip(ls, ls[1:], strict=False)
    )


def test_missing_data_leaves_the_budget_and_the_level_unchanged():
    pool = FluidPool(spec(), capacity=MODEL_RATE, replicas=1, report_violations=True)
    pool.run(HOUR, bursts())
    before = pool.state.slo_budget
    assert before.level > 1.0
    pool.run(600, bursts(seed=1), missing=lambda t: True)  # metrics missing mid-burst
    assert pool.state.slo_budget == before
    # completions counted but no violation count (an adapter without the query): unchanged as well
    pool.report_violations = False
    pool.run(600, bursts(seed=2))
    assert pool.state.slo_budget == before


def test_a_cold_start_with_a_miss_or_two_is_within_budget_and_the_level_is_bounded():
    b = SloBudget().observe(10.0, 2.0, 10.0)  # two of the first ten requests missed
    long_burn, short_burn = b.burn(GOAL)
    assert long_burn < 1.0 and short_burn < 1.0
    assert b.step(GOAL, 10.0, True, True).level == 1.0
    # sustained misses raise it at most MAX_RISE a tick, never beyond LEVEL_MAX
    for _ in range(500):
        b = b.observe(100.0, 20.0, 10.0)
        before = b.level
        b = b.step(GOAL, 10.0, True, True)
        assert b.level <= before * MAX_RISE + 1e-12
    assert b.level == LEVEL_MAX
    # and a state written by to_dict reads back; a bad one is refused naming the field
    assert SloBudget.from_dict(b.to_dict()) == b
    with pytest.raises(Exception, match="slo_budget.level"):
        SloBudget.from_dict({**b.to_dict(), "level": 9.0})
