"""Each baseline against the real controller's algorithm, on hand-made inputs, and fuzzed.

The tables follow the source: kubernetes pkg/controller/podautoscaler (replica_calculator.go, horizontal.go),
KEDA's generated HPA (External metric, AverageValue), knative serving pkg/autoscaler/scaling, NVIDIA Dynamo's
SLA planner."""

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from burstpilot.policy import Capacity, CapacityModel, Observation, PoolSpec, baselines
from burstpilot.policy.baselines import (
    GRADUAL_SCALE_DOWN,
    HPABehavior,
    LoadTest,
    ScrapedObservation,
    arima_next,
    external_average_value_replicas,
    hpa_normalize,
    pods_metric_replicas,
)
from burstpilot.sim import load_profile

# One replica sustains 5 req/s of 100 + 10 token requests; its operating concurrency is 5 x 1.1 s = 5.5.
CAP = Capacity(decode_tokens_per_s=100.0, prefill_tokens_per_s=1000.0)


def spec(**kw):
    return PoolSpec(capacity=CAP, **{"min_replicas": 1, "max_replicas": 100, "target_utilization": 1.0, **kw})


def lt(s=None):
    return LoadTest.from_profile(s or spec(), 100.0, 10.0)


def obs(t, rate=0.0, running=0.0, waiting=0.0, current=1, ready=None, starting=0, window=15.0, **kw):
    n = rate * window
    return ScrapedObservation(
        time_s=t,
        requests=n,
        completed=n,
        prompt_tokens=100.0 * n,
        generation_tokens=10.0 * n,
        running=running,
        waiting=waiting,
        current=current,
        ready=current if ready is None else ready,
        starting=starting,
        window_s=window,
        **kw,
    )


def test_load_test_reads_the_profile():
    t = lt()
    assert t.rate == pytest.approx(5.0) and t.concurrency == pytest.approx(5.5)


@pytest.mark.parametrize(
    "label, current, ready, missing, total, target, want",
    [
        ("on target within tolerance", 2, 2, 0, 21.0, 10.0, 2),
        ("plain scale-up", 2, 2, 0, 60.0, 10.0, 6),
        ("plain scale-down", 4, 4, 0, 10.0, 10.0, 1),
        # scale-up with 2 pods still loading: they count as using 0, so 60 over 4 pods -> ratio 1.5 -> 6
        ("missing pods count 0 on a scale-up", 4, 2, 2, 60.0, 10.0, 6),
        # scale-down with 2 loading: they count at target, (10 + 20) / 40 = 0.75 -> ceil(3) = 3
        ("missing pods count at target on a scale-down", 4, 2, 2, 10.0, 10.0, 3),
        # the loading pods flip the direction (22 over 2 is up, 22 over 4 is down): no change
        ("direction flip keeps the count", 4, 2, 2, 22.0, 10.0, 4),
        ("no pod reports: no proposal", 3, 0, 3, None, 10.0, None),
    ],
)
def test_pods_metric_replica_calculator(label, current, ready, missing, total, target, want):
    assert pods_metric_replicas(current, ready, missing, total, target) == want, label


@pytest.mark.parametrize(
    "label, status, total, target, want",
    [
        ("within tolerance of every pod", 4, 41.0, 10.0, 4),
        ("the usage ratio is over all pods, ready or not", 4, 20.0, 10.0, 2),
        ("proposal ceil(total / target)", 3, 61.0, 10.0, 7),
        ("no pods yet", 0, 15.0, 10.0, 2),
    ],
)
def test_external_average_value_replica_calculator(label, status, total, target, want):
    assert external_average_value_replicas(status, total, target) == want, label


def test_hpa_first_sync_records_the_current_count_so_a_warm_up_dip_does_not_scale_down():
    s = spec()
    state: dict = {}
    # t = 15 s: the pool of 8 is still warming up and the metric says 1 pod would do
    n, rec, _ = hpa_normalize(s, state, 15.0, current=8, proposal=1)
    assert rec == 1 and n == 8  # the recorded initial 8 holds it for the 300 s window
    n, _, _ = hpa_normalize(s, state, 300.0, current=8, proposal=1)
    assert n == 8
    n, _, _ = hpa_normalize(s, state, 316.0, current=8, proposal=1)
    assert n == 1  # both 8s are older than 300 s; without a behavior nothing limits a scale-down


def test_hpa_without_behavior_normalizes_as_kube_controller_manager_does():
    """Table from kubernetes v1.36.3 pkg/controller/podautoscaler/horizontal.go, normalizeDesiredReplicas (an
    HPA whose spec.behavior is nil: KEDA's without advanced.horizontalPodAutoscalerConfig, kubectl autoscale's)."""
    s = spec(min_replicas=1, max_replicas=8)

    def norm(state, t, current, proposal):
        return hpa_normalize(s, state, t, current=current, proposal=proposal)[0]

    # scale-up limit per sync: max(2 x current, 4), then maxReplicas
    assert norm({}, 0.0, 1, 7) == 4
    assert norm({}, 0.0, 2, 20) == 4
    assert norm({}, 0.0, 3, 10) == 6
    assert norm({}, 0.0, 5, 12) == 8
    # scale-down: the highest recommendation of the last 300 s, the first sync's count included
    st: dict = {}
    assert norm(st, 0.0, 5, 5) == 5
    assert norm(st, 15.0, 5, 2) == 5
    assert norm(st, 299.0, 5, 2) == 5
    assert norm(st, 301.0, 5, 2) == 2  # the 5s recorded at 0 s are out of the window
    assert norm({}, 0.0, 2, 0) == 2  # the initial recommendation holds the count for 300 s


