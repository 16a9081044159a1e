"""The decision core's rules, one by one, on hand-made inputs (explicit capacity, the `last` forecaster)."""

import json

import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.policy import (
    Capacity,
    Observation,
    PoolDemand,
    PoolSpec,
    allocate_budget,
    decide,
    new_state,
)

# One replica: 1000 prompt tok/s of prefill, 100 generated tok/s. A request of 100 prompt + 10 output tokens
# costs 0.1 + 0.1 = 0.2 s, so a replica sustains 5 req/s; at target utilization 1.0 that is the sizing rate.
CAP = Capacity(decode_tokens_per_s=100.0, prefill_tokens_per_s=1000.0, kv_capacity_tokens=0)


class ExactLast:
    """A test forecaster: every quantile of the coming rate equals the last step's rate (no uncertainty band)."""

    def __init__(self, step_s, last=0.0):
        self.step_s, self.last = step_s, last

    def update(self, count):
        if count == count:  # NaN: missing sample, keep the last
            self.last = float(count)

    def forecast(self, horizon_s, quantiles):
        from burstpilot.forecasting import Forecast

        r = self.last / self.step_s
        return Forecast(
            model="exact",
            horizon_s=horizon_s,
            mean_rate=r,
            rate_quantiles=dict.fromkeys(quantiles, r),
            peak_quantiles=dict.fromkeys(quantiles, r),
        )

    def to_state(self):
        return {"step_s": self.step_s, "last": self.last}


@pytest.fixture(autouse=True)
def exact_forecaster(monkeypatch):
    monkeypatch.setattr("burstpilot.forecasting.make_forecaster", lambda name, step_s: ExactLast(step_s))
    monkeypatch.setattr("burstpilot.forecasting.from_state", lambda st: ExactLast(st["step_s"], st["last"]))


def spec(**kw):
    base = dict(
        capacity=CAP,
        min_replicas=1,
        max_replicas=50,
        forecast_model="last",
        forecast_step_s=10.0,
        interval_s=10.0,
        cold_start_s=60.0,
        target_utilization=1.0,
        scale_down_stabilization_s=300.0,
    )
    base.update(kw)
    return PoolSpec(**base)


def obs(t, rate, current, waiting=0.0, **kw):
    n = rate * 10.0
    base = dict(
        time_s=t,
        requests=n,
        prompt_tokens=100.0 * n,
        generation_tokens=10.0 * n,
        waiting=waiting,
        running=0.0,
        current=current,
        ready=current,
        window_s=10.0,
    )
    base.update(kw)
    return Observation(**base)


def test_throughput_bound_sizes_for_the_rate():
    s = spec()
    d, st = decide(s, obs(10, 20.0, current=1), new_state(s))
    assert d.replicas == 4 and d.bound == "throughput" and d.bounds["throughput"] == 4
    assert d.forecast["horizon_s"] == 70.0 and d.forecast["rate"] == pytest.approx(20.0)
    json.dumps(st)  # the state is JSON


def test_forecast_quantile_drives_the_size(monkeypatch):
    s = spec(forecast_quantile=0.9)
    st = new_state(s)
    _, st = decide(s, obs(10, 10.0, current=2), st)

    class F:  # 0.9 quantiles: 30/s sustained over the horizon, 40/s in its busiest step; now 10/s
        model = "fake"

        def update(self, c):
            pass

        def forecast(self, horizon_s, quantiles):
            from burstpilot.forecasting import Forecast

            return Forecast(
                model="fake",
                horizon_s=horizon_s,
                mean_rate=10.0,
                rate_quantiles={0.9: 30.0},
                peak_quantiles={0.9: 40.0},
            )

        def to_state(self):
            return {}

    monkeypatch.setattr("burstpilot.forecasting.from_state", lambda state: F())
    d, _ = decide(s, obs(20, 10.0, current=2), st)
    # the busiest step (40/s) may use a replica's full rate: 8; the sustained 30/s at utilization 1.0: 6
    assert d.replicas == 8 and d.forecast["peak_rate"] == 40.0 and d.forecast["quantile"] == 0.9
    assert d.forecast["rate"] == 30.0
    # at 50% target utilization the sustained rate needs 30 / 2.5 = 12
    d, _ = decide(s.replace(target_utilization=0.5), obs(20, 10.0, current=2), st)
    assert d.replicas == 12


def test_kv_bound_from_littles_law():
    # 8 req/s, each spends 0.1 s prefill + 10 x 0.1 s decode = 1.1 s; it holds 100 + 5 tokens of KV:
    # 8 x 1.1 x 105 = 924 tokens; with 200 tokens of KV per replica that needs 5 replicas (throughput needs 2).
    s = spec(capacity=Capacity(100.0, 1000.0, kv_capacity_tokens=200))
    d, _ = decide(s, obs(10, 8.0, current=1), new_state(s))
    assert d.bounds["throughput"] == 2 and d.bounds["kv"] == 5
    assert d.replicas == 5 and d.bound == "kv"


