"""What the policies read: a scraped series (last sample, increase over the window, draining pods excluded), a
recorded series replayed through a baseline, and cold starts drawn from the profile."""

import numpy as np
import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.evaluation.runner import run_policy, with_cold_start
from burstpilot.evaluation.scrape import MetricsSeries, PodCounts, Sample, replay
from burstpilot.policy import Capacity, PoolSpec, baselines
from burstpilot.policy.baselines import LoadTest
from burstpilot.sim import load_profile
from burstpilot.sim.des import SimCluster
from burstpilot.traces.table import make_trace


def sample(t, arrived, running=0.0, waiting=0.0, ttft=()):
    return Sample(
        t, arrived, arrived, 100 * arrived, 10 * arrived, 0, running, waiting, 0.5, np.asarray(ttft, float)
    )


def series():
    s = MetricsSeries()
    for k in range(7):  # a scrape every 5 s; 4 arrivals a second; in flight grows by 2 a scrape
        s.add(sample(5.0 * k, 20.0 * k, running=2.0 * k, ttft=[0.1 * k] if k else []))
    return s


def test_gauges_are_the_last_sample_and_counters_the_increase_over_the_window():
    s = series()
    assert s.last(12.0).time_s == 10.0 and s.last(-1) is None
    assert s.increase("arrived", 30.0, 15.0) == pytest.approx(60.0)  # 120 at 30 s minus 60 at 15 s
    assert s.increase("arrived", 32.0, 15.0) == pytest.approx(60.0)  # samples at 30 and 15 s still
    assert s.increase("arrived", 45.0, 10.0) is None  # nothing scraped in (35, 45]
    o = s.observation(32.0, 15.0, current=3, ready=2, starting=1)
    assert o.running == 12.0 and o.requests == pytest.approx(60.0) and o.metrics_age_s == pytest.approx(2.0)
    assert o.ttft_p99_s == pytest.approx(0.6, abs=0.01) and o.ttft_mean_s == pytest.approx(0.5)
    assert (o.current, o.ready, o.starting, o.window_s) == (3, 2, 1, 15.0)
    empty = MetricsSeries().observation(5.0, 15.0, current=1, ready=1, starting=0)
    assert empty.metrics_age_s is None and empty.requests is None
    with pytest.raises(BurstpilotError, match="older"):
        s.add(sample(1.0, 0.0))
    with pytest.raises(BurstpilotError, match="counter"):
        s.increase("running", 30.0, 15.0)


def test_a_recorded_series_replays_through_a_baseline():
    s = series()
    back = MetricsSeries.from_dict(s.to_dict())
    assert back.to_dict() == s.to_dict()
    spec = PoolSpec(
        capacity=Capacity(decode_tokens_per_s=100.0, prefill_tokens_per_s=1000.0), max_replicas=50
    )
    lt = LoadTest.from_profile(spec, 100.0, 10.0)
    pods = [PodCounts(0.0, 2, 2, 0)]
    decisions = replay(baselines.get("hpa", lt), spec, back, pods)
    assert [t for t, _ in decisions] == [15.0, 30.0]
    # the same observation by hand gives the same decision
    p = baselines.get("hpa", lt)
    state = p.new_state(spec)
    d15, state = p.decide(spec, back.observation(15.0, 15.0, 2, 2, 0), state)
    assert d15 == decisions[0][1]
    with pytest.raises(BurstpilotError, match="line|sample"):
        MetricsSeries.from_dict({"samples": [{"time_s": "x"}]})


def test_serving_gauges_leave_out_draining_replicas():
    profile = load_profile("h100-llama3-8b")
    n = 400
    w = make_trace(np.linspace(0, 2, n), np.full(n, 500), np.full(n, 400))
    c = SimCluster(profile, w, initial_replicas=2, seed=0, scrape_interval_s=0)
    c.run_until(2.0)
    before = c.observe()
    assert before.serving_running + before.serving_waiting == before.running + before.waiting > 0
    c.set_replicas(1)  # one replica drains: it keeps its requests but no longer counts
    after = c.observe()
    assert after.running + after.waiting == before.running + before.waiting
    assert after.serving_running + after.serving_waiting < after.running + after.waiting


def test_cold_starts_are_drawn_around_the_case_median():
    profile = load_profile("h100-llama3-8b")
    p = with_cold_start(profile, 600.0)
    k = 600.0 / profile.cold_start.median_s
    assert p.cold_start.median_s == 600.0 and p.cold_start.max_s == pytest.approx(
        profile.cold_start.max_s * k
    )
    rng = np.random.default_rng(0)
    draws = np.array([p.sample_cold_start(rng) for _ in range(500)])
    assert 540 < np.median(draws) < 660 and draws.std() > 50

    # in a run, replicas started at the same moment become ready at different times
    n = 3000
    w = make_trace(np.linspace(0, 1200, n), np.full(n, 300), np.full(n, 50))
    spec = PoolSpec(profile=profile.name, profile_obj=profile, max_replicas=8)
    grow = baselines.static(6, "six")
    run = run_policy(grow, spec, profile, w, seed=1, cold_start_s=120.0, initial=1)
    ready_steps = [t for (t, r, s), (_, r0, _) in zip(run.timeline[1:], run.timeline, strict=False) if r > r0]
    assert len(set(np.round(ready_steps, 3))) >= 3  # five new replicas, several distinct ready times
    exact = run_policy(grow, spec, profile, w, seed=1, cold_start_s=120.0, initial=1, exact_cold_start=True)
    ready_exact = [
        t for (t, r, s), (_, r0, _) in zip(exact.timeline[1:], exact.timeline, strict=False) if r > r0
    ]
    assert len(set(np.round(ready_exact, 3))) == 1
