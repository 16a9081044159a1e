"""One ServingPool's tick: observe (Kubernetes + Prometheus), decide (burstpilot.policy), act, report.

A tick is a short sequence of named steps (``PoolReconciler.tick``); a step that cannot go on records why in
the tick's ``Report`` (a condition) and ends the tick with ``Stop``; the report is always written. The decision
itself is ``burstpilot.policy.decide``, reached through ``burstpilot.operator.decisions``; the status is built
by ``burstpilot.operator.status``; the decision core's state lives in the pool's state ConfigMap
(``burstpilot.operator.state``), never in the ServingPool.

What the reconcilers of one operator share (the Kubernetes and Prometheus adapters, the budget book, the
profile cache, the conflict finder, the leader check) is a ``Runtime``, kept in kopf's ``memo``.

Replica counts: the operator remembers which counts the target may have (``known``): the count it set last,
and while a scale is in flight the count before it. The state document carries them, written *before* the
scale patch, so an operator killed right after a scale decision neither scales twice nor mistakes its own scale
for a hand edit when it restarts. A count outside them is a hand edit: a ``ManualScale`` Event, and the edited
count is taken as current (scaling up from there at once if needed, down only after the stabilization window).
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
from burstpilot.operator import conflicts
from burstpilot.operator import metrics as opmetrics
from burstpilot.operator.conflicts import ConflictFinder
from burstpilot.operator.decisions import (
    BudgetBook,
    Decision,
    Observation,
    PoolSpec,
    ProfileCache,
    ceilings,
    decide,
    dump_state,
    load_state,
    read_spec,
    step_limited,
)
from burstpilot.operator.health import TickWatch
from burstpilot.operator.kube import Autoscaler, Kube, PodSummary, Scale, StateError, StatusError, TargetError
from burstpilot.operator.prom import (
    AuthError,
    Endpoint,
    MetricsError,
    PrometheusSource,
    format_window,
    pool_queries,
    query_window,
    scrape_interval,
    scrub,
)
from burstpilot.operator.state import StateStore
from burstpilot.operator.status import (
    Report,
    capacity_fields,
    decision_fields,
    forecast_fields,
    now_iso,
    replica_fields,
    slo_budget_fields,
)

log = logging.getLogger(__name__)

COLD_START_QUANTILE = 0.9
COLD_START_MIN_SAMPLES = 3
COLD_START_KEEP = 32
DEFAULT_INTERVAL_S = 10.0
TICK_TIMEOUT_S = 30.0  # how much longer than its interval a tick may run before it is cancelled
# Signals whose non-finite value means "no data" (histogram_quantile of an empty window is NaN; of a tail
# beyond the largest bucket, +Inf), not an invalid sample.
NAN_IS_NO_DATA = ("ttftP99", "tpotP99")

# emit(type, reason, message): posts a Kubernetes Event on the ServingPool.
EmitFn = Callable[[str, str, str], None]


@dataclass
class Runtime:
    """What every pool's reconciler shares; kopf's ``memo`` holds one."""

    kube: Kube
    prom: PrometheusSource
    budgets: BudgetBook = field(default_factory=BudgetBook)
    profiles: ProfileCache = field(default_factory=ProfileCache)
    conflicts: ConflictFinder = field(default_factory=ConflictFinder)
    watch: TickWatch = field(default_factory=TickWatch)
    may_act: Callable[[], bool] = lambda: True  # False once this replica may no longer act (lost the Lease)
    tick_timeout_s: float = TICK_TIMEOUT_S


class Stop(Exception):
    """The tick ends at this step; why is in its report."""


class NotLeader(Exception):
    """This replica lost the leader Lease during the tick: it writes nothing more."""


@dataclass
class Tick:
    raw: dict[str, Any]  # the ServingPool's spec as stored
    status: dict[str, Any]  # the status as the API server holds it, as far as this reconciler knows
    uid: str
    now: float
    report: Report
    interval: float
    window: float = 0.0  # the counting queries' window (query_window), once the spec is read


def interval_of(body: dict[str, Any]) -> float:
    """The pool's interval, read without trusting the spec (an invalid one ticks at the default)."""
    value = ((body.get("spec") or {}).get("scaling") or {}).get("intervalSeconds", DEFAULT_INTERVAL_S)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return DEFAULT_INTERVAL_S
    return value if math.isfinite(value) and value >= 1 else DEFAULT_INTERVAL_S


