"""The SLO budget (burstpilot.policy.slobudget) on hand-made inputs: a load per replica whose requests miss the
goal raises a floor to the replicas that spread the load below it, replicas that do no better are not bought,
the floor follows the load down through a quiet night, missing data leaves it all unchanged."""

from __future__ import annotations

import math

import pytest

from burstpilot.policy.slobudget import SloBudget, band
from tests.policy.fluidpool import FluidPool
from tests.policy.test_learned import MODEL_RATE, spec

GOAL = 0.99
HOUR = 3600.0
ALLOWED = 1.0 - GOAL


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


def steady(t: float) -> float:
    return 3.0  # one replica's throughput at the model's rate (5/s) covers it


def crowded(n: int, load: float) -> float:
    """A long prompt holds up the requests behind it on its replica: at the steady 3/s, 3 % miss on one replica,
    0.6 % on two, 0.5 % on more."""
    return {1: 0.03, 2: 0.006}.get(n, 0.005)


def shared(n: int, load: float) -> float:
    """The share late grows with the requests each replica holds: 0.5 % at 1/s per replica, 0.75 % at 1.5/s,
    1.1 % at 2/s, 2.1 % at 3/s."""
    return 0.003 + 0.002 * load**2


def test_a_count_that_misses_at_a_normal_load_raises_a_floor_one_above_it_and_the_hours_after_meet_the_goal():
    blind = FluidPool(spec(), capacity=MODEL_RATE, replicas=1, tail=crowded)  # no attainment reported
    without = hourly(blind, steady, 4)
    assert all(n == 1 for _, n in without) and all(a < GOAL for a, _ in without), without
    pool = FluidPool(spec(), capacity=MODEL_RATE, replicas=1, tail=crowded, report_violations=True)
    with_ = hourly(pool, steady, 4)
    # the first hour's misses at one replica raise the floor to two (the slo-budget bound) ...
    assert any(d.bound == "slo-budget" for d in pool.decisions)
    first = next(i for i, d in enumerate(pool.decisions) if d.bound == "slo-budget")
    assert first * pool.spec.interval_s < 600, "raised within ten minutes of misses at 3 %"
    assert pool.decisions[-1].evidence["slo_budget"]["floor"] == 2 and pool.decisions[-1].replicas == 2
    # ... every hour after the first meets the goal, at two replicas (not more: two are inside the goal)
    assert all(a >= GOAL for a, _ in with_[1:]), with_
    assert all(n == pytest.approx(2.0) for _, n in with_[1:]), with_
    # the decision says why: the observed attainment, the burn, the floor, the rate per count
    ev = pool.decisions[-1].evidence["slo_budget"]
    assert set(ev) >= {"attainment_1h", "attainment_5min", "burn_1h", "burn_5min", "floor", "note"}
    assert "per count 1: 3.00%" in ev["note"] and ev["note"].endswith("floor 2"), ev["note"]


def test_more_replicas_that_do_no_better_are_not_bought():
    flat = FluidPool(spec(), capacity=MODEL_RATE, replicas=1, tail=lambda n, x: 0.02, report_violations=True)
    out = hourly(flat, steady, 3)
    # every count misses 2 %: the floor tries one more replica, sees it does no better and stops there
    assert max(d.replicas for d in flat.decisions) == 2, out
    assert all(a < GOAL for a, _ in out)  # the goal cannot be met by replicas: said, not paid for


def test_the_floor_follows_the_load_down_through_a_quiet_night():
    # Four busy hours at 6/s, where three replicas (2/s each) miss 1.1 % and four (1.5/s) meet the goal, then a
    # night at 1.5/s, where one replica meets it: a floor per replica count would hold four all night (three
    # missed); the floor per count and load comes down with the load, to one replica once the last hour's burn
    # leaves room to try one at a load it has not served yet.
    def day(t: float) -> float:
        return 6.0 if t < 4 * HOUR else 1.5

    pool = FluidPool(spec(), capacity=MODEL_RATE, replicas=2, tail=shared, report_violations=True)
    out = hourly(pool, day, 10)
    busy, night = out[1:4], out[4:]
    assert all(a >= GOAL for a, _ in busy) and all(n <= 4.05 for _, n in busy), out
    assert all(a >= GOAL for a, _ in night) and all(n <= 3.0 for _, n in night), out
    assert all(n <= 1.05 for _, n in out[-3:]), out


def test_fewer_replicas_than_the_evidence_vouches_for_are_tried_only_on_a_budget_that_allows_it():
    b = SloBudget()
    for _ in range(360):  # an hour at 1/s on one replica, 2 % missed
        b = b.observe(10.0, 0.2, 10.0, 1, 10.0)
    one = b.planned(GOAL, 1, 1.0, ready=1)
    assert one > ALLOWED and b.burn(GOAL)[0] > 0.5
    # a heavier load on one replica than any seen: not tried while the last hour burns over half its budget ...
    assert b.planned(GOAL, 1, 8.0, ready=1) == math.inf
    # ... and with the budget to try it, planned at the rate of the lighter load it can be no better than
    calm = SloBudget(cells=b.cells)
    assert calm.planned(GOAL, 1, 8.0, ready=1) == pytest.approx(one)
    # more replicas than are ready, at a load lighter than any seen: worth trying
    assert b.planned(GOAL, 2, 0.5, ready=1) == 0.0 and b.step(GOAL, 10, 1.0, ready=1).floor == 2
    assert b.burn(GOAL)[0] > 1.0  # the windows show the misses too (status)


