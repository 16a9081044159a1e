"""The decision core's state between ticks: a frozen, typed value with a JSON form that stays readable.

``PolicyState.to_dict()`` writes the flat layout of the first (untyped) version with the same key names, plus
the keys added since, so a state saved by an earlier operator loads (``from_dict`` fills what it lacks with
defaults) and a state saved now can still be read by an operator rolled back to the earlier version (which
ignores keys it does not know).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from burstpilot.errors import BurstpilotError
from burstpilot.policy.learned import LearnedCapacity
from burstpilot.policy.observation import Observation
from burstpilot.policy.slobudget import SloBudget

STATE_VERSION = 2  # 1: the untyped dict of before; 2: this class (same keys, read back by both)
DEFAULT_PROMPT_TOKENS = 512.0
DEFAULT_OUTPUT_TOKENS = 256.0
LENGTH_TAU_S = 300.0  # time constant of the mean prompt/output length estimates
MIN_WEIGHT = 1e-6  # smoothed request count below which the length means are not updated
MAX_MEAN_TOKENS = 1e7  # a mean length beyond any model's context is not one


@dataclass(frozen=True)
class Lengths:
    """Mean prompt and output lengths as ratios of exponentially weighted sums (time constant ``LENGTH_TAU_S``).

    A ratio of smoothed sums, not a smoothed ratio: after a burst, the generation tokens of its requests keep
    coming while new arrivals fall, and a per-step ratio would read that as much longer outputs.
    """

    requests: float = 0.0  # the weighted sums
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    prompt_mean: float | None = None  # the last estimate (kept while a sum is zero)
    output_mean: float | None = None

    @property
    def prompt(self) -> float:
        return self.prompt_mean or DEFAULT_PROMPT_TOKENS

    @property
    def output(self) -> float:
        return self.output_mean or DEFAULT_OUTPUT_TOKENS

    def update(self, obs: Observation, default_window_s: float = 10.0) -> Lengths:
        """The estimate after ``obs``; unchanged when its counts are missing, negative or not finite."""
        counts = (obs.requests, obs.prompt_tokens or 0.0, obs.generation_tokens or 0.0)
        if obs.requests is None or not all(math.isfinite(c) and c >= 0 for c in counts):
            return self
        window = float(obs.window_s or default_window_s)
        w = 1.0 - math.exp(-window / LENGTH_TAU_S)
        r, p, g = ((1 - w) * a + w * float(b) for a, b in zip(self.sums, counts, strict=True))
        pm, om = self.prompt_mean, self.output_mean
        if r > MIN_WEIGHT:  # a ratio of sums this small says nothing (and may overflow)
            pm = p / r if 0 < p / r <= MAX_MEAN_TOKENS else pm
            om = g / r if 0 < g / r <= MAX_MEAN_TOKENS else om
        return Lengths(r, p, g, pm, om)

    @property
    def sums(self) -> tuple[float, float, float]:
        return (self.requests, self.prompt_tokens, self.generation_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {
            "length_sums": list(self.sums),
            "prompt_mean": self.prompt_mean,
            "output_mean": self.output_mean,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Lengths:
        sums = d.get("length_sums") or [0.0, 0.0, 0.0]
        if not isinstance(sums, list | tuple) or len(sums) != 3:
            raise BurstpilotError(f"policy state: length_sums must be a list of 3 numbers, got {sums!r}")
        return cls(
            *(_num(x, "length_sums") for x in sums),
            prompt_mean=_opt_num(d.get("prompt_mean"), "prompt_mean"),
            output_mean=_opt_num(d.get("output_mean"), "output_mean"),
        )


@dataclass(frozen=True)
class PolicyState:
    """What the decision core carries from one tick to the next.

    ``forecaster``: the forecaster's own state (``burstpilot.forecasting``, JSON); ``acc_count``/``acc_s``: the
    counts not yet fed to it (observation windows need not match its step); ``lengths``: the mean length
    estimate; ``history``: (time, recommendation) pairs within the scale-down stabilization window;
    ``last_good``: the last observation with fresh metrics (for ``missingMetrics: LastKnownGood``);
    ``capacity``: the learned per-replica capacity (``burstpilot.policy.learned``); ``slo_budget``: the observed
    attainment and the floor it sets (``burstpilot.policy.slobudget``); ``cold_hold_since``: since when the pool
    has been short of what keeping it through the horizon needs while the forecast said new replicas would come
    too late (the ``cold-start`` hold; None when it is not); ``advised``: in advisory mode, the count the last
    decision advised, which the next one starts from (the pool's own count is set by someone else; None when
    the pool is not advisory).
    """

    forecaster: Mapping[str, Any]
    acc_count: float = 0.0
    acc_s: float = 0.0
    lengths: Lengths = Lengths()
    history: tuple[tuple[float, int], ...] = ()
    last_good: Observation | None = None
    capacity: LearnedCapacity = LearnedCapacity()
    slo_budget: SloBudget = SloBudget()
    cold_hold_since: float | None = None
    advised: int | None = None

    def replace(self, **changes: Any) -> PolicyState:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "forecaster": dict(self.forecaster),
            "acc_count": self.acc_count,
            "acc_s": self.acc_s,
            **self.lengths.to_dict(),
            "history": [[t, n] for t, n in self.history],
            "last_good": self.last_good.to_dict() if self.last_good is not None else None,
            "capacity": self.capacity.to_dict(),
            "slo_budget": self.slo_budget.to_dict(),
            "cold_hold_since": self.cold_hold_since,
            "advised": self.advised,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicyState:
        """Read ``to_dict`` output of this or an earlier version. Raises BurstpilotError naming the bad key."""
        if not isinstance(d, Mapping):
            raise BurstpilotError(f"policy state must be an object, got {type(d).__name__}")
        version = d.get("version", 1)
        if not isinstance(version, int) or not 1 <= version <= STATE_VERSION:
            raise BurstpilotError(
                f"policy state: version {version!r} is not one this code reads (1..{STATE_VERSION})"
            )
        fc = d.get("forecaster")
        if not isinstance(fc, Mapping):
            raise BurstpilotError("policy state: forecaster must be an object")
        hist = d.get("history") or []
        try:
            history = tuple((float(t), int(n)) for t, n in hist)
        except (TypeError, ValueError):
            raise BurstpilotError(
                f"policy state: history must be [time, replicas] pairs, got {hist!r}"
            ) from None
        last = d.get("last_good")
        if last is not None and not isinstance(last, Mapping):
            raise BurstpilotError("policy state: last_good must be an object or null")
        try:
            last_good = Observation.from_dict(dict(last)) if last is not None else None
        except TypeError as exc:
            raise BurstpilotError(f"policy state: last_good: {exc}") from None
        return cls(
            forecaster=dict(fc),
            acc_count=_num(d.get("acc_count", 0.0), "acc_count"),
            acc_s=_num(d.get("acc_s", 0.0), "acc_s"),
            lengths=Lengths.from_dict(d),
            history=history,
            last_good=last_good,
            capacity=LearnedCapacity.from_dict(d.get("capacity")),
            slo_budget=SloBudget.from_dict(d.get("slo_budget")),
            cold_hold_since=_opt_num(d.get("cold_hold_since"), "cold_hold_since"),
            advised=_opt_count(d.get("advised"), "advised"),
        )


def _num(x: Any, key: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise BurstpilotError(f"policy state: {key} must be a number, got {x!r}")
    return float(x)


def _opt_num(x: Any, key: str) -> float | None:
    return None if x is None else _num(x, key)


def _opt_count(x: Any, key: str) -> int | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        raise BurstpilotError(
            f"policy state: {key} must be a replica count (an integer >= 0) or null, got {x!r}"
        )
    return x
