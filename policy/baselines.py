"""Autoscalers people run today, re-implemented with the decision core's shape for side-by-side replay.

Every policy is a ``Policy``: ``new_state(spec)``, ``decide(spec, obs, state) -> (Decision, state)``, the period
its controller runs at and the scrape interval of the metrics it reads. The observations are what the real
controller would read (``burstpilot.evaluation.scrape`` builds them from a scraped series, and a series
recorded from a real cluster replays through the same ``decide``): gauges are the last scraped sample over the
serving pods (ready, not draining), counters the increase over the policy's window.

Each baseline is configured as its users configure it: with fixed numbers read off a load test of one replica
(``LoadTest``: the replica profile at the length mix the pool was provisioned for), never re-derived from what
the pool measures and never from anything the oracle computed. What each does as the real controller does, and
what it still does not, is listed in docs/policy.md ("Baselines").

- ``static-peak`` / ``static-mean``: a fixed replica count.
- ``hpa``: the Kubernetes HPA (autoscaling/v2, ``pkg/controller/podautoscaler``) on a Pods metric, in-flight
  requests per pod (``vllm:num_requests_running + vllm:num_requests_waiting`` through an adapter), AverageValue
  target; ``hpa-tuned`` adds a gradual scale-down policy, ``hpa-kv`` scales on KV-cache usage and waiting
  requests per pod (two metrics, the larger proposal wins).
- ``keda``: KEDA's Prometheus scaler, ``sum(rate(requests[1m]))`` with a ``threshold``, through the HPA KEDA
  generates (External metric, AverageValue target).
- ``kpa`` / ``kpa-delay``: the Knative Pod Autoscaler (``pkg/autoscaler/scaling``), concurrency averaged over a
  60 s stable and a 6 s panic window from one-second samples; ``kpa-delay`` sets ``scale-down-delay``.
- ``dynamo``: NVIDIA Dynamo's SLA (throughput-based) planner: every adjustment interval, ARIMA forecasts of the
  next interval's request count and mean input and output lengths, sized from the profile with the observed /
  expected TTFT and ITL correction factors.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.policy import core
from burstpilot.policy.capacity import concurrency_at, replica_rate
from burstpilot.policy.core import Decision, Observation
from burstpilot.policy.spec import PoolSpec

SCRAPE_S = (
    5.0  # Prometheus scrape interval of the replicas' /metrics (what HPA, KEDA, Dynamo, burstpilot read)
)
HPA_SYNC_S = 15.0  # --horizontal-pod-autoscaler-sync-period
HPA_TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
HPA_DOWNSCALE_STABILIZATION_S = 300.0  # --horizontal-pod-autoscaler-downscale-stabilization
HPA_SCALE_UP_FACTOR, HPA_SCALE_UP_MINIMUM = 2.0, 4  # calculateScaleUpLimit, for an HPA without behavior
KEDA_RATE_WINDOW_S = 60.0  # the [1m] of the trigger's query
KPA_TICK_S = 2.0  # the autoscaler's tick
KPA_SCRAPE_S = 1.0  # the metric collector scrapes the pods every second
KPA_STABLE_S = 60.0  # stable-window
KPA_PANIC_PERCENT = 10.0  # panic-window-percentage: the panic window is 6 s
KPA_PANIC_THRESHOLD = 2.0  # panic-threshold-percentage 200
KPA_TARGET_UTILIZATION = 0.7  # container-concurrency-target-percentage 70
KPA_MAX_SCALE_UP_RATE = 1000.0
KPA_MAX_SCALE_DOWN_RATE = 2.0
KPA_TUNED_SCALE_DOWN_DELAY_S = 300.0  # autoscaling.knative.dev/scale-down-delay: "5m"
DYNAMO_INTERVAL_S = 180.0  # --adjustment-interval
DYNAMO_ARIMA_ORDER = (1, 1, 1)
DYNAMO_HISTORY = 50
HPA_KV_TARGET = 0.7  # KV-cache usage per pod (hpa-kv)
HPA_WAITING_TARGET = 2.0  # waiting requests per pod (hpa-kv)


@dataclass(frozen=True)
class ScrapedObservation(Observation):
    """An Observation with the interval means a latency-driven planner reads (Dynamo's correction factors):
    mean TTFT and mean inter-token latency over the window, None when no request finished its first token (or
    no token was generated) in it."""

    ttft_mean_s: float | None = None
    itl_mean_s: float | None = None


@dataclass(frozen=True)
class Policy:
    """A named scaling policy with the decision core's shape.

    ``scrape_s``: how often the metrics it reads are sampled. ``capacity_source``: where its per-replica
    capacity comes from (``profile``, ``measured``, ``learned`` or ``oracle``). ``knobs``: its configuration,
    as its users would write it down."""

    name: str
    new_state: Callable[[PoolSpec], dict[str, Any]]
    decide: Callable[[PoolSpec, Observation, dict[str, Any]], tuple[Decision, dict[str, Any]]]
    period_s: Callable[[PoolSpec], float]
    scrape_s: float = SCRAPE_S
    capacity_source: str = "profile"
    knobs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadTest:
    """What an operator reads off a load test of one replica before configuring an autoscaler: at the length
    mix the pool is provisioned for, the request rate it sustains at the SLO and the requests in flight then.

    Built from the replica profile (``from_profile``; a measured profile gives measured numbers); the
    thresholds it gives stay fixed for the run, as a user's configuration does."""

    prompt_tokens: float
    output_tokens: float
    rate: float  # requests/s one replica sustains at the SLO
    concurrency: float  # requests in flight on one replica at `rate`
    concurrency_at_target: float  # requests in flight at `rate * target_utilization`
    target_utilization: float

    @classmethod
    def from_profile(cls, spec: PoolSpec, prompt_tokens: float, output_tokens: float) -> LoadTest:
        p, o = max(1.0, float(prompt_tokens)), max(1.0, float(output_tokens))
        rate = replica_rate(spec, p, o).rate
        u = spec.target_utilization
        return cls(
            prompt_tokens=p,
            output_tokens=o,
            rate=rate,
            concurrency=concurrency_at(spec, p, o, rate),
            concurrency_at_target=concurrency_at(spec, p, o, rate * u),
            target_utilization=u,
        )

    @classmethod
    def default(cls, spec: PoolSpec) -> LoadTest:
        """At the decision core's default lengths (when nothing is known of the workload)."""
        return cls.from_profile(spec, core.DEFAULT_PROMPT_TOKENS, core.DEFAULT_OUTPUT_TOKENS)


# --------------------------------------------------------------------------- observation hygiene


def _num(x: Any) -> float | None:
    """A metric value a controller can use: finite and not negative, else None (a bad sample)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v >= 0 else None


def _count(x: Any) -> int:
    v = _num(x)
    return int(min(v, 1e9)) if v is not None else 0


def _clamp(spec: PoolSpec, n: float) -> int:
    if not math.isfinite(n):
        n = spec.max_replicas if n > 0 else spec.min_replicas
    return int(min(max(n, spec.min_replicas), spec.max_replicas))


def _ceil(x: float) -> int:
    """ceil, for counts: non-finite or non-positive -> 0, huge -> capped (a clamp follows)."""
    if not math.isfinite(x) or x <= 0:
        return 0 if not (math.isinf(x) and x > 0) else 10**9
    return int(math.ceil(min(x, 1e9) - 1e-9))


def _decision(spec: PoolSpec, n: float, rec: float, reason: str, bound: str, fc=None) -> Decision:
    return Decision(
        replicas=_clamp(spec, n),
        reason=reason,
        bound=bound,
        forecast=fc,
        advisory=False,
        recommendation=int(min(max(rec, 0), 10**9)) if math.isfinite(rec) else 0,
    )


# --------------------------------------------------------------------------- static


def static(replicas: int, name: str = "static") -> Policy:
    """A fixed pool of ``replicas``."""

    def decide(spec, obs, state):
        return _decision(spec, replicas, replicas, f"static {replicas}", "static"), state

    # it reads no metrics: one scrape per decision is plenty
    return Policy(
        name, lambda spec: {}, decide, lambda spec: 60.0, scrape_s=60.0, knobs={"replicas": int(replicas)}
    )


# --------------------------------------------------------------------------- HPA


@dataclass(frozen=True)
class ScalingPolicy:
    """One entry of an HPA ``behavior`` rule: ``type`` Pods or Percent, ``value``, ``period_s``."""

    type: str
    value: float
    period_s: float


@dataclass(frozen=True)
class HPABehavior:
    """``spec.behavior`` of an autoscaling/v2 HPA; the defaults are the API's (what a behavior that sets some
    fields gets for the others). An HPA without one normalizes differently (``hpa_normalize``)."""

    up_window_s: float = 0.0
    up_policies: tuple[ScalingPolicy, ...] = (ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15))
    up_select: str = "Max"
    down_window_s: float = 300.0
    down_policies: tuple[ScalingPolicy, ...] = (ScalingPolicy("Percent", 100, 15),)
    down_select: str = "Max"


# The docs' example of a gradual scale-down: at most 10% of the pods per minute, after the 300 s window.
GRADUAL_SCALE_DOWN = HPABehavior(down_policies=(ScalingPolicy("Percent", 10, 60),))


def pods_metric_replicas(
    current: int,
    ready: int,
    missing: int,
    total: float | None,
    target: float,
    tolerance: float = HPA_TOLERANCE,
) -> int | None:
    """The replica calculator for a Pods metric with an AverageValue target (``calcPlainMetricReplicas``).

    ``total`` is the metric summed over the ``ready`` pods that report it; ``missing`` pods exist but report
    nothing (a replica still loading its model serves no /metrics): on a scale-up they count as using 0, on a
    scale-down as using exactly the target, and the result stands only if the direction holds. None: no pod
    reported (the HPA then leaves the count alone)."""
    if total is None or ready <= 0 or target <= 0:
        return None
    ratio = total / (ready * target)
    if missing <= 0:
        if abs(1.0 - ratio) <= tolerance:
            return current
        return _ceil(ratio * ready)
    if ratio < 1.0:
        new_ratio = (total + missing * target) / ((ready + missing) * target)
    else:
        new_ratio = total / ((ready + missing) * target)
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    n = _ceil(new_ratio * (ready + missing))
    if (new_ratio < 1.0 and n > current) or (new_ratio > 1.0 and n < current):
        return current
    return n


def external_average_value_replicas(
    status_replicas: int, total: float | None, target: float, tolerance: float = HPA_TOLERANCE
) -> int | None:
    """The replica calculator for an External metric with an AverageValue target
    (``GetExternalPerPodMetricReplicas``, what a KEDA ScaledObject generates): the usage ratio is over every pod
    of the target's status (ready or not), the proposal ``ceil(total / target)``."""
    if total is None or target <= 0:
        return None
    pods = max(int(status_replicas), 0)
    if pods == 0:
        return _ceil(total / target)
    ratio = total / (target * pods)
    if abs(1.0 - ratio) > tolerance:
        return _ceil(total / target)
    return pods


