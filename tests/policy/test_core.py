"""The decision core's rules as a table: (label, spec, the ticks before, the observation, wanted replicas, wanted
bound), as Knative's autoscaler tests are. Explicit capacity; a forecaster with no uncertainty band unless the
row names another."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.forecasting import Forecast
from burstpilot.policy import (
    Capacity,
    Observation,
    PoolDemand,
    PoolSpec,
    allocate_budget,
    decide,
    new_state,
)
from burstpilot.policy.observation import BOUNDS, LIMITS
from burstpilot.sim import load_profile

# One replica: 1000 prompt tok/s of prefill, 100 generated tok/s. A request of 100 prompt + 10 output tokens
# costs 0.1 + 0.1 = 0.2 s, so a replica sustains 5 req/s; at target utilization 1.0 that is the sizing rate.
CAP = Capacity(decode_tokens_per_s=100.0, prefill_tokens_per_s=1000.0, kv_capacity_tokens=0)


class ExactLast:
    """Every quantile of the coming rate equals the last step's rate (no uncertainty band)."""

    def __init__(self, step_s, last=0.0):
        self.step_s, self.last = step_s, last

    def update(self, count):
        if count == count:  # NaN: missing sample, keep the last
            self.last = float(count)

    def rate(self, horizon_s):
        return self.last / self.step_s

    def forecast(self, horizon_s, quantiles):
        r = self.rate(horizon_s)
        return Forecast(
            model="exact",
            horizon_s=horizon_s,
            mean_rate=r,
            rate_quantiles=dict.fromkeys(quantiles, r),
            peak_quantiles=dict.fromkeys(quantiles, self.peak(horizon_s)),
        )

    def peak(self, horizon_s):
        return self.rate(horizon_s)

    def calibration_origins(self, horizon_s):
        return 10**6  # the bands are given, not fitted: as good as a long history

    def to_state(self):
        return {"kind": type(self).__name__, "step_s": self.step_s, "last": self.last}


class Wide(ExactLast):
    """0.9 quantiles: 30/s sustained over the horizon and 40/s in its busiest step, whatever came before."""

    def rate(self, horizon_s):
        return 30.0

    def peak(self, horizon_s):
        return 40.0


class BurstEnds(ExactLast):
    """40/s for the cold start's 60 s, then ``AFTER`` req/s."""

    AFTER = 5.0

    def rate(self, horizon_s):
        return 40.0 if horizon_s <= 60.0 else (60.0 * 40.0 + (horizon_s - 60.0) * self.AFTER) / horizon_s


class BurstEndsHigh(BurstEnds):
    AFTER = 30.0


class BurstEndsMid(BurstEnds):
    AFTER = 15.0


FORECASTERS = {c.__name__: c for c in (ExactLast, Wide, BurstEnds, BurstEndsHigh, BurstEndsMid)}


@pytest.fixture(autouse=True)
def test_forecasters(monkeypatch, request):
    kind = getattr(request, "param", "ExactLast")
    monkeypatch.setattr(
        "burstpilot.forecasting.make_forecaster", lambda name, step_s, **kw: FORECASTERS[kind](step_s)
    )
    monkeypatch.setattr(
        "burstpilot.forecasting.from_state", lambda st: FORECASTERS[st["kind"]](st["step_s"], st["last"])
    )


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


def gone(t, current, age=None, **kw):
    """A tick without metrics (age None) or with stale ones."""
    return Observation(time_s=t, current=current, ready=current, metrics_age_s=age, **kw)


@dataclass
class Case:
    label: str
    spec: dict
    obs: Observation
    replicas: int
    bound: str
    before: list[Observation] = field(default_factory=list)
    forecaster: str = "ExactLast"
    limited_by: str | None = None
    reason: str = ""  # a phrase the reason must contain


