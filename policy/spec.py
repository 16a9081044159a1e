"""The pool specification the decision core works from (mirrors the ServingPool CRD's spec)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from burstpilot.errors import BurstpilotError
from burstpilot.slo import SLO

MISSING_POLICIES = ("hold", "floor", "lastKnownGood")
MODES = ("active", "advisory")


# A pool's SLO: both latency targets are needed (the capacity model sizes for TPOT, the backlog for TTFT).
DEFAULT_SLO = SLO(ttft_s=2.0, tpot_s=0.1, attainment=0.99)


@dataclass(frozen=True)
class Capacity:
    """Explicit per-replica capacity, for pools without a named profile.

    ``decode_tokens_per_s``: generated tokens per second one replica sustains while every sequence meets the TPOT
    target; ``prefill_tokens_per_s``: prompt tokens per second of prefill; ``kv_capacity_tokens``: KV-cache size
    in tokens (0: unknown, no KV bound); ``max_num_seqs``: most sequences in a batch (0: unknown).
    """

    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    kv_capacity_tokens: int = 0
    max_num_seqs: int = 0


@dataclass(frozen=True)
class PoolSpec:
    """What the decision core needs to know about one pool. See ``from_crd`` for the CRD field names."""

    name: str = "pool"
    min_replicas: int = 1
    max_replicas: int = 8
    gpus_per_replica: int = 1
    profile: str | None = None
    capacity: Capacity | None = None
    capacity_scale: float = 1.0  # measured / modelled per-replica rate (see burstpilot.evaluation.calibrate)
    slo: SLO = DEFAULT_SLO
    cold_start_s: float = 120.0
    forecast_model: str = "burst"
    forecast_quantile: float = 0.95
    forecast_step_s: float = 10.0
    interval_s: float = 10.0
    scale_down_stabilization_s: float = 180.0  # the forecast already covers the cold start: shorter than HPA
    max_step: int = 0  # most replicas added or removed by one decision; 0 = no limit
    target_utilization: float = 0.85
    missing_metrics: str = "hold"
    missing_floor_replicas: int = 0
    staleness_limit_s: float = 60.0
    budget_group: str | None = None
    priority: int = 0
    budget_gpus: int = 0  # GPUs the budget group may use in total; 0 = no budget
    mode: str = "active"
    # The resolved profile object (burstpilot.sim.load_profile) when `profile` names one; not part of equality.
    profile_obj: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check(self.min_replicas >= 0, "minReplicas", "must be >= 0")
        _check(
            self.max_replicas >= max(self.min_replicas, 1), "maxReplicas", "must be >= minReplicas and >= 1"
        )
        _check(self.gpus_per_replica >= 1, "gpusPerReplica", "must be >= 1")
        _check(0 < self.capacity_scale <= 10, "profile.capacityScale", "must be in (0, 10]")
        _check(self.slo.ttft_s is not None, "slo.ttftSeconds", "is required")
        _check(self.slo.tpot_s is not None, "slo.tpotSeconds", "is required")
        _check(self.cold_start_s >= 0, "coldStartSeconds", "must be >= 0")
        _check(0 < self.forecast_quantile < 1, "forecasting.quantile", "must be in (0, 1)")
        _check(self.forecast_step_s > 0, "forecasting.stepSeconds", "must be > 0")
        _check(self.interval_s > 0, "scaling.intervalSeconds", "must be > 0")
        _check(self.scale_down_stabilization_s >= 0, "scaling.scaleDownStabilizationSeconds", "must be >= 0")
        _check(self.max_step >= 0, "scaling.maxStep", "must be >= 0")
        _check(0 < self.target_utilization <= 1, "scaling.targetUtilization", "must be in (0, 1]")
        _check(
            self.missing_metrics in MISSING_POLICIES,
            "missingMetrics.policy",
            f"must be one of {', '.join(MISSING_POLICIES)}",
        )
        _check(self.staleness_limit_s > 0, "missingMetrics.stalenessLimitSeconds", "must be > 0")
        _check(self.mode in MODES, "mode", "must be Active or Advisory")
        _check(self.budget_gpus >= 0, "budget.gpus", "must be >= 0")
        _check(
            self.profile is not None or self.capacity is not None,
            "profile",
            "needs a profile name or a capacity",
        )
        if self.capacity is not None:
            _check(self.capacity.decode_tokens_per_s > 0, "profile.decodeTokensPerSecond", "must be > 0")
            _check(self.capacity.prefill_tokens_per_s > 0, "profile.prefillTokensPerSecond", "must be > 0")
        if self.profile is not None and self.profile_obj is None and self.capacity is None:
            object.__setattr__(self, "profile_obj", _load_profile(self.profile))

    @property
    def advisory(self) -> bool:
        return self.mode == "advisory"

    def replace(self, **changes: Any) -> PoolSpec:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_crd(cls, spec: Mapping[str, Any], name: str = "pool") -> PoolSpec:
        """Build from a ServingPool ``spec`` (camelCase, as stored by the API server).

        Fields read (all optional except a profile): ``minReplicas``, ``maxReplicas``, ``gpusPerReplica``,
        ``profile`` (a name, ``{"name": ..., "capacityScale": ...}``, or ``{"decodeTokensPerSecond", "prefillTokensPerSecond",
        "kvCapacityTokens", "maxNumSeqs"}``), ``slo.{ttftSeconds,tpotSeconds,attainment}``, ``coldStartSeconds``,
        ``forecasting.{model,quantile,stepSeconds}``, ``scaling.{intervalSeconds,scaleDownStabilizationSeconds,
        maxStep,targetUtilization}``, ``missingMetrics.{policy,floorReplicas,stalenessLimitSeconds}`` (policy
        ``Hold``, ``Floor`` or ``LastKnownGood``), ``budget.{group,priority,gpus}``, ``mode`` (``Active`` or
        ``Advisory``). ``targetRef`` and ``metrics`` belong to the operator and are ignored here.
        """
        if not isinstance(spec, Mapping):
            raise BurstpilotError(f"ServingPool {name}: spec must be an object")
        d = _Defaults
        profile, capacity = _profile_from_crd(spec.get("profile"), name)
        pr = spec.get("profile") if isinstance(spec.get("profile"), Mapping) else {}
        slo = _section(spec, "slo", name)
        fc = _section(spec, "forecasting", name)
        sc = _section(spec, "scaling", name)
        mm = spec.get("missingMetrics") or {}
        if isinstance(mm, str):
            mm = {"policy": mm}
        bu = _section(spec, "budget", name)
        return cls(
            name=name,
            min_replicas=_int(spec, "minReplicas", d.min_replicas, name),
            max_replicas=_int(spec, "maxReplicas", d.max_replicas, name),
            gpus_per_replica=_int(spec, "gpusPerReplica", d.gpus_per_replica, name),
            profile=profile,
            capacity=capacity,
            capacity_scale=_num(pr, "capacityScale", d.capacity_scale, name, "profile."),
            slo=_slo(slo, name),
            cold_start_s=_num(spec, "coldStartSeconds", d.cold_start_s, name),
            forecast_model=str(fc.get("model", d.forecast_model)),
            forecast_quantile=_num(fc, "quantile", d.forecast_quantile, name, "forecasting."),
            forecast_step_s=_num(fc, "stepSeconds", d.forecast_step_s, name, "forecasting."),
            interval_s=_num(sc, "intervalSeconds", d.interval_s, name, "scaling."),
            scale_down_stabilization_s=_num(
                sc, "scaleDownStabilizationSeconds", d.scale_down_stabilization_s, name, "scaling."
            ),
            max_step=_int(sc, "maxStep", d.max_step, name, "scaling."),
            target_utilization=_num(sc, "targetUtilization", d.target_utilization, name, "scaling."),
            missing_metrics=_enum(mm.get("policy", "Hold"), MISSING_POLICIES, name, "missingMetrics.policy"),
            missing_floor_replicas=_int(
                mm, "floorReplicas", d.missing_floor_replicas, name, "missingMetrics."
            ),
            staleness_limit_s=_num(mm, "stalenessLimitSeconds", d.staleness_limit_s, name, "missingMetrics."),
            budget_group=bu.get("group"),
            priority=_int(bu, "priority", d.priority, name, "budget."),
            budget_gpus=_int(bu, "gpus", d.budget_gpus, name, "budget."),
            mode=_enum(spec.get("mode", "Active"), MODES, name, "mode"),
        )


class _Defaults:
    """PoolSpec's field defaults, readable without building a spec (which needs a profile)."""


