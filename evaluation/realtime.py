"""Real-time evaluation: the load generator replays the workload against a simulated fleet that the policy scales.

For each policy a ``burstpilot.sim.fleet.Fleet`` (router plus real-time replicas on 127.0.0.1) starts with the
initial replicas; a controller scrapes every replica's ``/metrics`` (vLLM names) each period, as Prometheus
would, turns the counter deltas and gauges into an ``Observation``, runs the policy and rescales the fleet. The
load generator (``burstpilot.loadtest.replay``) sends the workload open-loop to the router and records every
request. GPU-seconds are the replicas the fleet holds (ready, starting or draining) integrated over time.
Several policies run at the same time, each on its own fleet, so they see the same wall-clock time.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from burstpilot.evaluation.harness import plot_bin_s, ttft_p99_bins
from burstpilot.evaluation.runner import PolicyRun, by_hour, policy_metrics
from burstpilot.loadtest import ReplayOptions, replay
from burstpilot.loadtest.records import read_records
from burstpilot.policy.baselines import Policy
from burstpilot.policy.core import Observation
from burstpilot.policy.spec import PoolSpec
from burstpilot.sim.fleet import Fleet, free_port_block
from burstpilot.slo import RunMetrics

COUNTERS = {
    "vllm:request_success_total": "finished",
    "vllm:prompt_tokens_total": "prompt",
    "vllm:generation_tokens_total": "gen",
    "vllm:num_preemptions_total": "preempt",
}
GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv",
}
# histograms read as the operator's default queries read them (burstpilot.operator.prom): the p99 and the count
# over the SLO's target, from the buckets' increase in the tick
HISTOGRAMS = {
    "vllm:time_to_first_token_seconds_bucket": "ttft",
    "vllm:request_time_per_output_token_seconds_bucket": "tpot",
}


def bucket_key(name: str, le: float) -> str:
    return f"{name}@{le!r}"


def buckets(delta: dict[str, float], name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of histogram ``name`` among the summed keys, by bound (+Inf last)."""
    out = [(float(k.split("@", 1)[1]), v) for k, v in delta.items() if k.startswith(name + "@")]
    return sorted(out)


def histogram_quantile(q: float, cum: list[tuple[float, float]]) -> float | None:
    """Prometheus's histogram_quantile on cumulative buckets: linear within the bucket the rank falls in (from 0
    below the first bound); the highest finite bound when it falls in +Inf; None without observations."""
    if not cum or cum[-1][1] <= 0:
        return None
    rank = q * cum[-1][1]
    lo_b, lo_c = 0.0, 0.0
    for b, c in cum:
        if c >= rank:
            if math.isinf(b):
                return lo_b
            return lo_b + (b - lo_b) * ((rank - lo_c) / (c - lo_c) if c > lo_c else 1.0)
        lo_b, lo_c = b, c
    return lo_b


def count_above(target: float, cum: list[tuple[float, float]]) -> float | None:
    """Observations above ``target``: the total less the cumulative count interpolated at the target (the
    operator's sloViolations query, in Python); None without the histogram."""
    if not cum:
        return None
    total = cum[-1][1]
    lo_b, lo_c = 0.0, 0.0
    for b, c in cum:
        if b >= target:
            if math.isinf(b):
                return max(0.0, total - lo_c)
            share = (target - lo_b) / (b - lo_b) if b > lo_b else 1.0
            return max(0.0, total - (lo_c + (c - lo_c) * share))
        lo_b, lo_c = b, c
    return max(0.0, total - lo_c)


def add_increase(delta: dict[str, float], now: dict[str, float], before: dict[str, float]) -> None:
    """Add one replica's increase since its last scrape to ``delta``: the counters ``delta`` names and every
    histogram bucket the replica reports (a counter that went down, a restart, adds nothing)."""
    for key in {*delta, *(k for k in now if "@" in k)}:
        delta[key] = delta.get(key, 0.0) + max(0.0, now.get(key, 0.0) - before.get(key, 0.0))


async def scrape(session: aiohttp.ClientSession, port: int) -> dict[str, float] | None:
    """One replica's vLLM metrics, summed over label sets; None when it does not answer."""
    try:
        async with session.get(
            f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=2)
        ) as r:
            if r.status != 200:
                return None
            text = await r.text()
    except (TimeoutError, aiohttp.ClientError):
        return None
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = COUNTERS.get(s.name) or GAUGES.get(s.name)
            if key is None and s.name in HISTOGRAMS and "le" in s.labels:
                key = bucket_key(HISTOGRAMS[s.name], float(s.labels["le"]))
            if key is not None:
                out[key] = out.get(key, 0.0) + float(s.value)
    return out