KV = Capacity(100.0, 1000.0, kv_capacity_tokens=200)
CASES = [
    Case("throughput: 20/s at 5/s per replica", {}, obs(10, 20.0, 1), 4, "throughput"),
    # bursts to 40/s for a step: 7 replicas (35/s) leave (40 - 35) x 10 s = 50 requests, which a queue they drain
    # within the 2 s TTFT target (70) holds; 6 (30/s) leave 100 - 60 = 40 over a 99% goal's burst budget of
    # 0.5% x 30/s x 70 s = 10.5. The sustained 30/s at utilization 1.0 needs 6.
    Case("the busiest step sets the headroom", {"forecast_quantile": 0.9}, obs(20, 10, 2), 7, "headroom", forecaster="Wide"),
    # at 50% utilization the sustained 30/s needs 30 / 2.5 = 12
    Case("the sustained rate at target utilization", {"target_utilization": 0.5}, obs(20, 10, 2), 12, "throughput", forecaster="Wide"),
    # 8 req/s x (0.1 s prefill + 10 x 0.1 s decode) x 105 tokens = 924 KV tokens; 200 per replica: 5
    Case("KV by Little's law", {"capacity": KV}, obs(10, 8.0, 1), 5, "kv"),
    # 5/s plus 40 waiting to drain within the 2 s TTFT target = 25/s: 5 replicas, which start in time
    Case("backlog, replicas that start in time", {"cold_start_s": 1.0}, obs(10, 5.0, 1, waiting=40.0), 5, "backlog"),
    Case("backlog keeps replicas", {"scale_down_stabilization_s": 0.0}, obs(10, 5.0, 5, waiting=40.0), 5, "backlog"),
    Case("backlog buys none that start too late", {}, obs(10, 5.0, 1, waiting=40.0), 1, "cold-start"),
    Case("a burst over before a cold start buys none", {}, obs(10, 5.0, 2), 2, "cold-start", forecaster="BurstEnds"),
    Case("a backlog held a cold start still buys none", {}, obs(70, 5.0, 1, waiting=40.0), 1, "cold-start",
         before=[obs(t, 5.0, 1, waiting=40.0) for t in range(10, 70, 10)]),
    Case("a burst that outlasts the cold start", {}, obs(10, 5.0, 2), 6, "throughput", forecaster="BurstEndsHigh"),
    # the hold began at 10 s: 50 s later it still defers to the forecast; after the cold start's 60 s the burst
    # has outlasted what the forecast said, and keeping the pool through the horizon (35/s: 7) is bought
    Case("the cold-start hold lasts up to a cold start", {}, obs(60, 5.0, 2), 2, "cold-start", forecaster="BurstEnds",
         before=[obs(t, 5.0, 2) for t in range(10, 60, 10)]),
    Case("a burst held past the cold start is bought", {}, obs(70, 5.0, 2), 7, "throughput", forecaster="BurstEnds",
         before=[obs(t, 5.0, 2) for t in range(10, 70, 10)], reason="longer than the cold start"),
    # buying part of it (3 for the 15/s after the cold start, where keeping needs 36.4/s: 8) does not restart
    # the hold: short since 10 s, the keeping count is bought at 70 s
    Case("a partial buy keeps the hold's start", {}, obs(70, 5.0, 3), 8, "throughput", forecaster="BurstEndsMid",
         before=[obs(10, 5.0, 2)] + [obs(t, 5.0, 3) for t in range(20, 70, 10)], reason="short of it for 60s"),
    # a tick with the pool at what keeping needs (7) ends the hold; the next one starts again at 40 s
    Case("the hold restarts once the pool caught up", {}, obs(70, 5.0, 2), 2, "cold-start", forecaster="BurstEnds",
         before=[obs(10, 5.0, 2), obs(20, 5.0, 2), obs(30, 5.0, 7), obs(40, 5.0, 2), obs(50, 5.0, 2), obs(60, 5.0, 2)]),
    Case("scale-up is rate limited", {"max_step": 2}, obs(10, 40.0, 1), 3, "throughput", limited_by="max-step", reason="limited to 2"),
    Case("capped at maxReplicas", {"max_replicas": 3}, obs(10, 40.0, 1), 3, "throughput", limited_by="max-replicas", reason="maxReplicas"),
    Case("at maxReplicas it stays limited", {"max_replicas": 3}, obs(10, 40.0, 3), 3, "throughput", limited_by="max-replicas"),
    Case("minReplicas", {"min_replicas": 2}, obs(10, 0.0, 2), 2, "min"),
    Case("below minReplicas it rises", {"min_replicas": 2}, obs(10, 0.0, 0), 2, "min"),
    Case("advisory decides and says so", {"mode": "advisory"}, obs(10, 20.0, 1), 4, "throughput", reason="advisory:"),
    # starting and pending replicas count: the same load asks for the same total, not 4 more
    Case("no cascade", {}, obs(20, 20.0, 4, ready=1, starting=2, pending=1), 4, "throughput", before=[obs(10, 20.0, 1)]),
    # scale-down: the highest recommendation of the stabilization window (60 s)
    Case("down waits for the window", {"scale_down_stabilization_s": 60.0}, obs(20, 15.0, 4), 4, "stabilization", before=[obs(10, 20.0, 1)]),
    Case("down takes the window's highest", {"scale_down_stabilization_s": 60.0}, obs(75, 5.0, 4), 3, "throughput",
         before=[obs(10, 20.0, 1), obs(20, 15.0, 4), obs(50, 5.0, 4)], reason="scale down 4->3"),
    Case("down once the window is clear", {"scale_down_stabilization_s": 60.0}, obs(85, 5.0, 3), 1, "throughput",
         before=[obs(10, 20.0, 1), obs(20, 15.0, 4), obs(50, 5.0, 4), obs(75, 5.0, 4)]),
    Case("down is rate limited too", {"scale_down_stabilization_s": 0.0, "max_step": 2}, obs(20, 5.0, 8), 6, "throughput",
         before=[obs(10, 40.0, 8)], limited_by="max-step"),
    # missing, stale and invalid metrics never scale down
    Case("missing: hold", {}, gone(400, 8), 8, "missing-metrics", before=[obs(10, 40.0, 8)], reason="missing"),
    Case("stale: hold", {}, gone(400, 8, age=600.0, requests=1.0), 8, "missing-metrics", before=[obs(10, 40.0, 8)], reason="stale"),
    Case("missing: floor raises", {"missing_metrics": "floor", "missing_floor_replicas": 5}, gone(10, 2), 5, "missing-metrics"),
    Case("missing: floor never lowers", {"missing_metrics": "floor", "missing_floor_replicas": 5}, gone(10, 9), 9, "missing-metrics"),
    Case("missing: last known good sizes up", {"missing_metrics": "lastKnownGood", "scale_down_stabilization_s": 0.0},
         gone(40, 2), 6, "throughput", before=[obs(10, 30.0, 6)], reason="last known good"),
    Case("missing: last known good never down", {"missing_metrics": "lastKnownGood", "scale_down_stabilization_s": 0.0},
         gone(40, 9), 9, "throughput", before=[obs(10, 30.0, 6)]),
    Case("missing: last known good too old holds", {"missing_metrics": "lastKnownGood"}, gone(200, 2), 2, "missing-metrics",
         before=[obs(10, 30.0, 6)]),
    Case("missing: never above maxReplicas", {"max_replicas": 4}, gone(10, 9), 4, "missing-metrics"),
    Case("invalid: NaN requests hold", {}, obs(20, float("nan"), 8), 8, "missing-metrics", before=[obs(10, 40.0, 8)], reason="invalid"),
    Case("invalid: negative waiting holds", {}, obs(20, 1.0, 8, waiting=-3.0), 8, "missing-metrics", reason="waiting"),
    Case("invalid: a count no pool could serve", {}, obs(20, 3e15, 2), 2, "missing-metrics", reason="beyond what"),
    Case("invalid: KV usage above 1", {}, obs(20, 1.0, 3, kv_usage=7.0), 3, "missing-metrics", reason="kv_usage"),
    Case("invalid: infinite TTFT", {}, obs(20, 1.0, 3, ttft_p99_s=float("inf")), 3, "missing-metrics", reason="ttft"),
    Case("invalid time: hold", {}, obs(float("nan"), 1.0, 3), 3, "missing-metrics", reason="time"),
]  # fmt: skip


