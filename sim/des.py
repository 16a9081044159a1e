"""Discrete-event mode: the engine on a virtual clock across a pool of replicas.

Replicas present at the start are ready at time 0. New replicas (``set_replicas``) are ready after a cold start
drawn from the profile (or ``cold_start_s``). Each arriving request goes to the ready, non-draining replica with
the fewest outstanding requests (ties to the lowest index); with no ready replica it is rejected. A replica runs
its engine step after step; between events the decoding batch is unchanged, so a run of decode steps is computed
at once and cut short when a request arrives at that replica (the arrival joins at the next step boundary, as in
real time).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.sim.engine import Engine, Plan
from burstpilot.sim.profile import Profile, load_profile
from burstpilot.slo import SLO, RunMetrics

_STEP, _READY, _SCRAPE = range(3)  # event kinds; at equal times in this order


def _outstanding(r) -> int:
    return r.outstanding


SERIES_FIELDS = (
    "num_requests_running",
    "num_requests_waiting",
    "kv_cache_usage_perc",
    "num_preemptions_total",
    "prompt_tokens_total",
    "generation_tokens_total",
    "request_success_total",
)


@dataclass
class ClusterObservation:
    time_s: float
    ready: int
    starting: int
    desired: int
    requests_arrived: int
    requests_finished: int
    prompt_tokens: int
    generation_tokens: int
    preemptions: int
    rejected: int
    running: int
    waiting: int
    kv_usage_mean: float
    kv_usage_max: float
    ttft_recent_s: np.ndarray
    # over the serving replicas only (ready, not draining): what a scrape of the pool's live pods reports
    serving_running: int = 0
    serving_waiting: int = 0
    # TPOTs of the requests that finished since the previous observe() (the TPOT histogram's new observations)
    tpot_recent_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    # the TTFT, TPOT (NaN: one output token) and end-to-end latency of each request finished since the previous
    # observe(), one row per request: what an SLO count (a histogram query on a real cluster) reads
    finished_recent_s: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))


@dataclass
class SimResult:
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    e2e_s: np.ndarray
    itl_p99_s: np.ndarray
    queue_s: np.ndarray
    preempted: np.ndarray
    rejected: np.ndarray
    replica: np.ndarray
    gpu_seconds: float
    scale_events: list
    replica_timeline: list
    preemptions: int
    end_time_s: float
    metric_series: dict[int, dict[str, Any]] = field(default_factory=dict)

    def run_metrics(self, slo: SLO | None = None) -> RunMetrics:
        """The requests of the run in the shared record (burstpilot.slo); rejected requests count as failed."""
        return RunMetrics.from_requests(self.ttft_s, self.tpot_s, self.e2e_s, self.rejected, slo)

    def summary(self, slo: SLO | None = None) -> dict[str, Any]:
        """Pool-level figures of the run (quantiles over answered requests; None where there are none)."""
        m = self.run_metrics(slo)
        ok = ~self.rejected & ~np.isnan(self.e2e_s)
        itl = self.itl_p99_s[ok & ~np.isnan(self.itl_p99_s)]
        out = {
            "requests": m.requests,
            "completed": m.completed,
            "rejected": int(self.rejected.sum()),
            "preemptions": int(self.preemptions),
            "preempted_requests": int((self.preempted > 0).sum()),
            "ttft_p50_s": m.ttft.p(50),
            "ttft_p99_s": m.ttft.p(99),
            "tpot_p50_s": m.tpot.p(50),
            "tpot_p99_s": m.tpot.p(99),
            "e2e_p99_s": m.e2e.p(99),
            "itl_p99_p99_s": float(np.percentile(itl, 99)) if itl.size else None,
            "gpu_seconds": float(self.gpu_seconds),
        }
        if slo is not None:
            out["slo_attainment"] = m.slo_attainment
        return out


class _Replica:
    __slots__ = (
        "idx",
        "engine",
        "created",
        "ready_at",
        "left_at",
        "draining",
        "outstanding",
        "plan",
        "version",
        "series",
    )

    def __init__(self, idx: int, profile: Profile, created: float, ready_at: float):
        self.idx = idx
        self.engine = Engine(profile, record_steps=True)
        self.created = created
        self.ready_at = ready_at
        self.left_at: float | None = None
        self.draining = False
        self.outstanding = 0
        self.plan: Plan | None = None
        self.version = 0
        self.series: dict[str, list] = {"time_s": []} | {k: [] for k in SERIES_FIELDS}


def _workload_arrays(workload) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        arr = np.asarray(workload.arrival_s, dtype=np.float64)
        req = np.asarray(workload.request_tokens, dtype=np.int64)
        resp = np.asarray(workload.response_tokens, dtype=np.int64)
    except AttributeError as exc:
        raise BurstpilotError(f"workload: needs arrival_s, request_tokens, response_tokens ({exc})") from exc
    if not (len(arr) == len(req) == len(resp)):
        raise BurstpilotError("workload: arrival_s, request_tokens and response_tokens differ in length")
    if len(arr) > 1 and np.any(np.diff(arr) < 0):
        raise BurstpilotError("workload: arrival_s must be sorted ascending")
    return arr, np.maximum(req, 1), np.maximum(resp, 1)


class SimCluster:
    """A pool of simulated replicas on a virtual clock, driven by a workload (a Trace or alike)."""

    def __init__(
        self,
        profile: Profile | str,
        workload,
        initial_replicas: int = 1,
        seed: int = 0,
        cold_start_s: float | None = None,
        scrape_interval_s: float = 5.0,
    ):
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self.arrival, self.prompt, self.output = _workload_arrays(workload)
        self.n = len(self.arrival)
        # Python lists for the event loop: indexing them is several times faster than numpy scalars
        self._arrival_list = self.arrival.tolist()
        self._prompt_list = self.prompt.tolist()
        self._output_list = self.output.tolist()
        self.rng = np.random.default_rng(seed)
        self.cold_start_s = cold_start_s
        self.scrape_interval_s = scrape_interval_s
        self.now = 0.0
        self.next_req = 0
        self.heap: list = []
        self.counter = 0
        self.replicas: list[_Replica] = []
        self.live: list[_Replica] = []  # not yet left
        self.desired = 0
        self.scale_events: list = []
        self.replica_timeline: list = []
        n = self.n
        # per request, as Python lists while running (element access is the event loop's), arrays at the end
        nan = math.nan
        self.ttft = [nan] * n
        self.e2e = [nan] * n
        self.tpot = [nan] * n
        self.itl_p99 = [nan] * n
        self.queue = [nan] * n
        self.preempted = [0] * n
        self.rejected = [False] * n
        self.replica_of = [-1] * n
        self.finished = 0
        self.rejected_count = 0
        self._ttft_recent: list[float] = []
        self._tpot_recent: list[float] = []
        self._done_recent: list[tuple[float, float, float]] = []  # (TTFT, TPOT, e2e) finished since observe()
        self._retired = {"prompt": 0, "gen": 0, "preempt": 0}
        self._routable: list[_Replica] | None = None
        self._routable_until = math.inf
        for _ in range(max(0, int(initial_replicas))):
            self._add_replica(ready_at=0.0)
        self.desired = len(self.live)
        self._timeline()
        if scrape_interval_s and scrape_interval_s > 0:
            self._push(0.0, _SCRAPE, -1, 0)

    # ---------------------------------------------------------------- bookkeeping
    def _push(self, t: float, kind: int, ridx: int, version: int) -> None:
        self.counter += 1
        heapq.heappush(self.heap, (t, kind, self.counter, ridx, version))

    def _timeline(self) -> None:
        ready = sum(1 for r in self.live if r.ready_at <= self.now and not r.draining)
        starting = sum(1 for r in self.live if r.ready_at > self.now)
        if not self.replica_timeline or self.replica_timeline[-1][1:] != (ready, starting):
            self.replica_timeline.append((self.now, ready, starting))

    def _add_replica(self, ready_at: float) -> None:
        self._routable = None
        r = _Replica(len(self.replicas), self.profile, self.now, ready_at)
        self.replicas.append(r)
        self.live.append(r)
        if ready_at > self.now:
            self._push(ready_at, _READY, r.idx, 0)

    def _leave(self, r: _Replica) -> None:
        self._routable = None
        r.left_at = self.now
        self._retired["prompt"] += r.engine.prompt_tokens
        self._retired["gen"] += r.engine.generation_tokens
        self._retired["preempt"] += r.engine.preemptions
        self.live.remove(r)
        self._timeline()

    # ---------------------------------------------------------------- control
    def set_replicas(self, n: int) -> None:
        """Scale to n replicas: new ones start cold; removed ones drain, starting ones go first."""
        n = max(0, int(n))
        active = [r for r in self.live if not r.draining]
        if n != self.desired:
            self.scale_events.append((self.now, self.desired, n))
        self.desired = n
        if n > len(active):
            for _ in range(n - len(active)):
                cs = (
                    self.cold_start_s
                    if self.cold_start_s is not None
                    else self.profile.sample_cold_start(self.rng)
                )
                self._add_replica(self.now + max(0.0, float(cs)))
        elif n < len(active):
            drop = len(active) - n
            starting = sorted((r for r in active if r.ready_at > self.now), key=lambda r: -r.idx)
            for r in starting[:drop]:
                r.draining = True
                self._leave(r)
            drop -= min(drop, len(starting))
            ready = sorted(
                (r for r in active if r.ready_at <= self.now), key=lambda r: (r.outstanding, -r.idx)
            )
            for r in ready[:drop]:
                self._routable = None
                r.draining = True
                if r.plan is None and not r.engine.has_work():
                    self._leave(r)
        self._timeline()

    def run_until(self, t: float) -> None:
        """Advance the virtual clock to ``t`` seconds, processing every event up to it."""
        self._run(float(t))
        self.now = max(self.now, float(t))

    def observe(self) -> ClusterObservation:
        t = self.now
        ready = [r for r in self.live if r.ready_at <= t and not r.draining]
        kv = [r.engine.kv_usage for r in ready] or [0.0]
        recent = np.array(self._ttft_recent)
        self._ttft_recent = []
        tpots = np.array(self._tpot_recent)
        self._tpot_recent = []
        done = np.array(self._done_recent, dtype=float).reshape(-1, 3)
        self._done_recent = []
        return ClusterObservation(
            time_s=t,
            ready=len(ready),
            starting=sum(1 for r in self.live if r.ready_at > t),
            desired=self.desired,
            requests_arrived=self.next_req,
            requests_finished=self.finished,
            prompt_tokens=self._retired["prompt"] + sum(r.engine.prompt_tokens for r in self.live),
            generation_tokens=self._retired["gen"] + sum(self._gen_tokens(r, t) for r in self.live),
            preemptions=self._retired["preempt"] + sum(r.engine.preemptions for r in self.live),
            rejected=self.rejected_count,
            running=sum(r.engine.num_running for r in self.live),
            waiting=sum(r.engine.num_waiting for r in self.live),
            kv_usage_mean=float(np.mean(kv)),
            kv_usage_max=float(np.max(kv)),
            ttft_recent_s=recent,
            serving_running=sum(r.engine.num_running for r in ready),
            serving_waiting=sum(r.engine.num_waiting for r in ready),
            tpot_recent_s=tpots,
            finished_recent_s=done,
        )

    def finish(self) -> SimResult:
        """Run to the end of the workload (every request answered) and return the result."""
        self._run(math.inf, stop_when_done=True)
        end = max(self.now, float(self.arrival[-1]) if self.n else 0.0)
        self.now = end
        gpu = 0.0
        for r in self.replicas:
            gpu += ((r.left_at if r.left_at is not None else end) - r.created) * self.profile.gpus_per_replica
        series = {
            r.idx: {k: np.asarray(v) for k, v in r.series.items()}
            for r in self.replicas
            if r.series["time_s"]
        }
        return SimResult(
            ttft_s=np.array(self.ttft, dtype=np.float64),
            tpot_s=np.array(self.tpot, dtype=np.float64),
            e2e_s=np.array(self.e2e, dtype=np.float64),
            itl_p99_s=np.array(self.itl_p99, dtype=np.float64),
            queue_s=np.array(self.queue, dtype=np.float64),
            preempted=np.array(self.preempted, dtype=np.int64),
            rejected=np.array(self.rejected, dtype=bool),
            replica=np.array(self.replica_of, dtype=np.int64),
            gpu_seconds=gpu,
            scale_events=list(self.scale_events),
            replica_timeline=list(self.replica_timeline),
            preemptions=sum(r.engine.preemptions for r in self.replicas),
            end_time_s=end,
            metric_series=series,
        )

    # ---------------------------------------------------------------- the event loop
    def _gen_tokens(self, r: _Replica, t: float) -> int:
        g = r.engine.generation_tokens
        p = r.plan
        if p is not None and p.batch and p.max_steps > 1 and t > p.start:
            k = p.steps_to_reach(t)
            if p.end_after(k) > t:
                k -= 1
            g += p.batch * max(0, k)
        return g

    def _idle(self) -> bool:
        return self.next_req >= self.n and all(r.plan is None for r in self.live)

    def _run(self, t_end: float, stop_when_done: bool = False) -> None:
        heap = self.heap
        arrival = self._arrival_list
        n = self.n
        while True:
            ta = arrival[self.next_req] if self.next_req < n else math.inf
            th = heap[0][0] if heap else math.inf
            if stop_when_done and ta == math.inf and self._idle():
                return
            if ta <= th:
                if ta > t_end:
                    return
                self.now = ta
                self._arrive(self.next_req)
                self.next_req += 1
                continue
            if th > t_end:
                return
            t, kind, _, ridx, version = heapq.heappop(heap)
            self.now = t
            if kind == _STEP:
                r = self.replicas[ridx]
                if version == r.version and r.plan is not None:
                    self._step_end(r)
            elif kind == _READY:
                r = self.replicas[ridx]
                if r.left_at is None:
                    self._timeline()
            else:
                self._scrape()
                if not (stop_when_done and ta == math.inf and self._idle()):
                    self._push(t + self.scrape_interval_s, _SCRAPE, -1, 0)

    def _routable_now(self) -> list[_Replica]:
        """The ready, non-draining replicas in index order (cached until a replica's state can change)."""
        t = self.now
        if self._routable is None or t >= self._routable_until:
            self._routable = [r for r in self.live if not r.draining and r.ready_at <= t]
            self._routable_until = min((r.ready_at for r in self.live if r.ready_at > t), default=math.inf)
        return self._routable

    def _arrive(self, i: int) -> None:
        t = self.now
        routable = self._routable_now()
        # the fewest outstanding requests, ties to the lowest index (min keeps the first of equals)
        best = min(routable, key=_outstanding) if routable else None
        prompt, out = self._prompt_list[i], self._output_list[i]
        if best is None or not best.engine.fits(prompt, out):
            self.rejected[i] = True
            self.rejected_count += 1
            return
        self.replica_of[i] = best.idx
        best.outstanding += 1
        best.engine.add(prompt, out, t, tag=i)
        p = best.plan
        if p is None:
            self._start(best)
        elif p.max_steps > 1:
            k = p.steps_to_reach(t)
            if k < p.max_steps:
                p.max_steps = k
                best.version += 1
                self._push(p.end_after(k), _STEP, best.idx, best.version)

    def _start(self, r: _Replica) -> None:
        p = r.engine.plan(self.now)
        while p is not None and p.max_steps == 0:  # only a preemption happened
            self._note_preempted(p.preempted)
            r.engine.commit(p)
            p = r.engine.plan(self.now)
        r.plan = p
        if p is None:
            if r.draining:
                self._leave(r)
            return
        self._note_preempted(p.preempted)
        r.version += 1
        self._push(p.end_after(p.max_steps), _STEP, r.idx, r.version)

    def _note_preempted(self, seqs) -> None:
        for s in seqs:
            self.preempted[s.tag] += 1

    def _step_end(self, r: _Replica) -> None:
        p = r.plan
        out = r.engine.commit(p, p.max_steps)
        for s in out.first:
            if math.isnan(self.ttft[s.tag]):
                self.ttft[s.tag] = s.first_token_time - s.arrival
                self.queue[s.tag] = s.scheduled_time - s.arrival
                self._ttft_recent.append(self.ttft[s.tag])
        for s in out.finished:
            i = s.tag
            self.e2e[i] = s.finish_time - s.arrival
            if s.max_tokens > 1:
                self.tpot[i] = (s.finish_time - s.first_token_time) / (s.max_tokens - 1)
                self._tpot_recent.append(self.tpot[i])
                gaps = r.engine.gaps(s)
                n = len(gaps)
                if n:
                    rank = max(1, math.ceil(0.99 * n))
                    # nearest rank; below 100 gaps that is the largest
                    self.itl_p99[i] = float(
                        gaps.max() if rank == n else np.partition(gaps, rank - 1)[rank - 1]
                    )
            self._done_recent.append((float(self.ttft[i]), float(self.tpot[i]), float(self.e2e[i])))
            r.outstanding -= 1
            self.finished += 1
        r.plan = None
        self._start(r)

    def _scrape(self) -> None:
        t = self.now
        for r in self.live:
            if r.ready_at > t:
                continue
            e = r.engine
            s = r.series
            s["time_s"].append(t)
            s["num_requests_running"].append(e.num_running)
            s["num_requests_waiting"].append(e.num_waiting)
            s["kv_cache_usage_perc"].append(e.kv_usage)
            s["num_preemptions_total"].append(e.preemptions)
            s["prompt_tokens_total"].append(e.prompt_tokens)
            s["generation_tokens_total"].append(self._gen_tokens(r, t))
            s["request_success_total"].append(e.finished)


def simulate(workload, profile: Profile | str, replicas: int = 4, seed: int = 0, **kw) -> SimResult:
    """Run a workload through a fixed pool of ready replicas."""
    return SimCluster(profile, workload, initial_replicas=replicas, seed=seed, **kw).finish()
