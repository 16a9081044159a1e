"""What one tick's metrics say about the SLO: the pressure on each latency target, per ready replica.

Each pressure is a ratio to its target (1 = at the target):

- ``ttft``: the window's TTFT p99 over the TTFT target;
- ``tpot``: the window's TPOT p99 over the TPOT target;
- ``queue``: the time the waiting requests take to drain at the rate the ready replicas serve, over the TTFT
  target (the part of TTFT that replicas can fix; it is 0 without a queue).

``slo`` is the largest of the three: above 1, the SLO is missed now. ``load`` leaves TTFT out: a TTFT p99
also holds the prefill time of the window's longest prompts, which no replica count changes (on workloads with
long prompts it sits at half the target on an idle pool), so only the TPOT p99 and the queue tell how close
the replicas are to their limit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from burstpilot.policy.observation import Observation
from burstpilot.policy.spec import PoolSpec

# The served rate a queue is drained at is floored at this share of the estimated capacity (a replica that
# served nothing in the window still drains its queue at some rate: no division by zero).
MIN_DRAIN_SHARE = 0.05


@dataclass(frozen=True)
class Signals:
    """One tick's SLO signals (None: not measured)."""

    ready: int
    starting: int
    served_per_replica: float | None  # requests/s completed (else arrived) per ready replica
    ttft: float | None
    tpot: float | None
    queue: float | None
    running_per_replica: float | None
    kv_usage: float | None
    preemptions: float | None  # in the window, all replicas
    completions_known: bool = False  # served_per_replica counts completed requests (not arrivals)
    completed: float | None = None  # requests completed (else arrived) in the window, all replicas
    violations: float | None = None  # requests of the window that missed the SLO (the pool's count)

    @property
    def violation_share(self) -> float | None:
        """The share of the window's completed requests that missed the SLO (None: either count unknown, or
        nothing completed)."""
        if self.violations is None or not self.completions_known or not (self.completed or 0.0) > 0:
            return None
        return min(max(self.violations / self.completed, 0.0), 1.0)

    @property
    def slo(self) -> float | None:
        vals = [v for v in (self.ttft, self.tpot, self.queue) if v is not None]
        return max(vals) if vals else None

    @property
    def latency_measured(self) -> bool:
        return self.ttft is not None or self.tpot is not None

    @property
    def load(self) -> float | None:
        """The load-driven pressure: TPOT p99 and queue, both needed (None when TPOT is not measured)."""
        if self.tpot is None:
            return None
        return max(self.tpot, self.queue or 0.0)

    def to_dict(self) -> dict[str, float | int | None]:
        out = asdict(self)
        out["slo"], out["load"] = self.slo, self.load
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def read_signals(spec: PoolSpec, obs: Observation, window_s: float, capacity_rate: float) -> Signals:
    """The signals of a valid observation; ``capacity_rate`` is the estimated per-replica rate at the SLO."""
    ready = max(int(obs.ready), 0)
    served = obs.completed if obs.completed is not None else obs.requests
    per = served / (window_s * ready) if served is not None and ready > 0 else None
    queue = None
    if obs.waiting is not None and ready > 0:
        # The queue drains at the rate the replicas complete requests; without that count, at the estimate.
        done = obs.completed / (window_s * ready) if obs.completed is not None else capacity_rate
        drain = max(done, MIN_DRAIN_SHARE * capacity_rate)
        queue = (obs.waiting / ready) / drain / spec.slo.ttft_s if drain > 0 else None
    return Signals(
        ready=ready,
        starting=max(int(obs.starting), 0) + max(int(obs.pending), 0),
        served_per_replica=per,
        ttft=_ratio(obs.ttft_p99_s, spec.slo.ttft_s),
        tpot=_ratio(obs.tpot_p99_s, spec.slo.tpot_s),
        queue=queue,
        running_per_replica=obs.running / ready if obs.running is not None and ready > 0 else None,
        kv_usage=obs.kv_usage,
        preemptions=obs.preemptions,
        completions_known=obs.completed is not None,
        completed=served,
        violations=obs.slo_violations,
    )


def _ratio(x: float | None, target: float) -> float | None:
    return None if x is None or not math.isfinite(x) else x / target
