"""The oracle, made tight in the simulator it is judged in.

``burstpilot.policy.oracle.schedule`` gives the least-cost schedule for a per-slot replica need, but the need
comes from the closed-form capacity model, and the discrete-event simulator decides whether the SLO holds. So
the oracle of an evaluation is a search over schedules that know every future arrival, each simulated on the
same requests (same seed, same cold-start draws), and it is the one with the fewest simulated GPU-hours among
those that meet the SLO attainment goal. The families of candidates:

1. **follow-10s**: the need of each 10 s slot's own arrivals, at a planning capacity scale ``sigma`` (demand
   headroom ``1 / sigma``), starting from the pool the first five minutes' mean needs.
2. **constant**: a fixed pool of ``n`` replicas from time 0, the static baselines' own run; ``n`` bisected
   from the static-peak and static-mean counts (every constant pool is a feasible schedule, so the oracle never
   costs more than the cheapest constant pool that meets the goal, up to the bisection's assumption that
   attainment grows with ``n``).
3. **follow-60s**, **follow-300s**: the need of the 60 s (300 s) window centred on each slot (mean rate and
   lengths), which ignores the sampling noise of 10 s slots and the spikes of single long prompts.

For each family the search looks for the largest ``sigma`` (smallest ``n``) that meets the goal: doubling or
halving from ``start`` until the goal is bracketed, then geometric bisection to a ratio of ``1 + RESOLUTION`` (5 %); a
candidate whose scheduled GPU-hours (its replica-slots) exceed the best simulated GPU-hours found so far by more
than ``PRUNE_MARGIN`` is not simulated (a run costs a few percent more than its schedule, for draining replicas
and the last requests, so it would not win). Every simulation is cached by the schedule it asks for.

The families are independent (``search_family``), so an evaluation runs them in parallel processes and
combines them with ``choose``; ``search_oracle`` runs them one after the other in this process, sharing the
pruning bound.

It is the least cost *found* in a few families, not a proof of optimality over all schedules: another shape
(a schedule that drops a burst it is cheaper to fail, say) could cost less.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from burstpilot.evaluation.runner import PolicyRun, SimRunner
from burstpilot.policy.spec import PoolSpec

FAMILIES = ("follow-10s", "constant", "follow-60s", "follow-300s")
WINDOW_S = {"follow-10s": 10.0, "follow-60s": 60.0, "follow-300s": 300.0}
RESOLUTION = 0.05
PRUNE_MARGIN = 0.02
SIGMA_LO = 0.02
SIGMA_HI = 4.0
MAX_PROBES = 12  # per family, a bound on the bisection (about 5 from a bracket of ratio 2)


@dataclass
class Trial:
    family: str
    param: float  # planning capacity scale (follow-*) or replicas (constant)
    scheduled_gpu_hours: float
    attainment: float | None = None  # None: not simulated (pruned)
    gpu_hours: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class OracleResult:
    run: PolicyRun  # named "oracle"
    family: str
    param: float
    meets_goal: bool
    trials: list[Trial]
    simulations: int

    def summary(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "param": self.param,
            "meets_goal": self.meets_goal,
            "simulations": self.simulations,
            "trials": [t.as_dict() for t in self.trials],
        }


@dataclass
class FamilyResult:
    """One family's trials and the cheapest run of it that meets the goal (else its best attainment)."""

    family: str
    trials: list[Trial]
    best: PolicyRun | None
    best_trial: Trial | None
    simulations: int


def search_family(
    runner: SimRunner,
    spec: PoolSpec,
    family: str,
    n_peak: int,
    n_mean: int,
    start_sigma: float = 1.0,
    bound: list[float] | None = None,
) -> FamilyResult:
    """Search one family (see the module docstring). ``bound`` (a one-element list, shared between families
    run in one process) holds the best simulated GPU-hours that meet the goal so far, for pruning."""
    goal = spec.slo.attainment
    trials: list[Trial] = []
    runs: dict[int, PolicyRun] = {}
    best = bound if bound is not None else []
    before = runner.simulations

    def record(trial: Trial, run: PolicyRun) -> bool:
        trial.attainment = run.metrics["slo_attainment"]
        trial.gpu_hours = run.metrics["gpu_hours"]
        trials.append(trial)
        runs[id(trial)] = run
        ok = trial.attainment >= goal
        if ok and (not best or trial.gpu_hours < best[0]):
            best[:] = [trial.gpu_hours]
        return ok

    def pruned(trial: Trial) -> bool:
        if best and trial.scheduled_gpu_hours > best[0] * (1.0 + PRUNE_MARGIN):
            trials.append(trial)
            return True
        return False

    if family == "constant":

        def constant(n: float) -> bool | None:
            n = int(n)
            trial = Trial("constant", n, runner.constant_gpu_hours(n))
            if pruned(trial):
                return None
            return record(trial, runner.run_constant(n))

        lo_n, hi_n = max(spec.min_replicas, 1), max(spec.max_replicas, 1)
        for n in sorted({min(max(n_mean, lo_n), hi_n), min(max(n_peak, lo_n), hi_n)}):
            constant(n)
        _smallest_passing_int(constant, trials, goal, lo_n, hi_n)
    else:

        def meets(sigma: float) -> bool | None:
            the_schedule, initial = runner.follow(sigma, WINDOW_S[family])
            trial = Trial(family, sigma, runner.scheduled_gpu_hours(the_schedule))
            if pruned(trial):
                return None
            return record(trial, runner.run_schedule(the_schedule, initial, f"{family} sigma={sigma:.3f}"))

        _largest_passing(meets, {}, start_sigma, SIGMA_LO, SIGMA_HI)
    simulated = [t for t in trials if t.attainment is not None]
    feasible = [t for t in simulated if t.attainment >= goal]
    if feasible:
        win = min(feasible, key=lambda t: (t.gpu_hours, -t.attainment))
    elif simulated:
        win = max(simulated, key=lambda t: (t.attainment, -t.gpu_hours))
    else:
        win = None
    return FamilyResult(family, trials, runs[id(win)] if win else None, win, runner.simulations - before)