def test_at_the_same_load_per_replica_fewer_replicas_are_planned_no_better():
    # two replicas at 1/s each meet the goal (0.5 %), one at 4/s missed 3 %: one replica at 1/s lies between
    cells = ((1, band(4.0), 3000.0, 90.0), (2, band(1.0), 3000.0, 15.0))
    burning = SloBudget(long_done=1000.0, long_missed=100.0, cells=cells)
    seen = burning.observed(GOAL)
    # no better than two at that load (the lower bound), no worse than one at a heavier one (the upper bound)
    assert burning.planned(GOAL, 1, 1.0, ready=2) == pytest.approx(seen[1, band(4.0)])
    assert SloBudget(cells=cells).planned(GOAL, 1, 1.0, ready=2) == pytest.approx(seen[2, band(1.0)])
    # while burning, the floor keeps two for 2/s (one replica is vouched for only at a load where it missed)
    assert burning.step(GOAL, 8, 2.0, ready=2).floor == 2


def test_the_floor_comes_down_once_no_load_misses_and_stays_within_max_replicas():
    b = SloBudget()
    for _ in range(60):  # ten minutes at one replica and 3/s, 2 % missing
        b = b.observe(30.0, 0.6, 10.0, 1, 30.0).step(GOAL, 10, 3.0, ready=1)
    assert b.floor == 2
    # one replica at that load, visited again, serves 3000 requests inside the goal: its rate over the prior
    # falls under 1 %
    for _ in range(100):
        b = b.observe(30.0, 0.0, 10.0, 1, 30.0).step(GOAL, 10, 3.0, ready=1)
    assert b.planned(GOAL, 1, 3.0, ready=1) < ALLOWED and b.floor == 0
    # every load seen on one replica misses: two are worth trying, and no more than that (capped, too)
    high = SloBudget(cells=((1, band(1.0), 1000.0, 100.0), (1, band(2.0), 1000.0, 150.0)))
    assert high.step(GOAL, 8, 2.0, ready=1).floor == 2 and high.step(GOAL, 1, 2.0, ready=1).floor == 1


def test_a_cold_start_with_a_miss_or_two_is_within_budget():
    b = SloBudget().observe(10.0, 2.0, 10.0, 1, 10.0)  # two of the first ten requests missed
    long_burn, short_burn = b.burn(GOAL)
    assert long_burn < 1.0 and short_burn < 1.0
    assert b.step(GOAL, 10, 1.0, ready=1).floor == 0


def test_missing_data_leaves_the_budget_and_the_floor_unchanged():
    pool = FluidPool(spec(), capacity=MODEL_RATE, replicas=1, tail=crowded, report_violations=True)
    pool.run(HOUR, steady)
    before = pool.state.slo_budget
    assert before.floor == 2
    pool.run(600, steady, missing=lambda t: True)  # metrics missing
    assert pool.state.slo_budget == before
    # completions counted but no violation count (an adapter without the query): unchanged as well
    pool.report_violations = False
    pool.run(600, steady)
    assert pool.state.slo_budget == before


def test_a_saved_budget_reads_back_and_a_bad_one_is_refused_naming_the_field():
    b = SloBudget()
    for n in (1, 2, 3):
        b = b.observe(50.0, 1.0, 10.0, n, 50.0).step(GOAL, 10, 5.0, ready=n)
    assert SloBudget.from_dict(b.to_dict()) == b and b.rate == pytest.approx(5.0) and len(b.cells) == 3
    with pytest.raises(Exception, match=r"slo_budget.cells\[0\]"):
        SloBudget.from_dict({**b.to_dict(), "cells": [[0, 1, 1.0, 0.0]]})
    with pytest.raises(Exception, match="slo_budget.floor"):
        SloBudget.from_dict({**b.to_dict(), "floor": -1})
    with pytest.raises(Exception, match="slo_budget.rate"):
        SloBudget.from_dict({**b.to_dict(), "rate": "fast"})
    # a state saved with the earlier burst level, or with per-count sums, reads as a budget without cells
    old = {"long_done": 5.0, "long_missed": 1.0, "short_done": 5.0, "short_missed": 1.0, "level": 2.0}
    assert SloBudget.from_dict(old).cells == () and SloBudget.from_dict(old).floor == 0
    counts = {**old, "by_count": [[2, 100.0, 1.0]], "floor": 3}
    assert SloBudget.from_dict(counts).cells == () and SloBudget.from_dict(counts).long_done == 5.0
