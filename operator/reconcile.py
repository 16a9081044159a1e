"""One ServingPool's tick: observe (Kubernetes + Prometheus), decide (burstpilot.policy), act, report.

The decision itself is ``burstpilot.policy.decide``; this module only gathers its inputs and applies its
output. What the next tick (or a restarted operator) needs is kept in two places: the measured cold starts
in the ServingPool's status, and the decision core's state (JSON, 50 to 100 KiB with the forecaster's
calibration ring) in the pool's state ConfigMap (``burstpilot.operator.state``), never in the ServingPool. A
``status.policyState`` left by an earlier operator version is read once, when no ConfigMap exists yet, and
removed from the status once the ConfigMap holds the state.

Replica edits made by hand: when the target's replicas differ from what this operator last set, it emits a
``ManualScale`` event and takes the edited count as the current one; the next decision starts from there
(scaling down only after the stabilization window). To keep a count by hand, set ``spec.mode: Advisory``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.operator import metrics as opmetrics
from burstpilot.operator.conditions import Condition, merge_conditions
from burstpilot.operator.kube import Kube, PodSummary, StateError, TargetError
from burstpilot.operator.prom import Endpoint, MetricsError, PrometheusSource, pool_queries
from burstpilot.operator.state import StateStore
from burstpilot.policy import (
    Observation,
    PolicyState,
    PoolDemand,
    PoolSpec,
    allocate_budget,
    decide,
    new_state,
)
from burstpilot.sim import load_profile

log = logging.getLogger(__name__)

COLD_START_QUANTILE = 0.9
COLD_START_MIN_SAMPLES = 3
COLD_START_KEEP = 32

# emit(type, reason, message): posts a Kubernetes Event on the ServingPool.
EmitFn = Callable[[str, str, str], None]


@dataclass
class BudgetBook:
    """The latest wish of every pool of each budget group (pools tick independently, all in one process)."""

    wishes: dict[str, dict[str, PoolDemand]] = field(default_factory=dict)

    def grant(self, group: str, gpus: int, demand: PoolDemand) -> int:
        pools = self.wishes.setdefault(group, {})
        pools[demand.name] = demand
        return allocate_budget(pools.values(), gpus)[demand.name]

    def forget(self, name: str) -> None:
        for pools in self.wishes.values():
            pools.pop(name, None)


def now_iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_state(raw: str | None, spec: PoolSpec, forecasting: dict[str, Any]) -> PolicyState:
    """The decision core's state from a saved document (``dump_state``, also of earlier versions); a fresh one
    when absent, unreadable, or made for other forecasting settings."""
    if raw:
        try:
            saved = json.loads(raw)
            if saved.get("forecasting") == forecasting and isinstance(saved.get("state"), dict):
                return PolicyState.from_dict(saved["state"])
        except (ValueError, AttributeError, BurstpilotError):
            log.warning("%s: unreadable saved policy state; starting a fresh forecaster", spec.name)
    return new_state(spec)


def dump_state(state: PolicyState, forecasting: dict[str, Any]) -> str:
    return json.dumps({"forecasting": forecasting, "state": state.to_dict()}, separators=(",", ":"))


def measured_cold_start(samples: list[float]) -> float | None:
    if len(samples) < COLD_START_MIN_SAMPLES:
        return None
    return float(np.quantile(np.asarray(samples, dtype=float), COLD_START_QUANTILE))


class PoolReconciler:
    def __init__(
        self, kube: Kube, prom: PrometheusSource, budgets: BudgetBook, namespace: str, name: str, emit: EmitFn
    ) -> None:
        self.kube, self.prom, self.budgets = kube, prom, budgets
        self.namespace, self.name, self.emit = namespace, name, emit
        # The status this reconciler wrote last: the watch may not have delivered it back before the next tick.
        self.written: dict[str, Any] = {}
        self.store = StateStore(kube, namespace, name)
        self.document: str | None = None  # the decision core's state after the last tick (dump_state)
        self.loaded = False  # whether the state ConfigMap has been read since this reconciler started
        self.state_failing = False

    async def tick(self, body: dict[str, Any], now: float) -> float:
        """One tick. Returns the seconds until the next one (the spec's interval)."""
        spec_raw = dict(body.get("spec") or {})
        status = {**(body.get("status") or {}), **self.written}
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        stamp = now_iso(now)
        conds: list[Condition] = []
        patch: dict[str, Any] = {"observedGeneration": generation}
        interval = float((spec_raw.get("scaling") or {}).get("intervalSeconds") or 10.0)
        labels = (self.namespace, self.name)
        try:
            spec = await asyncio.to_thread(PoolSpec.from_crd, spec_raw, self.name, load_profile)
        except BurstpilotError as exc:
            opmetrics.ERRORS.labels(*labels, "spec").inc()
            conds.append(Condition("Ready", False, "InvalidSpec", str(exc)))
            await self._finish(status, patch, conds, generation, stamp)
            return interval

        target = spec_raw["targetRef"]
        try:
            scale = await asyncio.to_thread(self.kube.get_scale, self.namespace, target)
            pods = await asyncio.to_thread(self.kube.pods, self.namespace, scale.selector)
        except TargetError as exc:
            opmetrics.ERRORS.labels(*labels, "target").inc()
            conds.append(Condition("Ready", False, exc.reason, str(exc)))
            await self._finish(status, patch, conds, generation, stamp)
            return interval

        metrics_spec = spec_raw.get("metrics") or {}
        values, metrics_cond = await self._metrics(metrics_spec, spec.interval_s, now)
        conds.append(metrics_cond)
        if metrics_cond.status is False:
            opmetrics.ERRORS.labels(*labels, "metrics").inc()

        # Cold starts measured from the pods that became ready since the last tick.
        cold = list(status.get("coldStarts") or [])
        since = status.get("coldStartsUntil")
        since_dt = dt.datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
        newest = since_dt
        for ready_at, secs in sorted(pods.cold_starts):
            if since_dt is None or ready_at > since_dt:
                cold.append(round(secs, 3))
                newest = ready_at if newest is None or ready_at > newest else newest
        cold = cold[-COLD_START_KEEP:]
        measured = measured_cold_start(cold)
        if measured is not None:
            spec = spec.replace(cold_start_s=measured)
        patch["coldStarts"] = cold
        if newest is not None:
            patch["coldStartsUntil"] = newest.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch["coldStartSeconds"] = spec.cold_start_s

        forecasting = dict(spec_raw.get("forecasting") or {})
        uid = body["metadata"]["uid"]
        state = load_state(await self._saved_document(status, uid), spec, forecasting)
        obs = self._observation(now, values, scale.spec_replicas, pods, spec.interval_s)
        decision, state = await asyncio.to_thread(decide, spec, obs, state)
        replicas = decision.replicas

        budget_cond = Condition("BudgetLimited", False, "WithinBudget", "")
        if spec.budget_group and spec.budget_gpus > 0:
            demand = PoolDemand(
                name=f"{self.namespace}/{self.name}",
                desired=replicas,
                min_replicas=spec.min_replicas,
                gpus_per_replica=spec.gpus_per_replica,
                priority=spec.priority,
            )
            granted = self.budgets.grant(spec.budget_group, spec.budget_gpus, demand)
            if granted < replicas:
                budget_cond = Condition(
                    "BudgetLimited",
                    True,
                    "BudgetExhausted",
                    f"budget group {spec.budget_group} ({spec.budget_gpus} GPUs) grants {granted} of {replicas}",
                )
                replicas = granted
        conds.append(budget_cond)
        conds.append(self._limited(spec, decision, pods))

        last_set = status.get("desiredReplicas")
        if last_set is not None and not spec.advisory and scale.spec_replicas != last_set:
            self.emit(
                "Warning",
                "ManualScale",
                f"target replicas changed outside burstpilot ({last_set} -> {scale.spec_replicas}); "
                "the next decisions start from the edited count",
            )

        scaled = False
        if not spec.advisory and replicas != scale.spec_replicas:
            try:
                await asyncio.to_thread(self.kube.set_scale, self.namespace, target, replicas)
                scaled = True
            except TargetError as exc:
                opmetrics.ERRORS.labels(*labels, "kubernetes").inc()
                conds.append(Condition("Ready", False, exc.reason, str(exc)))
                await self._finish(status, patch, conds, generation, stamp)
                return interval
        if scaled:
            direction = "up" if replicas > scale.spec_replicas else "down"
            opmetrics.SCALES.labels(*labels, direction).inc()
            log.info(
                "%s/%s: %s -> %s: %s",
                self.namespace,
                self.name,
                scale.spec_replicas,
                replicas,
                decision.reason,
            )
            self.emit(
                "Normal",
                f"Scaled{direction.capitalize()}",
                f"{scale.spec_replicas} -> {replicas}: {decision.reason}",
            )
            patch["lastScaleTime"] = stamp

        fc = decision.forecast or {}
        if fc:
            patch["forecast"] = {
                "model": str(fc.get("model", spec.forecast_model)),
                "rate": round(float(fc.get("rate", 0.0)), 4),
                "quantile": float(fc.get("quantile", spec.forecast_quantile)),
                "horizonSeconds": float(fc.get("horizon_s", 0.0)),
            }
            opmetrics.FORECAST.labels(*labels).set(float(fc.get("rate", 0.0)))
        patch.update(
            desiredReplicas=replicas,
            currentReplicas=replicas if scaled else scale.spec_replicas,
            readyReplicas=pods.ready,
            startingReplicas=pods.starting,
            pendingReplicas=pods.pending,
            lastDecision={
                "time": stamp,
                "replicas": replicas,
                "reason": decision.reason
                if replicas == decision.replicas
                else f"{decision.reason}; budget grants {replicas}",
                "bound": decision.bound if replicas == decision.replicas else "budget",
                "advisory": spec.advisory,
            },
        )
        self.document = dump_state(state, forecasting)
        if await self._save_document(uid) and status.get("policyState"):
            patch["policyState"] = None  # migrated: the ConfigMap holds it now (merge patch: null deletes)
        opmetrics.DECISIONS.labels(*labels, decision.bound).inc()
        opmetrics.DESIRED.labels(*labels).set(replicas)
        conds.append(Condition("Ready", True, "Reconciled", decision.reason))
        await self._finish(status, patch, conds, generation, stamp)
        return spec.interval_s

    async def _saved_document(self, status: dict[str, Any], uid: str) -> str | None:
        """The state to resume from: this reconciler's own after its first tick; before that, the state
        ConfigMap's, else (migration from earlier versions) ``status.policyState``."""
        if self.loaded:
            return self.document
        try:
            stored = await asyncio.to_thread(self.store.load, uid)
        except StateError as exc:
            self._state_failed(exc)
            return self.document or status.get("policyState")
        self.loaded = True
        if stored is not None:
            return stored
        # No ConfigMap yet: this reconciler's own state if an earlier read failed, else the old status field.
        return self.document or status.get("policyState")

    async def _save_document(self, uid: str) -> bool:
        """Write the state ConfigMap if the state changed. Not before it has been read once, so a state this
        operator could not read is never overwritten. Returns whether the ConfigMap now holds the state."""
        if not self.loaded or self.document is None:
            return False
        try:
            await asyncio.to_thread(self.store.save, self.document, uid)
        except StateError as exc:
            self._state_failed(exc)
            return False
        if self.state_failing:
            self.state_failing = False
            self.emit("Normal", "StateSaved", f"policy state saved in ConfigMap {self.store.name}")
        return self.store.saved == self.document

    def _state_failed(self, exc: StateError) -> None:
        """Counted and logged every time; one Warning Event per run of failures (the state stays in memory)."""
        opmetrics.ERRORS.labels(self.namespace, self.name, "state").inc()
        log.warning("%s/%s: %s", self.namespace, self.name, exc)
        if not self.state_failing:
            self.state_failing = True
            self.emit(
                "Warning",
                "StateNotSaved",
                f"{exc}; the state is kept in memory only: a restart now would start a fresh forecaster",
            )

    async def _metrics(
        self, metrics_spec: dict[str, Any], window_s: float, now: float
    ) -> tuple[dict[str, float | None] | None, Condition]:
        try:
            endpoint = await asyncio.to_thread(self._endpoint, metrics_spec)
        except (MetricsError, KeyError) as exc:
            return None, Condition("MetricsAvailable", False, "AuthUnavailable", str(exc))
        try:
            values = await self.prom.fetch(endpoint, pool_queries(metrics_spec, window_s))
        except MetricsError as exc:
            return None, Condition("MetricsAvailable", False, "PrometheusUnavailable", str(exc))
        last = values.get("lastSample")
        if last is None or values.get("requests") is None:
            return values, Condition(
                "MetricsAvailable", False, "NoSeries", "Prometheus has no samples for this pool"
            )
        return values, Condition(
            "MetricsAvailable", True, "Fresh", f"newest sample {max(now - last, 0):.0f}s old"
        )

    def _endpoint(self, metrics_spec: dict[str, Any]) -> Endpoint:
        url = metrics_spec.get("prometheusUrl") or "http://prometheus-operated.monitoring.svc:9090"
        auth = metrics_spec.get("auth") or {}
        token = ca = cert = key = None
        try:
            if auth.get("bearerTokenSecretRef"):
                ref = auth["bearerTokenSecretRef"]
                data = self.kube.read_secret(self.namespace, ref["name"])
                token = data[ref.get("key", "token")].strip()
            if auth.get("tlsSecretRef"):
                data = self.kube.read_secret(self.namespace, auth["tlsSecretRef"]["name"])
                ca, cert, key = data.get("ca.crt"), data.get("tls.crt"), data.get("tls.key")
        except Exception as exc:  # a missing Secret or key, or no permission to read it
            raise MetricsError(f"reading the metrics credentials: {type(exc).__name__}: {exc}") from None
        return Endpoint(url, token, ca, cert, key, bool(auth.get("insecureSkipVerify", False)))

    @staticmethod
    def _observation(
        now: float, values: dict[str, float | None] | None, current: int, pods: PodSummary, window_s: float
    ) -> Observation:
        v = values or {}
        last = v.get("lastSample")
        age = None if (values is None or last is None or v.get("requests") is None) else max(now - last, 0.0)

        def nonneg(key: str) -> float | None:
            x = v.get(key)
            return None if x is None or not math.isfinite(x) else max(x, 0.0)

        return Observation(
            time_s=now,
            requests=nonneg("requests"),
            prompt_tokens=nonneg("promptTokens"),
            generation_tokens=nonneg("generationTokens"),
            waiting=nonneg("waiting"),
            running=nonneg("running"),
            kv_usage=nonneg("kvUsage"),
            ttft_p99_s=nonneg("ttftP99"),
            current=current,
            ready=pods.ready,
            starting=pods.starting,
            pending=pods.pending,
            metrics_age_s=age,
            window_s=window_s,
        )

    @staticmethod
    def _limited(spec: PoolSpec, decision, pods: PodSummary) -> Condition:
        if pods.pending:
            msg = f"{pods.pending} pod(s) cannot be scheduled"
            if pods.pending_message:
                msg += f": {pods.pending_message}"
            return Condition("ScalingLimited", True, "PodsPending", msg)
        if decision.recommendation > spec.max_replicas:
            return Condition(
                "ScalingLimited",
                True,
                "MaxReplicas",
                f"needs {decision.recommendation}, capped at {spec.max_replicas}",
            )
        if decision.limited_by == "max-step":
            return Condition("ScalingLimited", True, "MaxStep", decision.reason)
        return Condition("ScalingLimited", False, "WithinLimits", "")

    async def _finish(
        self,
        status: dict[str, Any],
        patch: dict[str, Any],
        conds: list[Condition],
        generation: int,
        stamp: str,
    ) -> None:
        merged, changed = merge_conditions(status.get("conditions"), conds, generation, stamp)
        patch["conditions"] = merged
        for c in changed:
            ok = c.status is not False if c.type in ("Ready", "MetricsAvailable") else c.status is not True
            self.emit(
                "Normal" if ok else "Warning", c.reason, f"{c.type}={c.status_str}: {c.message}".rstrip(": ")
            )
        patch = _json_safe(patch)
        await asyncio.to_thread(self.kube.patch_status, self.namespace, self.name, patch)
        self.written = {**self.written, **patch}


def _json_safe(value: Any) -> Any:
    """The status patch with non-finite numbers (a forecast with no data yet) as null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