def hpa_normalize(
    spec: PoolSpec,
    state: dict[str, Any],
    time_s: float,
    current: int,
    proposal: int | None,
    behavior: HPABehavior | None = None,
) -> tuple[int, int, str]:
    """The HPA's normalization of a metric proposal. The first sync records the current count as a
    recommendation (``recordInitialRecommendation``). With a ``behavior`` (``normalizeDesiredReplicasWithBehaviors``)
    the proposal is stabilized (the lowest of the scale-up window's recommendations, the highest of the
    scale-down window's), limited by the behavior's rate policies over their periods, and clamped to min/max.
    Without one (``spec.behavior`` nil: what ``kubectl autoscale``, an HPA written without ``behavior`` and the
    HPA a KEDA ScaledObject generates without ``advanced.horizontalPodAutoscalerConfig`` all get; kubernetes
    v1.36.3 pkg/controller/podautoscaler/horizontal.go, ``normalizeDesiredReplicas``) the proposal takes the
    highest recommendation of the last 300 s, then at most ``max(2 x current, 4)`` per sync
    (``calculateScaleUpLimit``), within min/max.

    Returns (replicas, the unstabilized recommendation, why). A None proposal (no metrics) keeps the count."""
    t = float(time_s)
    recs = state.setdefault("hpa_recommendations", [])
    events = state.setdefault("hpa_events", [])
    if not recs:
        recs.append([t, int(current)])
    if proposal is None:
        return current, current, "no metrics for any ready pod, no change"
    desired = int(proposal)
    if behavior is None:
        recs[:] = [r for r in recs if r[0] >= t - HPA_DOWNSCALE_STABILIZATION_S]
        stab = max([desired] + [r[1] for r in recs])
        recs.append([t, desired])
        limit = min(spec.max_replicas, max(int(HPA_SCALE_UP_FACTOR * current), HPA_SCALE_UP_MINIMUM))
        why = f"proposal {desired}, stabilized {stab}"
        if stab < spec.min_replicas:
            return spec.min_replicas, desired, why + f", minReplicas {spec.min_replicas}"
        if stab > limit:
            return limit, desired, why + f", scale-up limit {limit}"
        return stab, desired, why
    keep = max(behavior.up_window_s, behavior.down_window_s)
    recs[:] = [r for r in recs if r[0] > t - keep - 1e-9]
    up = desired
    down = desired
    for rt, rv in recs:
        if rt > t - behavior.up_window_s - 1e-9 and behavior.up_window_s > 0:
            up = min(up, rv)
        if rt > t - behavior.down_window_s - 1e-9:
            down = max(down, rv)
    recs.append([t, desired])
    stab = current
    if stab < up:
        stab = up
    if stab > down:
        stab = down
    horizon = max([p.period_s for p in behavior.up_policies + behavior.down_policies] + [0.0])
    events[:] = [e for e in events if e[0] > t - horizon - 1e-9]

    def changed(period: float, sign: int) -> int:
        return sum(abs(d) for et, d in events if et > t - period + 1e-9 and (d > 0) == (sign > 0) and d != 0)

    target = stab
    why = f"proposal {desired}, stabilized {stab}"
    if stab > current:
        limits = []
        for p in behavior.up_policies:
            start = current - changed(p.period_s, +1)
            limits.append(start + p.value if p.type == "Pods" else math.ceil(start * (1 + p.value / 100.0)))
        limit = max(limits) if behavior.up_select == "Max" else min(limits)
        limit = max(limit, current)
        if target > limit:
            target, why = int(limit), why + f", rate-limited to {int(limit)}"
    elif stab < current:
        limits = []
        for p in behavior.down_policies:
            start = current + changed(p.period_s, -1)
            limits.append(start - p.value if p.type == "Pods" else int(start * (1 - p.value / 100.0)))
        limit = min(limits) if behavior.down_select == "Max" else max(limits)
        limit = min(limit, current)
        if target < limit:
            target, why = int(limit), why + f", rate-limited to {int(limit)}"
    target = _clamp(spec, target)
    if target != current:
        events.append([t, target - current])
    return target, desired, why


