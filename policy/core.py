"""The burstpilot scaling decision: pure, metrics in, desired replicas and the reason out.

Each tick the decision core
1. feeds the request count of the last step to the forecaster (a missing sample when metrics are missing),
2. sizes the pool for the forecast quantile of the peak request rate over the cold-start horizon, taking the
   largest of three bounds: token throughput at the SLO, KV-cache memory (Little's law), and draining the
   current backlog within the TTFT target,
3. scales up at once (within ``max_step``), and scales down only to the highest recommendation of the
   stabilization window. The replicas the target already asked for (ready, starting and pending) count, so a
   burst never makes it ask twice for the same capacity.
Missing, stale or invalid metrics (not finite, negative, or beyond anything the pool could serve) never scale
down. The state is a frozen ``PolicyState`` (``burstpilot.policy.state``) with a JSON form.
"""

from __future__ import annotations

import math
from dataclasses import replace

from burstpilot import forecasting
from burstpilot.policy.capacity import kv_capacity_tokens, replica_rate
from burstpilot.policy.observation import Bound, Decision, LimitedBy, Observation
from burstpilot.policy.spec import PoolSpec
from burstpilot.policy.state import (
    DEFAULT_OUTPUT_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    STATE_VERSION,
    Lengths,
    PolicyState,
)

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "DEFAULT_PROMPT_TOKENS",
    "STATE_VERSION",
    "Decision",
    "Lengths",
    "Observation",
    "PolicyState",
    "decide",
    "new_state",
    "sizing",
]

BURST_CALIB_WINDOW_S = 1800.0  # calibration window of the burst forecaster (see new_state)
# A sample is implausible beyond this many times what maxReplicas replicas could serve at the model's rate.
PLAUSIBLE_FACTOR = 100.0
PLAUSIBLE_TOKENS_PER_REQUEST = 1e7  # more tokens than any model's context, per request counted
PLAUSIBLE_QUEUE_S = 3600.0  # a queue longer than an hour of implausible arrivals is itself implausible
PLAUSIBLE_SEQS_PER_REPLICA = 100_000
MAX_WINDOW_S = 86400.0  # an observation window longer than a day is not a tick's
MAX_FEED_STEPS = 10_000  # most forecaster steps one observation may feed


def new_state(spec: PoolSpec) -> PolicyState:
    """A fresh state for ``spec`` (JSON with ``to_dict``; the forecaster's state inside)."""
    # The burst model's calibration ring: the last half hour, not the forecaster's default hour, which halves
    # the state (the operator saves it every tick): 47 KiB after an hour at a 10 s step instead of 93.
    params = (
        {"calib_window_s": max(BURST_CALIB_WINDOW_S, spec.forecast_step_s)}
        if spec.forecast_model == "burst"
        else {}
    )
    f = forecasting.make_forecaster(spec.forecast_model, step_s=spec.forecast_step_s, **params)
    return PolicyState(forecaster=f.to_state())


def decide(spec: PoolSpec, obs: Observation, state: PolicyState | None) -> tuple[Decision, PolicyState]:
    """One scaling decision. Returns the decision and the new state (states are immutable).

    Never raises on what the metrics say: an observation with values that are not finite, negative, or beyond
    anything the pool could serve is an invalid sample, handled like missing metrics (never a scale-down)."""
    state = state if state is not None else new_state(spec)
    current = _count(obs.current)
    invalid = _invalid(spec, obs, state)
    if invalid == "time":  # no clock: nothing can be accounted for this tick
        return _hold(spec, current, "observation time is not finite"), state
    fresh = not invalid and obs.metrics_age_s is not None and obs.metrics_age_s <= spec.staleness_limit_s
    fresh = fresh and obs.requests is not None
    window = float(obs.window_s) if not invalid and obs.window_s else spec.forecast_step_s

    forecaster = forecasting.from_state(dict(state.forecaster))
    state = _feed(forecaster, state, obs.requests if fresh else math.nan, window, spec.forecast_step_s)
    state = state.replace(forecaster=forecaster.to_state())

    if not fresh:
        return _missing(spec, obs, state, forecaster, current, invalid), state

    obs = _clean(obs)
    state = state.replace(lengths=state.lengths.update(obs, spec.forecast_step_s), last_good=obs)
    rec, bound, bounds, fc = _size(spec, obs, state, forecaster)
    return _apply(spec, obs.time_s, current, rec, bound, bounds, fc, state)


