"""Per-replica capacity at the SLO, from a replica profile or from explicit numbers.

A replica serving ``lam`` requests per second of ``P`` prompt and ``O`` output tokens spends ``lam * pf`` of its
time in prefill (``pf = prefill_ms(P)``) and decodes a batch of ``N`` sequences, one token each per step of
``t(N) = decode_ms(N, N * ctx)`` (``ctx = P + O / 2``, the mean context a sequence holds). Little's law ties
them: ``N = lam * O * tpot`` with ``tpot = t(N) / (1 - lam * pf)`` (prefills stall decode steps), so
``lam(N) = N / (O * t(N) + N * pf)``. The capacity at the SLO is the largest ``lam(N)`` whose ``tpot`` meets the
TPOT target and whose ``N * ctx`` fits in the KV cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from burstpilot.policy.spec import PoolSpec


@dataclass(frozen=True)
class ReplicaRate:
    rate: float  # requests per second one replica sustains at the SLO (before target utilization)
    tpot_s: float  # TPOT at that operating point
    concurrency: float  # sequences in the batch at that operating point
    latency_s: float  # mean time a request spends in the replica (prefill + O * tpot)


_CACHE: dict[tuple, ReplicaRate] = {}


def replica_rate(spec: PoolSpec, prompt_tokens: float, output_tokens: float) -> ReplicaRate:
    """Sustainable request rate of one replica for requests of the given mean lengths, times the spec's
    ``capacity_scale`` (the measured over the modelled rate, from a calibration run)."""
    base = _model_rate(spec, prompt_tokens, output_tokens)
    if spec.capacity_scale == 1.0:
        return base
    k = spec.capacity_scale
    return ReplicaRate(
        rate=base.rate * k, tpot_s=base.tpot_s, concurrency=base.concurrency, latency_s=base.latency_s
    )


def _model_rate(spec: PoolSpec, prompt_tokens: float, output_tokens: float) -> ReplicaRate:
    p_mean = max(1.0, float(prompt_tokens))
    o_mean = max(1.0, float(output_tokens))
    if spec.capacity is not None:
        c = spec.capacity
        per_req = p_mean / c.prefill_tokens_per_s + o_mean / c.decode_tokens_per_s
        rate = 1.0 / per_req
        latency = p_mean / c.prefill_tokens_per_s + o_mean * spec.slo.tpot_s
        return ReplicaRate(rate=rate, tpot_s=spec.slo.tpot_s, concurrency=rate * latency, latency_s=latency)
    # Quantize the lengths so the memo stays small; capacity changes smoothly with them.
    key = (id(spec.profile_obj), _q(p_mean), _q(o_mean), spec.slo.tpot_s)
    hit = _CACHE.get(key)
    if hit is None:
        hit = _profile_rate(spec.profile_obj, spec.slo.tpot_s, key[1], key[2])
        if len(_CACHE) > 4096:
            _CACHE.clear()
        _CACHE[key] = hit
    return hit


def concurrency_at(spec: PoolSpec, prompt_tokens: float, output_tokens: float, rate: float) -> float:
    """Requests in flight on one replica serving ``rate`` requests per second (Little's law on the same model;
    a calibrated spec maps ``rate`` to the model's load point ``rate / capacity_scale``)."""
    rate = rate / spec.capacity_scale
    p_mean = max(1.0, float(prompt_tokens))
    o_mean = max(1.0, float(output_tokens))
    if spec.capacity is not None:  # no batch model: every request takes the SLO's TPOT
        return rate * _model_rate(spec, p_mean, o_mean).latency_s
    key = ("conc", id(spec.profile_obj), _q(p_mean), _q(o_mean), round(rate, 3))
    hit = _CACHE.get(key)
    if hit is None:
        profile = spec.profile_obj
        ctx = _q(p_mean) + _q(o_mean) / 2.0
        pf = profile.prefill_ms(int(round(_q(p_mean)))) / 1000.0
        max_seqs = int(getattr(profile, "max_num_seqs", 0) or 256)
        n = 1
        while n < max_seqs:
            t = profile.decode_ms(n, int(n * ctx)) / 1000.0
            if n / (_q(o_mean) * t + n * pf) >= rate:
                break
            n += 1
        hit = ReplicaRate(
            rate=rate, tpot_s=math.nan, concurrency=float(n), latency_s=n / rate if rate > 0 else 0.0
        )
        _CACHE[key] = hit
    return hit.concurrency


def kv_capacity_tokens(spec: PoolSpec) -> int:
    if spec.capacity is not None:
        return int(spec.capacity.kv_capacity_tokens)
    return int(getattr(spec.profile_obj, "kv_capacity_tokens", 0) or 0)


def _q(x: float) -> float:
    """Round to about 3% so nearby lengths share a memo entry."""
    if x <= 16:
        return round(x)
    e = math.floor(math.log(x) / math.log(1.03))
    return round(1.03**e, 1)


def _profile_rate(profile, tpot_target: float, p_mean: float, o_mean: float) -> ReplicaRate:
    ctx = p_mean + o_mean / 2.0
    pf = profile.prefill_ms(int(round(p_mean))) / 1000.0
    kv = int(getattr(profile, "kv_capacity_tokens", 0) or 0)
    max_seqs = int(getattr(profile, "max_num_seqs", 0) or 256)
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
    assert best is not None
    return best