def _hpa_policy(name: str, lt: LoadTest, behavior: HPABehavior | None, kv: bool) -> Policy:
    target = lt.concurrency_at_target

    def decide(spec, obs, state):
        state = dict(state)
        state["hpa_recommendations"] = [list(r) for r in state.get("hpa_recommendations", [])]
        state["hpa_events"] = [list(e) for e in state.get("hpa_events", [])]
        current, ready, starting = _count(obs.current), _count(obs.ready), _count(obs.starting)
        missing = starting
        if kv:
            k, w = _num(obs.kv_usage), _num(obs.waiting)
            # kv_usage is the pods' mean; the metric sums per pod, so the total is mean x ready pods
            props = [
                pods_metric_replicas(
                    current, ready, missing, None if k is None else k * ready, HPA_KV_TARGET
                ),
                pods_metric_replicas(current, ready, missing, w, HPA_WAITING_TARGET),
            ]
            valid = [p for p in props if p is not None]
            prop = max(valid) if valid else None
            what = "KV usage and waiting per pod"
        else:
            r, w = _num(obs.running), _num(obs.waiting)
            total = None if r is None or w is None else r + w
            prop = pods_metric_replicas(current, ready, missing, total, target)
            what = f"in-flight per pod vs {target:.1f}"
        n, rec, why = hpa_normalize(spec, state, obs.time_s, current, prop, behavior)
        return _decision(spec, n, rec, f"{name}: {what}: {why}", "concurrency"), state

    knobs: dict[str, Any] = {"metric": "running+waiting per pod", "averageValue": round(target, 2)}
    if kv:
        knobs = {
            "metrics": {"kv_cache_usage_perc": HPA_KV_TARGET, "num_requests_waiting": HPA_WAITING_TARGET}
        }
    if behavior is None:
        knobs["behavior"] = "none (the legacy normalization: max(2 x current, 4) per sync)"
    else:
        knobs["behavior.scaleDown.policies"] = [
            {"type": p.type, "value": p.value, "periodSeconds": p.period_s} for p in behavior.down_policies
        ]
    return Policy(name, lambda spec: {}, decide, lambda spec: HPA_SYNC_S, knobs=knobs)