for _f in dataclasses.fields(PoolSpec):
    if _f.default is not dataclasses.MISSING:
        setattr(_Defaults, _f.name, _f.default)


def _slo(m: Mapping[str, Any], name: str) -> SLO:
    d = DEFAULT_SLO
    values = {
        "ttftSeconds": _num(m, "ttftSeconds", d.ttft_s, name, "slo."),
        "tpotSeconds": _num(m, "tpotSeconds", d.tpot_s, name, "slo."),
        "attainment": _num(m, "attainment", d.attainment, name, "slo."),
    }
    for key in ("ttftSeconds", "tpotSeconds"):
        _check(values[key] > 0, f"slo.{key}", "must be > 0")
    _check(0 < values["attainment"] <= 1, "slo.attainment", "must be in (0, 1]")
    return SLO(ttft_s=values["ttftSeconds"], tpot_s=values["tpotSeconds"], attainment=values["attainment"])


def _check(ok: bool, fld: str, msg: str) -> None:
    if not ok:
        raise BurstpilotError(f"pool spec field {fld}: {msg}")


def _load_profile(name: str):
    from burstpilot.sim import load_profile

    return load_profile(name)


def _section(spec: Mapping[str, Any], key: str, name: str) -> Mapping[str, Any]:
    v = spec.get(key) or {}
    if not isinstance(v, Mapping):
        raise BurstpilotError(f"ServingPool {name}: spec.{key} must be an object")
    return v


