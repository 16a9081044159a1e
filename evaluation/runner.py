"""The shared run machinery of the evaluation: one policy (or one clairvoyant schedule) on one workload through
the discrete-event ``SimCluster``, and what every policy starts from.

Words used across the evaluation: a *schedule* is the oracle's replica count per slot
(``burstpilot.policy.oracle``), the *runner* (``SimRunner``) simulates schedules and constant pools once each,
and a *capacity source* says where a policy's per-replica capacity came from (``burstpilot.evaluation.capacity``).
The simulator's per-step engine plans and the GPU tables under ``calibration/`` are other things.

A run is what production would see:
- the policy reads the pool's metrics as Prometheus scraped them (``burstpilot.evaluation.scrape``): the last
  sample for gauges, the increase over its window for counters, draining replicas excluded;
- every replica a policy starts takes a cold start drawn from the profile's distribution (lognormal around its
  median, clipped), re-centred on the case's cold start (``with_cold_start``); the policies are told the
  median (the pool's ``coldStartSeconds``), not each draw. The draws come from the run's seed, so every policy
  meets the same sequence of cold starts;
- every policy starts from the same pool, sized for the first five minutes' mean at the profile's capacity.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.evaluation.scrape import MetricsSeries, Sample
from burstpilot.policy import baselines
from burstpilot.policy.baselines import LoadTest, Policy
from burstpilot.policy.capacity import replica_rate
from burstpilot.policy.oracle import OracleSchedule, oracle_policy, required_replicas, schedule
from burstpilot.policy.spec import PoolSpec
from burstpilot.sim.des import SimCluster
from burstpilot.sim.profile import ColdStart
from burstpilot.slo import RunMetrics
from burstpilot.traces.generate import scale_replay

ONLINE_POLICIES = ("burstpilot", "hpa", "keda", "kpa", "dynamo")
TUNED_POLICIES = ("hpa-tuned", "hpa-kv", "kpa-delay")
DEFAULT_POLICIES = ("oracle", "burstpilot", "static-peak", "static-mean", "hpa", "keda", "kpa", "dynamo")
ALL_POLICIES = DEFAULT_POLICIES + TUNED_POLICIES
ORACLE_SLOT_S = 10.0
STATIC_WINDOW_S = 60.0
FIRST_WINDOW_S = 300.0


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
        "meets_goal": bool(requests.slo_attainment >= spec.slo.attainment),
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


HOUR_S = 3600.0


def by_hour(arrival_s: Any, met: Any, goal: float) -> dict[str, Any]:
    """The attainment of each hour of the workload's clock (requests by arrival; a last partial hour is an
    hour), and how many hours fell under the goal. A day's attainment can meet the goal while some hours miss
    it, the slack of others paying for them: the oracle, knowing the day ahead, plans on that slack; an online
    policy cannot know it will come (docs/evaluation.md, "Hour by hour")."""
    arr = np.asarray(arrival_s, dtype=np.float64)
    ok = np.asarray(met, dtype=bool)
    if arr.shape != ok.shape:
        raise BurstpilotError(f"by_hour: {arr.shape[0]} arrival times for {ok.shape[0]} requests")
    if arr.size == 0:
        return {"hours": 0, "hours_under_goal": 0, "worst_hour_attainment": None, "attainment_by_hour": [],
                "requests_by_hour": []}  # fmt: skip
    idx = np.maximum((arr // HOUR_S).astype(np.int64), 0)
    n = np.bincount(idx)
    hit = np.bincount(idx, weights=ok.astype(np.float64), minlength=n.size)
    seen = n > 0
    att = np.where(seen, hit / np.maximum(n, 1), np.nan)
    return {
        "hours": int(seen.sum()),
        "hours_under_goal": int((att[seen] < goal).sum()),
        "worst_hour_attainment": float(att[seen].min()),
        "attainment_by_hour": [None if not s else float(a) for a, s in zip(att, seen, strict=True)],
        "requests_by_hour": [int(x) for x in n],
    }


def prepare_workload(trace, profile) -> tuple[Any, int]:
    """Start the workload at time 0 and drop requests no replica can hold (prompt + output > max_model_len).

    Returns the workload and how many requests were dropped (those are no scaling policy's failure).
    """
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


def reference_lengths(workload, window_s: float = FIRST_WINDOW_S) -> tuple[float, float]:
    """Mean prompt and output lengths of the first window's requests: the length mix the pool is provisioned
    for (the initial pool, and the load test a user configures a baseline's thresholds from)."""
    arr = np.asarray(workload.arrival_s)
    sel = arr < window_s
    if not sel.any():
        sel = np.zeros(len(arr), dtype=bool)
        sel[: min(len(arr), 100)] = True
    if not sel.any():
        return 512.0, 256.0
    p = float(np.mean(np.asarray(workload.request_tokens)[sel]))
    o = float(np.mean(np.maximum(np.asarray(workload.response_tokens)[sel], 1)))
    return p, o


def load_test(spec: PoolSpec, workload) -> LoadTest:
    """The baselines' configuration: the spec's capacity (profile or measured) at the reference lengths."""
    return LoadTest.from_profile(spec, *reference_lengths(workload))


def first_window_replicas(spec: PoolSpec, workload, window_s: float = FIRST_WINDOW_S) -> int:
    """Replicas for the mean load of the first window (every policy starts from the same pool)."""
    arr = np.asarray(workload.arrival_s)
    n = int((arr < window_s).sum())
    if n == 0:
        return spec.min_replicas
    p, o = reference_lengths(workload, window_s)
    rate = n / min(window_s, max(float(workload.duration_s), 1.0))
    per = replica_rate(spec, p, o).rate * spec.target_utilization
    return int(min(max(math.ceil(rate / per), spec.min_replicas), spec.max_replicas))


def static_replicas(spec: PoolSpec, workload, which: str) -> int:
    """Replicas for the workload's peak (highest one-minute rate) or mean rate at the target utilization (a
    static pool is sized by someone who has seen the day's traffic: yesterday's, say)."""
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


def with_cold_start(profile, median_s: float):
    """The profile with its cold-start distribution re-centred on ``median_s`` (same spread: min, max and the
    lognormal sigma scale with the median)."""
    cs = profile.cold_start
    k = float(median_s) / cs.median_s if cs.median_s > 0 else 0.0
    if k == 1.0:
        return profile
    new = ColdStart(median_s=float(median_s), min_s=cs.min_s * k, max_s=cs.max_s * k, sigma=cs.sigma)
    return dataclasses.replace(profile, cold_start=new)


def oracle_schedule(
    spec: PoolSpec, workload, cold_start_s: float, initial: int, window_s: float = ORACLE_SLOT_S
) -> OracleSchedule:
    """The least-cost schedule for the need of each slot's arrivals (or of the ``window_s`` around it) at the
    spec's capacity (``burstpilot.policy.oracle``); the simulator judges it (``burstpilot.evaluation.oracle_search``)."""
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
    return schedule(req, int(math.ceil(cold_start_s / ORACLE_SLOT_S)), initial, ORACLE_SLOT_S)


def make_policy(name: str, spec: PoolSpec, workload, cold_start_s: float) -> tuple[Policy, int]:
    """(policy, initial replicas) of an online or static policy by name (the oracle is searched for: see
    ``burstpilot.evaluation.oracle_search``)."""
    initial = first_window_replicas(spec, workload)
    if name in ("static-peak", "static-mean"):
        n = static_replicas(spec, workload, name.split("-")[1])
        return baselines.static(n, name), n
    if name in baselines.REACTIVE:
        return baselines.get(name, load_test(spec, workload)), initial
    raise BurstpilotError(f"--policies: unknown policy {name!r} (known: {', '.join(ALL_POLICIES)})")


def run_policy(
    policy: Policy,
    spec: PoolSpec,
    profile,
    workload,
    seed: int,
    cold_start_s: float,
    initial: int,
    on_progress: Callable[[float], None] | None = None,
    exact_cold_start: bool = False,
) -> PolicyRun:
    """Drive a SimCluster with ``policy`` every ``policy.period_s`` seconds until the workload ends; the pool is
    scraped every ``policy.scrape_s`` seconds and the policy reads that series. ``exact_cold_start`` makes every
    cold start exactly ``cold_start_s`` (tests) instead of a draw from the profile's distribution."""
    if exact_cold_start:
        c = SimCluster(profile, workload, initial_replicas=initial, seed=seed, cold_start_s=cold_start_s,
                       scrape_interval_s=0)  # fmt: skip
    else:
        c = SimCluster(with_cold_start(profile, cold_start_s), workload, initial_replicas=initial, seed=seed,
                       scrape_interval_s=0)  # fmt: skip
    state = policy.new_state(spec)
    learned = None  # the per-replica capacity the policy sized with at its last decision, if it says
    period = float(policy.period_s(spec))
    scrape = float(policy.scrape_s)
    end = float(workload.duration_s)
    series = MetricsSeries()
    desired = [(0.0, initial)]
    reasons: dict[str, int] = {}
    carried: list[np.ndarray] = []  # TTFTs taken by a tick's pod count, for the next scrape
    carried_tpot: list[np.ndarray] = []
    missed = 0  # requests finished missing the SLO since the start (with the refused: the scrape's counter)
    ks, kt = 0, 1
    while True:
        ts, tt = ks * scrape, kt * period
        t = min(ts, tt)
        if t > end + 1e-9:
            break
        c.run_until(t)
        o = c.observe()
        f = o.finished_recent_s
        missed += int((~spec.slo.met(f[:, 0], f[:, 1], f[:, 2])).sum())
        if ts <= t + 1e-9:
            ttft = np.concatenate([*carried, o.ttft_recent_s]) if carried else o.ttft_recent_s
            tpot = np.concatenate([*carried_tpot, o.tpot_recent_s]) if carried_tpot else o.tpot_recent_s
            carried, carried_tpot = [], []
            series.add(
                Sample(
                    time_s=t,
                    arrived=float(o.requests_arrived),
                    finished=float(o.requests_finished),
                    prompt_tokens=float(o.prompt_tokens),
                    generation_tokens=float(o.generation_tokens),
                    preemptions=float(o.preemptions),
                    running=float(o.serving_running),
                    waiting=float(o.serving_waiting),
                    kv_usage=float(o.kv_usage_mean) if o.ready else None,
                    ttft_s=np.asarray(ttft, dtype=float),
                    tpot_s=np.asarray(tpot, dtype=float),
                    violated=float(missed + o.rejected),
                )
            )
            ks += 1
        else:
            if len(o.ttft_recent_s):
                carried.append(o.ttft_recent_s)
            if len(o.tpot_recent_s):
                carried_tpot.append(o.tpot_recent_s)
        if tt <= t + 1e-9:
            obs = series.observation(
                t, period, current=int(o.desired), ready=int(o.ready), starting=int(o.starting)
            )
            decision, state = policy.decide(spec, obs, state)
            reasons[decision.bound] = reasons.get(decision.bound, 0) + 1
            if decision.capacity is not None:
                learned = decision.capacity
            if not decision.advisory and decision.replicas != o.desired:
                c.set_replicas(decision.replicas)
                desired.append((t, decision.replicas))
            if on_progress is not None:
                on_progress(t)
            kt += 1
    res = c.finish()
    req = RunMetrics.from_requests(res.ttft_s, res.tpot_s, res.e2e_s, res.rejected, spec.slo)
    metrics = policy_metrics(
        spec, req, res.gpu_seconds, len(res.scale_events), res.preemptions, initial, res.replica_timeline
    )
    met = spec.slo.met(res.ttft_s, res.tpot_s, res.e2e_s, failed=res.rejected)
    metrics |= by_hour(workload.arrival_s, met, spec.slo.attainment)
    metrics["capacity_source"] = policy.capacity_source
    if learned is not None:
        metrics["capacity"] = learned
    if policy.knobs:
        metrics["knobs"] = dict(policy.knobs)
    return PolicyRun(
        name=policy.name,
        metrics=metrics,
        timeline=[(float(a), int(b), int(c_)) for a, b, c_ in res.replica_timeline],
        desired=desired,
        arrival_s=np.asarray(workload.arrival_s),
        ttft_s=np.where(res.rejected, np.inf, res.ttft_s),
        reasons=reasons,
    )


class SimRunner:
    """Simulates clairvoyant schedules and constant pools on one workload, each distinct schedule once."""

    def __init__(
        self,
        profile,
        spec: PoolSpec,
        workload,
        seed: int,
        cold_start_s: float,
        on_run: Callable[[str], None] | None = None,
        exact_cold_start: bool = False,
    ):
        self.profile, self.spec, self.workload = profile, spec, workload
        self.seed, self.cold_start_s = seed, cold_start_s
        self.on_run = on_run
        self.exact_cold_start = exact_cold_start
        self.simulations = 0
        self._cache: dict[tuple, PolicyRun] = {}

    def follow(self, sigma: float, window_s: float) -> tuple[OracleSchedule, int]:
        """The schedule that follows the arrivals of ``window_s`` windows at planning capacity scale ``sigma``."""
        s = self.spec.replace(capacity_scale=sigma)
        initial = first_window_replicas(s, self.workload)
        return oracle_schedule(s, self.workload, self.cold_start_s, initial, window_s), initial

    def scheduled_gpu_hours(self, the_schedule: OracleSchedule) -> float:
        return the_schedule.gpu_seconds_per_gpu * self.spec.gpus_per_replica / 3600.0

    def constant_gpu_hours(self, n: int) -> float:
        return n * self.spec.gpus_per_replica * float(self.workload.duration_s) / 3600.0

    def run_schedule(self, the_schedule: OracleSchedule, initial: int, label: str) -> PolicyRun:
        key = ("schedule", tuple(the_schedule.requested), initial)
        return self._run(key, lambda: oracle_policy(the_schedule), initial, label)

    def run_constant(self, n: int, name: str = "constant") -> PolicyRun:
        """A static pool of ``n`` replicas (exactly the static baselines' run), renamed ``name``."""
        run = self._run(("constant", int(n)), lambda: baselines.static(int(n), name), int(n), f"constant {n}")
        return dataclasses.replace(run, name=name, metrics=dict(run.metrics))

    def _run(self, key: tuple, make_policy, initial: int, label: str) -> PolicyRun:
        hit = self._cache.get(key)
        if hit is None:
            hit = run_policy(
                make_policy(), self.spec, self.profile, self.workload, self.seed, self.cold_start_s, initial,
                exact_cold_start=self.exact_cold_start,
            )  # fmt: skip
            self._cache[key] = hit
            self.simulations += 1
            if self.on_run is not None:
                self.on_run(label)
        return hit


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
