"""Autoscalers people run today, re-implemented with the decision core's shape for side-by-side replay.

Every policy has ``new_state(spec) -> dict`` and ``decide(spec, obs, state) -> (Decision, state)`` and a
``period_s(spec)``: how often its controller runs. All size replicas with the same per-replica capacity model
(``burstpilot.policy.capacity``), so they differ only in how they react.

- ``static-peak`` / ``static-mean``: a fixed replica count (sized by the harness for the workload's peak or mean).
- ``hpa``: the Kubernetes HPA v2 algorithm on per-replica concurrency (running + waiting requests), with its
  defaults: 15 s sync, 0.1 tolerance, scale-up by max(+100%, +4 pods) per 15 s with no stabilization,
  scale-down after a 300 s stabilization window (highest recommendation) by up to 100% per 15 s.
- ``keda``: KEDA's Prometheus scaler driving that HPA: an AverageValue target (the threshold) on the request
  rate over the last minute (``sum(rate(requests[1m]))``).
- ``kpa``: the Knative Pod Autoscaler: concurrency averaged over a 60 s stable and a 6 s panic window, 70% target
  utilization of the per-replica concurrency, panic when the panic-window demand reaches 200% of the ready
  replicas (no scale-down while panicking, which lasts a stable window), scale-down by at most half per tick.
- ``dynamo``: the NVIDIA Dynamo planner's load-based mode: every 180 s, forecast the next interval's request
  rate with ARIMA and size replicas for it by throughput at the SLO; no stabilization.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.policy import core
from burstpilot.policy.capacity import concurrency_at, replica_rate
from burstpilot.policy.core import Decision, Observation
from burstpilot.policy.spec import PoolSpec
from burstpilot.policy.state import Lengths

HPA_SYNC_S = 15.0
HPA_TOLERANCE = 0.1
HPA_SCALE_DOWN_WINDOW_S = 300.0
HPA_SCALE_UP_PODS = 4
KPA_TICK_S = 2.0
KPA_STABLE_S = 60.0
KPA_PANIC_S = 6.0
KPA_PANIC_THRESHOLD = 2.0
KPA_TARGET_UTILIZATION = 0.7
KPA_MAX_SCALE_DOWN_RATE = 2.0
DYNAMO_INTERVAL_S = 180.0
DYNAMO_ARIMA_ORDER = (1, 1, 1)
DYNAMO_HISTORY = 50


@dataclass(frozen=True)
class Policy:
    """A named scaling policy with the decision core's shape."""

    name: str
    new_state: Callable[[PoolSpec], dict[str, Any]]
    decide: Callable[[PoolSpec, Observation, dict[str, Any]], tuple[Decision, dict[str, Any]]]
    period_s: Callable[[PoolSpec], float]


def _lengths(state: dict[str, Any], obs: Observation) -> tuple[float, float]:
    """Running mean prompt/output lengths (the same estimate the decision core keeps)."""
    est = Lengths.from_dict(state).update(obs)
    state.update(est.to_dict())
    return est.prompt, est.output


def _clamp(spec: PoolSpec, n: int) -> int:
    return int(min(max(n, spec.min_replicas), spec.max_replicas))


def _decision(spec: PoolSpec, n: int, rec: int, reason: str, bound: str, fc=None) -> Decision:
    return Decision(
        replicas=_clamp(spec, n),
        reason=reason,
        bound=bound,
        forecast=fc,
        advisory=False,
        recommendation=int(rec),
    )


# --------------------------------------------------------------------------- static


def static(replicas: int, name: str = "static") -> Policy:
    """A fixed pool of ``replicas``."""

    def decide(spec, obs, state):
        return _decision(spec, replicas, replicas, f"static {replicas}", "static"), state

    return Policy(name, lambda spec: {}, decide, lambda spec: 60.0)


# --------------------------------------------------------------------------- HPA


def hpa_step(
    spec: PoolSpec,
    state: dict[str, Any],
    time_s: float,
    current: int,
    ready: int,
    metric_total: float | None,
    target_per_replica: float,
) -> tuple[int, int, str]:
    """One HPA v2 sync for an AverageValue target. Returns (replicas, recommendation, reason)."""
    if metric_total is None:
        return current, current, "hpa: metric missing, no change"
    pods = max(ready, 1)
    ratio = (metric_total / pods) / target_per_replica
    if abs(ratio - 1.0) <= HPA_TOLERANCE:
        rec = current
    else:
        rec = math.ceil(metric_total / target_per_replica - 1e-9)
    rec = _clamp(spec, rec)
    hist = [h for h in state.get("hpa_history", []) if h[0] > time_s - HPA_SCALE_DOWN_WINDOW_S]
    hist.append([float(time_s), int(rec)])
    state["hpa_history"] = hist
    if rec > current:
        limit = max(2 * current, current + HPA_SCALE_UP_PODS)
        target = min(rec, limit)
        why = f"scale up to {target} (usage ratio {ratio:.2f})"
    elif rec < current:
        target = min(current, max(h[1] for h in hist))  # stabilization: highest in 300 s; 100%/15 s allows it
        why = (
            f"scale down to {target} (usage ratio {ratio:.2f}, 300 s stabilization)"
            if target < current
            else "hold"
        )
    else:
        target, why = current, f"within tolerance (usage ratio {ratio:.2f})"
    return _clamp(spec, target), rec, why


def _concurrency_target(spec: PoolSpec, state: dict[str, Any], obs: Observation, utilization: float) -> float:
    """Per-replica concurrency at ``utilization`` of the replica's rate at the SLO: the target an operator
    would read off a load test of one replica."""
    p, o = _lengths(state, obs)
    return concurrency_at(spec, p, o, replica_rate(spec, p, o).rate * utilization)


