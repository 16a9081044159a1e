"""Learned capacity: an online correction of what one replica sustains at the SLO.

The profile's closed-form model (``burstpilot.policy.capacity``) reads mean lengths only; on heavy-tailed
prompts the rate a replica really sustains at the SLO is a fraction of it, on light ones more. Each tick with
fresh metrics turns what the ready replicas did into an *implied* per-replica capacity, and the learned
``factor`` (capacity = model rate x ``capacityScale`` x factor) moves a bounded step toward it:

- **SLO missed under load** (a load pressure, TPOT p99 or queue, above 1, ``burstpilot.policy.signals``)
  while the replicas served no more than the estimate: the estimate is too high; implied = served x load
  pressure^(-1/2). A p99 over target that the pool's own violation count contradicts (no more than the goal's
  ``1 - attainment`` of the window's completed requests missed, and no queue over the TTFT target) is no
  evidence: a p99 read from histogram buckets can sit above the target while the requests meet it. A TTFT p99 over target with TPOT and queue within theirs is the window's long prompts
  (their prefill), which no replica count fixes: no evidence. Missed while serving more than the
  estimate says nothing about capacity (the pool was short, which the sizing answers), so it does not count,
  nor does one while replicas are starting (the pool is still catching up with what it asked for);
  nor does a miss with a backlog when the completions are not counted (arrivals below the estimate do not
  show whether the replicas drain a queue an earlier burst left at their full rate).
- **SLO met** at a load of at least half the estimate: implied = served x load pressure^(-1/3), the served
  rate extrapolated to where the TPOT p99 and the queue would reach their targets, assuming they grow at least
  with the cube of load near saturation; never more than 2 x served, never below served (met at that rate),
  and never above the resource limit: the model's rate at the batch size where the sequences in flight,
  corrected by the observed over the modelled concurrency, stay within ``maxNumSeqs`` at the attainment
  goal's quantile of Poisson occupancy. With a wide margin (load pressure under 1/2) only a rise is read
  from it: a latency at its floor says nothing against the estimate. Preemptions (the KV cache ran out)
  forbid any increase.
- Otherwise (no ready replica, idle, missing latency signals): no evidence, no change. A window's step is
  weighted by its sample: fewer than ``SAMPLE_FULL`` completed requests weigh proportionally less (a p99 of
  a handful of requests is one request's latency).

Steps are exponentially smoothed (time constant ``TAU_S``) and bounded per tick (``MAX_DOWN``, ``MAX_UP``)
and overall (``K_MIN``, ``K_MAX``), so one odd window moves the estimate little and missing or idle data
never moves it. Every step says why in ``note``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

from burstpilot.errors import BurstpilotError
from burstpilot.policy.signals import Signals
from burstpilot.policy.spec import PoolSpec

K_MIN, K_MAX = 0.1, 3.0  # the learned factor's range
TAU_S = 120.0  # time constant of the correction
MAX_DOWN = 0.85  # most one tick may lower the estimate (x)
MAX_UP = 1.03  # most one tick may raise it (x)
DOWN_EXPONENT = 2.0
UP_EXPONENT = 3.0
LOAD_MIN = 0.5  # upward evidence only from replicas loaded at least this share of the estimate
UP_REACH = 2.0  # one tick's evidence never implies more than this many times the rate it saw served
DOWN_FLOOR = 0.7  # nor, on a miss, less than this share of it (a queue's pressure says how late, not how far)
MARGIN_LOAD = 0.5  # met with a load pressure below this, only a rise is read from the extrapolation
BACKLOG_QUEUE = 0.5  # a queue that alone takes this share of the TTFT target to drain is a backlog
SAMPLE_FULL = 100.0  # requests in a window for its p99 to count fully (fewer weigh proportionally less)


@dataclass(frozen=True)
class LearnedCapacity:
    """The learned factor and how it got there (kept in the policy state)."""

    factor: float = 1.0
    evidence_s: float = 0.0  # seconds of ticks that moved it
    implied: float | None = None  # the last implied per-replica rate (req/s)
    note: str = "no evidence yet: the profile's capacity"

    def to_dict(self) -> dict[str, Any]:
        return {
            "factor": self.factor,
            "evidence_s": self.evidence_s,
            "implied": self.implied,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Any) -> LearnedCapacity:
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise BurstpilotError("policy state: capacity must be an object")
        try:
            factor = float(d.get("factor", 1.0))
            evidence = float(d.get("evidence_s", 0.0))
            implied = None if d.get("implied") is None else float(d["implied"])
        except (TypeError, ValueError):
            raise BurstpilotError(f"policy state: capacity has a field that is not a number: {d!r}") from None
        if not (math.isfinite(factor) and K_MIN <= factor <= K_MAX):
            raise BurstpilotError(f"policy state: capacity.factor {factor!r} is outside [{K_MIN}, {K_MAX}]")
        return cls(factor=factor, evidence_s=evidence, implied=implied, note=str(d.get("note", "")))

    def step(
        self,
        spec: PoolSpec,
        sig: Signals,
        base_rate: float,
        resource_rate: float | None,
        window_s: float,
    ) -> LearnedCapacity:
        """The estimate after one tick's signals. ``base_rate``: the model's per-replica rate times
        ``capacityScale``; ``resource_rate``: the batch-size limit described above (None: not known)."""
        lam, u = sig.served_per_replica, sig.slo
        c = base_rate * self.factor
        if sig.ready <= 0 or lam is None or u is None or not c > 0:
            return replace(self, note="no evidence: no ready replica or no latency signal")
        if not lam > 0:
            return replace(self, note=f"no evidence: the ready replicas completed nothing (pressure {u:.2f})")
        load = sig.load if sig.load is not None else u  # without a TPOT p99, the SLO pressure stands in
        if u > 1.0 and load <= 1.0:
            return replace(
                self,
                note=f"TTFT p99 over target (pressure {u:.2f}) with TPOT and queue within theirs "
                f"(load pressure {load:.2f}): the window's long prompts, not the replicas' rate",
            )
        if load > 1.0:
            share = sig.violation_share
            if share is not None and share <= 1.0 - spec.slo.attainment and (sig.queue or 0.0) <= 1.0:
                return replace(
                    self,
                    note=f"TPOT p99 over target (load pressure {load:.2f}) but {share:.2%} of the window's "
                    f"{sig.completed:.0f} requests missed the SLO, within the goal's {1 - spec.slo.attainment:.2%}:"
                    " the histogram's p99, not a miss",
                )
            if (sig.queue or 0.0) >= BACKLOG_QUEUE and not sig.completions_known:
                return replace(
                    self,
                    note=f"SLO missed (pressure {u:.2f}) with a backlog and no completion count: a queue left "
                    "by an earlier burst or a replica short of its estimate cannot be told apart",
                )
            if sig.starting > 0:
                return replace(
                    self,
                    note=f"SLO missed (pressure {u:.2f}) while {sig.starting} replica(s) start: the pool is "
                    "still catching up, the estimate waits for them",
                )
            if lam > c:
                return replace(
                    self,
                    note=f"SLO missed (pressure {u:.2f}) serving {lam:.2f}/s per replica, more than the "
                    f"estimate {c:.2f}/s: the pool was short, the estimate stands",
                )
            implied = lam * max(load ** (-1.0 / DOWN_EXPONENT), DOWN_FLOOR)
            why = f"SLO missed (load pressure {load:.2f}) serving {lam:.2f}/s per replica"
        else:
            if sig.tpot is None:
                return replace(self, note=f"SLO met (pressure {u:.2f}); no TPOT p99 to learn upward from")
            if lam < LOAD_MIN * c:
                return replace(
                    self, note=f"SLO met at {lam:.2f}/s per replica: too little load to learn from"
                )
            # The TTFT p99 brakes the rise (on long prompts it is the limit the TPOT does not see), but a
            # TTFT at its prefill floor never lowers the estimate (the margin rule below).
            up = max(load, sig.ttft or 0.0)
            implied = min(lam * max(up, 1e-6) ** (-1.0 / UP_EXPONENT), UP_REACH * lam)
            why = f"SLO met (pressure {up:.2f}) serving {lam:.2f}/s per replica"
            limited = resource_rate is not None and resource_rate < implied
            if limited:
                implied, why = resource_rate, why + f", batch limit {resource_rate:.2f}/s"
            implied = max(implied, lam)
            if implied < c and load < MARGIN_LOAD and not limited:
                return replace(
                    self,
                    note=f"SLO met with margin (load pressure {load:.2f}) serving {lam:.2f}/s per replica: "
                    f"no sign the estimate {c:.2f}/s is too high",
                )
            if sig.preemptions:
                implied, why = min(implied, c), why + ", preemptions: no increase"
        # A window's p99 is as good as its sample: fewer than SAMPLE_FULL requests weigh less.
        n = sig.completed if sig.completed is not None else SAMPLE_FULL
        alpha = min(1.0, window_s / TAU_S) * min(1.0, max(n, 0.0) / SAMPLE_FULL)
        move = min(max(alpha * math.log(implied / c), math.log(MAX_DOWN)), math.log(MAX_UP))
        factor = min(max(self.factor * math.exp(move), K_MIN), K_MAX)
        return LearnedCapacity(
            factor=factor,
            evidence_s=self.evidence_s + window_s,
            implied=implied,
            note=f"{why}: implies {implied:.2f}/s, estimate {c:.2f} -> {base_rate * factor:.2f}/s",
        )


def resource_rate(
    spec: PoolSpec, sig: Signals, prompt: float, output: float, lam_model: float
) -> float | None:
    """The per-replica rate at which the sequences in flight would reach the batch limit: the model's batch
    size at the observed load, corrected by the observed over the modelled concurrency, kept within
    ``maxNumSeqs - z * sqrt(maxNumSeqs)`` (Poisson occupancy at the attainment goal's quantile ``z``)."""
    model, max_seqs = spec.model, spec.model.max_num_seqs
    if max_seqs <= 0 or sig.running_per_replica is None or sig.served_per_replica is None or lam_model <= 0:
        return None
    n_model = model.concurrency(prompt, output, lam_model, spec.slo.tpot_s)
    if n_model <= 0 or sig.running_per_replica <= 0:
        return None
    ratio = sig.running_per_replica / n_model
    z = NormalDist().inv_cdf(min(max(spec.slo.attainment, 0.5), 0.9999))
    n_star = max(1.0, max_seqs - z * math.sqrt(max_seqs))
    seqs = min(n_star / ratio, 2.0 * max_seqs)
    rate = model.rate_at_seqs(prompt, output, seqs)
    return None if rate is None else rate * spec.capacity_scale
