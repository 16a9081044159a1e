"""The burstpilot scaling decision: pure, metrics in, desired replicas and the reason out.

Each tick the decision core
1. feeds the request count of the last step to the forecaster (a missing sample when metrics are missing),
2. sizes the pool for the forecast quantile of the peak request rate over the cold-start horizon, taking the
   largest of three bounds: token throughput at the SLO, KV-cache memory (Little's law), and draining the
   current backlog within the TTFT target,
3. scales up at once (within ``max_step``), and scales down only to the highest recommendation of the
   stabilization window. The replicas the target already asked for (ready, starting and pending) count, so a
   burst never makes it ask twice for the same capacity.
Missing or stale metrics never scale down. The state is a JSON-serializable dict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from burstpilot.policy.capacity import kv_capacity_tokens, replica_rate
from burstpilot.policy.spec import PoolSpec

STATE_VERSION = 1
DEFAULT_PROMPT_TOKENS = 512.0
DEFAULT_OUTPUT_TOKENS = 256.0
LENGTH_TAU_S = 300.0  # time constant of the mean prompt/output length estimates
BURST_CALIB_WINDOW_S = 1800.0  # calibration window of the burst forecaster (see new_state)


@dataclass(frozen=True)
class Observation:
    """What the metrics say about one pool at one tick.

    ``requests``, ``prompt_tokens`` and ``generation_tokens`` are counts during the last ``window_s`` seconds
    (None: unknown; ``window_s`` None means the spec's forecasting step). ``current`` is the replica count the
    target asks for (its scale subresource's spec); ``ready``, ``starting`` and ``pending`` split it by pod state.
    ``metrics_age_s`` is the age of the newest sample, None when the metrics are missing.
    """

    time_s: float
    requests: float | None = None
    prompt_tokens: float | None = None
    generation_tokens: float | None = None
    waiting: float | None = None
    running: float | None = None
    kv_usage: float | None = None
    ttft_p99_s: float | None = None
    current: int = 0
    ready: int = 0
    starting: int = 0
    pending: int = 0
    metrics_age_s: float | None = 0.0
    window_s: float | None = None


@dataclass(frozen=True)
class Decision:
    """Desired replicas and why. ``bound`` names the rule that set the number; ``bounds`` has every rule's value."""

    replicas: int
    reason: str
    bound: str
    forecast: dict[str, Any] | None = None
    advisory: bool = False
    recommendation: int = 0  # the sizing before stabilization, rate limits and the min/max clamp
    bounds: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_state(spec: PoolSpec) -> dict[str, Any]:
    """A fresh state for ``spec``: JSON-serializable, the forecaster's state inside."""
    from burstpilot.forecasting import make_forecaster

    # The burst model's calibration ring: the last half hour, not the forecaster's default hour, which halves
    # the state (the operator saves it every tick): 47 KiB after an hour at a 10 s step instead of 93.
    params = (
        {"calib_window_s": max(BURST_CALIB_WINDOW_S, spec.forecast_step_s)}
        if spec.forecast_model == "burst"
        else {}
    )
    f = make_forecaster(spec.forecast_model, step_s=spec.forecast_step_s, **params)
    return {
        "version": STATE_VERSION,
        "forecaster": f.to_state(),
        "acc_count": 0.0,
        "acc_s": 0.0,
        "prompt_mean": None,
        "output_mean": None,
        "history": [],  # [time_s, recommendation] within the stabilization window
        "last_good": None,  # the last observation with fresh metrics, as a dict
    }


def decide(spec: PoolSpec, obs: Observation, state: dict[str, Any] | None) -> tuple[Decision, dict[str, Any]]:
    """One scaling decision. Returns the decision and the new state (the input state is not modified)."""
    from burstpilot.forecasting import from_state

    state = _copy_state(state if state is not None else new_state(spec))
    current = max(int(obs.current), 0)
    fresh = (
        obs.metrics_age_s is not None
        and obs.metrics_age_s <= spec.staleness_limit_s
        and obs.requests is not None
    )
    window = float(obs.window_s if obs.window_s else spec.forecast_step_s)

    forecaster = from_state(state["forecaster"])
    _feed(forecaster, state, obs.requests if fresh else math.nan, window, spec.forecast_step_s)
    state["forecaster"] = forecaster.to_state()

    if not fresh:
        decision = _missing(spec, obs, state, forecaster, current)
        return decision, state

    _update_lengths(state, obs)
    state["last_good"] = asdict(obs)
    rec, bound, bounds, fc = _size(spec, obs, state, forecaster)
    return _apply(spec, obs.time_s, current, rec, bound, bounds, fc, state), state


def sizing(
    spec: PoolSpec, obs: Observation, state: dict[str, Any], rate: float, peak_rate: float | None = None
) -> tuple[int, str, dict[str, int]]:
    """Replicas needed for ``rate`` requests per second sustained over the horizon (the forecast), its
    ``peak_rate`` (the busiest step), and the current backlog.

    The sustained rate is sized at the target utilization; the peak step may use a replica's full rate at the
    SLO (a queue of one step's excess drains well within the TTFT target).

    Returns (replicas, the bound that applied, every bound's value). Exposed for the baselines and the oracle,
    which size with the same capacity model.
    """
    p_mean = state.get("prompt_mean") or DEFAULT_PROMPT_TOKENS
    o_mean = state.get("output_mean") or DEFAULT_OUTPUT_TOKENS
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
        if obs.kv_usage is not None and obs.ready > 0:
            kv_bound = max(
                kv_bound,
                _ceil(obs.kv_usage * obs.ready / spec.target_utilization)
                if obs.kv_usage > spec.target_utilization
                else 0,
            )
        bounds["kv"] = kv_bound
    if obs.waiting:
        window = float(obs.window_s if obs.window_s else spec.forecast_step_s)
        now_rate = (obs.requests or 0.0) / window
        # Serve the arrivals and empty the queue within the TTFT target.
        bounds["backlog"] = _ceil((now_rate + obs.waiting / spec.slo.ttft_s) / rr.rate)
    bound = max(bounds, key=lambda k: (bounds[k], k != "min"))
    return bounds[bound], bound, bounds


def _size(spec, obs, state, forecaster):
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


def _apply(spec, time_s, current, rec, bound, bounds, fc, state) -> Decision:
    rec_c = min(max(rec, spec.min_replicas), spec.max_replicas)
    hist = [h for h in state["history"] if h[0] > time_s - spec.scale_down_stabilization_s]
    if not state["history"]:
        hist.append([float(time_s), int(current)])  # the replicas found at the first decision count as one
    hist.append([float(time_s), int(rec_c)])
    state["history"] = hist
    if rec_c > current:
        target = rec_c
        reason = f"scale up {current}->{target}: {bound} bound needs {rec}"
        if rec > spec.max_replicas:
            reason += f", capped at maxReplicas {spec.max_replicas}"
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
    if current < spec.min_replicas and target < spec.min_replicas:
        target = spec.min_replicas
    return _decision(spec, target, reason, bound, fc, rec, bounds)


def _missing(spec: PoolSpec, obs: Observation, state, forecaster, current: int) -> Decision:
    what = (
        "missing"
        if obs.metrics_age_s is None or obs.requests is None
        else f"stale ({obs.metrics_age_s:.0f}s old)"
    )
    base = max(current, spec.min_replicas)
    if spec.missing_metrics == "floor":
        target = max(base, spec.missing_floor_replicas)
        reason = f"metrics {what}: floor {spec.missing_floor_replicas}"
        bound, fc, rec, bounds = "missing-metrics", None, target, {}
    elif (
        spec.missing_metrics == "lastKnownGood"
        and state.get("last_good") is not None
        and (obs.time_s - state["last_good"]["time_s"] <= spec.staleness_limit_s)
    ):
        last = Observation(**{**state["last_good"], "current": current})
        rec, bound, bounds, fc = _size(spec, last, state, forecaster)
        target = max(base, min(rec, spec.max_replicas))
        reason = f"metrics {what}: last known good sizing ({bound} bound needs {rec}), never down"
    else:
        target = base
        reason = f"metrics {what}: hold {current}"
        bound, fc, rec, bounds = "missing-metrics", None, target, {}
    target = min(target, max(spec.max_replicas, current))
    if spec.max_step and target - current > spec.max_step:
        target = current + spec.max_step
    return _decision(spec, target, reason, bound, fc, rec, bounds)


def _feed(forecaster, state, count: float | None, window: float, step: float) -> None:
    """Turn counts over `window` seconds into the forecaster's step counts (missing stays missing)."""
    if count is None or (isinstance(count, float) and math.isnan(count)):
        n = max(1, int(round(window / step)))
        for _ in range(n):
            forecaster.update(math.nan)
        state["acc_count"], state["acc_s"] = 0.0, 0.0
        return
    acc_c = state["acc_count"] + float(count)
    acc_s = state["acc_s"] + window
    while acc_s >= step - 1e-9:
        share = acc_c * min(1.0, step / acc_s)
        forecaster.update(share)
        acc_c -= share
        acc_s -= step
    state["acc_count"], state["acc_s"] = max(acc_c, 0.0), max(acc_s, 0.0)


def _update_lengths(state, obs: Observation) -> None:
    """Mean prompt and output lengths as ratios of exponentially weighted sums (time constant LENGTH_TAU_S).

    A ratio of smoothed sums, not a smoothed ratio: after a burst, the generation tokens of its requests keep
    coming while new arrivals fall, and a per-step ratio would read that as much longer outputs.
    """
    if obs.requests is None or obs.requests < 0:
        return
    window = float(obs.window_s or 10.0)
    w = 1.0 - math.exp(-window / LENGTH_TAU_S)
    sums = state.get("length_sums") or [0.0, 0.0, 0.0]
    new = [float(obs.requests), float(obs.prompt_tokens or 0.0), float(obs.generation_tokens or 0.0)]
    sums = [(1 - w) * a + w * b for a, b in zip(sums, new, strict=True)]
    state["length_sums"] = sums
    if sums[0] > 0:
        if sums[1] > 0:
            state["prompt_mean"] = sums[1] / sums[0]
        if sums[2] > 0:
            state["output_mean"] = sums[2] / sums[0]


def _quantile(qs: dict, q: float) -> float:
    for k, v in qs.items():
        if abs(float(k) - q) < 1e-9:
            return float(v)
    raise KeyError(f"forecast has no quantile {q}")


def _ceil(x: float) -> int:
    if not math.isfinite(x) or x <= 0:
        return 0
    return int(math.ceil(x - 1e-9))


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    out = dict(state)
    out["history"] = [list(h) for h in state.get("history", [])]
    return out


def _decision(spec: PoolSpec, target, reason: str, bound: str, fc, rec, bounds) -> Decision:
    """The Decision both paths return; advisory mode marks the reason so status and events say no action."""
    return Decision(
        replicas=int(target),
        reason=f"advisory: {reason}" if spec.advisory else reason,
        bound=bound,
        forecast=fc,
        advisory=spec.advisory,
        recommendation=int(rec),
        bounds=bounds,
    )
