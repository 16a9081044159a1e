"""Each baseline against its published behaviour, on hand-made inputs."""

import pytest

from burstpilot.policy import Capacity, Observation, PoolSpec, baselines
from burstpilot.policy.baselines import arima_next, hpa_step

# One replica sustains 5 req/s of 100 + 10 token requests; its operating concurrency is 5 x 1.1 s = 5.5.
CAP = Capacity(decode_tokens_per_s=100.0, prefill_tokens_per_s=1000.0)


def spec(**kw):
    return PoolSpec(capacity=CAP, min_replicas=1, max_replicas=100, target_utilization=1.0, **kw)


def test_hpa_tolerance_scale_up_limit_and_scale_down_stabilization():
    s = spec()
    st: dict = {}
    # metric 10.5 per pod vs target 10 -> ratio 1.05 within the 0.1 tolerance: no change
    assert hpa_step(s, st, 0, current=2, ready=2, metric_total=21.0, target_per_replica=10.0)[0] == 2
    # needs 20 from 2: limited to max(2 x 2, 2 + 4) = 6 in one sync
    n, rec, _ = hpa_step(s, st, 15, current=2, ready=2, metric_total=200.0, target_per_replica=10.0)
    assert rec == 20 and n == 6
    # from 10: limited to max(20, 14) = 20
    assert hpa_step(s, st, 30, current=10, ready=10, metric_total=1000.0, target_per_replica=10.0)[0] == 20
    # load drops: the highest recommendation of the last 300 s (100) holds the pool
    n, rec, _ = hpa_step(s, st, 45, current=20, ready=20, metric_total=20.0, target_per_replica=10.0)
    assert rec == 2 and n == 20
    # 300 s after the 100 the highest left is the 2s: scale down at once (100% per 15 s allowed)
    n, _, _ = hpa_step(s, st, 331, current=20, ready=20, metric_total=20.0, target_per_replica=10.0)
    assert n == 2


def obs(t, rate=0.0, running=0.0, waiting=0.0, current=1, ready=None, window=15.0):
    n = rate * window
    return Observation(
        time_s=t,
        requests=n,
        prompt_tokens=100.0 * n,
        generation_tokens=10.0 * n,
        running=running,
        waiting=waiting,
        current=current,
        ready=current if ready is None else ready,
        window_s=window,
    )


def test_hpa_policy_uses_concurrency_per_replica():
    s = spec()
    p = baselines.get("hpa")
    d, _ = p.decide(s, obs(15, rate=5.0, running=44.0, current=2), p.new_state(s))
    assert d.recommendation == 8 and d.replicas == 6  # 44 / 5.5 = 8, limited to 2 + 4
    assert p.period_s(s) == 15.0


def test_keda_threshold_on_the_one_minute_request_rate():
    s = spec()
    p = baselines.get("keda")
    st = p.new_state(s)
    d, st = p.decide(s, obs(15, rate=20.0, current=4), st)
    assert d.replicas == 4  # 20 req/s / 5 per replica = 4: on target
    for t in (30, 45, 60):
        d, st = p.decide(s, obs(t, rate=40.0, current=d.replicas), st)
    assert d.recommendation == 7  # the last minute holds 20, 40, 40, 40: a mean of 35/s
    d, st = p.decide(s, obs(75, rate=40.0, current=d.replicas), st)
    assert d.recommendation == 8  # the 20/s sample has left the minute


def test_kpa_panics_at_twice_the_ready_pods_and_holds_through_the_stable_window():
    s = spec()
    p = baselines.get("kpa")
    st = p.new_state(s)
    tgt = 5.5 * 0.7  # per-pod concurrency target at 70% utilization
    t = 0.0
    for _ in range(30):  # a calm minute at 2 pods' worth of load
        t += 2.0
        d, st = p.decide(s, obs(t, running=2 * tgt, current=2), st)
    assert d.replicas == 2 and st.get("panic_time") is None
    t += 2.0
    d, st = p.decide(s, obs(t, running=10 * tgt, current=2), st)  # panic window mean jumps past 2x ready
    assert st["panic_time"] == t and d.replicas >= 4
    peak = d.replicas
    for _ in range(5):  # load falls back; in panic the count never drops
        t += 2.0
        d, st = p.decide(s, obs(t, running=2 * tgt, current=peak, ready=2), st)
        assert d.replicas >= peak
    for _ in range(31):
        t += 2.0
        d, st = p.decide(s, obs(t, running=2 * tgt, current=peak, ready=peak), st)
    assert st.get("panic_time") is None and d.replicas < peak  # out of panic after a stable window


def test_dynamo_forecasts_with_arima_every_180_s():
    s = spec()
    p = baselines.get("dynamo")
    assert p.period_s(s) == 180.0
    st = p.new_state(s)
    for i, rate in enumerate([10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0, 24.0]):
        d, st = p.decide(s, obs(180 * (i + 1), rate=rate, window=180.0), st)
    assert d.forecast["model"] == "arima"
    assert d.forecast["rate"] > 24.0  # the trend continues
    assert d.replicas == pytest.approx(d.forecast["rate"] / 5.0, abs=1)
    assert arima_next([3.0, 3.0, 3.0]) == 3.0


def test_static_never_moves():
    s = spec()
    p = baselines.static(7, "static-peak")
    d, _ = p.decide(s, obs(15, rate=100.0, current=7), {})
    assert d.replicas == 7