def _num(m: Mapping[str, Any], key: str, default: float, name: str, prefix: str = "") -> float:
    v = m.get(key, default)
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise BurstpilotError(f"ServingPool {name}: spec.{prefix}{key} must be a number, got {v!r}") from None
    if not math.isfinite(f):
        raise BurstpilotError(f"ServingPool {name}: spec.{prefix}{key} must be finite, got {v!r}")
    return f


def _int(m: Mapping[str, Any], key: str, default: int, name: str, prefix: str = "") -> int:
    v = m.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v:
        raise BurstpilotError(f"ServingPool {name}: spec.{prefix}{key} must be an integer, got {v!r}")
    return int(v)


def _enum(v: Any, allowed: tuple[str, ...], name: str, fld: str) -> str:
    for a in allowed:
        if isinstance(v, str) and v.lower() == a.lower():
            return a
    raise BurstpilotError(f"ServingPool {name}: spec.{fld} must be one of {', '.join(allowed)}, got {v!r}")


def _profile_from_crd(p: Any, name: str) -> tuple[str | None, Capacity | None]:
    if p is None:
        raise BurstpilotError(f"ServingPool {name}: spec.profile is required (a profile name or a capacity)")
    if isinstance(p, str):
        return p, None
    if not isinstance(p, Mapping):
        raise BurstpilotError(f"ServingPool {name}: spec.profile must be a name or an object")
    if p.get("name"):
        return str(p["name"]), None
    for key in ("decodeTokensPerSecond", "prefillTokensPerSecond"):
        if key not in p:
            raise BurstpilotError(f"ServingPool {name}: spec.profile needs `name` or `{key}`")
    return None, Capacity(
        decode_tokens_per_s=_num(p, "decodeTokensPerSecond", 0, name, "profile."),
        prefill_tokens_per_s=_num(p, "prefillTokensPerSecond", 0, name, "profile."),
        kv_capacity_tokens=_int(p, "kvCapacityTokens", 0, name, "profile."),
        max_num_seqs=_int(p, "maxNumSeqs", 0, name, "profile."),
    )