def hpa(lt: LoadTest) -> Policy:
    return _hpa_policy("hpa", lt, None, kv=False)


def hpa_tuned(lt: LoadTest) -> Policy:
    return _hpa_policy("hpa-tuned", lt, GRADUAL_SCALE_DOWN, kv=False)


def hpa_kv(lt: LoadTest) -> Policy:
    return _hpa_policy("hpa-kv", lt, None, kv=True)


# --------------------------------------------------------------------------- KEDA


def keda(lt: LoadTest) -> Policy:
    """KEDA's Prometheus trigger on vLLM's own counter, ``sum(rate(vllm:request_success_total[1m]))`` (a replica
    exports no arrival counter; finished requests are what a KEDA user's query reads), with ``threshold`` = a
    replica's rate at the target utilization; the HPA it generates (External, AverageValue) with the default
    behavior. Checked against the real KEDA on the local cluster (bench/k8s_peers_check.py, docs/cluster.md)."""
    threshold = lt.rate * lt.target_utilization

    def decide(spec, obs, state):
        state = dict(state)
        state["hpa_recommendations"] = [list(r) for r in state.get("hpa_recommendations", [])]
        state["hpa_events"] = [list(e) for e in state.get("hpa_events", [])]
        t = float(obs.time_s)
        window = _num(obs.window_s) or HPA_SYNC_S
        samples = [s for s in state.get("keda_samples", []) if s[0] > t - KEDA_RATE_WINDOW_S + 1e-9]
        n_req = _num(obs.completed)
        if n_req is not None:
            samples.append([t, n_req, window])
        state["keda_samples"] = samples
        rate = sum(s[1] for s in samples) / sum(s[2] for s in samples) if samples else None
        current = _count(obs.current)
        status = _count(obs.ready) + _count(obs.starting)
        prop = external_average_value_replicas(status, rate, threshold)
        n, rec, why = hpa_normalize(spec, state, t, current, prop)
        shown = "-" if rate is None else f"{rate:.2f}/s"
        return _decision(spec, n, rec, f"keda: rate {shown} vs {threshold:.2f}: {why}", "request-rate"), state

    knobs = {"query": "sum(rate(vllm:request_success_total[1m]))", "threshold": round(threshold, 3)}
    return Policy("keda", lambda spec: {}, decide, lambda spec: HPA_SYNC_S, knobs=knobs)