def sizing(
    spec: PoolSpec, obs: Observation, state: PolicyState, rate: float, peak_rate: float | None = None
) -> tuple[int, Bound, dict[str, int]]:
    """Replicas needed for ``rate`` requests per second sustained over the horizon (the forecast), its
    ``peak_rate`` (the busiest step), and the current backlog.

    The sustained rate is sized at the target utilization; the peak step may use a replica's full rate at the
    SLO (a queue of one step's excess drains well within the TTFT target).

    Returns (replicas, the bound that applied, every bound's value).
    """
    p_mean, o_mean = state.lengths.prompt, state.lengths.output
    rr = replica_rate(spec, p_mean, o_mean)
    per_replica = rr.rate * spec.target_utilization
    bounds: dict[str, int] = {"min": spec.min_replicas}
    bounds["throughput"] = max(_ceil(rate / per_replica), _ceil((peak_rate or 0.0) / rr.rate))
    kv_cap = kv_capacity_tokens(spec)
    if kv_cap > 0:
        ctx = p_mean + o_mean / 2.0
        # Little's law: sequences held = arrival rate x time in the replica; each holds `ctx` tokens of KV.
        kv_tokens = rate * rr.latency_s * ctx
        kv_bound = _ceil(kv_tokens / (kv_cap * spec.target_utilization))
        if obs.kv_usage is not None and obs.ready > 0 and obs.kv_usage > spec.target_utilization:
            kv_bound = max(kv_bound, _ceil(obs.kv_usage * obs.ready / spec.target_utilization))
        bounds["kv"] = kv_bound
    if obs.waiting:
        window = float(obs.window_s if obs.window_s else spec.forecast_step_s)
        now_rate = (obs.requests or 0.0) / window
        # Serve the arrivals and empty the queue within the TTFT target.
        bounds["backlog"] = _ceil((now_rate + obs.waiting / spec.slo.ttft_s) / rr.rate)
    bound = max(bounds, key=lambda k: (bounds[k], k != "min"))
    return bounds[bound], bound, bounds


def _size(spec: PoolSpec, obs: Observation, state: PolicyState, forecaster):
    """The recommendation. Replicas asked for now are ready only after the cold start, so a scale-up is sized
    for the forecast of the window after it, [cold start, cold start + interval]; keeping replicas is sized for
    the whole horizon [0, cold start + interval] (a replica let go now could not come back within it). A burst
    the forecaster expects to be over before new replicas could start therefore buys none; the backlog bound
    keeps replicas (never scales down while a queue waits) but buys new ones only when they start within the
    TTFT target."""
    horizon = spec.cold_start_s + spec.interval_s
    q = spec.forecast_quantile
    f = forecaster.forecast(horizon_s=horizon, quantiles=(q,))
    window = float(obs.window_s if obs.window_s else spec.forecast_step_s)
    now_rate = (obs.requests or 0.0) / window
    rate = max(_quantile(f.rate_quantiles, q), now_rate)
    peak = max(_quantile(f.peak_quantiles, q), now_rate)
    rate_after, peak_after = rate, peak
    if spec.cold_start_s >= spec.forecast_step_s:
        # The q-quantile of the arrivals in [C, H] from those of [0, H] and [0, C] (comonotone approximation);
        # the busiest step after C keeps the horizon's peak-to-mean ratio.
        fc_c = forecaster.forecast(horizon_s=spec.cold_start_s, quantiles=(q,))
        c_rate = _quantile(fc_c.rate_quantiles, q)
        h_rate = _quantile(f.rate_quantiles, q)
        rate_after = max(0.0, (horizon * h_rate - spec.cold_start_s * c_rate) / spec.interval_s)
        rate_after = min(rate_after, rate) if h_rate >= c_rate else rate_after
        peak_after = peak * (rate_after / rate) if rate > 0 else 0.0
    fc = {
        "model": f.model,
        "quantile": q,
        "horizon_s": horizon,
        "rate": rate,
        "peak_rate": peak,
        "rate_after_cold_start": rate_after,
        "mean_rate": float(f.mean_rate),
    }
    keep, keep_bound, bounds = sizing(spec, obs, state, rate, peak)
    # The backlog is for the replicas there now to drain (within the TTFT target); replicas started now help
    # with it only if they are ready that soon. Sustained overload shows in the forecast instead.
    new_obs = obs if spec.cold_start_s <= spec.slo.ttft_s else replace(obs, waiting=0.0)
    new, new_bound, new_bounds = sizing(spec, new_obs, state, rate_after, peak_after)
    current = max(int(obs.current), 0)
    if new > current:
        return new, new_bound, new_bounds, fc
    if keep > current:
        bounds = {**bounds, "cold-start": current}
        return current, "cold-start", bounds, fc
    return keep, keep_bound, bounds, fc


