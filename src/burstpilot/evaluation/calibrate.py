"""Calibrate the capacity model on the workload, through the oracle.

The closed-form capacity model (``burstpilot.policy.capacity``) ranks workloads correctly but reads mean lengths
only: it misses the TTFT and TPOT tails that long prompts cause (a prefill chunk of thousands of tokens stalls
every decoding sequence of its replica, and queues the prompts behind it). So before a comparison, the
evaluation measures the per-replica capacity the way a load test would, and with the least slack possible:
``capacity_scale`` (measured over modelled rate, ``PoolSpec.capacity_scale``, CRD ``profile.capacityScale``) is
the largest scale at which the oracle's clairvoyant plan still meets the SLO attainment on this workload in the
simulator (geometric bisection). The oracle is then the cheapest plan found that meets the SLO, and every policy
sizes with the same calibrated capacity.
"""

from __future__ import annotations

from burstpilot.policy.spec import PoolSpec

SCALE_LO = 0.02
SCALE_HI = 1.5
BISECTIONS = 7


def oracle_capacity_scale(
    profile, spec: PoolSpec, workload, seed: int, cold_start_s: float, on_step=None
) -> tuple[float, float]:
    """(capacity scale, the oracle's SLO attainment at it)."""
    from burstpilot.evaluation.harness import first_window_replicas, oracle_plan, run_policy
    from burstpilot.policy.oracle import oracle_policy

    seen: dict[float, float] = {}

    def attainment(scale: float) -> float:
        s = spec.replace(capacity_scale=scale)
        initial = first_window_replicas(s, workload, 300.0)
        p = oracle_plan(s, workload, cold_start_s, initial)
        run = run_policy(oracle_policy(p), s, profile, workload, seed, cold_start_s, initial)
        seen[scale] = run.metrics["slo_attainment"]
        if on_step is not None:
            on_step(scale, seen[scale])
        return seen[scale]

    goal = spec.slo.attainment
    lo, hi = SCALE_LO, SCALE_HI
    if attainment(hi) >= goal:
        return hi, seen[hi]
    if attainment(lo) < goal:
        return lo, seen[lo]
    for _ in range(BISECTIONS):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if attainment(mid) >= goal else (lo, mid)
    return lo, seen[lo]
