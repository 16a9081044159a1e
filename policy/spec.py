"""The pool specification the decision core works from (mirrors the ServingPool CRD's spec)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from burstpilot import forecasting
from burstpilot.errors import BurstpilotError
from burstpilot.policy.capacity import Capacity, CapacityModel, StepTimes
from burstpilot.slo import SLO

MISSING_POLICIES = ("hold", "floor", "lastKnownGood")
MODES = ("active", "advisory")
INT32_MAX = 2**31 - 1
MAX_REPLICAS = 10_000
MAX_GPUS_PER_REPLICA = 64


# A pool's SLO: both latency targets are needed (the capacity model sizes for TPOT, the backlog for TTFT).
DEFAULT_SLO = SLO(ttft_s=2.0, tpot_s=0.1, attainment=0.99)


@dataclass(frozen=True)
class PoolSpec:
    """What the decision core needs to know about one pool. See ``from_crd`` for the CRD field names.

    ``profile`` names the replica profile and ``model`` is its capacity model, resolved by the caller
    (``CapacityModel.from_profile(burstpilot.sim.load_profile(name))``; ``from_crd`` takes the resolver); a pool
    with an explicit ``capacity`` gets its model from that.
    """

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
    model: CapacityModel | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # The ranges are the CRD schema's (crds/servingpool.yaml), so a spec built here and one applied to the
        # API server agree on what is valid.
        chk = self._check
        chk(0 <= self.min_replicas <= INT32_MAX, "minReplicas", "must be in [0, 2^31)")
        chk(
            max(self.min_replicas, 1) <= self.max_replicas <= MAX_REPLICAS,
            "maxReplicas",
            f"must be >= minReplicas, >= 1 and <= {MAX_REPLICAS}",
        )
        chk(
            1 <= self.gpus_per_replica <= MAX_GPUS_PER_REPLICA,
            "gpusPerReplica",
            f"must be in [1, {MAX_GPUS_PER_REPLICA}]",
        )
        chk(0 < self.capacity_scale <= 10, "profile.capacityScale", "must be in (0, 10]")
        chk(
            self.slo.ttft_s is not None and self.slo.ttft_s > 0,
            "slo.ttftSeconds",
            "is required and must be > 0",
        )
        chk(
            self.slo.tpot_s is not None and self.slo.tpot_s > 0,
            "slo.tpotSeconds",
            "is required and must be > 0",
        )
        chk(0 < self.slo.attainment <= 1, "slo.attainment", "must be in (0, 1]")
        chk(self.cold_start_s >= 0, "coldStartSeconds", "must be >= 0")
        chk(
            self.forecast_model in forecasting.MODELS,
            "forecasting.model",
            f"must be one of {', '.join(forecasting.MODELS)}",
        )
        chk(0 < self.forecast_quantile < 1, "forecasting.quantile", "must be in (0, 1)")
        chk(1 <= self.forecast_step_s <= 3600, "forecasting.stepSeconds", "must be in [1, 3600]")
        chk(1 <= self.interval_s <= 3600, "scaling.intervalSeconds", "must be in [1, 3600]")
        chk(
            0 <= self.scale_down_stabilization_s <= 86400,
            "scaling.scaleDownStabilizationSeconds",
            "must be in [0, 86400]",
        )
        chk(
            0 <= self.max_step <= self.max_replicas,
            "scaling.maxStep",
            "must be in [0, maxReplicas] (0: no limit)",
        )
        chk(0 < self.target_utilization <= 1, "scaling.targetUtilization", "must be in (0, 1]")
        chk(
            self.missing_metrics in MISSING_POLICIES,
            "missingMetrics.policy",
            f"must be one of {', '.join(MISSING_POLICIES)}",
        )
        chk(
            0 <= self.missing_floor_replicas <= self.max_replicas,
            "missingMetrics.floorReplicas",
            "must be in [0, maxReplicas]",
        )
        chk(self.staleness_limit_s > 0, "missingMetrics.stalenessLimitSeconds", "must be > 0")
        chk(self.mode in MODES, "mode", "must be Active or Advisory")
        chk(
            self.budget_group is None
            or (isinstance(self.budget_group, str) and len(self.budget_group) <= 63),
            "budget.group",
            "must be a string of at most 63 characters",
        )
        chk(-INT32_MAX - 1 <= self.priority <= INT32_MAX, "budget.priority", "must be a 32-bit integer")
        chk(0 <= self.budget_gpus <= INT32_MAX, "budget.gpus", "must be in [0, 2^31)")
        chk(
            self.profile is not None or self.capacity is not None,
            "profile",
            "needs a profile name or a capacity",
        )
        if self.capacity is not None:
            c = self.capacity
            chk(self.profile is None, "profile", "needs either name or an explicit capacity, not both")
            chk(c.decode_tokens_per_s > 0, "profile.decodeTokensPerSecond", "must be > 0")
            chk(c.prefill_tokens_per_s > 0, "profile.prefillTokensPerSecond", "must be > 0")
            chk(c.kv_capacity_tokens >= 0, "profile.kvCapacityTokens", "must be >= 0")
            chk(0 <= c.max_num_seqs <= INT32_MAX, "profile.maxNumSeqs", "must be in [0, 2^31)")
            if (
                self.model is None or self.model.explicit != c
            ):  # derived from the capacity, also after replace()
                object.__setattr__(self, "model", CapacityModel.from_capacity(c))
        chk(
            self.model is not None,
            "profile",
            f"names profile {self.profile!r}, which the caller must resolve "
            "(model=CapacityModel.from_profile(...), or PoolSpec.from_crd(..., resolve_profile=...))",
        )

    def _check(self, ok: bool, fld: str, msg: str) -> None:
        if not ok:
            raise BurstpilotError(f"ServingPool {self.name}: spec.{fld} {msg}")

    @property
    def advisory(self) -> bool:
        return self.mode == "advisory"

    def replace(self, **changes: Any) -> PoolSpec:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_crd(
        cls,
        spec: Mapping[str, Any],
        name: str = "pool",
        resolve_profile: Callable[[str], StepTimes] | None = None,
    ) -> PoolSpec:
        """Build from a ServingPool ``spec`` (camelCase, as stored by the API server). A named profile is
        resolved with ``resolve_profile`` (the caller's: the decision core does no I/O), e.g.
        ``burstpilot.sim.load_profile``; its BurstpilotError is reported against ``spec.profile``.

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
        if not isinstance(mm, Mapping):
            raise BurstpilotError(f"ServingPool {name}: spec.missingMetrics must be an object")
        bu = _section(spec, "budget", name)
        group = bu.get("group")
        if group is not None and not isinstance(group, str):
            raise BurstpilotError(f"ServingPool {name}: spec.budget.group must be a string, got {group!r}")
        values = dict(
            name=name,
            min_replicas=_int(spec, "minReplicas", d.min_replicas, name),
            max_replicas=_int(spec, "maxReplicas", d.max_replicas, name),
            gpus_per_replica=_int(spec, "gpusPerReplica", d.gpus_per_replica, name),
            profile=profile,
            capacity=capacity,
            capacity_scale=_num(pr, "capacityScale", d.capacity_scale, name, "profile."),
            slo=_slo(slo, name),
            cold_start_s=_num(spec, "coldStartSeconds", d.cold_start_s, name),
            forecast_model=_enum(
                fc.get("model", d.forecast_model), tuple(forecasting.MODELS), name, "forecasting.model"
            ),
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
            budget_group=group,
            priority=_int(bu, "priority", d.priority, name, "budget."),
            budget_gpus=_int(bu, "gpus", d.budget_gpus, name, "budget."),
            mode=_enum(spec.get("mode", "Active"), MODES, name, "mode"),
        )
        if profile is None:
            return cls(**values)
        if resolve_profile is None:
            raise BurstpilotError(f"ServingPool {name}: spec.profile {profile!r} needs a profile resolver")
        try:
            model = CapacityModel.from_profile(resolve_profile(profile))
        except BurstpilotError as exc:
            raise BurstpilotError(f"ServingPool {name}: spec.profile: {exc}") from None
        return cls(**values, model=model)


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
    for key, ok, msg in (
        ("ttftSeconds", values["ttftSeconds"] > 0, "must be > 0"),
        ("tpotSeconds", values["tpotSeconds"] > 0, "must be > 0"),
        ("attainment", 0 < values["attainment"] <= 1, "must be in (0, 1]"),
    ):
        if not ok:
            raise BurstpilotError(f"ServingPool {name}: spec.slo.{key} {msg}, got {m.get(key)!r}")
    return SLO(ttft_s=values["ttftSeconds"], tpot_s=values["tpotSeconds"], attainment=values["attainment"])


def _section(spec: Mapping[str, Any], key: str, name: str) -> Mapping[str, Any]:
    v = spec.get(key) or {}
    if not isinstance(v, Mapping):
        raise BurstpilotError(f"ServingPool {name}: spec.{key} must be an object")
    return v


def _num(m: Mapping[str, Any], key: str, default: float, name: str, prefix: str = "") -> float:
    v = m.get(key, default)
    if isinstance(v, bool):
        raise BurstpilotError(f"ServingPool {name}: spec.{prefix}{key} must be a number, got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise BurstpilotError(f"ServingPool {name}: spec.{prefix}{key} must be a number, got {v!r}") from None
    if not math.isfinite(f):
        raise BurstpilotError(f"ServingPool {name}: spec.{prefix}{key} must be finite, got {v!r}")
    return f


def _int(m: Mapping[str, Any], key: str, default: int, name: str, prefix: str = "") -> int:
    v = m.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or int(v) != v:
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
        if not 1 <= len(p) <= 128:
            raise BurstpilotError(f"ServingPool {name}: spec.profile must be a name of 1 to 128 characters")
        return p, None
    if not isinstance(p, Mapping):
        raise BurstpilotError(f"ServingPool {name}: spec.profile must be a name or an object")
    if "name" in p:
        n = p["name"]
        if not isinstance(n, str) or not 1 <= len(n) <= 128:
            raise BurstpilotError(
                f"ServingPool {name}: spec.profile.name must be a name of 1 to 128 characters"
            )
        extra = [
            k
            for k in ("decodeTokensPerSecond", "prefillTokensPerSecond", "kvCapacityTokens", "maxNumSeqs")
            if k in p
        ]
        if extra:
            raise BurstpilotError(
                f"ServingPool {name}: spec.profile needs either name or an explicit capacity, not both ({extra[0]})"
            )
        return n, None
    for key in ("decodeTokensPerSecond", "prefillTokensPerSecond"):
        if key not in p:
            raise BurstpilotError(f"ServingPool {name}: spec.profile needs `name` or `{key}`")
    return None, Capacity(
        decode_tokens_per_s=_num(p, "decodeTokensPerSecond", 0, name, "profile."),
        prefill_tokens_per_s=_num(p, "prefillTokensPerSecond", 0, name, "profile."),
        kv_capacity_tokens=_int(p, "kvCapacityTokens", 0, name, "profile."),
        max_num_seqs=_int(p, "maxNumSeqs", 0, name, "profile."),
    )