# --------------------------------------------------------------------------- KPA


def _kpa_policy(name: str, lt: LoadTest, scale_down_delay_s: float) -> Policy:
    target = lt.concurrency * KPA_TARGET_UTILIZATION
    panic_s = KPA_STABLE_S * KPA_PANIC_PERCENT / 100.0

    def decide(spec, obs, state):
        state = dict(state)
        t = float(obs.time_s)
        samples = [s for s in state.get("kpa_samples", []) if s[0] > t - KPA_STABLE_S + 1e-9]
        r, w = _num(obs.running), _num(obs.waiting)
        if r is not None and w is not None:
            samples.append([t, r + w])
        state["kpa_samples"] = samples
        current, ready = _count(obs.current), _count(obs.ready)
        if not samples:
            return _decision(spec, current, current, f"{name}: no metrics", "concurrency"), state
        stable = float(np.mean([s[1] for s in samples]))
        recent = [s[1] for s in samples if s[0] > t - panic_s + 1e-9]
        panic = float(np.mean(recent)) if recent else stable
        ready_f = max(1.0, float(ready))
        max_up = math.ceil(KPA_MAX_SCALE_UP_RATE * ready_f)
        max_down = math.floor(ready_f / KPA_MAX_SCALE_DOWN_RATE)
        dspc, dppc = _ceil(stable / target), _ceil(panic / target)
        want_stable = int(min(max(dspc, max_down), max_up))
        want_panic = int(min(max(dppc, max_down), max_up))
        over = dppc / ready_f >= KPA_PANIC_THRESHOLD
        panic_time = state.get("panic_time")
        if over:
            panic_time = t  # begin panicking, or extend the panic
        elif panic_time is not None and panic_time + KPA_STABLE_S < t:
            panic_time, state["max_panic_pods"] = None, 0  # the surge has reached the stable window
        state["panic_time"] = panic_time
        want = want_stable
        why = f"stable {stable:.1f} in flight -> {want_stable}"
        if panic_time is not None:
            want = max(want_stable, want_panic)
            state["max_panic_pods"] = max(want, int(state.get("max_panic_pods") or 0))
            want = state["max_panic_pods"]
            why = f"panic (panic window {panic:.1f} in flight -> {want_panic}, stable -> {want_stable})"
        if scale_down_delay_s > 0:
            hold = [h for h in state.get("kpa_delay", []) if h[0] > t - scale_down_delay_s + 1e-9]
            hold.append([t, int(want)])
            state["kpa_delay"] = hold
            delayed = max(h[1] for h in hold)
            if delayed > want:
                why += f", scale-down delay holds {delayed}"
            want = delayed
        return _decision(spec, want, want, f"{name}: {why}", "concurrency"), state

    knobs: dict[str, Any] = {"target": round(lt.concurrency, 2), "targetUtilizationPercentage": 70}
    if scale_down_delay_s:
        knobs["scaleDownDelay"] = f"{scale_down_delay_s:.0f}s"
    return Policy(name, lambda spec: {}, decide, lambda spec: KPA_TICK_S, scrape_s=KPA_SCRAPE_S, knobs=knobs)