def choose(results: Sequence[FamilyResult], goal: float) -> OracleResult:
    """The oracle from every family's search: the cheapest run that meets the goal, else the best attainment."""
    trials = [t for r in results for t in r.trials]
    cands = [r for r in results if r.best_trial is not None]
    feasible = [r for r in cands if r.best_trial.attainment >= goal]
    if feasible:
        win = min(feasible, key=lambda r: (r.best_trial.gpu_hours, -r.best_trial.attainment))
    else:
        win = max(cands, key=lambda r: (r.best_trial.attainment, -r.best_trial.gpu_hours))
    run = dataclasses.replace(win.best, name="oracle", metrics=dict(win.best.metrics))
    run.metrics["capacity_source"] = "oracle"
    return OracleResult(
        run, win.family, win.best_trial.param, bool(feasible), trials, sum(r.simulations for r in results)
    )


def search_oracle(
    runner: SimRunner, spec: PoolSpec, n_peak: int, n_mean: int, families: Sequence[str] = FAMILIES
) -> OracleResult:
    """Every family in this process, one after the other, sharing the pruning bound; the follow-60s and
    follow-300s searches start from the best scale follow-10s found."""
    bound: list[float] = []
    results: list[FamilyResult] = []
    start = 1.0
    for family in families:
        r = search_family(runner, spec, family, n_peak, n_mean, start, bound)
        results.append(r)
        if (
            family == "follow-10s"
            and r.best_trial is not None
            and r.best_trial.attainment >= spec.slo.attainment
        ):
            start = r.best_trial.param
    return choose(results, spec.slo.attainment)


def _ok(t: Trial, goal: float) -> bool:
    return t.attainment is not None and t.attainment >= goal


def _largest_passing(
    meets: Callable[[float], bool | None],
    seen: dict[float, bool],
    start: float,
    lo_bound: float,
    hi_bound: float,
) -> None:
    """Bracket and bisect (geometrically) the largest passing parameter, from the results ``seen`` so far;
    ``None`` from ``meets`` (not worth simulating) moves the search up like a pass."""
    probes = 0

    def probe(x: float) -> bool:
        nonlocal probes
        probes += 1
        r = meets(x)
        seen[x] = True if r is None else r
        return seen[x]

    passing = [x for x, p in seen.items() if p]
    lo: float | None = max(passing) if passing else None
    failing = [x for x, p in seen.items() if not p and (lo is None or x > lo)]
    hi: float | None = min(failing) if failing else None
    if lo is None and hi is None:
        x = min(max(start, lo_bound), hi_bound)
        lo, hi = (x, None) if probe(x) else (None, x)
    while lo is None and hi > lo_bound and probes < MAX_PROBES:
        y = max(hi / 2.0, lo_bound)
        lo, hi = (y, hi) if probe(y) else (None, y)
    while hi is None and lo < hi_bound and probes < MAX_PROBES:
        y = min(lo * 2.0, hi_bound)
        lo, hi = (y, None) if probe(y) else (lo, y)
    if lo is None or hi is None:
        return
    while hi / lo > 1.0 + RESOLUTION and probes < MAX_PROBES:
        mid = math.sqrt(lo * hi)
        if probe(mid):
            lo = mid
        else:
            hi = mid


def _smallest_passing_int(
    meets: Callable[[float], bool | None], trials: list[Trial], goal: float, lo_bound: int, hi_bound: int
) -> None:
    """Bisect the smallest passing pool between the constant trials already run (pools double until one
    passes); a pool not worth simulating counts as passing, as a larger one cannot be cheaper."""
    seen: dict[int, bool] = {
        int(t.param): t.attainment is None or t.attainment >= goal for t in trials if t.family == "constant"
    }

    def passes(n: int) -> bool:
        if n not in seen:
            r = meets(n)
            seen[n] = True if r is None else r
        return seen[n]

    ok = sorted(n for n, p in seen.items() if p)
    hi = ok[0] if ok else None
    n = max(seen, default=lo_bound)
    while hi is None and n < hi_bound:
        n = min(n * 2, hi_bound)
        if passes(n):
            hi = n
    if hi is None:
        return
    fails = [m for m, p in seen.items() if m < hi and not p]
    lo = max(fails) if fails else lo_bound - 1  # fails, or below the allowed range
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
