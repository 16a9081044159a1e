"""Replay every policy on the same workload through the discrete-event SimCluster and score it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.policy import baselines
from burstpilot.policy.baselines import Policy
from burstpilot.policy.capacity import replica_rate
from burstpilot.policy.core import Observation
from burstpilot.policy.oracle import OraclePlan, oracle_policy, plan, required_replicas
from burstpilot.policy.spec import PoolSpec
from burstpilot.slo import RunMetrics

ALL_POLICIES = ("oracle", "burstpilot", "static-peak", "static-mean", "hpa", "keda", "kpa", "dynamo")
ORACLE_SLOT_S = 10.0
STATIC_WINDOW_S = 60.0


@dataclass
class PolicyRun:
    name: str
    metrics: dict[str, Any]
    timeline: list[tuple[float, int, int]]  # (time_s, ready, starting)
    desired: list[tuple[float, int]]  # (time_s, replicas asked for)
    arrival_s: np.ndarray
    ttft_s: np.ndarray
    reasons: dict[str, int] = field(default_factory=dict)


def policy_metrics(
    spec: PoolSpec,
    requests: RunMetrics,
    gpu_seconds: float,
    scale_events: int,
    preemptions: int,
    initial: int,
    timeline: Sequence[tuple[float, int, int]],
) -> dict[str, Any]:
    """One policy's result (results.json's per-policy record), the same for discrete-event and real-time runs."""
    return {
        "requests": requests.requests,
        "slo_attainment": requests.slo_attainment,
        "slo_violations": requests.slo_violations,
        "ttft_p50_s": requests.ttft.p(50),
        "ttft_p99_s": requests.ttft.p(99),
        "tpot_p99_s": requests.tpot.p(99),
        "gpu_hours": float(gpu_seconds) / 3600.0,
        "gpu_hours_vs_oracle": None,
        "scale_events": int(scale_events),
        "preemptions": int(preemptions),
        "rejected": requests.failed,
        "initial_replicas": int(initial),
        "peak_replicas": int(max(r + s for _, r, s in timeline)) if timeline else int(initial),
    }


def prepare_workload(trace, profile) -> tuple[Any, int]:
    """Start the workload at time 0 and drop requests no replica can hold (prompt + output > max_model_len).

    Returns the workload and how many requests were dropped (those are no scaling policy's failure).
    """
    from burstpilot.traces.generate import scale_replay

    if len(trace) == 0:
        raise BurstpilotError("workload: no requests")
    limit = int(getattr(profile, "max_model_len", 0) or 0)
    keep = np.ones(len(trace), dtype=bool)
    if limit:
        keep = (np.asarray(trace.request_tokens) + np.maximum(np.asarray(trace.response_tokens), 1)) <= limit
    if not keep.any():
        raise BurstpilotError(f"workload: every request is longer than the profile's max_model_len {limit}")
    trace = trace.subset(keep) if not keep.all() else trace
    return scale_replay(trace, speedup=1.0), int((~keep).sum())


def first_window_replicas(spec: PoolSpec, workload, window_s: float) -> int:
    """Replicas for the mean load of the first window (every policy starts from the same pool)."""
    arr = np.asarray(workload.arrival_s)
    sel = arr < window_s
    n = int(sel.sum())
    if n == 0:
        return spec.min_replicas
    p = float(np.mean(workload.request_tokens[sel]))
    o = float(np.mean(np.maximum(workload.response_tokens[sel], 1)))
    rate = n / min(window_s, max(float(workload.duration_s), 1.0))
    per = replica_rate(spec, p, o).rate * spec.target_utilization
    return int(min(max(math.ceil(rate / per), spec.min_replicas), spec.max_replicas))


def static_replicas(spec: PoolSpec, workload, which: str) -> int:
    """Replicas for the workload's peak (highest one-minute rate) or mean rate at the target utilization."""
    arr = np.asarray(workload.arrival_s)
    if len(arr) == 0:
        return spec.min_replicas
    p = float(np.mean(workload.request_tokens))
    o = float(np.mean(np.maximum(workload.response_tokens, 1)))
    per = replica_rate(spec, p, o).rate * spec.target_utilization
    if which == "peak":
        nbins = max(1, int(math.ceil(workload.duration_s / STATIC_WINDOW_S)))
        counts = np.bincount(np.minimum((arr // STATIC_WINDOW_S).astype(int), nbins - 1), minlength=nbins)
        rate = float(counts.max()) / STATIC_WINDOW_S
    else:
        rate = len(arr) / max(float(workload.duration_s), 1.0)
    return int(min(max(math.ceil(rate / per), spec.min_replicas), spec.max_replicas))


def oracle_plan(
    spec: PoolSpec, workload, cold_start_s: float, initial: int, window_s: float = ORACLE_SLOT_S
) -> OraclePlan:
    """The least-cost plan for the need of each slot's arrivals (or of the ``window_s`` around it) at the spec's
    capacity (``burstpilot.policy.oracle``); the simulator judges it (``burstpilot.evaluation.oracle_search``)."""
    req = required_replicas(
        spec,
        np.asarray(workload.arrival_s),
        np.asarray(workload.request_tokens),
        np.maximum(np.asarray(workload.response_tokens), 1),
        float(workload.duration_s),
        ORACLE_SLOT_S,
        max(1, int(round(window_s / ORACLE_SLOT_S))),
    )
    req = [min(r, spec.max_replicas) for r in req]
    return plan(req, int(math.ceil(cold_start_s / ORACLE_SLOT_S)), initial, ORACLE_SLOT_S)


def build_policies(
    names: Sequence[str], spec: PoolSpec, workload, cold_start_s: float, initial: int
) -> list[tuple[Policy, int]]:
    """(policy, initial replicas) for each name, the oracle first when asked for."""
    out: list[tuple[Policy, int]] = []
    for name in sorted(names, key=lambda n: n != "oracle"):
        if name == "oracle":
            p = oracle_plan(spec, workload, cold_start_s, initial)
            out.append((oracle_policy(p), initial))
        elif name in ("static-peak", "static-mean"):
            n = static_replicas(spec, workload, name.split("-")[1])
            out.append((baselines.static(n, name), n))
        elif name in baselines.REACTIVE:
            out.append((baselines.get(name), initial))
        else:
            raise BurstpilotError(f"--policies: unknown policy {name!r} (known: {', '.join(ALL_POLICIES)})")
    return out


def run_policy(
    policy: Policy,
    spec: PoolSpec,
    profile,
    workload,
    seed: int,
    cold_start_s: float,
    initial: int,
    on_progress: Callable[[float], None] | None = None,
) -> PolicyRun:
    """Drive a SimCluster with ``policy`` every ``policy.period_s`` seconds until the workload ends."""
    from burstpilot.sim.des import SimCluster

    c = SimCluster(profile, workload, initial_replicas=initial, seed=seed, cold_start_s=cold_start_s)
    state = policy.new_state(spec)
    period = float(policy.period_s(spec))
    end = float(workload.duration_s)
    prev = c.observe()
    desired = [(0.0, initial)]
    reasons: dict[str, int] = {}
    t = period
    while t <= end + 1e-9:
        c.run_until(t)
        o = c.observe()
        ttft_recent = o.ttft_recent_s
        obs = Observation(
            time_s=t,
            requests=float(o.requests_arrived - prev.requests_arrived),
            prompt_tokens=float(o.prompt_tokens - prev.prompt_tokens),
            generation_tokens=float(o.generation_tokens - prev.generation_tokens),
            waiting=float(o.waiting),
            running=float(o.running),
            kv_usage=float(o.kv_usage_mean),
            ttft_p99_s=float(np.quantile(ttft_recent, 0.99)) if len(ttft_recent) else None,
            current=int(o.desired),
            ready=int(o.ready),
            starting=int(o.starting),
            pending=0,
            metrics_age_s=0.0,
            window_s=period,
        )
        prev = o
        decision, state = policy.decide(spec, obs, state)
        reasons[decision.bound] = reasons.get(decision.bound, 0) + 1
        if not decision.advisory and decision.replicas != o.desired:
            c.set_replicas(decision.replicas)
            desired.append((t, decision.replicas))
        if on_progress is not None:
            on_progress(t)
        t += period
    res = c.finish()
    req = RunMetrics.from_requests(res.ttft_s, res.tpot_s, res.e2e_s, res.rejected, spec.slo)
    metrics = policy_metrics(
        spec, req, res.gpu_seconds, len(res.scale_events), res.preemptions, initial, res.replica_timeline
    )
    return PolicyRun(
        name=policy.name,
        metrics=metrics,
        timeline=[(float(a), int(b), int(c_)) for a, b, c_ in res.replica_timeline],
        desired=desired,
        arrival_s=np.asarray(workload.arrival_s),
        ttft_s=np.where(res.rejected, np.inf, res.ttft_s),
        reasons=reasons,
    )


def evaluate(
    workload,
    profile,
    spec: PoolSpec,
    names: Sequence[str],
    seed: int,
    cold_start_s: float,
    out_dir: Path | None = None,
    progress=None,
    meta: dict[str, Any] | None = None,
    calibrate: bool = True,
) -> tuple[dict[str, Any], list[PolicyRun]]:
    """Run every policy; results.json is rewritten after each one (the oracle runs first).

    Unless ``calibrate`` is False, the spec's capacity scale is first set to the largest at which a clairvoyant
    plan meets the SLO (``burstpilot.evaluation.calibrate``), so every policy sizes with the simulator's real
    capacity. The oracle is then searched for in the simulator (``burstpilot.evaluation.oracle_search``): the
    cheapest plan found that knows every arrival and meets the goal. Simulations are cached by schedule, so
    the static pools the search tried are not run again.
    """
    from burstpilot.evaluation.oracle_search import PlanRunner, search_oracle

    unknown = [n for n in names if n not in ALL_POLICIES]
    if unknown:
        raise BurstpilotError(f"--policies: unknown policy {unknown[0]!r} (known: {', '.join(ALL_POLICIES)})")
    search_task = progress.add_task("oracle search", total=None) if progress else None

    def on_run(label: str) -> None:
        if progress:
            progress.update(search_task, advance=1, description=f"{label[:28]:<28}")

    runner = PlanRunner(profile, spec, workload, seed, cold_start_s, on_run=on_run)
    calibration = None
    known: dict[float, float] = {}
    if calibrate:
        from burstpilot.evaluation.calibrate import oracle_capacity_scale

        scale, att, known = oracle_capacity_scale(runner, spec)
        spec = spec.replace(capacity_scale=scale)
        calibration = {"capacity_scale": scale, "plan_attainment": att}
    runner.spec = spec
    initial = first_window_replicas(spec, workload, 300.0)
    n_static = {
        name: static_replicas(spec, workload, name.split("-")[1]) for name in ("static-peak", "static-mean")
    }
    oracle = None
    if "oracle" in names:
        oracle = search_oracle(runner, spec, n_static["static-peak"], n_static["static-mean"], known)
    if progress:
        progress.update(search_task, total=runner.simulations, completed=runner.simulations,
                        description="calibrate + oracle")  # fmt: skip
    results: dict[str, Any] = {"meta": dict(meta or {}), "policies": {}}
    results["meta"].update(
        {
            "seed": seed,
            "cold_start_s": cold_start_s,
            "slo": {"ttft_s": spec.slo.ttft_s, "tpot_s": spec.slo.tpot_s, "attainment": spec.slo.attainment},
            "requests": len(workload),
            "duration_s": float(workload.duration_s),
            "initial_replicas": initial,
            "capacity_scale": spec.capacity_scale,
            "calibration": calibration,
            "oracle": oracle.summary() if oracle else None,
            "gpus_per_replica": spec.gpus_per_replica,
        }
    )
    runs: list[PolicyRun] = []
    oracle_gpu_h = None
    for name in sorted(names, key=lambda n: n != "oracle"):
        if name == "oracle":
            run = oracle.run
        elif name in n_static:
            run = runner.run_constant(n_static[name], name)
        else:
            task = progress.add_task(name, total=float(workload.duration_s)) if progress else None
            run = run_policy(
                baselines.get(name),
                spec,
                profile,
                workload,
                seed,
                cold_start_s,
                initial,
                on_progress=(lambda t, task=task: progress.update(task, completed=t)) if progress else None,
            )
            if progress:
                progress.update(task, completed=float(workload.duration_s))
        if name == "oracle":
            oracle_gpu_h = run.metrics["gpu_hours"]
        if oracle_gpu_h:
            run.metrics["gpu_hours_vs_oracle"] = run.metrics["gpu_hours"] / oracle_gpu_h
        runs.append(run)
        results["policies"][name] = run.metrics
        if out_dir is not None:
            write_json(out_dir / "results.json", results)
    return results, runs


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
