"""The oracle search: cheapest schedule found that meets the goal, never above the cheapest feasible constant pool."""

from dataclasses import dataclass

import pytest

from burstpilot.evaluation.oracle_search import FAMILIES, choose, search_family, search_oracle
from burstpilot.policy import SLO, PoolSpec
from burstpilot.policy.oracle import schedule

GOAL = 0.99


@dataclass
class Run:
    name: str
    metrics: dict


class FakeRunner:
    """Schedules scored without a simulator: a schedule's attainment is set by its thinnest slot, 1 - 0.5 / n ** 2 for
    n ready replicas (the goal needs n >= 8). A follow schedule at planning scale sigma holds ``need / sigma``
    replicas per slot, whatever its window, so on a peaky need the cheapest feasible schedule is a constant pool."""

    def __init__(self, need):
        self.need = need
        self.spec = PoolSpec(
            profile="h100-llama3-8b", slo=SLO(ttft_s=2.0, tpot_s=0.1, attainment=GOAL), max_replicas=32
        )
        self.simulations = 0

    @staticmethod
    def attainment(replicas: float) -> float:
        return 1.0 - 0.5 / max(replicas, 1e-9) ** 2

    def follow(self, sigma, window_s):
        req = [
            min(int(-(-x // sigma)), self.spec.max_replicas) for x in self.need
        ]  # clamped, as real schedules
        return schedule(req, 2, req[0], 1.0), req[0]

    def scheduled_gpu_hours(self, p):
        return float(p.cost_slots)

    def constant_gpu_hours(self, n):
        return float(n * len(self.need))

    def _result(self, replicas, gpu):
        self.simulations += 1
        return Run("x", {"slo_attainment": self.attainment(replicas), "gpu_hours": gpu})

    def run_schedule(self, p, initial, label):
        return self._result(min(p.ready), float(p.cost_slots))

    def run_constant(self, n, name="constant"):
        return self._result(float(n), float(n * len(self.need)))


@pytest.mark.parametrize(
    "need", [[4, 4, 9, 4, 4, 4, 4, 4], [6, 7, 8, 7, 6, 7, 8, 7], [1, 1, 20, 1, 1, 1, 1, 1]]
)
def test_search_returns_the_cheapest_feasible_trial_and_beats_every_feasible_constant_pool(need):
    runner = FakeRunner(need)
    spec = runner.spec.replace(capacity_scale=1.0)
    res = search_oracle(runner, spec, n_peak=max(need), n_mean=round(sum(need) / len(need)))
    assert res.meets_goal and res.run.name == "oracle"
    assert res.run.metrics["slo_attainment"] >= GOAL
    simulated = [t for t in res.trials if t.attainment is not None]
    assert res.run.metrics["gpu_hours"] == min(t.gpu_hours for t in simulated if t.attainment >= GOAL)
    cheapest_pool = min(n for n in range(1, 33) if runner.attainment(n) >= GOAL)
    assert cheapest_pool == 8
    # no schedule is feasible below 8 ready replicas in every slot, so the pool of 8 is optimal here: found
    assert res.run.metrics["gpu_hours"] == cheapest_pool * len(need)
    # deterministic
    again = search_oracle(FakeRunner(need), spec, max(need), round(sum(need) / len(need)))
    assert [t.as_dict() for t in again.trials] == [t.as_dict() for t in res.trials]


def test_nothing_feasible_returns_the_best_attainment():
    runner = FakeRunner([1, 1, 1, 1])
    spec = runner.spec = runner.spec.replace(max_replicas=3, capacity_scale=1.0)
    res = search_oracle(runner, spec, n_peak=1, n_mean=1)
    assert not res.meets_goal
    best = max(t.attainment for t in res.trials if t.attainment is not None)
    assert res.run.metrics["slo_attainment"] == best


def test_families_searched_apart_and_combined_choose_the_same_oracle():
    """What the parallel evaluation does (one family per process, then ``choose``) finds the same cheapest
    schedule as the sequential search."""
    need = [4, 4, 9, 4, 4, 4, 4, 4]
    spec = FakeRunner(need).spec
    together = search_oracle(FakeRunner(need), spec, n_peak=9, n_mean=5)
    apart = [search_family(FakeRunner(need), spec, f, 9, 5) for f in FAMILIES]
    chosen = choose(apart, GOAL)
    assert chosen.meets_goal and chosen.run.metrics["gpu_hours"] == together.run.metrics["gpu_hours"]
    assert chosen.run.metrics["capacity_source"] == "oracle"