def measured_cold_start(samples: list[float]) -> float | None:
    if len(samples) < COLD_START_MIN_SAMPLES:
        return None
    return float(np.quantile(np.asarray(samples, dtype=float), COLD_START_QUANTILE))


def invalid_sample(values: dict[str, float | None], ceiling: dict[str, float]) -> str | None:
    """Why these signals cannot be a real sample (non-finite, or beyond anything the pool could produce);
    None when they can."""
    for key, value in values.items():
        if value is None or key in NAN_IS_NO_DATA:
            continue
        if not math.isfinite(value):
            return f"{key} is {value}"
        limit = ceiling.get(key)
        if limit is not None and abs(value) > limit:
            return f"{key} = {value:.3g} is beyond anything the pool could serve (at most {limit:.3g})"
    return None


def observation(
    now: float,
    values: dict[str, float | None] | None,
    current: int,
    pods: PodSummary,
    window_s: float,
    counted_s: float | None = None,
) -> Observation:
    """The decision core's input: the counts of one tick (``window_s``, the interval) from the queries' counts
    over ``counted_s`` (the query window; default the interval), scaled to the tick. No values (missing, or an
    invalid sample) leave every signal unknown, so the missing-metrics policy applies."""
    v = values or {}
    last = v.get("lastSample")
    fresh = values is not None and last is not None and v.get("requests") is not None
    per_tick = window_s / counted_s if counted_s else 1.0

    def nonneg(key: str) -> float | None:
        x = v.get(key)
        return None if x is None or not math.isfinite(x) else max(x, 0.0)

    def count(key: str) -> float | None:
        x = nonneg(key)
        return None if x is None else x * per_tick

    return Observation(
        time_s=now,
        requests=count("requests") if fresh else None,
        prompt_tokens=count("promptTokens"),
        generation_tokens=count("generationTokens"),
        waiting=nonneg("waiting"),
        running=nonneg("running"),
        kv_usage=nonneg("kvUsage"),
        ttft_p99_s=nonneg("ttftP99"),
        tpot_p99_s=nonneg("tpotP99"),
        completed=count("completed") if fresh else None,
        preemptions=count("preemptions") if fresh else None,
        slo_violations=count("sloViolations") if fresh else None,
        current=current,
        ready=pods.ready,
        starting=pods.starting,
        pending=pods.pending,
        metrics_age_s=max(now - last, 0.0) if fresh else None,
        window_s=window_s,
    )


def _scrape_hint(metrics_spec: dict[str, Any] | None) -> str:
    """What to change when the counting window holds too few samples (also what a pool whose replicas were
    all scraped once so far shows, for a tick or two)."""
    if (metrics_spec or {}).get("windowSeconds") is not None:
        return (
            "its replicas were scraped once so far, or spec.metrics.windowSeconds is shorter than two of "
            "Prometheus's scrape intervals"
        )
    stated = scrape_interval(metrics_spec)
    return (
        "its replicas were scraped once so far, or Prometheus scrapes less often than "
        f"spec.metrics.scrapeIntervalSeconds ({stated:g} s) says: set it to the scrape interval (the "
        "ServiceMonitor's)"
    )


def _slow_scrape(metrics_spec: dict[str, Any] | None, window: float, samples: float | None) -> str:
    """A warning for the Fresh message when the window holds fewer samples than the stated scrape interval
    implies (the real interval at least 1.5 x the stated one): windows of one sample come next."""
    if samples is None or not math.isfinite(samples) or samples < 1:
        return ""
    if (metrics_spec or {}).get("windowSeconds") is not None:
        return ""
    stated, seen = scrape_interval(metrics_spec), window / samples
    if seen < 1.5 * stated:
        return ""
    return (
        f"; but the window holds {samples:.0f} samples of a replica: Prometheus scrapes about every {seen:.3g} s, "
        f"not the {stated:g} s spec.metrics.scrapeIntervalSeconds says (set it to the scrape interval), or "
        "its replicas are new"
    )


