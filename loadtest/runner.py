"""Open-loop replay: each request leaves at its scheduled time, whatever the server does.

The send loop sleeps until the absolute deadline ``t0 + scheduled_s`` of the next request (never a
sum of sleeps), starts every request that is due, and goes back to sleep; a request never waits for
another one unless ``max_concurrency`` is set. ``workers > 1`` runs the same loop in K processes,
each on every K-th request of the schedule and on one shared clock origin. A closed loop
(``concurrency``) keeps N requests in flight instead, each sent as soon as one finishes.

Before the clock starts: the targets are waited for until they are ready (``wait_ready_s``), asked for their
model, sent the warm-up requests (not recorded), and the connection pools are opened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import aiohttp
import numpy as np
import orjson

from burstpilot.errors import BurstpilotError
from burstpilot.progress import Reporter
from burstpilot.slo import SLO

from . import export, servermetrics
from . import records as rec_io
from .client import PromptBuilder, Timeouts, base_url, endpoint_url, request_body, send
from .metrics import summarize
from .plot import plot_latency
from .protocol import READ_BUFSIZE
from .report import REPORT_MD, write_report
from .schedule import Schedule, build_schedule

RUN_META = "run.json"
SUMMARY = "summary.json"
PLOT = "latency.png"
REPORT_HTML = "report.html"


@dataclass
class ReplayOptions:
    api: str = "completions"  # or "chat"
    model: str | None = None  # None: the first model the first target lists, else "burstpilot"
    stream: bool = True
    tokenizer: str | None = None  # local Hugging Face tokenizer directory for exact-length prompts
    include_failed: bool = False
    duration_s: float | None = None  # send only the requests scheduled in the first duration_s seconds
    limit: int | None = None  # send only the first limit requests
    request_rate: float | None = None  # generated arrivals at this rate instead of the trace's times
    burstiness: float = 1.0  # Gamma shape of the generated gaps (1: Poisson)
    seed: int = 0  # of the generated arrivals
    concurrency: int | None = None  # a closed loop with this many requests in flight
    max_concurrency: int | None = None  # open loop, but never more than this many in flight
    warmup: int = 0  # requests sent before the clock starts, not recorded
    balance: str = "round-robin"  # or "least-outstanding"
    timeouts: Timeouts = field(default_factory=Timeouts)
    slo: SLO | None = None
    shard: tuple[int, int] = (0, 1)
    workers: int = 1
    grace_s: float = 10.0
    resume: bool = False
    wait_ready_s: float = 600.0  # wait this long for the targets to be ready (0: check once, do not wait)
    api_key: str | None = None  # sent as "Authorization: Bearer KEY"
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request (override the key's)
    extra_body: dict | None = None  # merged into every request body
    server_metrics: list[str] | None = None  # URLs or file-SD files to scrape (None: each target's /metrics)
    server_metrics_interval_s: float = 1.0
    percentiles: tuple[float, ...] = export.DEFAULT_PERCENTILES  # of the vllm-bench.json latencies
    progress: bool = False
    progress_interval_s: float = 10.0  # off a terminal: one plain progress line this often
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    plot: bool = True
    report: bool = True
    flush_s: float = 0.5

    @property
    def mode(self) -> str:
        return "concurrency" if self.concurrency else "rate" if self.request_rate else "trace"

    def request_headers(self) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return h | dict(self.headers)

    def public(self) -> dict:
        """The options as run.json records them: secrets (the key, header values) never written."""
        d = {k: v for k, v in asdict(self).items() if k not in ("timeouts", "api_key", "headers", "slo")}
        d["timeouts"] = asdict(self.timeouts)
        d["slo"] = None if self.slo is None else self.slo.to_dict()
        d["api_key"] = "(set)" if self.api_key else None
        d["headers"] = {k: "(set)" for k in self.headers}
        return d


def say(msg: str) -> None:
    """A status line on stderr, flushed at once (a terminal, a pipe or `kubectl logs` alike)."""
    print(f"burstpilot replay: {msg}", file=sys.stderr, flush=True)


class Stats:
    """Live counters of one send loop, taken by the parent's progress display and exporter."""

    def __init__(self) -> None:
        self.sent = 0
        self.inflight = 0
        # (error, ttft, tpot, e2e, itl_max, dispatch lag, output tokens) of each request finished since `take`
        self.finished: list[tuple] = []

    def take(self) -> tuple[int, int, list[tuple]]:
        finished, self.finished = self.finished, []
        return self.sent, self.inflight, finished