def test_backlog_bound_drains_the_queue_within_ttft():
    # 5 req/s now plus 40 waiting to drain within 2 s = 25 req/s -> 5 replicas, when new ones start in time
    s = spec(cold_start_s=1.0)
    d, _ = decide(s, obs(10, 5.0, current=1, waiting=40.0), new_state(s))
    assert d.bounds["backlog"] == 5 and d.replicas == 5 and d.bound == "backlog"


def test_backlog_keeps_replicas_but_buys_none_that_would_start_too_late():
    s = spec(cold_start_s=60.0, scale_down_stabilization_s=0.0)
    d, _ = decide(s, obs(10, 5.0, current=5, waiting=40.0), new_state(s))
    assert d.replicas == 5 and d.bounds["backlog"] == 5  # no scale-down while the queue waits
    d, _ = decide(s, obs(10, 5.0, current=1, waiting=40.0), new_state(s))
    assert d.replicas == 1 and d.bound == "cold-start"  # ready 60 s from now, far past the 2 s TTFT target


class Burst(ExactLast):
    """40/s now; the forecaster expects ``after`` req/s once the cold start (60 s) has passed."""

    after = 5.0

    def forecast(self, horizon_s, quantiles):
        from burstpilot.forecasting import Forecast

        r = 40.0 if horizon_s <= 60.0 else (60.0 * 40.0 + (horizon_s - 60.0) * self.after) / horizon_s
        qs = dict.fromkeys(quantiles, r)
        return Forecast(model="burst", horizon_s=horizon_s, mean_rate=r, rate_quantiles=qs, peak_quantiles=qs)


@pytest.mark.parametrize("after,want,bound", [(5.0, 2, "cold-start"), (30.0, 6, "throughput")])
def test_a_burst_over_before_new_replicas_start_buys_none(monkeypatch, after, want, bound):
    monkeypatch.setattr(Burst, "after", after)
    monkeypatch.setattr("burstpilot.forecasting.from_state", lambda st: Burst(st["step_s"], st["last"]))
    s = spec(cold_start_s=60.0)
    d, _ = decide(s, obs(10, 5.0, current=2), new_state(s))
    assert d.replicas == want and d.bound == bound
    assert d.forecast["rate_after_cold_start"] == pytest.approx(after)


def test_scale_down_waits_for_the_stabilization_window_and_takes_its_highest():
    s = spec(scale_down_stabilization_s=60.0)
    st = new_state(s)
    d, st = decide(s, obs(10, 20.0, current=1), st)
    assert d.replicas == 4
    d, st = decide(s, obs(20, 15.0, current=4), st)  # needs 3
    assert d.replicas == 4 and d.bound == "stabilization"
    d, st = decide(s, obs(50, 5.0, current=4), st)  # needs 1, window still holds 4
    assert d.replicas == 4
    d, st = decide(s, obs(75, 5.0, current=4), st)  # the 4 has left the window; highest left is 3
    assert d.replicas == 3 and "scale down" in d.reason
    d, st = decide(s, obs(85, 5.0, current=3), st)  # the 3 left too
    assert d.replicas == 1


def test_scale_up_is_immediate_but_rate_limited():
    s = spec(max_step=2)
    d, _ = decide(s, obs(10, 40.0, current=1), new_state(s))
    assert d.recommendation == 8 and d.replicas == 3 and "limited" in d.reason


def test_starting_and_pending_replicas_count_so_no_cascade():
    s = spec()
    st = new_state(s)
    d, st = decide(s, obs(10, 20.0, current=1), st)
    assert d.replicas == 4
    # Three replicas are still starting / pending: the same load asks for the same total, not 4 more.
    d, st = decide(s, obs(20, 20.0, current=4, ready=1, starting=2, pending=1), st)
    assert d.replicas == 4


@pytest.mark.parametrize("age", [None, 600.0])
def test_missing_or_stale_metrics_hold(age):
    s = spec(missing_metrics="hold")
    st = new_state(s)
    _, st = decide(s, obs(10, 40.0, current=8), st)
    d, st = decide(s, Observation(time_s=400, current=8, ready=8, metrics_age_s=age), st)
    assert d.replicas == 8 and d.bound == "missing-metrics"


