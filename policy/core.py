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
from dataclasses import dataclass, replace
from typing import Any

from burstpilot import forecasting
from burstpilot.forecasting.base import MIN_CALIBRATION
from burstpilot.policy.capacity import kv_capacity_tokens, replica_rate
from burstpilot.policy.headroom import LEVELS, Headroom, headroom
from burstpilot.policy.learned import resource_rate
from burstpilot.policy.observation import Bound, Decision, LimitedBy, Observation
from burstpilot.policy.signals import Signals, read_signals
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
FEEDBACK_QUEUE = 0.5  # SLO feedback needs a queue that alone takes this share of the TTFT target to drain
FEEDBACK_MAX_PRESSURE = 4.0  # SLO feedback at most doubles the ready replicas per tick
MARGIN_PRESSURE = 0.5  # the SLO margin that shortens the scale-down hold: latency within half its targets,
MARGIN_QUEUE = 0.05  # no queue to speak of,
MARGIN_KV = 0.5  # and the KV cache at most half full
SHORT_HOLD_SHARE = 0.25  # of the stabilization window, when the margin and the forecast agree


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
    anything the pool could serve is an invalid sample, handled like missing metrics (never a scale-down).

    An advisory pool's count is someone else's (an HPA's, or KEDA acting on the advice after a lag), so each
    advice starts from the last advice, not from that count: the advice is the count burstpilot would run,
    held and stepped by its own rules (the pool's ready and starting replicas still say what is serving)."""
    state = state if state is not None else new_state(spec)
    if spec.advisory and state.advised is not None:
        obs = replace(obs, current=state.advised)
    decision, state = _decide(spec, obs, state)
    return decision, state.replace(advised=decision.replicas if spec.advisory else None)


def _decide(spec: PoolSpec, obs: Observation, state: PolicyState) -> tuple[Decision, PolicyState]:
    current = _count(obs.current)
    invalid = _invalid(spec, obs, state)
    if invalid == "time":  # no clock: nothing can be accounted for this tick
        return _hold(spec, current, "observation time is not finite", state), state
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
    state, sig = _learn(spec, obs, state, window)
    # The ready replicas served this window at a normal load (arrivals per replica within the sizing's rate):
    # its misses are the count's, not the load's (burstpilot.policy.slobudget).
    per_replica = capacity_rate(spec, state)[1] * spec.target_utilization
    normal = obs.ready > 0 and (obs.requests or 0.0) / window <= obs.ready * per_replica
    budget = state.slo_budget.observe(
        obs.completed, obs.slo_violations, window, obs.ready if normal else None
    )
    if budget is not state.slo_budget:  # attainment observed: the floor follows it
        state = state.replace(slo_budget=budget.step(spec.slo.attainment, spec.max_replicas))
    plan = _size(spec, obs, state, forecaster, sig)
    return _apply(spec, obs.time_s, current, plan, state, sig)


def capacity_rate(spec: PoolSpec, state: PolicyState) -> tuple[float, float]:
    """(the model's per-replica rate at the SLO times ``capacityScale``, that rate times the learned factor)
    for the current mean lengths, requests/s."""
    base = replica_rate(spec, state.lengths.prompt, state.lengths.output).rate
    return base, base * state.capacity.factor


def _learn(
    spec: PoolSpec, obs: Observation, state: PolicyState, window: float
) -> tuple[PolicyState, Signals]:
    """This tick's SLO signals and the learned capacity after them (burstpilot.policy.learned)."""
    base, c = capacity_rate(spec, state)
    sig = read_signals(spec, obs, window, c)
    res = None
    if sig.served_per_replica is not None:
        lam_model = sig.served_per_replica / spec.capacity_scale
        res = resource_rate(spec, sig, state.lengths.prompt, state.lengths.output, lam_model)
    return state.replace(capacity=state.capacity.step(spec, sig, base, res, window)), sig


@dataclass(frozen=True)
class _Plan:
    """A recommendation and what it rests on."""

    replicas: int
    bound: Bound
    bounds: dict[str, int]
    forecast: dict[str, Any] | None
    why: str  # the numbers behind the bound that set it
    headroom: Headroom | None = None
    short: bool = False  # short of what keeping the pool through the horizon needs (see _size)


def sizing(
    spec: PoolSpec,
    obs: Observation,
    state: PolicyState,
    rate: float,
    peaks: dict[float, float] | None = None,
    mean_rate: float = 0.0,
    horizon_s: float = 0.0,
    floor: int = 0,
) -> tuple[int, Bound, dict[str, int], dict[str, str], Headroom | None]:
    """Replicas needed for ``rate`` requests per second sustained over the horizon (the forecast), the bursts
    within it (``peaks``: the busiest step's rate quantiles; see burstpilot.policy.headroom), the KV cache and
    the current backlog, at the learned per-replica capacity.

    The sustained rate is sized at the target utilization; bursts at a replica's full rate at the SLO.
    ``floor`` > 0 (the SLO budget's, burstpilot.policy.slobudget) adds the ``slo-budget`` bound: at least that
    many replicas, one above the largest count whose observed attainment missed the goal.

    Returns (replicas, the bound that applied, every bound's value, the numbers behind each, the headroom).
    """
    p_mean, o_mean = state.lengths.prompt, state.lengths.output
    rr = replica_rate(spec, p_mean, o_mean)
    c = rr.rate * state.capacity.factor
    per_replica = c * spec.target_utilization
    bounds: dict[str, int] = {"min": spec.min_replicas}
    why: dict[str, str] = {"min": f"minReplicas {spec.min_replicas}"}
    bounds["throughput"] = _ceil(rate / per_replica)
    why["throughput"] = f"{rate:.2f}/s at {c:.3g}/s per replica x {spec.target_utilization:g}"
    hr = None
    if peaks:
        hr = headroom(
            peaks, mean_rate, horizon_s, c, spec.forecast_step_s, spec.slo.ttft_s, spec.slo.attainment,
            spec.max_replicas,
        )  # fmt: skip
        bounds["headroom"] = hr.replicas
        why["headroom"] = (
            f"bursts to {max(peaks.values()):.2f}/s (q{max(peaks):g}) leave {hr.expected_violations:.1f} requests "
            f"un-absorbed in {horizon_s:.0f}s, budget {hr.budget:.1f}"
        )
    if floor > 0:
        bounds["slo-budget"] = floor
        why["slo-budget"] = f"{floor - 1} ready replicas missed the goal at a normal load: at least {floor}"
    kv_cap = kv_capacity_tokens(spec)
    if kv_cap > 0:
        ctx = p_mean + o_mean / 2.0
        # Little's law: sequences held = arrival rate x time in the replica; each holds `ctx` tokens of KV.
        kv_tokens = rate * rr.latency_s * ctx
        kv_bound = _ceil(kv_tokens / (kv_cap * spec.target_utilization))
        why["kv"] = f"{kv_tokens:.3g} KV tokens in flight, {kv_cap} per replica x {spec.target_utilization:g}"
        if obs.kv_usage is not None and obs.ready > 0 and obs.kv_usage > spec.target_utilization:
            used = _ceil(obs.kv_usage * obs.ready / spec.target_utilization)
            if used > kv_bound:
                kv_bound = used
                why["kv"] = (
                    f"KV usage {obs.kv_usage:.2f} on {obs.ready} ready over {spec.target_utilization:g}"
                )
        bounds["kv"] = kv_bound
    if obs.waiting:
        window = float(obs.window_s if obs.window_s else spec.forecast_step_s)
        now_rate = (obs.requests or 0.0) / window
        # Serve the arrivals and empty the queue within the TTFT target.
        bounds["backlog"] = _ceil((now_rate + obs.waiting / spec.slo.ttft_s) / c)
        why["backlog"] = (
            f"{now_rate:.2f}/s arriving and {obs.waiting:.0f} waiting to drain in {spec.slo.ttft_s:g}s"
        )
    bound = _binding(bounds)
    return bounds[bound], bound, bounds, why, hr


def _binding(bounds: dict[str, int]) -> str:
    """The bound that sets the count: the largest (``min`` only where no other bound reaches it)."""
    return max(bounds, key=lambda k: (bounds[k], k != "min"))


def _size(spec: PoolSpec, obs: Observation, state: PolicyState, forecaster, sig: Signals | None) -> _Plan:
    """The recommendation. Replicas asked for now are ready only after the cold start, so a scale-up is sized
    for the forecast of the window after it, [cold start, cold start + interval]; keeping replicas is sized for
    the whole horizon [0, cold start + interval] (a replica let go now could not come back within it). A burst
    the forecaster expects to be over before new replicas could start therefore buys none; the backlog bound
    keeps replicas (never scales down while a queue waits) but buys new ones only when they start within the
    TTFT target. SLO feedback (the SLO missed now with a backlog) buys replicas whatever the forecast says."""
    horizon = spec.cold_start_s + spec.interval_s
    q = spec.forecast_quantile
    levels = tuple(sorted({q, *LEVELS}))
    f = forecaster.forecast(horizon_s=horizon, quantiles=levels)
    window = float(obs.window_s if obs.window_s else spec.forecast_step_s)
    now_rate = (obs.requests or 0.0) / window
    # Below MIN_CALIBRATION origins the forecaster's bands are its prior (the evidence says which).
    origins = forecaster.calibration_origins(horizon)
    rate = max(_quantile(f.rate_quantiles, q), now_rate)
    peaks = {lv: max(float(f.peak_quantiles[lv]), now_rate) for lv in LEVELS if lv in f.peak_quantiles}
    peak = max(_quantile(f.peak_quantiles, q), now_rate)
    rate_after, after = rate, 1.0
    if spec.cold_start_s >= spec.forecast_step_s:
        # The q-quantile of the arrivals in [C, H] from those of [0, H] and [0, C] (comonotone approximation);
        # the busiest step after C keeps the horizon's peak-to-mean ratio.
        fc_c = forecaster.forecast(horizon_s=spec.cold_start_s, quantiles=(q,))
        c_rate, h_rate = _quantile(fc_c.rate_quantiles, q), _quantile(f.rate_quantiles, q)
        rate_after = max(0.0, (horizon * h_rate - spec.cold_start_s * c_rate) / spec.interval_s)
        rate_after = min(rate_after, rate) if h_rate >= c_rate else rate_after
        after = rate_after / rate if rate > 0 else 0.0
    fc = {
        "model": f.model,
        "quantile": q,
        "horizon_s": horizon,
        "rate": rate,
        "peak_rate": peak,
        "rate_after_cold_start": rate_after,
        "mean_rate": float(f.mean_rate),
        "calibration_origins": origins,
        "bands": "fitted" if origins >= MIN_CALIBRATION else "prior",
    }
    mean = float(f.mean_rate) if math.isfinite(f.mean_rate) else now_rate
    floor = state.slo_budget.floor
    keep, keep_bound, bounds, why, hr = sizing(spec, obs, state, rate, peaks, mean, horizon, floor)
    # The backlog is for the replicas there now to drain (within the TTFT target); replicas started now help
    # with it only if they are ready that soon. Sustained overload shows in the forecast instead.
    new_obs = obs if spec.cold_start_s <= spec.slo.ttft_s else replace(obs, waiting=0.0)
    peaks_after = {lv: x * after for lv, x in peaks.items()}
    new, new_bound, new_bounds, new_why, new_hr = sizing(
        spec, new_obs, state, rate_after, peaks_after, mean * after, horizon, floor
    )
    current = max(int(obs.current), 0)
    # Short of what keeping the pool through the horizon needs (the backlog aside: replicas bought now cannot
    # drain it in time), buying less because the forecast sees a burst that ends before new replicas could
    # start. Once that has lasted a cold start, the forecast was wrong about the burst's length (a rise that
    # lasts that long is not a burst): buy the keeping count.
    need_bounds = bounds if new_obs is obs else {k: n for k, n in bounds.items() if k != "backlog"}
    need_bound = _binding(need_bounds)
    need = need_bounds[need_bound]
    short = need > max(new, current)
    since = state.cold_hold_since
    if short and since is not None and obs.time_s - since >= spec.cold_start_s:
        held = f"short of it for {obs.time_s - since:.0f}s, longer than the cold start"
        new, new_bound, new_bounds, new_hr = need, need_bound, need_bounds, hr
        new_why = {need_bound: f"{why[need_bound]}; {held}"}
    fb = _feedback(spec, obs, sig, capacity_rate(spec, state)[1])
    if fb is not None and fb[0] > max(new, current):
        n, text = fb
        return _Plan(n, "slo-feedback", {**bounds, "slo-feedback": n}, fc, text, hr, short=short)
    if new > current:
        return _Plan(new, new_bound, new_bounds, fc, new_why[new_bound], new_hr, short=short)
    if keep > current:
        bounds = {**bounds, "cold-start": current}
        text = (
            f"{why[keep_bound]} needs {keep}, but new replicas would start after the burst the forecast sees"
        )
        return _Plan(current, "cold-start", bounds, fc, text, hr, short=short)
    return _Plan(keep, keep_bound, bounds, fc, why[keep_bound], hr)


def _feedback(
    spec: PoolSpec, obs: Observation, sig: Signals | None, capacity: float
) -> tuple[int, str] | None:
    """SLO feedback: a TTFT or TPOT p99 above its target now, with a backlog (the queue alone takes
    ``FEEDBACK_QUEUE`` of the TTFT target to drain), asks for the ready replicas times the square root of the
    SLO pressure (at most doubling them), unless the ready replicas (at ``capacity`` each) would drain the queue
    before a replica started now could be ready."""
    if sig is None or sig.ready <= 0 or (sig.queue or 0.0) < FEEDBACK_QUEUE:
        return None
    latency = max(v for v in (sig.ttft, sig.tpot, 0.0) if v is not None)
    if latency <= 1.0:
        return None
    # Replicas bought now are ready after the cold start: worth it only if the queue would still be there.
    window = float(obs.window_s if obs.window_s else spec.forecast_step_s)
    spare = sig.ready * capacity - (obs.requests or 0.0) / window
    if spare > 0 and (obs.waiting or 0.0) / spare < spec.cold_start_s:
        return None
    pressure = max(latency, sig.queue or 0.0)
    n = _ceil(sig.ready * min(pressure, FEEDBACK_MAX_PRESSURE) ** 0.5)
    text = f"p99 at {latency:.2f}x its target with {obs.waiting:.0f} waiting on {sig.ready} ready"
    return n, text


def _hold_s(spec: PoolSpec, sig: Signals | None) -> tuple[float, str]:
    """The scale-down stabilization for this tick: the spec's window, or a quarter of it when the SLO margin
    agrees with the forecast (latency well inside its targets, no queue, KV usage low)."""
    full = spec.scale_down_stabilization_s
    if (
        sig is not None
        and sig.latency_measured
        and sig.slo is not None
        and sig.slo <= MARGIN_PRESSURE
        and (sig.queue or 0.0) <= MARGIN_QUEUE
        and (sig.kv_usage is None or sig.kv_usage <= MARGIN_KV)
    ):
        return max(spec.interval_s, full * SHORT_HOLD_SHARE), f"SLO margin (pressure {sig.slo:.2f})"
    return full, ""


def _apply(spec: PoolSpec, time_s: float, current: int, plan: _Plan, state: PolicyState, sig):
    rec, bound, bounds = plan.replicas, plan.bound, plan.bounds
    rec_c = min(max(rec, spec.min_replicas), spec.max_replicas)
    keep_s = max(spec.scale_down_stabilization_s, spec.interval_s)
    hist = [h for h in state.history if h[0] > time_s - keep_s]
    if not state.history:
        hist.append((float(time_s), int(current)))  # the replicas found at the first decision count as one
    hist.append((float(time_s), int(rec_c)))
    since = None  # since when the pool has been short of its keeping count (see _size)
    if plan.short:
        since = float(time_s) if state.cold_hold_since is None else state.cold_hold_since
    state = state.replace(history=tuple(hist), cold_hold_since=since)
    hold_s, margin = _hold_s(spec, sig)
    limited: LimitedBy | None = None
    if rec_c > current:
        target = rec_c
        reason = f"scale up {current}->{target}: {bound} bound needs {rec} ({plan.why})"
    elif rec_c < current:
        stab = max([rec_c] + [h[1] for h in hist if h[0] > time_s - hold_s])
        target = min(current, stab)
        if target < current:
            what = f"highest recommendation in {hold_s:.0f}s"
            reason = f"scale down {current}->{target}: {what}{'; ' + margin if margin else ''} ({bound}: {plan.why})"
        else:
            reason = (
                f"hold {current}: {bound} bound needs {rec_c} ({plan.why}), stabilization window holds {stab}"
            )
            bound = "stabilization"
    else:
        target = current
        reason = f"hold {current}: {bound} bound needs {rec} ({plan.why})"
    if spec.max_step and abs(target - current) > spec.max_step:
        target = current + spec.max_step * (1 if target > current else -1)
        reason += f"; limited to {spec.max_step} per step"
        limited = "max-step"
    # Above maxReplicas (also when it was lowered below the current count: go there at once), or held there.
    if target > spec.max_replicas or (rec > spec.max_replicas and target == spec.max_replicas):
        target, limited = spec.max_replicas, "max-replicas"
        # maxReplicas lowered below the count: a hard bound, as the HPA applies it (no hold keeps the old count)
        if current > spec.max_replicas:
            reason += f"; maxReplicas {spec.max_replicas} applies at once"
        else:
            reason += f", capped at maxReplicas {spec.max_replicas}"
    target = max(target, spec.min_replicas)
    evidence = {"signals": sig.to_dict() if sig is not None else None, "hold_s": hold_s}
    if plan.headroom is not None:
        evidence["headroom"] = plan.headroom.to_dict()
    evidence["slo_budget"] = state.slo_budget.evidence(spec.slo.attainment)
    return _decision(spec, target, reason, bound, plan.forecast, rec, bounds, limited, state, evidence), state


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
        plan = _size(spec, replace(last, current=current), state, forecaster, None)
        rec, bound, bounds, fc = plan.replicas, plan.bound, plan.bounds, plan.forecast
        target = max(base, min(rec, spec.max_replicas))
        reason = f"metrics {what}: last known good sizing ({bound} bound needs {rec}: {plan.why}), never down"
    else:
        target = base
        reason = f"metrics {what}: hold {current}"
        bound, fc, rec, bounds = "missing-metrics", None, target, {}
    limited: LimitedBy | None = None
    target = min(target, spec.max_replicas)
    if spec.max_step and target - current > spec.max_step:
        target = current + spec.max_step
        limited = "max-step"
    target = max(target, spec.min_replicas)  # minReplicas is a floor maxStep does not hold back
    evidence = {"slo_budget": state.slo_budget.evidence(spec.slo.attainment)}
    return _decision(spec, target, reason, bound, fc, rec, bounds, limited, state, evidence)


def _hold(spec: PoolSpec, current: int, why: str, state: PolicyState) -> Decision:
    target = min(max(current, spec.min_replicas), spec.max_replicas)
    return _decision(
        spec, target, f"{why}: hold {current}", "missing-metrics", None, target, {}, None, state, {}
    )


_COUNTS = ("requests", "prompt_tokens", "generation_tokens", "completed", "preemptions", "slo_violations")
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
        "slo_violations": plausible_rate * window,
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


def _decision(
    spec: PoolSpec, target, reason: str, bound: Bound, fc, rec, bounds, limited, state: PolicyState, evidence
) -> Decision:
    """The Decision every path returns; advisory mode marks the reason so status and events say no action."""
    base, c = capacity_rate(spec, state)
    lc = state.capacity
    capacity = {
        "rate_per_replica": c,
        "model_rate_per_replica": base,
        "factor": lc.factor,
        "source": "learned" if lc.evidence_s > 0 else "profile",
        "evidence_s": lc.evidence_s,
        "note": lc.note,
    }
    return Decision(
        replicas=int(target),
        reason=f"advisory: {reason}" if spec.advisory else reason,
        bound=bound,
        forecast=fc,
        advisory=spec.advisory,
        recommendation=int(rec),
        bounds=bounds,
        limited_by=limited,
        capacity=capacity,
        evidence=evidence,
    )