def _apply(spec, time_s, current, rec, bound, bounds, fc, state: PolicyState) -> tuple[Decision, PolicyState]:
    rec_c = min(max(rec, spec.min_replicas), spec.max_replicas)
    hist = [h for h in state.history if h[0] > time_s - spec.scale_down_stabilization_s]
    if not state.history:
        hist.append((float(time_s), int(current)))  # the replicas found at the first decision count as one
    hist.append((float(time_s), int(rec_c)))
    state = state.replace(history=tuple(hist))
    limited: LimitedBy | None = None
    if rec_c > current:
        target = rec_c
        reason = f"scale up {current}->{target}: {bound} bound needs {rec}"
    elif rec_c < current:
        stab = max(h[1] for h in hist)
        target = min(current, stab)
        if target < current:
            reason = f"scale down {current}->{target}: highest recommendation in {spec.scale_down_stabilization_s:.0f}s"
        else:
            reason = f"hold {current}: {bound} bound needs {rec_c}, stabilization window holds {stab}"
            bound = "stabilization"
    else:
        target = current
        reason = f"hold {current}: {bound} bound needs {rec}"
    if spec.max_step and abs(target - current) > spec.max_step:
        target = current + spec.max_step * (1 if target > current else -1)
        reason += f"; limited to {spec.max_step} per step"
        limited = "max-step"
    # Above maxReplicas (also when it was lowered below the current count: go there at once), or held there.
    if target > spec.max_replicas or (rec > spec.max_replicas and target == spec.max_replicas):
        target, limited = spec.max_replicas, "max-replicas"
        reason += f", capped at maxReplicas {spec.max_replicas}"
    target = max(target, spec.min_replicas)
    return _decision(spec, target, reason, bound, fc, rec, bounds, limited), state


def _missing(
    spec: PoolSpec, obs: Observation, state: PolicyState, forecaster, current: int, invalid
) -> Decision:
    if invalid:
        what = f"invalid ({invalid})"
    elif obs.metrics_age_s is None or obs.requests is None:
        what = "missing"
    else:
        what = f"stale ({obs.metrics_age_s:.0f}s old)"
    base = max(current, spec.min_replicas)
    last = state.last_good
    if spec.missing_metrics == "floor":
        target = max(base, spec.missing_floor_replicas)
        reason = f"metrics {what}: floor {spec.missing_floor_replicas}"
        bound, fc, rec, bounds = "missing-metrics", None, target, {}
    elif (
        spec.missing_metrics == "lastKnownGood"
        and last is not None
        and obs.time_s - last.time_s <= spec.staleness_limit_s
    ):
        rec, bound, bounds, fc = _size(spec, replace(last, current=current), state, forecaster)
        target = max(base, min(rec, spec.max_replicas))
        reason = f"metrics {what}: last known good sizing ({bound} bound needs {rec}), never down"
    else:
        target = base
        reason = f"metrics {what}: hold {current}"
        bound, fc, rec, bounds = "missing-metrics", None, target, {}
    limited: LimitedBy | None = None
    target = min(target, spec.max_replicas)
    if spec.max_step and target - current > spec.max_step:
        target = current + spec.max_step
        limited = "max-step"
    return _decision(spec, target, reason, bound, fc, rec, bounds, limited)


def _hold(spec: PoolSpec, current: int, why: str) -> Decision:
    target = min(max(current, spec.min_replicas), spec.max_replicas)
    return _decision(spec, target, f"{why}: hold {current}", "missing-metrics", None, target, {}, None)


_COUNTS = ("requests", "prompt_tokens", "generation_tokens", "completed", "preemptions")
_GAUGES = ("waiting", "running", "kv_usage", "ttft_p99_s", "tpot_p99_s")