def test_missing_metrics_floor_never_scales_down():
    s = spec(missing_metrics="floor", missing_floor_replicas=5)
    d, _ = decide(s, Observation(time_s=10, current=2, metrics_age_s=None), new_state(s))
    assert d.replicas == 5
    d, _ = decide(s, Observation(time_s=10, current=9, metrics_age_s=None), new_state(s))
    assert d.replicas == 9


def test_last_known_good_within_staleness_limit_then_hold():
    s = spec(missing_metrics="lastKnownGood", staleness_limit_s=60.0, scale_down_stabilization_s=0.0)
    st = new_state(s)
    _, st = decide(s, obs(10, 30.0, current=6), st)
    d, st = decide(s, Observation(time_s=40, current=2, metrics_age_s=None), st)
    assert d.replicas == 6 and "last known good" in d.reason  # sized from the last good sample: 6
    d, st = decide(s, Observation(time_s=40, current=9, metrics_age_s=None), st)
    assert d.replicas == 9  # never down on missing data
    d, st = decide(s, Observation(time_s=200, current=2, metrics_age_s=None), st)
    assert d.replicas == 2 and d.bound == "missing-metrics"  # too old: hold


def test_advisory_mode_decides_and_says_so():
    s = spec(mode="advisory")
    d, _ = decide(s, obs(10, 20.0, current=1), new_state(s))
    assert d.advisory and d.replicas == 4 and d.reason.startswith("advisory:")


def test_min_and_max_clamp():
    s = spec(max_replicas=3)
    d, _ = decide(s, obs(10, 40.0, current=1), new_state(s))
    assert d.replicas == 3 and "maxReplicas" in d.reason
    s = spec(min_replicas=2)
    d, _ = decide(s, obs(10, 0.0, current=2), new_state(s))
    assert d.replicas == 2


def test_budget_priorities_and_fair_share():
    got = allocate_budget(
        [
            PoolDemand("hi", desired=6, min_replicas=1, gpus_per_replica=1, priority=10),
            PoolDemand("a", desired=5, min_replicas=1, gpus_per_replica=1, priority=0),
            PoolDemand("b", desired=5, min_replicas=1, gpus_per_replica=1, priority=0),
        ],
        gpus=12,
    )
    assert got == {"hi": 6, "a": 3, "b": 3}
    got = allocate_budget(
        [PoolDemand("big", desired=4, gpus_per_replica=4, priority=1), PoolDemand("small", desired=3)],
        gpus=10,
    )
    assert got == {"big": 2, "small": 2}  # the third big replica doesn't fit; the small pool uses the rest


def test_from_crd_reads_camel_case_and_rejects_bad_fields():
    s = PoolSpec.from_crd(
        {
            "minReplicas": 2,
            "maxReplicas": 10,
            "gpusPerReplica": 2,
            "profile": {
                "decodeTokensPerSecond": 500,
                "prefillTokensPerSecond": 8000,
                "kvCapacityTokens": 100000,
            },
            "slo": {"ttftSeconds": 1.5, "tpotSeconds": 0.05, "attainment": 0.995},
            "coldStartSeconds": 90,
            "forecasting": {"model": "ewma", "quantile": 0.9, "stepSeconds": 15},
            "scaling": {"intervalSeconds": 15, "scaleDownStabilizationSeconds": 120, "maxStep": 3},
            "missingMetrics": {"policy": "LastKnownGood", "stalenessLimitSeconds": 45},
            "budget": {"group": "team", "priority": 5, "gpus": 16},
            "mode": "Advisory",
            "targetRef": {"kind": "Deployment", "name": "x"},
        },
        name="p1",
    )
    assert (s.min_replicas, s.max_replicas, s.gpus_per_replica, s.cold_start_s) == (2, 10, 2, 90.0)
    assert s.slo.ttft_s == 1.5 and s.forecast_model == "ewma" and s.forecast_step_s == 15
    assert s.max_step == 3 and s.missing_metrics == "lastKnownGood" and s.staleness_limit_s == 45
    assert s.budget_group == "team" and s.priority == 5 and s.budget_gpus == 16 and s.advisory
    with pytest.raises(BurstpilotError, match="maxReplicas"):
        PoolSpec.from_crd(
            {
                "profile": {"decodeTokensPerSecond": 1, "prefillTokensPerSecond": 1},
                "minReplicas": 5,
                "maxReplicas": 2,
            }
        )
    with pytest.raises(BurstpilotError, match="slo.ttftSeconds"):
        PoolSpec.from_crd(
            {
                "profile": {"decodeTokensPerSecond": 1, "prefillTokensPerSecond": 1},
                "slo": {"ttftSeconds": "x"},
            }
        )
    with pytest.raises(BurstpilotError, match="missingMetrics.policy"):
        PoolSpec.from_crd({"profile": "h100-llama3-8b", "missingMetrics": {"policy": "Guess"}})