# ---------------------------------------------------------------------------------------------
# the send loop (one per process)


def _connector(limit: int | None) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(
        limit=limit or 0,
        limit_per_host=0,
        ttl_dns_cache=None,
        keepalive_timeout=60,
        enable_cleanup_closed=False,
    )


def _session(options: ReplayOptions) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=_connector(options.max_concurrency or options.concurrency),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=options.timeouts.connect_s),
        headers=options.request_headers(),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        read_bufsize=READ_BUFSIZE,
    )


class Sender:
    """The send loop of one process: ``prepare`` (before the clock), then ``run(t0)``, then ``close``."""

    def __init__(self, sched, targets, options, model, writer, stats, stop, shard_label, worker):
        self.sched, self.targets, self.options, self.model = sched, targets, options, model
        self.writer, self.stats, self.stop = writer, stats, stop
        self.shard_label, self.worker = shard_label, worker
        self.prompts = PromptBuilder(options.tokenizer)
        self.urls = [endpoint_url(t, options.api) for t in targets]
        self.outstanding = [0] * len(targets)
        self.sem = asyncio.Semaphore(options.max_concurrency) if options.max_concurrency else None
        self.tasks: set[asyncio.Task] = set()
        self.session: aiohttp.ClientSession | None = None
        self._rr = 0
        self._gc_threshold = gc.get_threshold()

    async def prepare(self, warm_connections: int = 4) -> None:
        """Open the connection pool (a few keep-alive connections per target), then freeze the heap.

        Everything slow happens here, before the clock origin is chosen: lazy imports, first
        connections, a full garbage collection. While sending, the young generations are collected
        less often, so a collection cannot stall the loop for milliseconds.
        """
        self.session = _session(self.options)
        models = [base_url(t) + "/v1/models" for t in self.targets]

        async def touch(url: str) -> None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    await resp.read()

        await asyncio.gather(*(touch(u) for u in models for _ in range(warm_connections)))
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 1000)

    async def close(self) -> None:
        gc.set_threshold(*self._gc_threshold)
        gc.unfreeze()
        if self.session is not None:
            await self.session.close()

    def _pick(self) -> int:
        n = len(self.targets)
        if self.options.balance == "least-outstanding":
            rr = self._rr
            k = min(range(n), key=lambda x: (self.outstanding[x], (x - rr) % n))
        else:
            k = self._rr
        self._rr = (k + 1) % n
        self.outstanding[k] += 1
        return k

    async def _one(self, j: int, k: int, t0: float, scheduled_s: float | None = None) -> None:
        sched, stats = self.sched, self.stats
        p_tokens = int(sched.prompt_tokens[j])
        o_tokens = int(sched.output_tokens[j])
        rec = {
            "index": int(sched.index[j]),
            "row": int(sched.row[j]),
            "shard": self.shard_label,
            "worker": self.worker,
            "target": self.targets[k],
            "scheduled_s": float(sched.scheduled_s[j]) if scheduled_s is None else scheduled_s,
            "sent_s": None,
            "dispatch_lag_s": None,
            "ttft_s": None,
            "e2e_s": None,
            "tpot_s": None,
            "chunks": 0,
            "prompt_tokens": p_tokens,
            "output_tokens": 0,
            "expected_prompt_tokens": p_tokens,
            "expected_output_tokens": o_tokens,
            "usage_reported": False,
            "status": 0,
            "error": "",
            "error_detail": "",
        }
        opts = self.options
        body = request_body(
            opts.api,
            self.model,
            self.prompts.prompt(p_tokens),
            p_tokens,
            o_tokens,
            opts.stream,
            opts.extra_body,
        )
        stats.inflight += 1
        try:
            if self.sem is None:
                stats.sent += 1
                await send(self.session, self.urls[k], body, rec, opts.timeouts, t0)
            else:
                async with self.sem:
                    stats.sent += 1
                    await send(self.session, self.urls[k], body, rec, opts.timeouts, t0)
        finally:
            stats.inflight -= 1
            self.outstanding[k] -= 1
            if rec["sent_s"] is not None:
                stats.finished.append(
                    (rec["error"], rec["ttft_s"], rec["tpot_s"], rec["e2e_s"], rec.get("itl_max_s"),
                     rec["dispatch_lag_s"], rec["output_tokens"])
                )  # fmt: skip
                self.writer.add(rec)

    async def run(self, t0: float) -> int:
        """Send the schedule (perf_counter clock origin ``t0``); after a stop, wait out the grace period and
        cancel what is left. Returns the number of requests started."""
        if self.options.concurrency:
            return await self._run_closed(t0, self.options.concurrency)
        times = self.sched.scheduled_s
        n = len(self.sched)
        tasks, stop = self.tasks, self.stop
        i = 0
        while i < n and not stop.is_set():
            now = time.perf_counter() - t0
            due = times[i]
            if due > now + 2e-4:
                await asyncio.sleep(min(due - now, 0.2))
                continue
            while i < n and times[i] <= now + 2e-4:
                t = asyncio.create_task(self._one(i, self._pick(), t0))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                i += 1
        if stop.is_set() and tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=self.options.grace_s)
            for t in pending:
                t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return i

    async def _run_closed(self, t0: float, concurrency: int) -> int:
        """A closed loop: ``concurrency`` users, each sending its next request when its last one ended, until the
        schedule is used up, ``duration_s`` has passed or the run is stopped."""
        positions = iter(range(len(self.sched)))
        started = 0
        duration = self.options.duration_s

        async def user() -> None:
            nonlocal started
            for j in positions:
                now = time.perf_counter() - t0
                if self.stop.is_set() or (duration is not None and now >= duration):
                    return
                started += 1
                await self._one(j, self._pick(), t0, scheduled_s=now)

        users = [asyncio.create_task(user()) for _ in range(concurrency)]
        everyone = asyncio.gather(*users, return_exceptions=True)
        stopped = asyncio.create_task(self.stop.wait())
        await asyncio.wait({everyone, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not everyone.done():
            _, pending = await asyncio.wait(users, timeout=self.options.grace_s)
            for u in pending:
                u.cancel()
            await everyone
        stopped.cancel()
        return started


# ---------------------------------------------------------------------------------------------
# before the clock starts: ready, model, warm-up


async def _probe(session: aiohttp.ClientSession, target: str, paths: list[str]) -> tuple[bool, str]:
    """(ready, what the target said) from ``GET /health`` (a server without one: ``GET /v1/models``)."""
    try:
        async with session.get(base_url(target) + paths[0]) as resp:
            if resp.status == 200:
                return True, "ready"
            text = (await resp.content.read(200)).decode("utf-8", "replace").strip()
            if resp.status in (401, 403):
                raise BurstpilotError(
                    f"--target {target}: GET {paths[0]} answered HTTP {resp.status} ({text[:80]}); "
                    "check --api-key / --header; nothing was sent"
                )
            if resp.status in (404, 405, 501) and len(paths) > 1:
                paths.pop(0)  # no /health on this server: its model list says when it answers
                return await _probe(session, target, paths)
            return False, f"GET {paths[0]}: HTTP {resp.status}" + (f" {text[:80]}" if text else "")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return False, f"cannot connect ({type(exc).__name__}: {str(exc)[:120]})"


def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


async def wait_ready(targets: list[str], options: ReplayOptions) -> float:
    """Wait until every target answers ready, saying what it waits for every 10 s; returns the seconds waited.
    With ``wait_ready_s`` 0 each target is checked once and one that does not answer stops the run."""
    t_start = time.monotonic()
    deadline = t_start + max(options.wait_ready_s, 0.0)
    timeout = aiohttp.ClientTimeout(total=max(options.timeouts.connect_s, 1.0) * 2)
    async with aiohttp.ClientSession(timeout=timeout, headers=options.request_headers()) as session:
        for t in targets:
            paths = ["/health", "/v1/models"]
            announced = False
            next_line = time.monotonic() + 10.0
            while True:
                ok, why = await _probe(session, t, paths)
                now = time.monotonic()
                if ok:
                    if announced:
                        say(f"{t} is ready after {now - t_start:.1f} s; starting the clock")
                    break
                if options.wait_ready_s <= 0:
                    if why.startswith("cannot connect"):
                        raise BurstpilotError(f"--target {t}: {why}; nothing was sent")
                    break  # it answers: the requests will say the rest
                if now >= deadline:
                    raise BurstpilotError(
                        f"--target {t}: not ready after {_fmt_s(options.wait_ready_s)} (--wait-ready); "
                        f"last: {why}; nothing was sent"
                    )
                if not announced:
                    say(
                        f"waiting up to {_fmt_s(options.wait_ready_s)} for {t} to be ready ({why}); "
                        "the clock starts when it is"
                    )
                    announced = True
                elif now >= next_line:
                    say(f"still waiting for {t} after {now - t_start:.0f} s ({why})")
                    next_line = now + 10.0
                await asyncio.sleep(min(1.0, max(deadline - now, 0.01)))
    return time.monotonic() - t_start


async def preflight(targets: list[str], options: ReplayOptions) -> str:
    """Wait for the targets, then the model name to use: ``options.model`` or the first one listed."""
    await wait_ready(targets, options)
    model = options.model
    if model is not None:
        return model
    timeout = aiohttp.ClientTimeout(total=max(options.timeouts.connect_s, 1.0) * 2)
    async with aiohttp.ClientSession(timeout=timeout, headers=options.request_headers()) as session:
        with contextlib.suppress(
            aiohttp.ClientError, TimeoutError, OSError, ValueError, LookupError, TypeError
        ):
            async with session.get(base_url(targets[0]) + "/v1/models") as resp:
                if resp.status == 200:
                    model = (await resp.json(content_type=None))["data"][0]["id"]
    return model if isinstance(model, str) and model else "burstpilot"


async def warm_up(sched: Schedule, targets: list[str], options: ReplayOptions, model: str) -> dict:
    """``options.warmup`` requests (the schedule's first rows, round robin over the targets), sent before the
    clock starts and not recorded: they open the server's caches and the connections."""
    n = options.warmup
    prompts = PromptBuilder(options.tokenizer)
    limit = options.concurrency or options.max_concurrency or n
    sem = asyncio.Semaphore(max(1, limit))
    errors: dict[str, int] = {}

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        j = i % len(sched)
        p, o = int(sched.prompt_tokens[j]), int(sched.output_tokens[j])
        body = request_body(options.api, model, prompts.prompt(p), p, o, options.stream, options.extra_body)
        rec = {"scheduled_s": 0.0}
        async with sem:
            await send(session, endpoint_url(targets[i % len(targets)], options.api), body, rec,
                       options.timeouts, time.perf_counter())  # fmt: skip
        if rec.get("error"):
            errors[rec["error"]] = errors.get(rec["error"], 0) + 1

    t = time.monotonic()
    async with _session(replace(options, max_concurrency=None, concurrency=None)) as session:
        await asyncio.gather(*(one(i, session) for i in range(n)))
    failed = sum(errors.values())
    say(
        f"warm-up: {n} request{'s' if n != 1 else ''} in {time.monotonic() - t:.1f} s, {failed} failed"
        + (f" ({', '.join(f'{k} {v}' for k, v in errors.items())})" if failed else "")
        + "; not part of the results"
    )
    return {"requests": n, "failed": failed, "errors": errors}


# ---------------------------------------------------------------------------------------------
# workers (processes)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: a kill -9 of the parent stops the workers too


def event_loop_factory():
    """uvloop's event loop where it is installed (a measured gain on the send path, bench/loadtest_send_accuracy.py),
    else asyncio's; ``BURSTPILOT_EVENT_LOOP=asyncio`` asks for asyncio's own."""
    if os.environ.get("BURSTPILOT_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop  # optional: not built for every platform, and the send loop works on asyncio's loop too
    except ImportError:
        return None
    return uvloop.new_event_loop


def _worker_main(worker, sched, targets, options, model, out_dir, shard_label, conn) -> None:
    _die_with_parent()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        writer = rec_io.JsonlWriter(Path(out_dir) / f"requests-w{worker}.jsonl", options.flush_s)
        stats = Stats()
        sender = Sender(sched, targets, options, model, writer, stats, stop, shard_label, worker)
        reporter = None
        try:
            await sender.prepare()
            conn.send("ready")
            t0 = await loop.run_in_executor(None, conn.recv)

            async def report() -> None:
                while True:
                    await asyncio.sleep(0.5)
                    conn.send(stats.take())

            reporter = asyncio.create_task(report())
            await sender.run(t0)
        finally:
            if reporter is not None:
                reporter.cancel()
            await sender.close()
            writer.close()
            conn.send(stats.take())
            conn.send("done")

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main())


# ---------------------------------------------------------------------------------------------
# progress and Prometheus

TTFT_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
TPOT_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class _Exporter:
    """Prometheus metrics of the replay, as counters and histograms, so that the shards of a replay (one pod
    each) add up in Prometheus: ``sum(rate(burstpilot_replay_requests_finished_total[1m]))``,
    ``histogram_quantile(0.99, sum by (le) (rate(burstpilot_replay_ttft_seconds_bucket[1m])))``."""

    def __init__(self, options: ReplayOptions, total: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

        self.slo = options.slo
        reg = CollectorRegistry()
        p = "burstpilot_replay_"
        self.scheduled = Gauge(
            p + "requests_scheduled", "requests this replay (shard) sends in all", registry=reg
        )
        self.sent = Counter(p + "requests_sent", "requests sent", registry=reg)
        self.finished = Counter(
            p + "requests_finished",
            "requests finished, by result (ok or the error kind)",
            ["result"],
            registry=reg,
        )
        self.in_flight = Gauge(p + "requests_in_flight", "requests sent and not finished", registry=reg)
        self.slo_met = Counter(
            p + "slo_met", "finished requests that met every objective of --slo", registry=reg
        )
        self.tokens = Counter(p + "output_tokens", "output tokens of successful requests", registry=reg)
        self.ttft = Histogram(p + "ttft_seconds", "time to first token", buckets=TTFT_BUCKETS, registry=reg)
        self.tpot = Histogram(p + "tpot_seconds", "time per output token", buckets=TPOT_BUCKETS, registry=reg)
        self.e2e = Histogram(p + "e2e_seconds", "end-to-end latency", buckets=E2E_BUCKETS, registry=reg)
        self.lag = Histogram(
            p + "dispatch_lag_seconds", "send time minus scheduled time", buckets=LAG_BUCKETS, registry=reg
        )
        self.scheduled.set(total)
        self.finished.labels("ok")  # present from the start, at 0
        try:
            self.http = start_http_server(options.metrics_port, addr=options.metrics_addr, registry=reg)
        except OSError as exc:
            raise BurstpilotError(f"--metrics-port {options.metrics_port}: {exc}") from exc
        self._sent = 0

    def observe(self, sent: int, inflight: int, finished: list[tuple]) -> None:
        if sent > self._sent:
            self.sent.inc(sent - self._sent)
            self._sent = sent
        self.in_flight.set(inflight)
        for err, ttft, tpot, e2e, _, lag, tokens in finished:
            self.finished.labels(err or "ok").inc()
            if lag is not None:
                self.lag.observe(max(lag, 0.0))
            if err:
                continue
            self.tokens.inc(tokens or 0)
            for h, v in ((self.ttft, ttft), (self.tpot, tpot), (self.e2e, e2e)):
                if v is not None:
                    h.observe(v)
        if self.slo is not None and finished:
            cols = np.array([[np.nan if v is None else v for v in f[1:5]] for f in finished], dtype=float)
            failed = np.array([bool(f[0]) for f in finished])
            self.slo_met.inc(int(self.slo.met(cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3], failed).sum()))

    def close(self) -> None:
        httpd, thread = self.http
        httpd.shutdown()
        httpd.server_close()
        thread.join()


class _Live:
    """Progress (``burstpilot.progress``: rich's display on a terminal, a plain line every 10 s elsewhere) and
    the Prometheus exporter, fed by every send loop's ``Stats``."""

    def __init__(self, total: int, options: ReplayOptions, initial_done: int = 0):
        self.total = total
        self.initial_done = initial_done
        self.done = initial_done
        self.errors: collections.Counter[str] = collections.Counter()
        self.window: collections.deque[tuple[float, float]] = collections.deque()
        self.sent_hist: collections.deque[tuple[float, int]] = collections.deque()
        self.reporter = Reporter("replay", interval_s=options.progress_interval_s, enabled=options.progress)
        self.task: int | None = None
        self.exporter = _Exporter(options, total) if options.metrics_port is not None else None

    def start(self) -> None:
        self.reporter.start()
        self.task = self.reporter.add_task("requests done", total=float(self.total))
        self.reporter.update(self.task, completed=self.done)

    def update(self, sent: int, inflight: int, finished: list[tuple]) -> None:
        now = time.monotonic()
        self.done += len(finished)
        for f in finished:
            if f[0]:
                self.errors[f[0]] += 1
            elif f[1] is not None:
                self.window.append((now, f[1]))
        while self.window and self.window[0][0] < now - 30:
            self.window.popleft()
        self.sent_hist.append((now, sent))
        while len(self.sent_hist) > 1 and self.sent_hist[0][0] < now - 5:
            self.sent_hist.popleft()
        t_a, s_a = self.sent_hist[0]
        rate = (sent - s_a) / (now - t_a) if now > t_a else 0.0
        if self.exporter is not None:
            self.exporter.observe(sent, inflight, finished)
        if self.task is not None:
            p99 = float(np.percentile([x for _, x in self.window], 99)) if self.window else None
            errs = sum(self.errors.values())
            note = (
                f"| sent {sent + self.initial_done:,}, in flight {inflight}, {rate:.1f} req/s | errors {errs:,}"
                + (f" ({', '.join(f'{k} {v:,}' for k, v in self.errors.most_common(3))})" if errs else "")
                + ("" if p99 is None else f" | p99 TTFT (30 s) {p99 * 1e3:.0f} ms")
            )
            self.reporter.update(self.task, completed=self.done, note=note)

    def close(self) -> None:
        self.reporter.close()
        if self.exporter is not None:
            self.exporter.close()


# ---------------------------------------------------------------------------------------------
# the public entry point


def _meta_path(out_dir: Path) -> Path:
    return out_dir / RUN_META


def _prepare_out_dir(out_dir: Path, sched: Schedule, options: ReplayOptions) -> set[int]:
    """Create the output directory; with resume, keep the finished records and return their requests."""
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(out_dir.glob("requests*.jsonl"))
    if not existing:
        return set()
    if not options.resume:
        raise BurstpilotError(f"{out_dir}: already holds replay results; use --resume or another --out")
    meta = rec_io.read_json(_meta_path(out_dir)) if _meta_path(out_dir).is_file() else {}
    if meta.get("fingerprint") not in (None, sched.fingerprint):
        raise BurstpilotError(
            f"{out_dir}: results of another workload or schedule (fingerprint {meta.get('fingerprint')})"
        )
    kept = [r for r in rec_io.read_records(out_dir) if r.get("error") != "cancelled"]
    # One compacted file: finished records stay, cancelled ones are sent again.
    rec_io.write_jsonl(kept, out_dir / rec_io.JSONL_NAME, replace_files=existing)
    return {int(r["index"]) for r in kept}


def _describe(sched: Schedule, options: ReplayOptions) -> dict:
    times = sched.scheduled_s
    span = float(times.max() - times.min()) if len(sched) > 1 else 0.0
    if options.mode == "rate":
        text = f"generated arrivals at {options.request_rate:g} req/s, Gamma gaps of shape {options.burstiness:g}"
        text += f" (seed {options.seed})"
    elif options.mode == "concurrency":
        text = f"closed loop, {options.concurrency} requests in flight"
    else:
        text = "the trace's arrival times"
    if options.duration_s is not None:
        text += f", first {options.duration_s:g} s"
    if options.limit is not None:
        text += f", first {options.limit:,} requests"
    if options.max_concurrency:
        text += f", at most {options.max_concurrency} in flight"
    return {
        "mode": options.mode,
        "description": text,
        "requests": len(sched),
        "span_s": span,
        "mean_rate": (len(sched) - 1) / span if span > 0 else None,
    }


def write_results(
    out_dir: Path, records: list[dict], summary: dict, meta: dict, options: ReplayOptions
) -> None:
    """Everything a finished (or interrupted, or merged) replay writes beside its records: summary.json,
    summary.csv, vllm-bench.json, latency.png and the report."""
    rec_io.atomic_write_json(summary, out_dir / SUMMARY)
    export.write_csv(summary, out_dir / export.CSV_NAME)
    rec_io.atomic_write_json(
        export.vllm_result(records, summary, meta, options.percentiles), out_dir / export.VLLM_NAME
    )
    plot = None
    if options.plot:
        plot_latency(
            records, out_dir / PLOT, options.slo, servermetrics.key_series(servermetrics.read_rounds(out_dir))
        )
        plot = PLOT
    if options.report:
        names = sorted(p.name for p in out_dir.iterdir() if p.is_file() and not p.name.endswith(".tmp"))
        files = sorted(set(names) | {REPORT_MD, REPORT_HTML})
        write_report(out_dir, summary, meta, files, plot)


def finalize(out_dir: Path, options: ReplayOptions, meta: dict, extra: dict, scraper=None) -> dict:
    """Parquet, summary and the rest from the records on disk."""
    records = rec_io.read_records(out_dir)
    rec_io.write_parquet(records, out_dir / rec_io.PARQUET_NAME)
    summary = summarize(records, options.slo, scheduled=meta["shard_requests"])
    summary.update(extra)
    if scraper is not None:
        rounds = servermetrics.read_rounds(out_dir)
        summary["server_metrics"] = servermetrics.summarize_rounds(rounds, scraper.sources, scraper.notes)
    write_results(out_dir, records, summary, meta, options)
    return summary


def _check(options: ReplayOptions, targets: list[str]) -> None:
    if not targets:
        raise BurstpilotError("--target: at least one target URL is needed")
    for t in targets:
        if not t.startswith(("http://", "https://")):
            raise BurstpilotError(f"--target {t}: not an http:// or https:// URL")
    if options.api not in ("completions", "chat"):
        raise BurstpilotError(f"--api: {options.api!r} is not 'completions' or 'chat'")
    if options.balance not in ("round-robin", "least-outstanding"):
        raise BurstpilotError(f"--balance: {options.balance!r} is not 'round-robin' or 'least-outstanding'")
    if options.workers < 1:
        raise BurstpilotError("--workers: need at least 1")
    if options.concurrency is not None and options.concurrency < 1:
        raise BurstpilotError("--concurrency: need at least 1")
    if options.concurrency and options.request_rate:
        raise BurstpilotError("--concurrency and --request-rate: a closed loop has no arrival rate; give one")
    if options.max_concurrency is not None and options.max_concurrency < 1:
        raise BurstpilotError("--max-concurrency: need at least 1")
    if options.warmup < 0:
        raise BurstpilotError("--warmup: cannot be negative")
    if options.server_metrics:
        servermetrics.check_sources(options.server_metrics)
    if options.extra_body is not None:
        if not isinstance(options.extra_body, dict):
            raise BurstpilotError("--extra-body: must be a JSON object")
        try:
            orjson.dumps(options.extra_body)
        except TypeError as exc:  # orjson's encode error: an integer past 64 bits, a non-JSON value
            raise BurstpilotError(f"--extra-body: cannot be sent as JSON: {exc}") from None


async def replay(workload, targets: list[str], out_dir: Path, options: ReplayOptions | None = None) -> dict:
    """Replay ``workload`` (a Trace) against ``targets``; write results to ``out_dir``.

    Returns the summary (also written to ``out_dir/summary.json``).
    """
    options = options or ReplayOptions()
    _check(options, targets)
    out_dir = Path(out_dir)
    full = build_schedule(
        workload, options.include_failed, options.duration_s, options.limit, options.mode,
        options.request_rate, options.burstiness, options.seed,
    )  # fmt: skip
    si, sn = options.shard
    sched = full.shard(si, sn)
    shard_label = f"{si}/{sn}"
    done_rows = _prepare_out_dir(out_dir, sched, options)
    if done_rows:
        sched = sched.take(~np.isin(sched.index, np.fromiter(done_rows, dtype=np.int64)))
    PromptBuilder(options.tokenizer)  # a bad --tokenizer fails here, before the clock starts
    model = await preflight(targets, options)
    warmup = await warm_up(sched if len(sched) else full, targets, options, model) if options.warmup else None
    meta = {
        "workload": getattr(workload, "source", "") or "",
        "fingerprint": full.fingerprint,
        "workload_requests": len(full),
        "schedule": _describe(full, options),
        "shard": shard_label,
        "shard_requests": len(sched) + len(done_rows),
        "targets": targets,
        "model": model,
        "host": socket.gethostname(),
        "started_at": time.time(),
        "warmup": warmup,
        "options": options.public(),
    }
    rec_io.atomic_write_json(meta, _meta_path(out_dir))
    sources = (
        servermetrics.default_sources(targets) if options.server_metrics is None else options.server_metrics
    )
    scraper = (
        servermetrics.Scraper(sources, out_dir, options.server_metrics_interval_s, options.request_headers())
        if sources
        else None
    )
    live = _Live(len(sched) + len(done_rows), options, initial_done=len(done_rows))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (RuntimeError, ValueError):  # not the main thread
            pass
    interrupted = False
    try:
        if len(sched):
            run = _run_inline if options.workers == 1 else _run_workers
            await run(sched, targets, options, model, out_dir, shard_label, stop, live, scraper)
        interrupted = stop.is_set()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        live.close()
        if scraper is not None:
            await scraper.stop()
    return finalize(
        out_dir, options, meta, {"shard": shard_label, "interrupted": interrupted, "model": model}, scraper
    )


def _start_clock(sched: Schedule, lead_s: float, live: _Live, scraper) -> float:
    """The clock origin (perf_counter): the first request leaves ``lead_s`` from now."""
    t0 = time.perf_counter() + lead_s - (0.0 if sched.mode == "concurrency" else float(sched.scheduled_s[0]))
    live.start()
    if scraper is not None:
        scraper.start(t0)
    return t0


async def _run_inline(sched, targets, options, model, out_dir, shard_label, stop, live, scraper) -> None:
    writer = rec_io.JsonlWriter(out_dir / rec_io.JSONL_NAME, options.flush_s)
    stats = Stats()
    sender = Sender(sched, targets, options, model, writer, stats, stop, shard_label, 0)

    async def report() -> None:
        while True:
            await asyncio.sleep(0.5)
            live.update(*stats.take())

    reporter = None
    try:
        await sender.prepare()
        t0 = _start_clock(sched, 0.02, live, scraper)
        reporter = asyncio.create_task(report())
        await sender.run(t0)
    finally:
        if reporter is not None:
            reporter.cancel()
        await sender.close()
        writer.close()
        live.update(*stats.take())


def _split(n: int, k: int) -> list[int]:
    return [n // k + (1 if w < n % k else 0) for w in range(k)]


async def _run_workers(sched, targets, options, model, out_dir, shard_label, stop, live, scraper) -> None:
    ctx = mp.get_context("spawn")
    k_workers = min(options.workers, len(sched))
    if options.concurrency:
        k_workers = min(k_workers, options.concurrency)
    procs, conns = [], []
    pos = np.arange(len(sched))
    users = _split(options.concurrency or 0, k_workers)
    for w in range(k_workers):
        parent, child = ctx.Pipe()
        part = sched.take(pos % k_workers == w)
        worker_opts = replace(options, progress=False, metrics_port=None, concurrency=users[w] or None)
        p = ctx.Process(
            target=_worker_main,
            args=(w, part, targets, worker_opts, model, str(out_dir), shard_label, child),
            daemon=True,
        )
        p.start()
        procs.append(p)
        conns.append(parent)
    loop = asyncio.get_running_loop()
    try:
        for c in conns:  # wait until every worker is ready, then start one clock for all
            if await loop.run_in_executor(None, c.recv) != "ready":
                raise BurstpilotError("replay worker failed to start")
        t0 = _start_clock(sched, 0.05, live, scraper)
        for c in conns:
            c.send(t0)
        totals = np.zeros((k_workers, 2), dtype=np.int64)
        finished = [False] * k_workers
        forwarded = False
        while not all(finished):
            await asyncio.sleep(0.25)
            if stop.is_set() and not forwarded:
                forwarded = True
                for p in procs:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGTERM)
            new: list[tuple] = []
            for w, c in enumerate(conns):
                while not finished[w] and c.poll():
                    try:
                        msg = c.recv()
                    except EOFError:
                        finished[w] = True
                        break
                    if msg == "done":
                        finished[w] = True
                    else:
                        sent, inflight, done = msg
                        totals[w] = (sent, inflight)
                        new.extend(done)
                if not finished[w] and not procs[w].is_alive():
                    finished[w] = True
            s = totals.sum(axis=0)
            live.update(int(s[0]), int(s[1]), new)
    finally:
        for p in procs:
            p.join(timeout=options.grace_s + 5)
            if p.is_alive():
                p.kill()
                p.join()