def kpa(lt: LoadTest) -> Policy:
    return _kpa_policy("kpa", lt, 0.0)


def kpa_delay(lt: LoadTest) -> Policy:
    return _kpa_policy("kpa-delay", lt, KPA_TUNED_SCALE_DOWN_DELAY_S)


# --------------------------------------------------------------------------- Dynamo SLA planner


def arima_next(history: list[float]) -> float:
    """One-step ARIMA forecast of a series (the last value on short, degenerate or non-finite series)."""
    h = [float(x) for x in history if x is not None and math.isfinite(x)]
    if not h:
        return 0.0
    if len(h) < 5 or float(np.std(h)) == 0.0:
        return h[-1]
    from statsmodels.tsa.arima.model import ARIMA  # statsmodels is slow to import; only Dynamo needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = ARIMA(np.asarray(h, dtype=float), order=DYNAMO_ARIMA_ORDER).fit()
            value = float(fit.forecast(1)[0])
        except (ValueError, np.linalg.LinAlgError, OverflowError):
            value = h[-1]
    return max(0.0, value) if math.isfinite(value) else h[-1]


def _decode_tokens_per_s(spec: PoolSpec, ctx: float, itl_s: float) -> float:
    """A replica's best decode throughput (tokens/s) whose step time stays within ``itl_s`` at context ``ctx``
    (the decode interpolator of the profiling sweep, here the profile's step model)."""
    prof = spec.model.profile
    if prof is None:
        c = spec.capacity
        return float(c.decode_tokens_per_s) if c is not None else 0.0
    kv = int(getattr(prof, "kv_capacity_tokens", 0) or 0)
    best = 0.0
    for n in range(1, int(getattr(prof, "max_num_seqs", 0) or 256) + 1):
        if kv and n * ctx > kv:
            break
        step = prof.decode_ms(n, n * ctx) / 1000.0
        if step > itl_s and best > 0:
            break
        best = max(best, n / step)
    return best


def _prefill_tokens_per_s(spec: PoolSpec, isl: float) -> float:
    prof = spec.model.profile
    if prof is None:
        c = spec.capacity
        return float(c.prefill_tokens_per_s) if c is not None else 0.0
    return isl / max(prof.prefill_ms(int(round(isl))) / 1000.0, 1e-9)


def _expected_itl_s(spec: PoolSpec, per_replica_batch: float, ctx: float) -> float | None:
    prof = spec.model.profile
    if prof is None or per_replica_batch <= 0:
        return None
    return prof.decode_ms(per_replica_batch, per_replica_batch * ctx) / 1000.0


