"""The operator's one seam with the decision core: every use of ``burstpilot.policy`` (and of the replica
profile loader) lives here, so the reconciler deals in CRD dictionaries, Kubernetes and Prometheus only.

- ``read_spec``: the ServingPool spec as a ``PoolSpec``, with its replica profile resolved by the caller (a
  shipped name, a ConfigMap holding the profile JSON, or the profile JSON inline) through ``burstpilot.sim``'s
  loader; resolved profiles are cached as capacity models (``PoolSpec.model``), so every tick of a pool sizes with
  the same model and its memo.
- ``load_state`` / ``dump_state``: the decision core's typed state (``PolicyState``, learned capacity inside) as
  the JSON document it is saved as, with the forecasting settings it was made for; documents saved by earlier
  versions (the untyped version-1 state) still load.
- ``decide``: one decision; ``step_limited``: whether ``scaling.maxStep`` cut it; ``BudgetBook``: the GPU budget
  shared by the pools of a group.
- ``ceilings``: the largest value of each Prometheus signal the pool could ever produce (an implausible value is
  an invalid sample, never an input to the forecaster).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from burstpilot.errors import BurstpilotError
from burstpilot.operator.prom import query_window
from burstpilot.policy import (
    CapacityModel,
    Decision,
    Observation,
    PolicyState,
    PoolDemand,
    PoolSpec,
    allocate_budget,
    new_state,
)
from burstpilot.policy import decide as policy_decide
from burstpilot.policy.capacity import replica_rate
from burstpilot.sim import load_profile
from burstpilot.sim.profile import profile_from_dict

log = logging.getLogger(__name__)

__all__ = [
    "BudgetBook",
    "Decision",
    "Observation",
    "PoolSpec",
    "ProfileCache",
    "ceilings",
    "decide",
    "dump_state",
    "load_state",
    "read_spec",
    "step_limited",
]

PROFILE_KEY = "profile.json"  # the default key of a profile ConfigMap
PROFILE_TTL_S = 60.0  # a profile ConfigMap is read again at most this often (an edit applies within a minute)
# A sample beyond SLACK times what the pool's maxReplicas could serve at their fastest (one-token requests)
# cannot be real: a counter reset glitch, a mis-scaled override, a hostile exporter.
SLACK = 100.0
MAX_TOKENS_PER_REQUEST = float(1 << 21)  # beyond any model's context length today
MAX_SEQS_PER_REPLICA = 65536.0

# read_configmap(namespace, name) -> the ConfigMap as a JSON object, None when it does not exist.
ReadConfigMap = Callable[[str, str], "dict[str, Any] | None"]


@dataclass
class ProfileCache:
    """Resolved replica profiles as capacity models, shared by every pool of the operator: shipped profiles by
    name, inline profiles by their JSON, ConfigMap profiles by (namespace, name, key) for ``PROFILE_TTL_S``."""

    clock: Callable[[], float] = time.monotonic
    _named: dict[str, CapacityModel] = field(default_factory=dict)
    _inline: dict[str, CapacityModel] = field(default_factory=dict)
    _refs: dict[tuple[str, str, str], tuple[float, str, CapacityModel]] = field(default_factory=dict)

    def named(self, name: str) -> CapacityModel:
        if name not in self._named:
            self._named[name] = CapacityModel.from_profile(load_profile(name))
        return self._named[name]

    def inline(self, doc: Mapping[str, Any], where: str) -> CapacityModel:
        key = json.dumps(doc, sort_keys=True)
        if key not in self._inline:
            if len(self._inline) > 256:
                self._inline.clear()
            self._inline[key] = CapacityModel.from_profile(profile_from_dict(dict(doc), where))
        return self._inline[key]

    def configmap(self, namespace: str, ref: Mapping[str, Any], read: ReadConfigMap) -> CapacityModel:
        name, key = str(ref.get("name") or ""), str(ref.get("key") or PROFILE_KEY)
        cache_key = (namespace, name, key)
        hit = self._refs.get(cache_key)
        if hit is not None and self.clock() - hit[0] < PROFILE_TTL_S:
            return hit[2]
        where = f"spec.profile.configMapRef: ConfigMap {namespace}/{name} key {key}"
        try:
            cm = read(namespace, name)
        except Exception as exc:  # the API server did not answer: keep the profile read last
            if hit is not None:
                log.warning("%s: %s; keeping the profile read before", where, exc)
                return hit[2]
            raise BurstpilotError(f"{where}: {exc}") from None
        if cm is None:
            raise BurstpilotError(f"{where}: no such ConfigMap")
        raw = (cm.get("data") or {}).get(key)
        if raw is None:
            raise BurstpilotError(f"{where}: no such key (keys: {', '.join(sorted(cm.get('data') or {}))})")
        if hit is not None and hit[1] == raw:
            model = hit[2]
        else:
            try:
                doc = json.loads(raw)
            except ValueError as exc:
                raise BurstpilotError(f"{where}: not valid JSON ({exc})") from None
            model = CapacityModel.from_profile(profile_from_dict(doc, where))
        self._refs[cache_key] = (self.clock(), raw, model)
        return model


def read_spec(
    raw: Mapping[str, Any], name: str, namespace: str, profiles: ProfileCache, read: ReadConfigMap
) -> PoolSpec:
    """The ServingPool's spec as the decision core's PoolSpec. Raises BurstpilotError naming the field.

    ``spec.profile`` is one of: ``{name}`` (a shipped profile), ``{configMapRef: {name, key}}`` (a ConfigMap in
    the pool's namespace holding a profile JSON, key ``profile.json`` by default, as ``burstpilot profile
    measure`` writes it), ``{inline: {...}}`` (the profile JSON itself), or an explicit capacity; each may carry
    ``capacityScale``.
    """
    metrics = raw.get("metrics")
    try:
        query_window(metrics if isinstance(metrics, Mapping) else None, 1.0)  # a bad window, by its field
    except BurstpilotError as exc:
        raise BurstpilotError(f"ServingPool {name}: {exc}") from None
    prof = raw.get("profile")
    if not isinstance(prof, Mapping) or not (prof.get("name") or "configMapRef" in prof or "inline" in prof):
        return PoolSpec.from_crd(raw, name)  # an explicit capacity, or a spec from_crd refuses by name
    if prof.get("configMapRef") is not None:
        ref = prof["configMapRef"]
        if not isinstance(ref, Mapping) or not ref.get("name"):
            raise BurstpilotError(f"ServingPool {name}: spec.profile.configMapRef needs a name")
        model = profiles.configmap(namespace, ref, read)
    elif prof.get("inline") is not None:
        if not isinstance(prof["inline"], Mapping):
            raise BurstpilotError(f"ServingPool {name}: spec.profile.inline must be a profile JSON object")
        model = profiles.inline(prof["inline"], f"ServingPool {name}: spec.profile.inline")
    else:
        model = profiles.named(str(prof["name"]))
    return _with_model(raw, name, model)


def _with_model(raw: Mapping[str, Any], name: str, model: CapacityModel) -> PoolSpec:
    """PoolSpec.from_crd with the capacity model of a profile the caller resolved (from_crd parses every other
    field and reports them by name); the spec then holds the cached model, so its memo lasts across ticks."""
    scale = {k: v for k, v in (raw.get("profile") or {}).items() if k == "capacityScale"}
    resolved = str(getattr(model.profile, "name", "") or "profile")[:128]
    spec = PoolSpec.from_crd(
        {**raw, "profile": {"name": resolved, **scale}}, name, resolve_profile=lambda _name: model.profile
    )
    return spec.replace(model=model)


def load_state(raw: Mapping[str, Any] | None, spec: PoolSpec, forecasting: Mapping[str, Any]) -> PolicyState:
    """The decision core's state from a saved document (``dump_state``'s, also an earlier version's untyped
    state: ``PolicyState.from_dict`` reads it); a fresh one when absent, unreadable, or made for other
    forecasting settings (a change of spec.forecasting starts a fresh forecaster)."""
    if raw and raw.get("forecasting") == dict(forecasting) and isinstance(raw.get("state"), dict):
        try:
            return PolicyState.from_dict(raw["state"])
        except (BurstpilotError, KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("%s: the saved policy state cannot be read (%s); starting afresh", spec.name, exc)
    return new_state(spec)


def dump_state(state: PolicyState, forecasting: Mapping[str, Any]) -> dict[str, Any]:
    return {"forecasting": dict(forecasting), "state": state.to_dict()}


def decide(spec: PoolSpec, obs: Observation, state: PolicyState) -> tuple[Decision, PolicyState]:
    """One decision of the decision core (which also applies a lowered ``maxReplicas`` at once)."""
    return policy_decide(spec, obs, state)


def step_limited(decision: Decision) -> bool:
    """Whether scaling.maxStep cut the decision short."""
    return decision.limited_by == "max-step"


def ceilings(spec: PoolSpec, window_s: float) -> dict[str, float]:
    """The largest plausible value of each signal over a window (see SLACK): beyond it a sample is invalid."""
    fastest = replica_rate(spec, 1.0, 1.0).rate  # requests/s of one replica at one-token requests
    requests = SLACK * spec.max_replicas * max(fastest, 1.0) * max(window_s, 1.0)
    seqs = SLACK * spec.max_replicas * MAX_SEQS_PER_REPLICA
    return {
        "requests": requests,
        "promptTokens": requests * MAX_TOKENS_PER_REQUEST,
        "generationTokens": requests * MAX_TOKENS_PER_REQUEST,
        "waiting": seqs,
        "running": seqs,
        "kvUsage": SLACK,
        "ttftP99": 7 * 86400.0,
        "completed": requests,
        "sloViolations": requests,
        "preemptions": seqs,
    }


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


class BudgetBook:
    """The latest wish of every pool of each budget group (pools tick independently, all in one process)."""

    def __init__(self) -> None:
        self.wishes: dict[str, dict[str, PoolDemand]] = {}

    def grant(self, spec: PoolSpec, pool: str, desired: int) -> int:
        demand = PoolDemand(
            name=pool,
            desired=desired,
            min_replicas=spec.min_replicas,
            gpus_per_replica=spec.gpus_per_replica,
            priority=spec.priority,
        )
        pools = self.wishes.setdefault(spec.budget_group or "", {})
        pools[pool] = demand
        return allocate_budget(pools.values(), spec.budget_gpus)[pool]

    def forget(self, pool: str) -> None:
        for pools in self.wishes.values():
            pools.pop(pool, None)