@pytest.mark.parametrize(
    "case,test_forecasters",
    [pytest.param(c, c.forecaster, id=c.label) for c in CASES],
    indirect=["test_forecasters"],
)
def test_decide(case, test_forecasters):
    s = spec(**case.spec)
    st = new_state(s)
    for o in case.before:
        _, st = decide(s, o, st)
    d, st = decide(s, case.obs, st)
    assert (d.replicas, d.bound) == (case.replicas, case.bound), d.reason
    assert d.limited_by == case.limited_by, d.reason
    assert case.reason in d.reason
    assert d.bound in BOUNDS and (d.limited_by is None or d.limited_by in LIMITS)
    assert d.advisory == s.advisory
    json.dumps(st.to_dict())  # the state stays JSON, whatever the observation
    json.dumps(d.to_dict())


def test_the_forecast_is_reported():
    s = spec(forecast_quantile=0.9)
    d, _ = decide(s, obs(10, 20.0, 1), new_state(s))
    assert d.forecast["horizon_s"] == 70.0 and d.forecast["rate"] == pytest.approx(20.0)
    assert d.forecast["quantile"] == 0.9 and d.bounds["throughput"] == 4


def test_an_advisory_pool_steps_from_its_own_advice_not_from_the_count_someone_else_keeps():
    """The pool stays at one replica (its HPA's count) while burstpilot advises: 20/s needs 4, then at 5/s the
    advice is held at 4 for the 60 s window and comes down from 4, as it would if burstpilot ran the pool."""
    s = spec(mode="advisory", scale_down_stabilization_s=60.0)
    st = new_state(s)
    d, st = decide(s, obs(10, 20.0, 1), st)
    assert (d.replicas, st.advised) == (4, 4)
    d, st = decide(s, obs(20, 5.0, 1), st)
    # from the pool's own count this tick would read "hold 1"
    assert (d.replicas, d.bound) == (4, "stabilization"), d.reason
    assert d.reason.startswith("advisory: hold 4")
    d, st = decide(s, obs(75, 5.0, 1), st)
    assert d.replicas == 1 and "scale down 4->1" in d.reason, d.reason
    # the same ticks acting on the pool step from its count, and keep no advice
    a = spec(scale_down_stabilization_s=60.0)
    d, st = decide(a, obs(20, 5.0, 4), decide(a, obs(10, 20.0, 1), new_state(a))[1])
    assert (d.replicas, st.advised) == (4, None)