def hpa() -> Policy:
    def decide(spec, obs, state):
        state = dict(state)
        total = None if obs.running is None or obs.waiting is None else obs.running + obs.waiting
        tgt = _concurrency_target(spec, state, obs, spec.target_utilization)
        n, rec, why = hpa_step(spec, state, obs.time_s, obs.current, obs.ready, total, tgt)
        return _decision(spec, n, rec, f"hpa: {why}", "concurrency"), state

    return Policy("hpa", lambda spec: {}, decide, lambda spec: HPA_SYNC_S)


def keda() -> Policy:
    def decide(spec, obs, state):
        state = dict(state)
        p, o = _lengths(state, obs)
        window = float(obs.window_s or HPA_SYNC_S)
        samples = [s for s in state.get("keda_samples", []) if s[0] > obs.time_s - 60.0]
        if obs.requests is not None:
            samples.append([float(obs.time_s), float(obs.requests), window])
        state["keda_samples"] = samples
        if samples:
            rate = sum(s[1] for s in samples) / sum(s[2] for s in samples)
        else:
            rate = None
        threshold = replica_rate(spec, p, o).rate * spec.target_utilization
        n, rec, why = hpa_step(spec, state, obs.time_s, obs.current, obs.ready, rate, threshold)
        return _decision(spec, n, rec, f"keda: {why}", "request-rate"), state

    return Policy("keda", lambda spec: {}, decide, lambda spec: HPA_SYNC_S)


# --------------------------------------------------------------------------- KPA


def kpa() -> Policy:
    def decide(spec, obs, state):
        state = dict(state)
        t = float(obs.time_s)
        tgt = _concurrency_target(spec, state, obs, KPA_TARGET_UTILIZATION)
        samples = [s for s in state.get("kpa_samples", []) if s[0] > t - KPA_STABLE_S]
        if obs.running is not None and obs.waiting is not None:
            samples.append([t, float(obs.running + obs.waiting)])
        state["kpa_samples"] = samples
        if not samples:
            return _decision(spec, obs.current, obs.current, "kpa: no metrics", "concurrency"), state
        stable = float(np.mean([s[1] for s in samples]))
        panic_samples = [s[1] for s in samples if s[0] > t - KPA_PANIC_S]
        panic = float(np.mean(panic_samples)) if panic_samples else stable
        want_stable = math.ceil(stable / tgt - 1e-9)
        want_panic = math.ceil(panic / tgt - 1e-9)
        ready = max(obs.ready, 1)
        over = want_panic / ready >= KPA_PANIC_THRESHOLD
        if over:
            state["panic_time"] = t  # start panicking, or extend the panic
        elif state.get("panic_time") is not None and t - state["panic_time"] > KPA_STABLE_S:
            state["panic_time"], state["max_panic_pods"] = None, 0  # the surge has reached the stable window
        if state.get("panic_time") is not None:
            state["max_panic_pods"] = max(want_panic, state.get("max_panic_pods", 0))
            want = state["max_panic_pods"]
            why = f"panic (panic-window demand {want_panic} vs {ready} ready)"
        else:
            want = want_stable
            why = f"stable window demand {want_stable}"
        n = max(want, math.floor(ready / KPA_MAX_SCALE_DOWN_RATE))
        return _decision(spec, n, want, f"kpa: {why}", "concurrency"), state

    return Policy("kpa", lambda spec: {}, decide, lambda spec: KPA_TICK_S)


# --------------------------------------------------------------------------- Dynamo planner


def arima_next(history: list[float]) -> float:
    """One-step ARIMA forecast of a rate series (falls back to the last value on short or degenerate series)."""
    if not history:
        return 0.0
    if len(history) < 5 or float(np.std(history)) == 0.0:
        return float(history[-1])
    from statsmodels.tsa.arima.model import ARIMA

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = ARIMA(np.asarray(history, dtype=float), order=DYNAMO_ARIMA_ORDER).fit()
            value = float(fit.forecast(1)[0])
        except (ValueError, np.linalg.LinAlgError):
            value = float(history[-1])
    return max(0.0, value) if math.isfinite(value) else float(history[-1])


def dynamo() -> Policy:
    def decide(spec, obs, state):
        state = dict(state)
        p, o = _lengths(state, obs)
        hist = list(state.get("rates", []))
        if obs.requests is not None:
            hist.append(float(obs.requests) / float(obs.window_s or DYNAMO_INTERVAL_S))
        hist = hist[-DYNAMO_HISTORY:]
        state["rates"] = hist
        pred = arima_next(hist)
        per = replica_rate(spec, p, o).rate * spec.target_utilization
        want = math.ceil(pred / per - 1e-9) if pred > 0 else spec.min_replicas
        fc = {
            "model": "arima",
            "quantile": None,
            "horizon_s": DYNAMO_INTERVAL_S,
            "rate": pred,
            "mean_rate": pred,
        }
        return _decision(spec, want, want, f"dynamo: ARIMA rate {pred:.2f}/s", "throughput", fc), state

    return Policy("dynamo", lambda spec: {}, decide, lambda spec: DYNAMO_INTERVAL_S)


# --------------------------------------------------------------------------- the decision core as a Policy


def burstpilot() -> Policy:
    return Policy("burstpilot", core.new_state, core.decide, lambda spec: spec.interval_s)


REACTIVE = {"hpa": hpa, "keda": keda, "kpa": kpa, "dynamo": dynamo, "burstpilot": burstpilot}


def get(name: str) -> Policy:
    """A policy by name (static and oracle policies need the workload: see burstpilot.evaluation)."""
    try:
        return REACTIVE[name]()
    except KeyError:
        raise BurstpilotError(f"unknown policy {name!r} (known: {', '.join(REACTIVE)})") from None