def test_hpa_with_a_behavior_scale_up_limit_and_gradual_scale_down_policy():
    s = spec()
    state: dict = {}
    given_ = HPABehavior()  # a behavior with every field at the API's default
    assert hpa_normalize(s, state, 15, current=2, proposal=20, behavior=given_)[0] == 6  # max(2 x 2, 2 + 4)
    assert hpa_normalize(s, state, 30, current=10, proposal=100, behavior=given_)[0] == 20  # max(20, 14)
    st2: dict = {}
    hpa_normalize(s, st2, 0, current=40, proposal=40, behavior=GRADUAL_SCALE_DOWN)
    n, _, _ = hpa_normalize(s, st2, 301, current=40, proposal=4, behavior=GRADUAL_SCALE_DOWN)
    assert n == 36  # 10% of 40 per minute
    n, _, _ = hpa_normalize(s, st2, 316, current=36, proposal=4, behavior=GRADUAL_SCALE_DOWN)
    assert n == 36  # the 4 removed 15 s ago count against this minute's 10%
    n, _, _ = hpa_normalize(s, st2, 362, current=36, proposal=4, behavior=GRADUAL_SCALE_DOWN)
    assert n == 32  # a new minute (the removal at 301 s is out of it): int(36 x 0.9)


def test_hpa_reads_in_flight_per_pod_against_a_fixed_target():
    s = spec()
    p = baselines.get("hpa", lt(s))
    assert p.period_s(s) == 15.0 and p.knobs["averageValue"] == pytest.approx(5.5)
    d, st_ = p.decide(s, obs(15, running=44.0, current=2), p.new_state(s))
    assert d.recommendation == 8 and d.replicas == 4  # 44 / 5.5 = 8, limited to max(2 x 2, 4) (no behavior)
    # longer measured prompts do not move the target: it is the user's load-tested number
    long = Observation(time_s=30, requests=10, prompt_tokens=50_000, generation_tokens=100, running=11.0,
                       waiting=0.0, current=2, ready=2, window_s=15)  # fmt: skip
    d, _ = p.decide(s, long, {})
    assert d.recommendation == 2


def test_keda_threshold_on_the_one_minute_success_rate_over_every_pod():
    s = spec()
    p = baselines.get("keda", lt(s))
    state = p.new_state(s)
    d, state = p.decide(s, obs(15, rate=20.0, current=4), state)
    assert d.replicas == 4  # 20 req/s / 5 per replica = 4: on target
    for t in (30, 45, 60):
        d, state = p.decide(s, obs(t, rate=40.0, current=d.replicas), state)
    assert d.recommendation == 7  # the last minute holds 20, 40, 40, 40: a mean of 35/s
    d, state = p.decide(s, obs(75, rate=40.0, current=d.replicas), state)
    assert d.recommendation == 8  # the 20/s sample has left the minute
    # it reads what the replicas finished, as vLLM exports it, not what arrived: a backlog grows unseen
    state = p.new_state(s)
    for t in (15, 30, 45, 60):
        d, state = p.decide(s, replace(obs(t, rate=40.0, current=4), completed=20.0 * 15), state)
    assert d.recommendation == 4


def test_kpa_panics_at_twice_the_ready_pods_sizes_for_the_larger_window_and_holds():
    s = spec()
    p = baselines.get("kpa", lt(s))
    assert p.scrape_s == 1.0
    state = p.new_state(s)
    tgt = 5.5 * 0.7  # per-pod concurrency target at 70% utilization
    t = 0.0
    for _ in range(30):  # a calm minute at 2 pods' worth of load
        t += 2.0
        d, state = p.decide(s, obs(t, running=2 * tgt, current=2), state)
    assert d.replicas == 2 and state.get("panic_time") is None
    t += 2.0
    d, state = p.decide(
        s, obs(t, running=10 * tgt, current=2), state
    )  # panic window mean jumps past 2x ready
    assert state["panic_time"] == t and d.replicas >= 4
    peak = d.replicas
    for _ in range(5):  # load falls back; in panic the count never drops
        t += 2.0
        d, state = p.decide(s, obs(t, running=2 * tgt, current=peak, ready=2), state)
        assert d.replicas >= peak
    for _ in range(31):
        t += 2.0
        d, state = p.decide(s, obs(t, running=2 * tgt, current=peak, ready=peak), state)
    assert state.get("panic_time") is None and d.replicas < peak  # out of panic after a stable window


