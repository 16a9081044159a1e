"""Per-replica capacity at the SLO, from a replica profile's step-time model or from explicit numbers.

A replica serving ``lam`` requests per second of ``P`` prompt and ``O`` output tokens spends ``lam * pf`` of its
time in prefill (``pf = prefill_ms(P)``) and decodes a batch of ``N`` sequences, one token each per step of
``t(N) = decode_ms(N, N * ctx)`` (``ctx = P + O / 2``, the mean context a sequence holds). Little's law ties
them: ``N = lam * O * tpot`` with ``tpot = t(N) / (1 - lam * pf)`` (prefills stall decode steps), so
``lam(N) = N / (O * t(N) + N * pf)``. The capacity at the SLO is the largest ``lam(N)`` whose ``tpot`` meets the
TPOT target and whose ``N * ctx`` fits in the KV cache.

``CapacityModel`` is a frozen value built by the caller (the profile is resolved outside the decision core);
it keeps its own memo of the rates it computed, so no module-level cache is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # type names only: spec.py imports this module
    from burstpilot.policy.spec import PoolSpec

MAX_TOKENS = 1e7  # lengths are clipped to [1, MAX_TOKENS], beyond any model's context
MEMO_LIMIT = 4096  # entries of one model's memo before it starts afresh
DEFAULT_MAX_NUM_SEQS = 256


class StepTimes(Protocol):
    """What the capacity model reads from a replica profile (``burstpilot.sim.Profile`` has it)."""

    @property
    def max_num_seqs(self) -> int: ...

    @property
    def kv_capacity_tokens(self) -> int: ...

    def prefill_ms(self, tokens: float) -> float: ...

    def decode_ms(self, batch: float, context_tokens: float) -> float: ...


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
class ReplicaRate:
    rate: float  # requests per second one replica sustains at the SLO (before target utilization)
    tpot_s: float  # TPOT at that operating point
    concurrency: float  # sequences in the batch at that operating point
    latency_s: float  # mean time a request spends in the replica (prefill + O * tpot)


@dataclass(frozen=True)
class CapacityModel:
    """One replica's capacity model: a profile's step times (``from_profile``) or explicit rates
    (``from_capacity``). Frozen; its memo (``_memo``) is private to it and not part of equality."""

    profile: StepTimes | None = None
    explicit: Capacity | None = None
    _memo: dict[tuple, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.profile is None) == (self.explicit is None):
            raise ValueError("CapacityModel needs exactly one of a profile or an explicit capacity")

    @classmethod
    def from_profile(cls, profile: StepTimes) -> CapacityModel:
        return cls(profile=profile)

    @classmethod
    def from_capacity(cls, capacity: Capacity) -> CapacityModel:
        return cls(explicit=capacity)

    @property
    def kv_capacity_tokens(self) -> int:
        src = self.explicit if self.explicit is not None else self.profile
        return int(getattr(src, "kv_capacity_tokens", 0) or 0)

    def rate(self, prompt_tokens: float, output_tokens: float, tpot_target_s: float) -> ReplicaRate:
        """The request rate one replica sustains at the TPOT target for requests of these mean lengths."""
        p_mean, o_mean = _clip(prompt_tokens), _clip(output_tokens)
        if self.explicit is not None:
            c = self.explicit
            per_req = p_mean / c.prefill_tokens_per_s + o_mean / c.decode_tokens_per_s
            rate = 1.0 / per_req
            latency = p_mean / c.prefill_tokens_per_s + o_mean * tpot_target_s
            return ReplicaRate(rate=rate, tpot_s=tpot_target_s, concurrency=rate * latency, latency_s=latency)
        # Quantized lengths keep the memo small; capacity changes smoothly with them.
        key = ("rate", _q(p_mean), _q(o_mean), float(tpot_target_s))
        hit = self._memo.get(key)
        if hit is None:
            hit = _profile_rate(self.profile, tpot_target_s, key[1], key[2])
            self._remember(key, hit)
        return hit

    def concurrency(
        self, prompt_tokens: float, output_tokens: float, rate: float, tpot_target_s: float
    ) -> float:
        """Requests in flight on one replica serving ``rate`` requests per second (Little's law on the model)."""
        p_mean, o_mean = _clip(prompt_tokens), _clip(output_tokens)
        if self.explicit is not None:  # no batch model: every request takes the SLO's TPOT
            return rate * self.rate(p_mean, o_mean, tpot_target_s).latency_s
        key = ("conc", _q(p_mean), _q(o_mean), round(rate, 3))
        hit = self._memo.get(key)
        if hit is None:
            profile = self.profile
            ctx = _q(p_mean) + _q(o_mean) / 2.0
            pf = profile.prefill_ms(int(round(_q(p_mean)))) / 1000.0
            max_seqs = int(getattr(profile, "max_num_seqs", 0) or DEFAULT_MAX_NUM_SEQS)
            n = 1
            while n < max_seqs:
                t = profile.decode_ms(n, int(n * ctx)) / 1000.0
                if n / (_q(o_mean) * t + n * pf) >= rate:
                    break
                n += 1
            hit = float(n)
            self._remember(key, hit)
        return hit

    @property
    def max_num_seqs(self) -> int:
        """Most sequences in one replica's batch (0: not known, as for an explicit capacity without it)."""
        if self.explicit is not None:
            return int(self.explicit.max_num_seqs)
        return int(getattr(self.profile, "max_num_seqs", 0) or DEFAULT_MAX_NUM_SEQS)

    def rate_at_seqs(self, prompt_tokens: float, output_tokens: float, seqs: float) -> float | None:
        """The request rate at which one replica holds ``seqs`` sequences in its batch (Little's law on the
        step-time model: ``seqs / (O * t(seqs) + seqs * pf)``); None without a step-time model."""
        if self.profile is None or seqs < 1:
            return None
        p, o = _q(_clip(prompt_tokens)), _q(_clip(output_tokens))
        n = int(seqs)
        key = ("seqs", p, o, n)
        hit = self._memo.get(key)
        if hit is None:
            ctx = p + o / 2.0
            pf = self.profile.prefill_ms(int(round(p))) / 1000.0
            t = self.profile.decode_ms(n, int(n * ctx)) / 1000.0
            hit = n / (o * t + n * pf)
            self._remember(key, hit)
        return hit

    def _remember(self, key: tuple, value: Any) -> None:
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = value


def replica_rate(spec: PoolSpec, prompt_tokens: float, output_tokens: float) -> ReplicaRate:
    """Sustainable request rate of one replica of ``spec``'s pool for requests of the given mean lengths, times
    the spec's ``capacity_scale`` (the measured over the modelled rate)."""
    base = spec.model.rate(prompt_tokens, output_tokens, spec.slo.tpot_s)
    if spec.capacity_scale == 1.0:
        return base
    k = spec.capacity_scale
    return ReplicaRate(
        rate=base.rate * k, tpot_s=base.tpot_s, concurrency=base.concurrency, latency_s=base.latency_s
    )


def concurrency_at(spec: PoolSpec, prompt_tokens: float, output_tokens: float, rate: float) -> float:
    """Requests in flight on one replica serving ``rate`` requests per second (Little's law on the same model;
    a calibrated spec maps ``rate`` to the model's load point ``rate / capacity_scale``)."""
    return spec.model.concurrency(prompt_tokens, output_tokens, rate / spec.capacity_scale, spec.slo.tpot_s)


def kv_capacity_tokens(spec: PoolSpec) -> int:
    return spec.model.kv_capacity_tokens


def _clip(tokens: float) -> float:
    x = float(tokens)
    return min(max(x, 1.0), MAX_TOKENS) if math.isfinite(x) else 1.0


def _q(x: float) -> float:
    """Round to about 3% so nearby lengths share a memo entry."""
    if x <= 16:
        return round(x)
    e = math.floor(math.log(x) / math.log(1.03))
    return round(1.03**e, 1)


def _profile_rate(profile: StepTimes, tpot_target: float, p_mean: float, o_mean: float) -> ReplicaRate:
    ctx = p_mean + o_mean / 2.0
    pf = profile.prefill_ms(int(round(p_mean))) / 1000.0
    kv = int(getattr(profile, "kv_capacity_tokens", 0) or 0)
    max_seqs = int(getattr(profile, "max_num_seqs", 0) or DEFAULT_MAX_NUM_SEQS)
    best: ReplicaRate | None = None
    for n in range(1, max_seqs + 1):
        if kv and n * ctx > kv:
            break
        t = profile.decode_ms(n, int(n * ctx)) / 1000.0
        lam = n / (o_mean * t + n * pf)
        busy = lam * pf
        tpot = t / (1.0 - busy) if busy < 1 else math.inf
        cand = ReplicaRate(rate=lam, tpot_s=tpot, concurrency=float(n), latency_s=pf + o_mean * tpot)
        if best is not None and tpot > tpot_target:
            break
        if best is None or lam > best.rate:
            best = cand
    if best is None:  # not even one sequence fits the KV cache: one at a time
        t = profile.decode_ms(1, int(ctx)) / 1000.0
        best = ReplicaRate(rate=1.0 / (o_mean * t + pf), tpot_s=t, concurrency=1.0, latency_s=pf + o_mean * t)
    return best
