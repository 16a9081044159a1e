"""Replica statistics, as vLLM v1 splits them: the step loop produces stats, loggers consume them.

After every step the replica's step loop builds a :class:`SchedulerStats` (the state it leaves: running,
waiting, KV usage) and an :class:`IterationStats` (what the step did: tokens, first tokens, inter-token gaps,
finished requests, preemptions, how late it was delivered) and hands both to each logger's ``record``. The
:class:`PrometheusStatLogger` turns them into vLLM's metric names on ``/metrics``; :class:`RecentStats` keeps
the recent steps and requests for benchmarks and for tests that compare real time with the discrete-event mode.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)  # fmt: skip
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)


@dataclass(slots=True)
class SchedulerStats:
    """The scheduler's state after a step (or when scraped)."""

    num_running_reqs: int
    num_waiting_reqs: int
    kv_cache_usage: float  # 0..1


@dataclass(slots=True)
class FinishedRequestStats:
    """A request that finished in this step; times on the replica's step clock (seconds)."""

    finish_reason: str  # "stop" | "length"
    arrival: float
    first_token: float
    finish: float
    prompt_tokens: int
    generation_tokens: int

    @property
    def e2e_latency(self) -> float:
        return self.finish - self.arrival

    @property
    def time_per_output_token(self) -> float | None:
        """The request's own mean time per output token after the first (None for a single token), what vLLM's
        ``vllm:request_time_per_output_token_seconds`` observes and what a TPOT target is about."""
        if self.generation_tokens <= 1:
            return None
        return (self.finish - self.first_token) / (self.generation_tokens - 1)


@dataclass(slots=True)
class IterationStats:
    """What one step (or a plan that only preempted) did."""

    end: float  # the step's end on the step clock
    ran_step: bool  # False for a plan that only preempted
    lateness: float  # how late the step end was delivered (0 when it ran on time)
    num_generation_tokens: int = 0
    num_prompt_tokens: int = 0
    num_preempted_reqs: int = 0
    time_to_first_tokens_iter: list[float] = field(default_factory=list)
    inter_token_latencies_iter: list[float] = field(default_factory=list)
    queue_times_iter: list[float] = field(default_factory=list)
    finished_requests: list[FinishedRequestStats] = field(default_factory=list)


class StatLogger(Protocol):
    def record(self, scheduler_stats: SchedulerStats, iteration_stats: IterationStats | None) -> None: ...


class PrometheusStatLogger:
    """vLLM v1's metric names (label ``model_name``) in a registry of their own, for ``/metrics``."""

    def __init__(self, model_name: str):
        self.registry = r = CollectorRegistry()
        lab = ["model_name"]
        m = model_name
        self.model_name = m
        self.running = Gauge(
            "vllm:num_requests_running", "Requests in model execution batches.", lab, registry=r
        ).labels(m)
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting to be processed.", lab, registry=r
        ).labels(m)
        self.kv = Gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", lab, registry=r
        ).labels(m)
        self.preempt = Counter(
            "vllm:num_preemptions", "Cumulative number of preemptions.", lab, registry=r
        ).labels(m)
        self.prompt = Counter("vllm:prompt_tokens", "Prefill tokens processed.", lab, registry=r).labels(m)
        self.gen = Counter("vllm:generation_tokens", "Generation tokens processed.", lab, registry=r).labels(
            m
        )
        self.success = Counter(
            "vllm:request_success", "Successfully processed requests.", lab + ["finished_reason"], registry=r
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", lab, buckets=TTFT_BUCKETS, registry=r
        ).labels(m)
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds", "Inter-token latency.", lab, buckets=ITL_BUCKETS, registry=r
        ).labels(m)
        self.tpot = Histogram(
            "vllm:request_time_per_output_token_seconds",
            "Time per output token of each request (its mean after the first token).",
            lab,
            buckets=ITL_BUCKETS,
            registry=r,
        ).labels(m)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end request latency.", lab, buckets=E2E_BUCKETS,
            registry=r,
        ).labels(m)  # fmt: skip
        self.queue = Histogram(
            "vllm:request_queue_time_seconds", "Time spent waiting.", lab, buckets=E2E_BUCKETS, registry=r
        ).labels(m)
        self.late = Histogram(
            "burstpilot_sim_step_lateness_seconds",
            "How late step ends were delivered against the simulated step clock.",
            lab,
            buckets=LATENESS_BUCKETS,
            registry=r,
        ).labels(m)

    def record(self, scheduler_stats: SchedulerStats, iteration_stats: IterationStats | None) -> None:
        s = scheduler_stats
        self.running.set(s.num_running_reqs)
        self.waiting.set(s.num_waiting_reqs)
        self.kv.set(s.kv_cache_usage)
        it = iteration_stats
        if it is None:
            return
        if it.ran_step:
            self.late.observe(it.lateness)
        if it.num_preempted_reqs:
            self.preempt.inc(it.num_preempted_reqs)
        self.gen.inc(it.num_generation_tokens)
        if it.num_prompt_tokens:
            self.prompt.inc(it.num_prompt_tokens)
        for x in it.time_to_first_tokens_iter:
            self.ttft.observe(x)
        for x in it.queue_times_iter:
            self.queue.observe(x)
        for x in it.inter_token_latencies_iter:
            self.itl.observe(x)
        for f in it.finished_requests:
            self.e2e.observe(f.e2e_latency)
            tpot = f.time_per_output_token
            if tpot is not None:
                self.tpot.observe(tpot)
            self.success.labels(self.model_name, f.finish_reason).inc()


class RecentStats:
    """Counts of steps and tokens since start, the lateness of recent steps and the recent finished requests."""

    def __init__(self, keep_steps: int = 1 << 17, keep_requests: int = 1 << 14):
        self.steps = 0
        self.tokens = 0
        self.lateness: deque[float] = deque(maxlen=keep_steps)
        self.finished: deque[FinishedRequestStats] = deque(maxlen=keep_requests)

    def record(self, scheduler_stats: SchedulerStats, iteration_stats: IterationStats | None) -> None:
        it = iteration_stats
        if it is None:
            return
        if it.ran_step:
            self.steps += 1
            self.lateness.append(it.lateness)
        self.tokens += it.num_generation_tokens
        self.finished.extend(it.finished_requests)