class PoolReconciler:
    def __init__(self, runtime: Runtime, namespace: str, name: str, emit: EmitFn) -> None:
        self.rt = runtime
        self.namespace, self.name, self.emit = namespace, name, emit
        self.key = f"{namespace}/{name}"
        # The status this reconciler wrote: the watch may not have delivered it back before the next tick.
        self.written: dict[str, Any] = {}
        self.store = StateStore(runtime.kube, namespace, name)
        self.document: dict[str, Any] | None = None  # the decision core's state after the last tick
        self.loaded = False  # whether the state ConfigMap has been read since this reconciler started
        self.known: tuple[int, ...] | None = None  # the counts the target may have (see the module's doc)
        self.failing: set[str] = set()  # "state", "status": failures reported once per run of failures
        self.last_values: dict[str, float | None] = {}

    # -- the tick -------------------------------------------------------------------------------------------

    async def tick(self, body: dict[str, Any], now: float) -> float:
        """One tick. Returns the seconds until the next one (the spec's interval)."""
        t = self._begin(body, now)
        fetched: asyncio.Task | None = None
        try:
            spec = await self._read_spec(t)
            fetched = asyncio.create_task(self._fetch_metrics(t, spec))
            scale, pods = await self._observe_target(t)
            other = await self._find_other_autoscaler(t)
            spec = self._measure_cold_starts(t, spec, pods)
            obs = await self._observe_metrics(t, spec, scale, pods, fetched)
            decision = await self._decide(t, spec, obs)
            replicas = self._apply_budget(t, spec, decision)
            acting = not spec.advisory and other is None
            self._note_manual_scale(spec, scale, acting)
            await self._persist(t, scale.spec_replicas, replicas if acting else scale.spec_replicas)
            scaled = await self._act(t, scale, replicas, decision) if acting else False
            self._report(t, spec, scale, pods, obs, decision, replicas, scaled)
        except Stop:
            pass
        except NotLeader:
            log.info("%s: this replica no longer holds the leader Lease; the tick writes nothing", self.key)
            return t.interval
        finally:
            if fetched is not None and not fetched.done():
                fetched.cancel()
        await self._finish(t)
        return t.interval

    async def timed_out(self, now: float, seconds: float) -> None:
        """A tick ran past its bound and was cancelled: say so (the next tick starts afresh)."""
        self._error("timeout")
        t = self._begin({"metadata": {}, "status": {}}, now)
        t.report.condition(
            "Ready", False, "TickTimeout", f"the tick took longer than {seconds:.0f}s and was cancelled"
        )
        try:
            await self._finish(t)
        except NotLeader:
            pass

    def _begin(self, body: dict[str, Any], now: float) -> Tick:
        meta = body.get("metadata") or {}
        generation = int(meta.get("generation") or self.written.get("observedGeneration") or 0)
        return Tick(
            raw=dict(body.get("spec") or {}),
            status={**(body.get("status") or {}), **self.written},
            uid=str(meta.get("uid") or ""),
            now=now,
            report=Report(generation, now_iso(now)),
            interval=interval_of(body),
        )

    async def _read_spec(self, t: Tick) -> PoolSpec:
        args = (t.raw, self.name, self.namespace, self.rt.profiles, self.rt.kube.get_configmap)
        try:  # a thread only when a profile ConfigMap may have to be read
            profile = t.raw.get("profile")
            if isinstance(profile, dict) and "configMapRef" in profile:
                spec = await asyncio.to_thread(read_spec, *args)
            else:
                spec = read_spec(*args)
        except BurstpilotError as exc:
            self._error("spec")
            t.report.condition("Ready", False, "InvalidSpec", str(exc))
            raise Stop from None
        t.interval = spec.interval_s
        t.window = query_window(t.raw.get("metrics"), spec.interval_s)  # read_spec has checked its fields
        return spec

    async def _observe_target(self, t: Tick) -> tuple[Scale, PodSummary]:
        try:
            scale = await asyncio.to_thread(self.rt.kube.get_scale, self.namespace, t.raw["targetRef"])
            pods = await asyncio.to_thread(self.rt.kube.pods, self.namespace, scale.selector)
        except TargetError as exc:
            self._error("target")
            if exc.reason == "TargetNotFound":
                self.known = None  # a target created again starts at its own count: not a hand edit
            t.report.condition("Ready", False, exc.reason, str(exc))
            raise Stop from None
        return scale, pods

    async def _find_other_autoscaler(self, t: Tick) -> Autoscaler | None:
        """Another controller scaling the same target (an HPA, a KEDA ScaledObject): burstpilot will not act."""
        ref = t.raw["targetRef"]
        kind, name = ref.get("kind") or "Deployment", ref["name"]
        finder = self.rt.conflicts
        if finder.fresh(self.namespace):
            others = finder.others(self.namespace, self.rt.kube.autoscalers)
        else:
            others = await asyncio.to_thread(finder.others, self.namespace, self.rt.kube.autoscalers)
        if others is None:
            t.report.condition(
                "Conflict",
                None,
                "ConflictUnknown",
                "could not list HorizontalPodAutoscalers or ScaledObjects",
            )
            return None
        mine = conflicts.scaling(others, kind, name)
        opmetrics.set_only(
            opmetrics.CONFLICT, self.namespace, self.name, conflicts.describe(mine[0]) if mine else None
        )
        if not mine:
            t.report.condition("Conflict", False, "NoOtherAutoscaler", "")
            return None
        other = mine[0]
        message = (
            f"{conflicts.describe(other)} scales {kind} {name}; burstpilot does not act on it: "
            f"{conflicts.resolution(other)}"
        )
        t.report.condition("Conflict", True, "OtherAutoscaler", message)
        t.report.condition("Ready", False, "Conflict", message)
        return other

    def _measure_cold_starts(self, t: Tick, spec: PoolSpec, pods: PodSummary) -> PoolSpec:
        """Pods that became ready since the last tick add their creation-to-ready time; once three are
        measured, their 90th percentile replaces the spec's cold start."""
        cold = list(t.status.get("coldStarts") or [])
        since = t.status.get("coldStartsUntil")
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
        t.report.fields["coldStarts"] = cold
        if newest is not None:
            t.report.fields["coldStartsUntil"] = newest.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        t.report.fields["coldStartSeconds"] = spec.cold_start_s
        return spec

    async def _fetch_metrics(self, t: Tick, spec: PoolSpec) -> dict[str, float | None] | MetricsError:
        """The pool's signals, or why not. Started as a task beside the target's reads: the two are independent,
        and at hundreds of pools the tick's latency is its chain of round trips."""
        metrics_spec = t.raw.get("metrics") or {}
        try:
            if metrics_spec.get("auth"):  # Secrets to read
                endpoint = await asyncio.to_thread(self._endpoint, metrics_spec)
            else:
                endpoint = self._endpoint(metrics_spec)
            return await self.rt.prom.fetch(
                endpoint, pool_queries(metrics_spec, t.window, spec.slo.ttft_s, spec.slo.tpot_s)
            )
        except MetricsError as exc:
            return exc

    async def _observe_metrics(
        self, t: Tick, spec: PoolSpec, scale: Scale, pods: PodSummary, fetched: asyncio.Task
    ) -> Observation:
        values = await fetched
        window = t.window
        if log.isEnabledFor(logging.DEBUG):  # what each query answered, before any check (--log-level debug)
            log.debug("%s: Prometheus over %s: %s", self.key, format_window(window), values)
        if isinstance(values, MetricsError):
            reason = "AuthUnavailable" if isinstance(values, AuthError) else "PrometheusUnavailable"
            t.report.condition("MetricsAvailable", False, reason, str(values))
            values = None
        if values is not None:
            self.last_values = values
            problem = invalid_sample(values, ceilings(spec, window))
            if problem:
                values = None
                t.report.condition(
                    "MetricsAvailable",
                    False,
                    "InvalidSample",
                    f"{problem}; treated as missing metrics ({spec.missing_metrics} policy), never a scale-down",
                )
            elif values.get("lastSample") is None or values.get("requests") is None:
                samples = values.get("samples")
                if values.get("lastSample") is not None and samples is not None and samples < 2:
                    t.report.condition(
                        "MetricsAvailable",
                        False,
                        "WindowTooShort",
                        f"the counting window {format_window(window)} holds {samples:.0f} sample of a replica, "
                        f"too few to count over: {_scrape_hint(t.raw.get('metrics'))}",
                    )
                else:
                    t.report.condition(
                        "MetricsAvailable", False, "NoSeries", "Prometheus has no samples for this pool"
                    )
            else:
                t.report.condition(
                    "MetricsAvailable",
                    True,
                    "Fresh",
                    f"counts over {format_window(window)}, scaled to the tick"
                    + _slow_scrape(t.raw.get("metrics"), window, values.get("samples")),
                )
        if values is None:
            self._error("metrics")
        return observation(t.now, values, scale.spec_replicas, pods, spec.interval_s, window)

    async def _decide(self, t: Tick, spec: PoolSpec, obs: Observation) -> Decision:
        forecasting = dict(t.raw.get("forecasting") or {})
        state = load_state(await self._saved_document(t), spec, forecasting)
        decision, state = await asyncio.to_thread(decide, spec, obs, state)
        self.document = dump_state(state, forecasting)
        return decision

    def _apply_budget(self, t: Tick, spec: PoolSpec, decision: Decision) -> int:
        replicas = decision.replicas
        limited = False
        if spec.budget_group and spec.budget_gpus > 0:
            granted = self.rt.budgets.grant(spec, self.key, replicas)
            if granted < replicas:
                limited = True
                t.report.condition(
                    "BudgetLimited",
                    True,
                    "BudgetExhausted",
                    f"budget group {spec.budget_group} ({spec.budget_gpus} GPUs) grants {granted} of {replicas}",
                )
                replicas = granted
        if not limited:
            t.report.condition("BudgetLimited", False, "WithinBudget", "")
        return replicas

    def _note_manual_scale(self, spec: PoolSpec, scale: Scale, acting: bool) -> None:
        if acting and self.known is not None and scale.spec_replicas not in self.known:
            self.emit(
                "Warning",
                "ManualScale",
                f"target replicas changed outside burstpilot ({self.known[-1]} -> {scale.spec_replicas}); "
                "the next decisions start from the edited count",
            )
        self.known = (scale.spec_replicas,)

    async def _persist(self, t: Tick, current: int, intended: int) -> None:
        """Save the state, with the counts the target may have once this tick is done, before acting."""
        if self.document is None:
            return
        self.document["replicas"] = sorted({current, intended})
        self._leading()
        if await self._save_document(t.uid) and t.status.get("policyState"):
            t.report.fields["policyState"] = None  # migrated: the ConfigMap holds it now (null deletes)

    async def _act(self, t: Tick, scale: Scale, replicas: int, decision: Decision) -> bool:
        if replicas == scale.spec_replicas:
            return False
        self._leading()
        self.known = (scale.spec_replicas, replicas)
        try:
            await asyncio.to_thread(self.rt.kube.set_scale, self.namespace, t.raw["targetRef"], replicas)
        except TargetError as exc:
            self._error("kubernetes")
            self.known = (scale.spec_replicas,)
            t.report.condition("Ready", False, exc.reason, str(exc))
            return False
        self.known = (replicas,)
        direction = "up" if replicas > scale.spec_replicas else "down"
        opmetrics.SCALES.labels(self.namespace, self.name, direction).inc()
        self.emit(
            "Normal",
            f"Scaled{direction.capitalize()}",
            f"{scale.spec_replicas} -> {replicas}: {decision.reason}",
        )
        t.report.fields["lastScaleTime"] = t.report.stamp
        return True

    def _report(
        self,
        t: Tick,
        spec: PoolSpec,
        scale: Scale,
        pods: PodSummary,
        obs: Observation,
        decision: Decision,
        replicas: int,
        scaled: bool,
    ) -> None:
        budgeted = replicas != decision.replicas
        reason = f"{decision.reason}; budget grants {replicas}" if budgeted else decision.reason
        bound = "budget" if budgeted else decision.bound
        current = replicas if scaled else scale.spec_replicas
        r = t.report
        fc = decision.forecast or {}
        if fc:
            r.fields["forecast"] = forecast_fields(fc, spec.forecast_model, spec.forecast_quantile)
        r.fields.update(replica_fields(replicas, current, pods))
        r.fields["lastDecision"] = decision_fields(r.stamp, replicas, reason, bound, spec.advisory)
        if decision.capacity:
            r.fields["capacity"] = capacity_fields(decision.capacity)
        if decision.evidence.get("slo_budget"):
            r.fields["sloBudget"] = slo_budget_fields(decision.evidence["slo_budget"])
        r.condition("ScalingLimited", *self._limited(spec, decision, pods))
        if not any(c.type == "Ready" for c in r.conditions):
            r.condition("Ready", True, "Reconciled", reason)
        self._export(spec, obs, decision, replicas, current, pods, bound)
        log.info(
            "%s: %s replicas (%s): %s",
            self.key,
            replicas,
            bound,
            reason,
            extra={
                "pool": self.key,
                "replicas": replicas,
                "current": current,
                "bound": bound,
                "reason": reason,
            },
        )

    def _export(self, spec, obs, decision, replicas, current, pods, bound) -> None:
        ns, name = self.namespace, self.name
        m = opmetrics
        m.DECISIONS.labels(ns, name, decision.bound).inc()
        m.DESIRED.labels(ns, name).set(replicas)
        m.CURRENT.labels(ns, name).set(current)
        m.GPUS.labels(ns, name).set(current * spec.gpus_per_replica)
        for state, n in (("ready", pods.ready), ("starting", pods.starting), ("pending", pods.pending)):
            m.labelled(m.PODS, ns, name, state).set(n)
        m.set_only(m.BOUND, ns, name, bound)
        m.labelled(m.SLO, ns, name, "ttft").set(spec.slo.ttft_s)
        m.labelled(m.SLO, ns, name, "tpot").set(spec.slo.tpot_s)
        for kind, key in (("ttft", "ttftP99"), ("tpot", "tpotP99")):
            value = self.last_values.get(key)
            if value is not None and math.isfinite(value):
                m.labelled(m.LATENCY, ns, name, kind).set(value)
        if obs.requests is not None and obs.window_s:
            m.OBSERVED.labels(ns, name).set(obs.requests / obs.window_s)
        cap = decision.capacity or {}
        for kind, key in (("learned", "rate_per_replica"), ("model", "model_rate_per_replica")):
            value = cap.get(key)
            if value is not None and math.isfinite(value):
                m.labelled(m.CAPACITY, ns, name, kind).set(value)
        if cap.get("factor") is not None:
            m.CAPACITY_FACTOR.labels(ns, name).set(cap["factor"])
        fc = decision.forecast or {}
        if fc:
            m.FORECAST.labels(ns, name).set(float(fc.get("rate", 0.0)))
            m.FORECAST_MEAN.labels(ns, name).set(float(fc.get("mean_rate", 0.0)))

    @staticmethod
    def _limited(spec: PoolSpec, decision: Decision, pods: PodSummary) -> tuple[bool, str, str]:
        if pods.pending:
            msg = f"{pods.pending} pod(s) cannot be scheduled"
            if pods.pending_message:
                msg += f": {pods.pending_message}"
            return True, "PodsPending", msg
        if decision.recommendation > spec.max_replicas:
            return True, "MaxReplicas", f"needs {decision.recommendation}, capped at {spec.max_replicas}"
        if step_limited(decision):
            return True, "MaxStep", decision.reason
        return False, "WithinLimits", ""

    async def _finish(self, t: Tick) -> None:
        """Write the report: the status fields that changed, then the Events of the conditions that did."""
        patch, events = t.report.patch(t.status)
        if patch:
            self._leading()
            try:
                await asyncio.to_thread(self.rt.kube.patch_status, self.namespace, self.name, patch)
            except StatusError as exc:
                if exc.gone:  # the ServingPool was deleted during the tick
                    log.info("%s: deleted during the tick; nothing more to write", self.key)
                    return
                self._error("status")
                self._failed("status", "StatusNotSaved", f"{exc}; retried at the next tick")
                return
            self._recovered("status", "StatusSaved", "status written again")
            self.written = {**self.written, **patch}
            opmetrics.WRITTEN_BYTES.labels("status").inc(len(json.dumps(patch, separators=(",", ":"))))
        for kind, reason, message in events:
            self.emit(kind, reason, message)

    # -- helpers --------------------------------------------------------------------------------------------

    def _leading(self) -> None:
        if not self.rt.may_act():
            raise NotLeader

    def _error(self, kind: str) -> None:
        opmetrics.ERRORS.labels(self.namespace, self.name, kind).inc()

    def _failed(self, what: str, reason: str, message: str) -> None:
        """Counted and logged every time; one Warning Event per run of failures."""
        log.warning("%s: %s", self.key, message)
        if what not in self.failing:
            self.failing.add(what)
            self.emit("Warning", reason, message)

    def _recovered(self, what: str, reason: str, message: str) -> None:
        if what in self.failing:
            self.failing.discard(what)
            self.emit("Normal", reason, message)

    async def _saved_document(self, t: Tick) -> dict[str, Any] | None:
        """The state to resume from: this reconciler's own after its first tick; before that, the state
        ConfigMap's, else (migration from earlier versions) ``status.policyState``."""
        if self.loaded:
            return self.document
        try:
            stored = await asyncio.to_thread(self.store.load, t.uid)
        except StateError as exc:
            self._state_failed(exc)
            return self.document or self._legacy(t.status)
        self.loaded = True
        document = stored if stored is not None else (self.document or self._legacy(t.status))
        if self.known is None:
            if document and isinstance(document.get("replicas"), list):
                self.known = tuple(int(n) for n in document["replicas"])
            elif "desiredReplicas" in t.status and not (t.status.get("lastDecision") or {}).get("advisory"):
                self.known = (int(t.status["desiredReplicas"]),)
        return document

    def _legacy(self, status: dict[str, Any]) -> dict[str, Any] | None:
        raw = status.get("policyState")
        if not raw:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            log.warning("%s: unreadable status.policyState; starting a fresh forecaster", self.key)
            return None
        return doc

    async def _save_document(self, uid: str) -> bool:
        """Write the state ConfigMap if the state changed. Not before it has been read once, so a state this
        operator could not read is never overwritten. Returns whether the ConfigMap now holds the state."""
        if not self.loaded or self.document is None:
            return False
        before = self.store.bytes_written
        try:
            await asyncio.to_thread(self.store.save, self.document, uid)
        except StateError as exc:
            self._state_failed(exc)
            return False
        opmetrics.WRITTEN_BYTES.labels("state").inc(self.store.bytes_written - before)
        self._recovered("state", "StateSaved", f"policy state saved in ConfigMap {self.store.name}")
        return True

    def _state_failed(self, exc: StateError) -> None:
        self._error("state")
        self._failed(
            "state",
            "StateNotSaved",
            f"{exc}; the state is kept in memory only: a restart now would start a fresh forecaster",
        )

    def _endpoint(self, metrics_spec: dict[str, Any]) -> Endpoint:
        url = metrics_spec.get("prometheusUrl") or "http://prometheus-operated.monitoring.svc:9090"
        auth = metrics_spec.get("auth") or {}
        token = ca = cert = key = None
        try:
            if auth.get("bearerTokenSecretRef"):
                ref = auth["bearerTokenSecretRef"]
                data = self.rt.kube.read_secret(self.namespace, ref["name"])
                token = data[ref.get("key", "token")].strip()
            if auth.get("tlsSecretRef"):
                data = self.rt.kube.read_secret(self.namespace, auth["tlsSecretRef"]["name"])
                ca, cert, key = data.get("ca.crt"), data.get("tls.crt"), data.get("tls.key")
        except Exception as exc:  # a missing Secret or key, or no permission to read it
            raise AuthError(
                f"reading the metrics credentials: {type(exc).__name__}: {scrub(str(exc))}"
            ) from None
        return Endpoint(url, token, ca, cert, key, bool(auth.get("insecureSkipVerify", False)))