@dataclass
class Controller:
    policy: Policy
    spec: PoolSpec
    fleet: Any
    period_s: float
    gpus_per_replica: int
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    desired: list[tuple[float, int]] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    gpu_seconds: float = 0.0
    preemptions: float = 0.0
    scale_events: int = 0

    async def run(self, t0: float) -> None:
        state = self.policy.new_state(self.spec)
        last: dict[int, dict[str, float]] = {}
        prev_inflight = 0.0
        async with aiohttp.ClientSession() as session:
            k = 0
            prev_t = 0.0
            while True:
                k += 1
                await asyncio.sleep(max(0.0, t0 + k * self.period_s - time.monotonic()))
                now = time.monotonic() - t0
                st = self.fleet.state()
                held = len(st["replicas"])
                self.gpu_seconds += held * (now - prev_t) * self.gpus_per_replica
                prev_t = now
                self.timeline.append((now, st["ready"], st["starting"]))
                ports = [m["port"] for m in st["replicas"] if m["ready"]]
                got = await asyncio.gather(*(scrape(session, p) for p in ports))
                delta = {"finished": 0.0, "prompt": 0.0, "gen": 0.0, "preempt": 0.0}
                gauges = {"running": 0.0, "waiting": 0.0}
                kv = []
                for port, m in zip(ports, got, strict=True):
                    if m is None:
                        continue
                    before = last.get(port, {})
                    add_increase(delta, m, before)
                    for key in gauges:
                        gauges[key] += m.get(key, 0.0)
                    kv.append(m.get("kv", 0.0))
                    last[port] = m
                self.preemptions += delta["preempt"]
                inflight = gauges["running"] + gauges["waiting"]
                arrived = max(
                    0.0, delta["finished"] + inflight - prev_inflight
                )  # finished + in-flight growth
                prev_inflight = inflight
                ttft, tpot = buckets(delta, "ttft"), buckets(delta, "tpot")
                missed = [x for x in (count_above(self.spec.slo.ttft_s, ttft), count_above(self.spec.slo.tpot_s, tpot))
                          if x is not None]  # fmt: skip
                scraped = any(m is not None for m in got)
                obs = Observation(
                    time_s=now,
                    requests=arrived,
                    completed=delta["finished"] if scraped else None,
                    preemptions=delta["preempt"] if scraped else None,
                    ttft_p99_s=histogram_quantile(0.99, ttft),
                    tpot_p99_s=histogram_quantile(0.99, tpot),
                    # the larger of the two counts, as the operator's default query (a request late on both
                    # counts once)
                    slo_violations=max(missed) if missed else None,
                    prompt_tokens=delta["prompt"],
                    generation_tokens=delta["gen"],
                    waiting=gauges["waiting"],
                    running=gauges["running"],
                    kv_usage=float(np.mean(kv)) if kv else None,
                    current=int(st["desired"]),
                    ready=int(st["ready"]),
                    starting=int(st["starting"]),
                    metrics_age_s=0.0 if any(m is not None for m in got) else None,
                    window_s=self.period_s,
                )
                decision, state = self.policy.decide(self.spec, obs, state)
                self.reasons[decision.bound] = self.reasons.get(decision.bound, 0) + 1
                if not decision.advisory and decision.replicas != st["desired"]:
                    await self.fleet.scale(int(decision.replicas))
                    self.scale_events += 1
                    self.desired.append((now, int(decision.replicas)))