def dynamo(lt: LoadTest) -> Policy:
    """The SLA planner's throughput-based scaling on an aggregated pool (each replica prefills and decodes)."""

    def decide(spec, obs, state):
        state = dict(state)
        interval = _num(obs.window_s) or DYNAMO_INTERVAL_S
        n_req, p_tok, g_tok = _num(obs.requests), _num(obs.prompt_tokens), _num(obs.generation_tokens)
        hist = {k: list(state.get(k, [])) for k in ("num_req", "isl", "osl")}
        if n_req is not None:
            hist["num_req"].append(n_req)
            if n_req > 0 and p_tok is not None and g_tok is not None:
                hist["isl"].append(p_tok / n_req)
                hist["osl"].append(max(g_tok / n_req, 1.0))
        for k in hist:
            hist[k] = hist[k][-DYNAMO_HISTORY:]
            state[k] = hist[k]
        isl_now = hist["isl"][-1] if hist["isl"] else lt.prompt_tokens
        osl_now = hist["osl"][-1] if hist["osl"] else lt.output_tokens
        # correction factors: observed / expected TTFT and ITL of the last interval (kept when there is no traffic)
        ready = _count(obs.ready)
        ttft, itl, running = (
            _num(getattr(obs, "ttft_mean_s", None)),
            _num(getattr(obs, "itl_mean_s", None)),
            _num(obs.running),
        )
        if ttft is not None and ttft > 0 and spec.model.profile is not None:
            expected = spec.model.profile.prefill_ms(int(round(isl_now))) / 1000.0
            if expected > 0:
                state["prefill_correction"] = ttft / expected
        if itl is not None and itl > 0 and running is not None and ready > 0:
            expected = _expected_itl_s(spec, running / ready, isl_now + osl_now / 2.0)
            if expected:
                state["decode_correction"] = itl / expected
        p_corr = float(state.get("prefill_correction") or 1.0)
        d_corr = float(state.get("decode_correction") or 1.0)
        next_req = arima_next(hist["num_req"])
        next_isl = arima_next(hist["isl"]) if hist["isl"] else lt.prompt_tokens
        next_osl = arima_next(hist["osl"]) if hist["osl"] else lt.output_tokens
        next_isl, next_osl = max(next_isl, 1.0), max(next_osl, 1.0)
        prefill_tp = _prefill_tokens_per_s(spec, next_isl)
        decode_tp = _decode_tokens_per_s(spec, next_isl + next_osl / 2.0, spec.slo.tpot_s / max(d_corr, 1e-3))
        prefill_load = next_req * next_isl / interval * min(1.0, p_corr)
        decode_load = next_req * next_osl / interval
        # an aggregated replica's time goes to prefill or to decode: the two needs add
        need = (prefill_load / prefill_tp if prefill_tp > 0 else 0.0) + (
            decode_load / decode_tp if decode_tp > 0 else math.inf
        )
        want = _ceil(need) if next_req > 0 else spec.min_replicas
        fc = {
            "model": "arima",
            "quantile": None,
            "horizon_s": DYNAMO_INTERVAL_S,
            "rate": next_req / interval,
            "mean_rate": next_req / interval,
        }
        why = (
            f"dynamo: next {next_req:.0f} req, isl {next_isl:.0f}, osl {next_osl:.0f}, "
            f"corrections prefill {p_corr:.2f} decode {d_corr:.2f}"
        )
        return _decision(spec, want, want, why, "throughput", fc), state

    knobs = {"adjustment_interval": DYNAMO_INTERVAL_S, "load_predictor": "arima", "ttft": None, "itl": None}
    return Policy("dynamo", lambda spec: {}, decide, lambda spec: DYNAMO_INTERVAL_S, knobs=knobs)


# --------------------------------------------------------------------------- the decision core as a Policy


def burstpilot(lt: LoadTest | None = None) -> Policy:
    """The decision core (it learns lengths online and takes no load-test numbers)."""
    return Policy(
        "burstpilot", core.new_state, core.decide, lambda spec: spec.interval_s, capacity_source="learned"
    )


REACTIVE: dict[str, Callable[[LoadTest], Policy]] = {
    "burstpilot": burstpilot,
    "hpa": hpa,
    "hpa-tuned": hpa_tuned,
    "hpa-kv": hpa_kv,
    "keda": keda,
    "kpa": kpa,
    "kpa-delay": kpa_delay,
    "dynamo": dynamo,
}


def get(name: str, lt: LoadTest) -> Policy:
    """A policy by name, configured from ``lt`` (static and oracle policies need the workload: see
    burstpilot.evaluation)."""
    try:
        make = REACTIVE[name]
    except KeyError:
        raise BurstpilotError(f"unknown policy {name!r} (known: {', '.join(REACTIVE)})") from None
    return make(lt)