def _invalid(spec: PoolSpec, obs: Observation, state: PolicyState) -> str | None:
    """Why the observation is not a valid sample ("time" when its clock is unusable), None when it is."""
    if not _finite(obs.time_s):
        return "time"
    for name in _COUNTS + _GAUGES:
        v = getattr(obs, name)
        if v is not None and (not _finite(v) or v < 0):
            return f"{name}={v!r}"
    if obs.metrics_age_s is not None and not _finite(obs.metrics_age_s):
        return f"metrics_age_s={obs.metrics_age_s!r}"
    if obs.window_s is not None and not (_finite(obs.window_s) and 0 < obs.window_s <= MAX_WINDOW_S):
        return f"window_s={obs.window_s!r}"
    window = float(obs.window_s or spec.forecast_step_s)
    # What the pool could ever serve: maxReplicas (or the current count, if larger) at the model's rate.
    most = max(spec.max_replicas, min(_count(obs.current), 10 * spec.max_replicas))
    rr = replica_rate(spec, state.lengths.prompt, state.lengths.output)
    plausible_rate = PLAUSIBLE_FACTOR * most * rr.rate
    limits = {
        "requests": plausible_rate * window,
        "completed": plausible_rate * window,
        "prompt_tokens": plausible_rate * window * PLAUSIBLE_TOKENS_PER_REQUEST,
        "generation_tokens": plausible_rate * window * PLAUSIBLE_TOKENS_PER_REQUEST,
        "waiting": plausible_rate * PLAUSIBLE_QUEUE_S,
        "running": most * PLAUSIBLE_SEQS_PER_REPLICA,
        "preemptions": most * PLAUSIBLE_SEQS_PER_REPLICA,
        "kv_usage": 1.0 + 1e-6,
    }
    for name, limit in limits.items():
        v = getattr(obs, name)
        if v is not None and v > limit:
            return f"{name}={v:.3g} beyond what {most} replicas could serve"
    return None


def _clean(obs: Observation) -> Observation:
    """A valid observation with its replica counts as non-negative ints."""
    return replace(
        obs,
        current=_count(obs.current),
        ready=_count(obs.ready),
        starting=_count(obs.starting),
        pending=_count(obs.pending),
        metrics_age_s=max(float(obs.metrics_age_s or 0.0), 0.0),
    )


def _count(x) -> int:
    """A replica count from Kubernetes: a non-negative int (0 for anything that is not a finite number)."""
    return max(int(x), 0) if _finite(x) else 0


def _feed(forecaster, state: PolicyState, count: float | None, window: float, step: float) -> PolicyState:
    """Turn counts over `window` seconds into the forecaster's step counts (missing stays missing)."""
    if count is None or math.isnan(count):
        n = min(max(1, int(round(window / step))), MAX_FEED_STEPS)
        for _ in range(n):
            forecaster.update(math.nan)
        return state.replace(acc_count=0.0, acc_s=0.0)
    acc_c = state.acc_count + float(count)
    acc_s = state.acc_s + window
    if acc_s / step > MAX_FEED_STEPS:  # a window of more steps than the forecaster could use: keep the rate
        acc_c, acc_s = acc_c * MAX_FEED_STEPS * step / acc_s, MAX_FEED_STEPS * step
    while acc_s >= step - 1e-9:
        share = acc_c * min(1.0, step / acc_s)
        forecaster.update(share)
        acc_c -= share
        acc_s -= step
    return state.replace(acc_count=max(acc_c, 0.0), acc_s=max(acc_s, 0.0))


def _quantile(qs: dict, q: float) -> float:
    for k, v in qs.items():
        if abs(float(k) - q) < 1e-9:
            return float(v)
    raise KeyError(f"forecast has no quantile {q}")


def _ceil(x: float) -> int:
    if not math.isfinite(x) or x <= 0:
        return 0
    return int(math.ceil(x - 1e-9))


def _finite(x) -> bool:
    try:
        return math.isfinite(x)
    except TypeError:
        return False


def _decision(spec: PoolSpec, target, reason: str, bound: Bound, fc, rec, bounds, limited) -> Decision:
    """The Decision every path returns; advisory mode marks the reason so status and events say no action."""
    return Decision(
        replicas=int(target),
        reason=f"advisory: {reason}" if spec.advisory else reason,
        bound=bound,
        forecast=fc,
        advisory=spec.advisory,
        recommendation=int(rec),
        bounds=bounds,
        limited_by=limited,
    )