async def run_realtime_policy(
    policy: Policy,
    spec: PoolSpec,
    profile,
    workload,
    cold_start_s: float,
    initial: int,
    out_dir: Path,
    seed: int = 0,
) -> PolicyRun:
    """One policy scaling a real-time simulated fleet while the load generator replays the workload."""
    port = free_port_block(spec.max_replicas + 2)
    # The initial replicas are up before the replay starts (as in the discrete-event mode); later ones start cold.
    fleet = Fleet(profile, port, cold_start_s=0.0, seed=seed, max_replicas=spec.max_replicas)
    await fleet.start(initial)
    fleet.cold_start_s = cold_start_s
    while fleet.state()["ready"] < initial:
        await asyncio.sleep(0.05)
    period = float(policy.period_s(spec))
    ctl = Controller(policy, spec, fleet, period, profile.gpus_per_replica)
    ctl.timeline.append((0.0, initial, 0))
    ctl.desired.append((0.0, initial))
    t0 = time.monotonic()
    task = asyncio.get_running_loop().create_task(ctl.run(t0))
    try:
        opts = ReplayOptions(slo=spec.slo, plot=False, progress=False, grace_s=30.0)
        await replay(workload, [f"http://127.0.0.1:{port}"], out_dir, opts)
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        end = time.monotonic() - t0
        last_t = ctl.timeline[-1][0]
        ctl.gpu_seconds += len(fleet.state()["replicas"]) * max(0.0, end - last_t) * profile.gpus_per_replica
        await fleet.close()
    records = read_records(out_dir)

    def col(name: str) -> np.ndarray:
        return np.array([np.nan if r.get(name) is None else r[name] for r in records], dtype=float)

    ttft, err = col("ttft_s"), np.array([bool(r.get("error")) for r in records], dtype=bool)
    req = RunMetrics.from_requests(ttft, col("tpot_s"), col("e2e_s"), err, spec.slo, col("itl_max_s"))
    metrics = policy_metrics(
        spec, req, ctl.gpu_seconds, ctl.scale_events, int(ctl.preemptions), initial, ctl.timeline
    )
    metrics["capacity_source"] = "measured" if spec.capacity_scale != 1.0 else policy.capacity_source
    arrival = np.array([r.get("scheduled_s", 0.0) for r in records], dtype=float)
    met = spec.slo.met(ttft, col("tpot_s"), col("e2e_s"), col("itl_max_s"), err)
    metrics |= by_hour(arrival, met, spec.slo.attainment)
    lag = np.array([r.get("dispatch_lag_s") or 0.0 for r in records], dtype=float)
    # How late the load generator sent requests: a machine too busy to keep the real-time clock shows here,
    # and inflates every latency of the run.
    metrics["dispatch_lag_p99_s"] = float(np.quantile(lag, 0.99)) if len(lag) else None
    return PolicyRun(
        name=policy.name,
        metrics=metrics,
        timeline=ctl.timeline,
        desired=ctl.desired,
        arrival_s=arrival,
        ttft_s=np.where(err, np.inf, ttft),
        reasons=ctl.reasons,
    )


async def run_realtime(
    policies,
    spec,
    profile,
    workload,
    cold_start_s,
    initial,
    out_dir: Path,
    seed: int = 0,
    heartbeat_s: float = 0.0,
):
    """Every policy at once, each on its own fleet; a line every ``heartbeat_s`` seconds (0: none)."""

    async def beat() -> None:
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(heartbeat_s)
            el, dur = time.monotonic() - t0, float(workload.duration_s)
            # past the workload's end the last requests finish (the replay's grace period)
            where = f"{el:.0f} of {dur:.0f} s" if el <= dur else f"{dur:.0f} s sent, last requests finishing"
            print(f"real-time replay: {where}", flush=True)

    ticker = asyncio.get_running_loop().create_task(beat()) if heartbeat_s > 0 else None
    try:
        return await asyncio.gather(
            *(
                run_realtime_policy(p, spec, profile, workload, cold_start_s, initial, out_dir / p.name, seed)
                for p in policies
            )
        )
    finally:
        if ticker is not None:
            ticker.cancel()


def realtime_results(runs, spec: PoolSpec, case, workload, initial: int, wall_s: float) -> dict[str, Any]:
    """results.json of a real-time run: the same record as a discrete-event run's (no oracle)."""
    bin_s = min(plot_bin_s(float(workload.duration_s)), 10.0)
    n_bins = max(1, int(np.ceil(float(workload.duration_s) / bin_s)))
    arr = np.asarray(workload.arrival_s)
    rate = np.bincount(np.minimum((arr // bin_s).astype(int), n_bins - 1), minlength=n_bins) / bin_s
    meta = {
        **case.meta,
        "case": case.name,
        "label": case.label,
        "mode": "realtime",
        "profile": case.profile.name,
        "gpus_per_replica": spec.gpus_per_replica,
        "min_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
        "cold_start_s": case.cold_start_s,
        "cold_start_draws": "exact",
        "slo": {"ttft_s": spec.slo.ttft_s, "tpot_s": spec.slo.tpot_s, "attainment": spec.slo.attainment},
        "requests": len(workload),
        "duration_s": float(workload.duration_s),
        "initial_replicas": initial,
        "capacity": {
            "source": "measured" if spec.capacity_scale != 1.0 else "profile",
            "capacity_scale": spec.capacity_scale,
        },  # fmt: skip
        "wall_s": wall_s,
        "plot": {"bin_s": bin_s, "rate": [float(x) for x in rate], "timeline": {}, "ttft_p99": {}},
    }
    policies = {}
    for r in runs:
        policies[r.name] = r.metrics
        meta["plot"]["timeline"][r.name] = [list(x) for x in r.timeline]
        meta["plot"]["ttft_p99"][r.name] = ttft_p99_bins(r, bin_s, n_bins)
    return {"meta": meta, "policies": policies}