@pytest.mark.parametrize("test_forecasters", ["BurstEnds"], indirect=True)
def test_the_rate_after_the_cold_start_is_reported(test_forecasters):
    s = spec()
    d, _ = decide(s, obs(10, 5.0, 2), new_state(s))
    assert d.forecast["rate_after_cold_start"] == pytest.approx(BurstEnds.AFTER)


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


def test_from_crd_reads_camel_case():
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
    assert s.model.kv_capacity_tokens == 100000


def test_from_crd_resolves_a_named_profile_through_the_caller():
    asked = []

    def resolve(name):
        asked.append(name)
        return load_profile(name)

    s = PoolSpec.from_crd(
        {"profile": {"name": "h100-llama3-8b", "capacityScale": 0.8}}, resolve_profile=resolve
    )
    assert asked == ["h100-llama3-8b"] and s.capacity_scale == 0.8 and s.model.profile is not None
    with pytest.raises(BurstpilotError, match="spec.profile.*needs a profile resolver"):
        PoolSpec.from_crd({"profile": "h100-llama3-8b"})
    with pytest.raises(BurstpilotError, match="spec.profile: unknown profile"):
        PoolSpec.from_crd({"profile": "no-such-gpu"}, resolve_profile=load_profile)
    with pytest.raises(BurstpilotError, match="caller must resolve"):
        PoolSpec(profile="h100-llama3-8b")


@pytest.mark.parametrize(
    "crd,field",
    [
        ({"minReplicas": 5, "maxReplicas": 2}, "maxReplicas"),
        ({"slo": {"ttftSeconds": "x"}}, "slo.ttftSeconds"),
        ({"missingMetrics": {"policy": "Guess"}}, "missingMetrics.policy"),
        ({"missingMetrics": ["Hold"]}, "missingMetrics"),
        ({"forecasting": {"model": "prophet"}}, "forecasting.model"),
        ({"forecasting": {"stepSeconds": 0.5}}, "forecasting.stepSeconds"),
        ({"scaling": {"maxStep": 99}}, "scaling.maxStep"),
        ({"maxReplicas": float("inf")}, "maxReplicas"),
        ({"coldStartSeconds": 10**400}, "coldStartSeconds"),
        ({"budget": {"group": 7}}, "budget.group"),
        ({"profile": {"name": "x", "decodeTokensPerSecond": 1}}, "profile"),
    ],
)
def test_from_crd_rejects_bad_fields_naming_them(crd, field):
    base = {"profile": {"decodeTokensPerSecond": 1, "prefillTokensPerSecond": 1}}
    with pytest.raises(BurstpilotError, match=f"spec.{field}"):
        PoolSpec.from_crd({**base, **crd}, resolve_profile=load_profile)


def test_replacing_an_explicit_capacity_rebuilds_its_model():
    s = spec()
    t = s.replace(capacity=Capacity(200.0, 1000.0))
    assert t.model.explicit == Capacity(200.0, 1000.0) and s.model.explicit == CAP
