"""Evaluation sweeps: cases x seeds x policies, in parallel processes, sharded, merged.

A *case* is a workload with its pool (profile, SLO, replica bounds, cold start, capacity source). A *unit* is one
independent simulation job of a case and seed: one online or static policy, or one family of the oracle search
(``burstpilot.evaluation.oracle_search``). Units run in a pool of worker processes (fork: each worker inherits
the prepared cases) and each writes one JSON file under ``DIR/units/``; ``merge`` turns the unit files of any set
of shards into one ``results.json`` per case and seed (the oracle chosen from its families, every policy's
GPU-hours against it). ``--shard i/n`` runs the units at positions i, i + n, ... of the sweep, so the shards of
a Kubernetes Indexed Job split the work and ``burstpilot evaluate merge`` joins them.

No online policy sees anything the oracle computed: the units are independent, and the oracle's families run
beside them, not before them. Only the explicit ``oracle`` capacity source (an analysis option) fits the
capacity on the workload through the clairvoyant schedule first.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.evaluation import capacity as capacity_mod
from burstpilot.evaluation import report
from burstpilot.evaluation.oracle_search import FAMILIES, FamilyResult, Trial, choose, search_family
from burstpilot.evaluation.runner import (
    ALL_POLICIES,
    DEFAULT_POLICIES,
    PolicyRun,
    SimRunner,
    first_window_replicas,
    make_policy,
    prepare_workload,
    run_policy,
    static_replicas,
    write_json,
)
from burstpilot.loadtest.schedule import parse_shard
from burstpilot.policy.spec import PoolSpec

PLOT_BINS = (30.0, 60.0, 120.0, 300.0, 600.0)
MAX_PLOT_BINS = 400


@dataclass
class Case:
    """A workload and its pool. ``workload`` builds the trace (deterministically: every shard builds the same).
    ``capacity``: the capacity source (``profile``, ``measured`` or ``oracle``; ``measured`` also when
    ``capacity_scale`` is given, from a load test the user ran)."""

    name: str
    workload: Callable[[], Any]
    profile: Any
    spec: PoolSpec
    cold_start_s: float
    capacity: str = "profile"
    capacity_scale: float | None = None
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    exact_cold_start: bool = False


@dataclass
class Prepared:
    case: Case
    seed: int
    workload: Any
    dropped: int
    spec: PoolSpec  # with the case's capacity scale
    capacity: dict[str, Any]
    initial: int
    n_static: dict[str, int]
    bin_s: float
    search_start: dict[str, Any] = field(default_factory=dict)  # where the oracle's families start


def plot_bin_s(duration_s: float) -> float:
    for b in PLOT_BINS:
        if duration_s / b <= MAX_PLOT_BINS:
            return b
    return PLOT_BINS[-1]


def prepare(case: Case, seed: int, search: bool = True) -> Prepared:
    """The case's workload and the pool every policy starts from, with its capacity (see
    ``burstpilot.evaluation.capacity``). With ``search``, also where the oracle's families start: the follow
    schedules at the one-replica load test's capacity scale, the constant pools at its static counts (a good
    start saves the bisection a few simulations; it changes nothing the policies see)."""
    workload, dropped = prepare_workload(case.workload(), case.profile)
    spec = case.spec
    if case.capacity_scale is not None:
        spec = spec.replace(capacity_scale=float(case.capacity_scale))
        cap = {"source": "measured", "capacity_scale": float(case.capacity_scale), "given": True}
    elif case.capacity == "profile":
        cap = {"source": "profile", "capacity_scale": spec.capacity_scale}
    elif case.capacity == "measured":
        r = capacity_mod.measure_capacity(case.profile, spec, workload, seed)
        spec = spec.replace(capacity_scale=r.capacity_scale)
        cap = r.summary()
    elif case.capacity == "oracle":
        runner = SimRunner(case.profile, spec, workload, seed, case.cold_start_s,
                           exact_cold_start=case.exact_cold_start)  # fmt: skip
        r = capacity_mod.oracle_capacity_fit(runner, spec)
        spec = spec.replace(capacity_scale=r.capacity_scale)
        cap = r.summary()
    else:
        raise BurstpilotError(
            f"capacity source {case.capacity!r}: must be one of {', '.join(capacity_mod.SOURCES)}"
        )
    n_static = {n: static_replicas(spec, workload, n.split("-")[1]) for n in ("static-peak", "static-mean")}
    start: dict[str, Any] = {}
    if search:
        sigma = cap["capacity_scale"] if cap["source"] == "measured" else None
        if sigma is None:
            sigma = capacity_mod.measure_capacity(case.profile, spec, workload, seed).capacity_scale
        at = spec.replace(capacity_scale=sigma)
        start = {
            "sigma": float(sigma),
            "n_peak": static_replicas(at, workload, "peak"),
            "n_mean": static_replicas(at, workload, "mean"),
        }
    return Prepared(
        case, seed, workload, dropped, spec, cap, first_window_replicas(spec, workload), n_static,
        plot_bin_s(float(workload.duration_s)), start,
    )  # fmt: skip


def unit_names(names: Sequence[str]) -> list[str]:
    """The units of one case and seed for the policies ``names``: the oracle is its search's families."""
    bad = [n for n in names if n not in ALL_POLICIES]
    if bad or not names:
        raise BurstpilotError(
            f"--policies: unknown {', '.join(bad) or '(empty)'} (known: {', '.join(ALL_POLICIES)})"
        )
    out = [f"oracle:{f}" for f in FAMILIES] if "oracle" in names else []
    return out + [n for n in names if n != "oracle"]


