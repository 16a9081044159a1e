"""Where the policies' per-replica capacity comes from (``capacity_source`` in results.json).

- ``profile`` (the default): the closed-form model of the replica profile (``burstpilot.policy.capacity``),
  ``capacity_scale`` 1. Nothing about the workload but the first five minutes' length mix, which sizes the
  initial pool and the baselines' load-test thresholds.
- ``measured``: a load test of one replica, as an operator would run before configuring an autoscaler (what
  ``burstpilot profile measure`` does against a real endpoint): open-loop Poisson arrivals at rising rates with
  the lengths of the first hour's requests, in the simulator, bisecting the highest rate at which the SLO
  attainment goal holds. ``capacity_scale`` is that rate over the model's; every policy gets it. It sees no
  arrival time of the evaluated workload and nothing the oracle computes.
- ``oracle`` (analysis only, labelled as such): the largest scale at which the clairvoyant 10 s schedule still
  meets the goal on the evaluated workload itself (``oracle_capacity_fit``). No operator has this number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from burstpilot.evaluation.runner import ORACLE_SLOT_S, SimRunner
from burstpilot.policy.capacity import replica_rate
from burstpilot.policy.spec import PoolSpec
from burstpilot.sim.des import SimCluster
from burstpilot.slo import RunMetrics
from burstpilot.traces.table import make_trace

SOURCES = ("profile", "measured", "oracle")
FIT_LO = 0.02
FIT_HI = 1.5
FIT_BISECTIONS = 7
LOAD_TEST_S = 600.0  # each rate step of the load test
LOAD_TEST_WARMUP_S = 60.0  # requests of the first minute are not scored
LOAD_TEST_SAMPLE_S = 3600.0  # the lengths come from the workload's first hour
LOAD_TEST_STEPS = 8


@dataclass(frozen=True)
class CapacityResult:
    source: str
    capacity_scale: float
    detail: dict

    def summary(self) -> dict:
        return {"source": self.source, "capacity_scale": self.capacity_scale, **self.detail}


def measure_capacity(profile, spec: PoolSpec, workload, seed: int = 0) -> CapacityResult:
    """The one-replica load test (see the module docstring): the highest open-loop rate meeting the goal."""
    arr = np.asarray(workload.arrival_s)
    sel = arr < LOAD_TEST_SAMPLE_S
    if sel.sum() < 50:
        sel = np.zeros(len(arr), dtype=bool)
        sel[: min(len(arr), 2000)] = True
    prompts = np.asarray(workload.request_tokens)[sel]
    outputs = np.maximum(np.asarray(workload.response_tokens)[sel], 1)
    p_mean, o_mean = float(prompts.mean()), float(outputs.mean())
    model = replica_rate(spec.replace(capacity_scale=1.0), p_mean, o_mean).rate
    rng = np.random.default_rng(seed)
    goal = spec.slo.attainment
    tried: dict[float, float] = {}

    def attainment(rate: float) -> float:
        n = max(20, int(rate * LOAD_TEST_S))
        gaps = rng.exponential(1.0 / rate, size=n)
        t = np.cumsum(gaps)
        idx = rng.integers(0, len(prompts), size=n)
        trace = make_trace(t, prompts[idx], outputs[idx], source="load test")
        c = SimCluster(profile, trace, initial_replicas=1, seed=seed, scrape_interval_s=0)
        res = c.finish()
        keep = t >= LOAD_TEST_WARMUP_S
        m = RunMetrics.from_requests(res.ttft_s[keep], res.tpot_s[keep], res.e2e_s[keep], res.rejected[keep],
                                     spec.slo)  # fmt: skip
        tried[round(rate, 4)] = m.slo_attainment
        return m.slo_attainment

    lo, hi = 0.0, model * 2.0
    if attainment(hi) >= goal:
        lo = hi
    else:
        for _ in range(LOAD_TEST_STEPS):
            mid = (lo + hi) / 2.0 if lo > 0 else hi / 2.0
            if attainment(mid) >= goal:
                lo = mid
            else:
                hi = mid
            if lo > 0 and hi / lo < 1.05:
                break
    rate = max(lo, model * FIT_LO)
    detail = {
        "measured_rate": rate,
        "model_rate": model,
        "prompt_mean": p_mean,
        "output_mean": o_mean,
        "rates_tried": {str(k): v for k, v in sorted(tried.items())},
    }
    return CapacityResult("measured", rate / model, detail)


def oracle_capacity_fit(runner: SimRunner, spec: PoolSpec) -> CapacityResult:
    """The largest capacity scale at which the clairvoyant 10 s schedule meets the goal on this workload
    (geometric bisection; the runs are cached in ``runner`` for the oracle search). Analysis only."""
    seen: dict[float, float] = {}

    def attainment(scale: float) -> float:
        sched, initial = runner.follow(scale, ORACLE_SLOT_S)
        run = runner.run_schedule(sched, initial, f"capacity fit scale={scale:.3f}")
        seen[scale] = run.metrics["slo_attainment"]
        return seen[scale]

    goal = spec.slo.attainment
    lo, hi = FIT_LO, FIT_HI
    if attainment(hi) >= goal:
        best = hi
    elif attainment(lo) < goal:
        best = lo
    else:
        for _ in range(FIT_BISECTIONS):
            mid = (lo * hi) ** 0.5
            lo, hi = (mid, hi) if attainment(mid) >= goal else (lo, mid)
        best = lo
    detail = {"schedule_attainment": seen[best], "tried": {f"{k:.4f}": v for k, v in sorted(seen.items())}}
    return CapacityResult("oracle", best, detail)
