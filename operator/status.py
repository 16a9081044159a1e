"""The ServingPool's status as one tick reports it, and the Events that go with it.

A tick collects its findings in a ``Report`` (status fields and conditions); ``Report.patch`` turns them into a
JSON merge patch of only the fields whose value changed since the operator last wrote them (the status is
written every tick, by every pool: at 500 pools that is most of the operator's writes), with the conditions
merged as the Kubernetes conventions ask (``lastTransitionTime`` moves only when the status flips) and one
Event per condition whose status or reason changed.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from burstpilot.operator.conditions import Condition, merge_conditions
from burstpilot.operator.kube import PodSummary

# Conditions whose True is the good state (for the others, True is a warning).
GOOD_WHEN_TRUE = ("Ready", "MetricsAvailable")


def now_iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def forecast_fields(fc: dict[str, Any], model: str, quantile: float) -> dict[str, Any]:
    return {
        "model": str(fc.get("model", model)),
        "rate": round(float(fc.get("rate", 0.0)), 4),
        "quantile": float(fc.get("quantile", quantile)),
        "horizonSeconds": float(fc.get("horizon_s", 0.0)),
    }


def replica_fields(desired: int, current: int, pods: PodSummary) -> dict[str, int]:
    return {
        "desiredReplicas": int(desired),
        "currentReplicas": int(current),
        "readyReplicas": pods.ready,
        "startingReplicas": pods.starting,
        "pendingReplicas": pods.pending,
    }


def capacity_fields(cap: dict[str, Any]) -> dict[str, Any]:
    """``status.capacity``: the per-replica capacity the decision sized with and where it came from."""
    out = {
        "ratePerReplica": cap.get("rate_per_replica"),
        "modelRatePerReplica": cap.get("model_rate_per_replica"),
        "factor": cap.get("factor"),
        "source": str(cap.get("source", "")),
        "evidenceSeconds": cap.get("evidence_s"),
        "note": str(cap.get("note", ""))[:1024],
    }
    return {
        k: (round(float(v), 4) if isinstance(v, int | float) else v) for k, v in out.items() if v is not None
    }


def slo_budget_fields(ev: dict[str, Any]) -> dict[str, Any]:
    """``status.sloBudget``: the observed attainment, its burn and the floor it keeps (burstpilot.policy.slobudget)."""
    out = {
        "attainment1h": ev.get("attainment_1h"),
        "attainment5min": ev.get("attainment_5min"),
        "burn1h": ev.get("burn_1h"),
        "burn5min": ev.get("burn_5min"),
        "floor": ev.get("floor"),
        "note": str(ev.get("note", ""))[:1024],
    }
    return {
        k: (round(float(v), 5) if isinstance(v, int | float) else v) for k, v in out.items() if v is not None
    }


def decision_fields(stamp: str, replicas: int, reason: str, bound: str, advisory: bool) -> dict[str, Any]:
    return {"time": stamp, "replicas": int(replicas), "reason": reason, "bound": bound, "advisory": advisory}


def condition_event(c: Condition) -> tuple[str, str, str]:
    """(type, reason, message) of the Event a condition change posts."""
    ok = c.status is not False if c.type in GOOD_WHEN_TRUE else c.status is not True
    return "Normal" if ok else "Warning", c.reason, f"{c.type}={c.status_str}: {c.message}".rstrip(": ")


def json_safe(value: Any) -> Any:
    """Non-finite numbers (a forecast with no data yet) as null: JSON has no NaN, the API server refuses it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


@dataclass
class Report:
    """What one tick found: status fields and conditions, gathered step by step."""

    generation: int
    stamp: str
    fields: dict[str, Any] = field(default_factory=dict)
    conditions: list[Condition] = field(default_factory=list)

    def condition(self, ctype: str, status: bool | None, reason: str, message: str = "") -> Condition:
        cond = Condition(ctype, status, reason, message)
        self.conditions = [c for c in self.conditions if c.type != ctype] + [cond]
        return cond

    def patch(self, status: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
        """The merge patch against ``status`` (what the API server holds, as far as the operator knows) and the
        Events of the conditions that changed."""
        merged, changed = merge_conditions(
            status.get("conditions"), self.conditions, self.generation, self.stamp
        )
        full = json_safe({"observedGeneration": self.generation, **self.fields, "conditions": merged})
        patch = {k: v for k, v in full.items() if status.get(k, _ABSENT) != v}
        return patch, [condition_event(c) for c in changed]


_ABSENT = object()