def ttft_p99_bins(run: PolicyRun, bin_s: float, n_bins: int) -> list[float | None]:
    idx = np.minimum((run.arrival_s // bin_s).astype(int), n_bins - 1)
    v = np.where(np.isnan(run.ttft_s), np.inf, run.ttft_s)
    out: list[float | None] = [None] * n_bins
    order = np.argsort(idx, kind="stable")
    idx_s, v_s = idx[order], v[order]
    cuts = np.flatnonzero(np.diff(idx_s)) + 1
    for chunk_i, chunk_v in zip(np.split(idx_s, cuts), np.split(v_s, cuts), strict=True):
        if len(chunk_i):
            q = float(np.quantile(chunk_v, 0.99))
            out[int(chunk_i[0])] = q if math.isfinite(q) else 1e4
    return out


def case_meta(p: Prepared) -> dict[str, Any]:
    w = p.workload
    n_bins = max(1, int(math.ceil(float(w.duration_s) / p.bin_s)))
    rate = np.bincount(np.minimum((np.asarray(w.arrival_s) // p.bin_s).astype(int), n_bins - 1),
                       minlength=n_bins) / p.bin_s  # fmt: skip
    # the last bin is partial: its rate is over the part of it the workload covers
    tail = float(w.duration_s) - (n_bins - 1) * p.bin_s
    if 0 < tail < p.bin_s:
        rate[-1] *= p.bin_s / tail
    s = p.spec
    return {
        **p.case.meta,
        "case": p.case.name,
        "label": p.case.label,
        "seed": p.seed,
        "profile": p.case.profile.name,
        "gpus_per_replica": s.gpus_per_replica,
        "min_replicas": s.min_replicas,
        "max_replicas": s.max_replicas,
        "cold_start_s": p.case.cold_start_s,
        "cold_start_draws": "exact" if p.case.exact_cold_start else "profile distribution",
        "slo": {"ttft_s": s.slo.ttft_s, "tpot_s": s.slo.tpot_s, "attainment": s.slo.attainment},
        "requests": len(w),
        "dropped_too_long": p.dropped,
        "duration_s": float(w.duration_s),
        "initial_replicas": p.initial,
        "capacity": p.capacity,
        "static_replicas": p.n_static,
        "plot": {"bin_s": p.bin_s, "rate": [float(x) for x in rate]},
    }


def run_unit(p: Prepared, unit: str) -> dict[str, Any]:
    """One unit of a prepared case: its result as plain data (the unit file)."""
    t0 = time.perf_counter()
    c = p.case
    n_bins = max(1, int(math.ceil(float(p.workload.duration_s) / p.bin_s)))
    out: dict[str, Any] = {"case": c.name, "seed": p.seed, "unit": unit}
    if unit.startswith("oracle:"):
        runner = SimRunner(
            c.profile, p.spec, p.workload, p.seed, c.cold_start_s, exact_cold_start=c.exact_cold_start
        )
        st = p.search_start
        fr = search_family(runner, p.spec, unit.split(":", 1)[1], st["n_peak"], st["n_mean"], st["sigma"])
        out["search_start"] = st
        run = fr.best
        out["trials"] = [t.as_dict() for t in fr.trials]
        out["best_param"] = fr.best_trial.param if fr.best_trial else None
        out["simulations"] = fr.simulations
    else:
        policy, initial = make_policy(unit, p.spec, p.workload, c.cold_start_s)
        run = run_policy(policy, p.spec, c.profile, p.workload, p.seed, c.cold_start_s, initial,
                         exact_cold_start=c.exact_cold_start)  # fmt: skip
        out["simulations"] = 1
    if run is not None:
        if p.capacity["source"] != "profile" and run.metrics.get("capacity_source") == "profile":
            run.metrics["capacity_source"] = p.capacity["source"]
        out.update(
            metrics=run.metrics,
            timeline=[list(x) for x in run.timeline],
            reasons=run.reasons,
            ttft_p99_bins=ttft_p99_bins(run, p.bin_s, n_bins),
        )
    out["case_meta"] = case_meta(p)
    out["wall_s"] = time.perf_counter() - t0
    return out


def unit_file(out_dir: Path, r: dict[str, Any]) -> Path:
    safe = "".join(
        ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{r['case']}__s{r['seed']}__{r['unit']}"
    )
    return out_dir / "units" / f"{safe}.json"


# --------------------------------------------------------------------------- running a sweep

_PREPARED: dict[tuple[str, int], Prepared] = {}  # inherited by the forked workers


def _worker_unit(key: tuple[str, int], unit: str) -> dict[str, Any]:
    return run_unit(_PREPARED[key], unit)


def sweep_units(
    cases: Sequence[Case], seeds: Sequence[int], names: Sequence[str]
) -> list[tuple[str, int, str]]:
    units = unit_names(names)
    # the oracle's families first: they hold several simulations each, so they are scheduled early
    return [(c.name, s, u) for c in cases for s in seeds for u in units]


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def run_sweep(
    cases: Sequence[Case],
    seeds: Sequence[int],
    names: Sequence[str],
    out_dir: Path | None = None,
    shard: tuple[int, int] = (0, 1),
    workers: int | None = None,
    on_unit: Callable[[dict[str, Any], int, int], None] | None = None,
    on_start: Callable[[list[tuple[str, int, str]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run this shard's units (in ``workers`` processes; 1: in this one) and return their results; each is
    written to ``out_dir/units/`` as it completes. ``on_unit(result, done, total)`` after each."""
    names_by_case = {c.name: c for c in cases}
    if len(names_by_case) != len(cases):
        raise BurstpilotError("sweep: case names must be unique")
    i, n = shard
    todo = [u for k, u in enumerate(sweep_units(cases, seeds, names)) if k % n == i]
    if on_start is not None:
        on_start(todo)
    for cname, seed, _ in todo:
        if (cname, seed) not in _PREPARED:
            search = any(c == cname and s == seed and u.startswith("oracle:") for c, s, u in todo)
            _PREPARED[(cname, seed)] = prepare(names_by_case[cname], seed, search)
    workers = default_workers() if workers is None else max(1, int(workers))
    results: list[dict[str, Any]] = []

    def done(r: dict[str, Any]) -> None:
        results.append(r)
        if out_dir is not None:
            write_json(unit_file(out_dir, r), r)
        if on_unit is not None:
            on_unit(r, len(results), len(todo))

    try:
        if workers == 1 or len(todo) <= 1:
            for cname, seed, unit in todo:
                done(run_unit(_PREPARED[(cname, seed)], unit))
        else:
            ctx = mp.get_context("fork")
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as pool:
                pending: set[Future] = {pool.submit(_worker_unit, (c, s), u) for c, s, u in todo}
                while pending:
                    finished, pending = wait(pending, timeout=None, return_when=FIRST_COMPLETED)
                    for f in finished:
                        done(f.result())
    finally:
        for cname, seed, _ in todo:
            _PREPARED.pop((cname, seed), None)
    return results


# --------------------------------------------------------------------------- merging units into results


def merge(units: Iterable[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """results.json per (case, seed) from unit results (of one run or of several shards): the oracle chosen
    from its families (``oracle_search.choose``), every policy's GPU-hours against it, the case's run time
    (the sum of its units' run times: the time one process would take)."""
    by_case: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for u in units:
        by_case.setdefault((u["case"], int(u["seed"])), []).append(u)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for key, us in by_case.items():
        seen = {}
        for u in us:
            if u["unit"] in seen:
                raise BurstpilotError(f"merge: unit {u['unit']} of case {key[0]} seed {key[1]} appears twice")
            seen[u["unit"]] = u
        meta = dict(us[0]["case_meta"])
        goal = meta["slo"]["attainment"]
        fams = [u for u in us if u["unit"].startswith("oracle:")]
        policies: dict[str, Any] = {}
        plot: dict[str, Any] = {"timeline": {}, "ttft_p99": {}}
        if fams:
            missing = [f for f in FAMILIES if f"oracle:{f}" not in seen]
            fams.sort(key=lambda u: FAMILIES.index(u["unit"].split(":", 1)[1]))  # ties go the same way always
            frs = [_family_result(u) for u in fams if u.get("metrics")]
            if frs:
                o = choose(frs, goal)
                meta["oracle"] = {**o.summary(), "families_missing": missing}
                best = next(u for u in fams if u["unit"] == f"oracle:{o.family}")
                policies["oracle"] = {**best["metrics"], "capacity_source": "oracle"}
                plot["timeline"]["oracle"], plot["ttft_p99"]["oracle"] = (
                    best["timeline"],
                    best["ttft_p99_bins"],
                )
        order = [n for n in ALL_POLICIES if n in seen]
        for name in order:
            u = seen[name]
            policies[name] = dict(u["metrics"])
            plot["timeline"][name], plot["ttft_p99"][name] = u["timeline"], u["ttft_p99_bins"]
        oracle_gpu = policies.get("oracle", {}).get("gpu_hours")
        for m in policies.values():
            m["gpu_hours_vs_oracle"] = m["gpu_hours"] / oracle_gpu if oracle_gpu else None
        meta["wall_s"] = float(sum(u["wall_s"] for u in us))
        meta["simulations"] = int(sum(u.get("simulations", 1) for u in us))
        meta["units"] = sorted(seen)
        meta["plot"] = {**meta.get("plot", {}), **plot}
        out[key] = {"meta": meta, "policies": policies}
    return out


def _family_result(u: dict[str, Any]) -> FamilyResult:
    trials = [Trial(**t) for t in u["trials"]]
    best = next((t for t in trials if t.param == u.get("best_param") and t.attainment is not None), None)
    run = PolicyRun(u["unit"], dict(u["metrics"]), [], [], np.zeros(0), np.zeros(0))
    return FamilyResult(u["unit"].split(":", 1)[1], trials, run, best, int(u.get("simulations", 0)))


def read_units(dirs: Iterable[Path]) -> list[dict[str, Any]]:
    out = []
    for d in dirs:
        files = sorted((Path(d) / "units").glob("*.json"))
        if not files:
            raise BurstpilotError(
                f"{d}: no unit results (DIR/units/*.json); was it an evaluate --shard output?"
            )
        for f in files:
            try:
                out.append(json.loads(f.read_text()))
            except (OSError, ValueError) as e:
                raise BurstpilotError(f"{f}: {e}") from None
    return out


def evaluate(
    case: Case,
    names: Sequence[str] = DEFAULT_POLICIES,
    seed: int = 0,
    out_dir: Path | None = None,
    workers: int | None = None,
    on_unit: Callable[[dict[str, Any], int, int], None] | None = None,
    on_start: Callable[[list[tuple[str, int, str]]], None] | None = None,
) -> dict[str, Any]:
    """Every policy on one case and seed: results.json's content (written to ``out_dir`` when given, with the
    report in markdown and HTML and its figures)."""
    t0 = time.perf_counter()
    units = run_sweep([case], [seed], names, out_dir, workers=workers, on_unit=on_unit, on_start=on_start)
    res = merge(units)[(case.name, seed)]
    res["meta"]["elapsed_s"] = time.perf_counter() - t0
    if out_dir is not None:
        write_json(out_dir / "results.json", res)
        report.write_reports(res, out_dir)
    return res


__all__ = ["Case", "evaluate", "merge", "parse_shard", "read_units", "run_sweep"]
