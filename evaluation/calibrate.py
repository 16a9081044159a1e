"""Calibrate the capacity model on the workload, through a clairvoyant plan.

The closed-form capacity model (``burstpilot.policy.capacity``) ranks workloads correctly but reads mean lengths
only: it misses the TTFT and TPOT tails that long prompts cause (a prefill chunk of thousands of tokens stalls
every decoding sequence of its replica, and queues the prompts behind it). So before a comparison, the
evaluation measures the per-replica capacity the way a load test would, and with the least slack possible:
``capacity_scale`` (measured over modelled rate, ``PoolSpec.capacity_scale``, CRD ``profile.capacityScale``) is
the largest scale at which a clairvoyant plan still meets the SLO attainment on this workload in the
simulator (geometric bisection), the plan being the one that follows each 10 s slot's arrivals at that
capacity. Every policy then sizes with the same calibrated capacity, and the oracle search
(``burstpilot.evaluation.oracle_search``) starts from these runs.
"""

from __future__ import annotations

from burstpilot.evaluation.harness import ORACLE_SLOT_S
from burstpilot.policy.spec import PoolSpec

SCALE_LO = 0.02
SCALE_HI = 1.5
BISECTIONS = 7


def oracle_capacity_scale(runner, spec: PoolSpec, on_step=None) -> tuple[float, float, dict[float, float]]:
    """(capacity scale, the demand-following plan's SLO attainment at it, every scale tried -> attainment).

    ``runner`` (``burstpilot.evaluation.oracle_search.PlanRunner``) simulates and caches the plans, so the
    oracle search reuses them."""
    seen: dict[float, float] = {}

    def attainment(scale: float) -> float:
        p, initial = runner.follow(scale, ORACLE_SLOT_S)
        run = runner.run_plan(p, initial, f"calibrate scale={scale:.3f}")
        seen[scale] = run.metrics["slo_attainment"]
        if on_step is not None:
            on_step(scale, seen[scale])
        return seen[scale]

    goal = spec.slo.attainment
    lo, hi = SCALE_LO, SCALE_HI
    if attainment(hi) >= goal:
        return hi, seen[hi], seen
    if attainment(lo) < goal:
        return lo, seen[lo], seen
    for _ in range(BISECTIONS):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if attainment(mid) >= goal else (lo, mid)
    return lo, seen[lo], seen