def test_kpa_panic_takes_the_stable_window_when_it_is_larger():
    s = spec()
    p = baselines.get("kpa", lt(s))
    tgt = 5.5 * 0.7
    state = {"kpa_samples": [[float(t), 40 * tgt] for t in range(2, 60, 2)], "panic_time": 58.0}
    d, _ = p.decide(s, obs(60, running=20 * tgt, current=10), state)
    # the panic window (6 s) reads 20 pods' worth, the stable window still about 39: Knative takes the larger
    assert d.replicas >= 39


def test_kpa_scale_down_delay_holds_the_highest_recent_count():
    s = spec()
    p = baselines.get("kpa-delay", lt(s))
    tgt = 5.5 * 0.7
    state = p.new_state(s)
    d, state = p.decide(s, obs(2, running=8 * tgt, current=8), state)
    assert d.replicas == 8
    for t in range(4, 300, 2):
        d, state = p.decide(s, obs(t, running=1 * tgt, current=8), state)
    assert d.replicas == 8  # within the 300 s delay
    for t in range(300, 420, 2):
        d, state = p.decide(s, obs(t, running=1 * tgt, current=d.replicas, ready=d.replicas), state)
    assert d.replicas < 8


def test_dynamo_forecasts_count_and_lengths_every_180_s():
    s = spec()
    p = baselines.get("dynamo", lt(s))
    assert p.period_s(s) == 180.0
    state = p.new_state(s)
    for i, rate in enumerate([10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0, 24.0]):
        d, state = p.decide(s, obs(180 * (i + 1), rate=rate, window=180.0), state)
    assert d.forecast["model"] == "arima"
    assert d.forecast["rate"] > 24.0  # the trend continues
    # prefill 100 tokens at 1000/s and decode 10 at 100/s per request share one replica: 5 req/s each
    assert d.replicas == pytest.approx(d.forecast["rate"] / 5.0, abs=1)
    assert len(state["isl"]) == 8 and state["isl"][-1] == pytest.approx(100.0)
    assert arima_next([3.0, 3.0, 3.0]) == 3.0


def test_dynamo_decode_correction_buys_replicas_when_tokens_come_slower_than_profiled():
    profile = load_profile("h100-llama3-8b")
    s = PoolSpec(
        profile=profile.name, model=CapacityModel.from_profile(profile), min_replicas=1, max_replicas=64
    )
    p = baselines.get("dynamo", LoadTest.from_profile(s, 1000, 200))

    def run(itl_factor):
        batch = 40.0
        expected = profile.decode_ms(batch, batch * 1100) / 1000.0
        o = ScrapedObservation(time_s=180, requests=18000, prompt_tokens=18000 * 1000, generation_tokens=18000 * 200,
                               running=batch * 4, waiting=0, current=4, ready=4, window_s=180,
                               ttft_mean_s=0.05, itl_mean_s=expected * itl_factor)  # fmt: skip
        return p.decide(s, o, p.new_state(s))

    d1, st1 = run(1.0)
    d2, st2 = run(10.0)  # corrected ITL target 10 ms: below the step time of a full batch
    assert st1["decode_correction"] == pytest.approx(1.0) and st2["decode_correction"] == pytest.approx(10.0)
    assert d2.replicas > d1.replicas


def test_static_never_moves():
    s = spec()
    d, _ = baselines.static(7, "static-peak").decide(s, obs(15, rate=100.0, current=7), {})
    assert d.replicas == 7


# --------------------------------------------------------------------------- fuzz

WILD = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e300, -1e300, 3e15]),
    st.floats(min_value=0, max_value=1e6),
)
COUNT = st.one_of(st.integers(min_value=-5, max_value=10**12), st.sampled_from([0, 1, 2, 50]))


@st.composite
def observations(draw):
    n = draw(st.integers(min_value=1, max_value=6))
    t = 0.0
    out = []
    for _ in range(n):
        t += draw(st.sampled_from([2.0, 15.0, 180.0]))
        out.append(
            ScrapedObservation(
                time_s=t,
                requests=draw(WILD),
                prompt_tokens=draw(WILD),
                generation_tokens=draw(WILD),
                waiting=draw(WILD),
                running=draw(WILD),
                kv_usage=draw(WILD),
                ttft_p99_s=draw(WILD),
                current=draw(COUNT),
                ready=draw(COUNT),
                starting=draw(COUNT),
                metrics_age_s=draw(WILD),
                window_s=draw(st.one_of(st.none(), st.sampled_from([2.0, 15.0, 180.0, 0.0, -5.0, math.nan]))),
                ttft_mean_s=draw(WILD),
                itl_mean_s=draw(WILD),
            )
        )
    return out


FUZZED = [n for n in baselines.REACTIVE if n != "burstpilot"]  # the decision core is fuzzed by its owner


@pytest.mark.parametrize("name", FUZZED)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(seq=observations())
def test_every_baseline_decides_within_the_clamp_on_any_observation(name, seq):
    s = spec(max_replicas=20)
    p = baselines.get(name, lt(s))
    state = p.new_state(s)
    for o in seq:
        d, state = p.decide(s, o, state)
        assert isinstance(d.replicas, int) and s.min_replicas <= d.replicas <= s.max_replicas
        assert isinstance(d.recommendation, int) and d.recommendation >= 0
