"""Open-loop replay: each request leaves at its scheduled time, whatever the server does.

The send loop sleeps until the absolute deadline ``t0 + scheduled_s`` of the next request (never a
sum of sleeps), starts every request that is due, and goes back to sleep; a request never waits for
another one unless ``max_concurrency`` is set. ``workers > 1`` runs the same loop in K processes,
each on every K-th request of the schedule and on one shared clock origin.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import json
import multiprocessing as mp
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import aiohttp
import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.slo import SLO

from . import records as rec_io
from .client import PromptBuilder, Timeouts, endpoint_url, request_body, send
from .metrics import summarize
from .schedule import Schedule, build_schedule

RUN_META = "run.json"
SUMMARY = "summary.json"
PLOT = "latency.png"


@dataclass
class ReplayOptions:
    api: str = "completions"  # or "chat"
    model: str | None = None  # None: the first model the first target lists, else "burstpilot"
    stream: bool = True
    tokenizer: str | None = None  # local Hugging Face tokenizer directory for exact-length prompts
    include_failed: bool = False
    limit_s: float | None = None  # replay only the first limit_s seconds of the workload
    max_concurrency: int | None = None
    balance: str = "round-robin"  # or "least-outstanding"
    timeouts: Timeouts = field(default_factory=Timeouts)
    slo: SLO | None = None
    shard: tuple[int, int] = (0, 1)
    workers: int = 1
    grace_s: float = 10.0
    resume: bool = False
    progress: bool = False
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    plot: bool = True
    flush_s: float = 0.5


class Stats:
    """Live counters of one send loop (read by the progress display and the Prometheus exporter)."""

    def __init__(self) -> None:
        self.sent = 0
        self.done = 0
        self.errors = 0
        self.inflight = 0
        self.new_ttfts: list[float] = []

    def take(self) -> tuple[int, int, int, int, list[float]]:
        ttfts, self.new_ttfts = self.new_ttfts, []
        return self.sent, self.done, self.errors, self.inflight, ttfts


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
        connector=_connector(options.max_concurrency),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=options.timeouts.connect_s),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        read_bufsize=1 << 16,
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
        self._gc_threshold = gc.get_threshold()

    async def prepare(self, warm_connections: int = 4) -> None:
        """Open the connection pool (a few keep-alive connections per target), then freeze the heap.

        Everything slow happens here, before the clock origin is chosen: lazy imports, first
        connections, a full garbage collection. While sending, the young generations are collected
        less often, so a collection cannot stall the loop for milliseconds.
        """
        self.session = _session(self.options)
        models = [t.rstrip("/").removesuffix("/v1") + "/v1/models" for t in self.targets]

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

    async def _one(self, j: int, k: int, t0: float) -> None:
        sched, stats = self.sched, self.stats
        p_tokens = int(sched.prompt_tokens[j])
        o_tokens = int(sched.output_tokens[j])
        rec = {
            "index": int(sched.index[j]),
            "shard": self.shard_label,
            "worker": self.worker,
            "target": self.targets[k],
            "scheduled_s": float(sched.scheduled_s[j]),
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
            opts.api, self.model, self.prompts.prompt(p_tokens), p_tokens, o_tokens, opts.stream
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
            stats.done += 1
            if rec["error"]:
                stats.errors += 1
            elif rec["ttft_s"] is not None:
                stats.new_ttfts.append(rec["ttft_s"])
            if rec["sent_s"] is not None:
                self.writer.add(rec)

    async def run(self, t0: float) -> int:
        """Start each request at ``t0 + scheduled_s`` (perf_counter clock); after a stop, wait out the
        grace period and cancel what is left. Returns the number of requests started."""
        times = self.sched.scheduled_s
        n, n_targets = len(self.sched), len(self.targets)
        least = self.options.balance == "least-outstanding"
        outstanding, tasks, stop = self.outstanding, self.tasks, self.stop
        i = rr = 0
        while i < n and not stop.is_set():
            now = time.perf_counter() - t0
            due = times[i]
            if due > now + 2e-4:
                await asyncio.sleep(min(due - now, 0.2))
                continue
            while i < n and times[i] <= now + 2e-4:
                if least:
                    k = min(range(n_targets), key=lambda x: (outstanding[x], (x - rr) % n_targets))
                else:
                    k = rr
                rr = (k + 1) % n_targets
                outstanding[k] += 1
                t = asyncio.create_task(self._one(i, k, t0))
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


# ---------------------------------------------------------------------------------------------
# pre-flight: the targets must accept connections before the clock starts


async def preflight(targets: list[str], options: ReplayOptions) -> str:
    """Check every target; return the model name to use."""
    model = options.model
    timeout = aiohttp.ClientTimeout(total=max(options.timeouts.connect_s, 1.0) * 2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for t in targets:
            url = t.rstrip("/").removesuffix("/v1") + "/v1/models"
            try:
                async with session.get(url) as resp:
                    if resp.status == 200 and model is None:
                        with contextlib.suppress(ValueError, KeyError, IndexError, aiohttp.ContentTypeError):
                            model = (await resp.json())["data"][0]["id"]
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise BurstpilotError(
                    f"--target {t}: cannot connect ({type(exc).__name__}: {exc}); nothing was sent"
                ) from exc
    return model or "burstpilot"


# ---------------------------------------------------------------------------------------------
# workers (processes)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: a kill -9 of the parent stops the workers too


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

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# progress and Prometheus


class _Progress:
    def __init__(self, total: int, options: ReplayOptions, initial_done: int = 0):
        self.total = total
        self.window: collections.deque[tuple[float, float]] = collections.deque()
        self.sent_hist: collections.deque[tuple[float, int]] = collections.deque()
        self.live = None
        self.gauges = None
        self.http = None
        self.initial_done = initial_done
        if options.progress:
            from rich.live import Live

            self.live = Live(auto_refresh=False, transient=False)
            self.live.start()
        if options.metrics_port is not None:
            from prometheus_client import CollectorRegistry, Gauge, start_http_server

            reg = CollectorRegistry()
            names = {
                "sent": "requests sent",
                "done": "requests finished (completed or failed)",
                "errors": "requests failed",
                "in_flight": "requests in flight",
                "send_rate": "requests sent per second over the last 5 s",
                "ttft_p99_seconds": "p99 TTFT over the last 30 s",
            }
            self.gauges = {k: Gauge(f"burstpilot_replay_{k}", v, registry=reg) for k, v in names.items()}
            try:
                self.http = start_http_server(options.metrics_port, addr=options.metrics_addr, registry=reg)
            except OSError as exc:
                raise BurstpilotError(f"--metrics-port {options.metrics_port}: {exc}") from exc

    def update(self, sent: int, done: int, errors: int, inflight: int, ttfts: list[float]) -> dict:
        now = time.monotonic()
        for x in ttfts:
            self.window.append((now, x))
        while self.window and self.window[0][0] < now - 30:
            self.window.popleft()
        self.sent_hist.append((now, sent))
        while len(self.sent_hist) > 1 and self.sent_hist[0][0] < now - 5:
            self.sent_hist.popleft()
        t_a, s_a = self.sent_hist[0]
        rate = (sent - s_a) / (now - t_a) if now > t_a else 0.0
        p99 = float(np.percentile([x for _, x in self.window], 99)) if self.window else float("nan")
        values = {
            "sent": sent,
            "done": done,
            "errors": errors,
            "in_flight": inflight,
            "send_rate": rate,
            "ttft_p99_seconds": p99,
        }
        if self.gauges:
            for k, v in values.items():
                self.gauges[k].set(v)
        if self.live is not None:
            from rich.table import Table

            t = Table(title="burstpilot replay", show_header=True, expand=False)
            for col in ("sent", "done", "in flight", "errors", "rate /s", "p99 TTFT (30 s)"):
                t.add_column(col, justify="right")
            t.add_row(
                f"{sent + self.initial_done}/{self.total}",
                str(done + self.initial_done),
                str(inflight),
                str(errors),
                f"{rate:.1f}",
                "-" if np.isnan(p99) else f"{p99 * 1e3:.0f} ms",
            )
            self.live.update(t, refresh=True)
        return values

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
        if self.http is not None:
            httpd, thread = self.http
            httpd.shutdown()
            httpd.server_close()
            thread.join()


# ---------------------------------------------------------------------------------------------
# the public entry point


def _meta_path(out_dir: Path) -> Path:
    return out_dir / RUN_META


def _prepare_out_dir(out_dir: Path, sched: Schedule, options: ReplayOptions) -> set[int]:
    """Create the output directory; with resume, keep the finished records and return their rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(out_dir.glob("requests*.jsonl"))
    if not existing:
        return set()
    if not options.resume:
        raise BurstpilotError(f"{out_dir}: already holds replay results; use --resume or another --out")
    meta = json.loads(_meta_path(out_dir).read_text()) if _meta_path(out_dir).is_file() else {}
    if meta.get("fingerprint") not in (None, sched.fingerprint):
        raise BurstpilotError(
            f"{out_dir}: results of another workload (fingerprint {meta.get('fingerprint')})"
        )
    kept = [r for r in rec_io.read_records(out_dir) if r.get("error") != "cancelled"]
    # One compacted file: finished records stay, cancelled ones are sent again.
    tmp = out_dir / "requests.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in kept), encoding="utf-8")
    for f in existing:
        f.unlink()
    tmp.replace(out_dir / rec_io.JSONL_NAME)
    return {int(r["index"]) for r in kept}


def finalize(out_dir: Path, slo: SLO | None, scheduled: int, extra: dict | None = None) -> dict:
    """Parquet, summary.json and the plot from the records on disk."""
    records = rec_io.read_records(out_dir)
    rec_io.write_parquet(records, out_dir / rec_io.PARQUET_NAME)
    summary = summarize(records, slo, scheduled=scheduled)
    if extra:
        summary.update(extra)
    rec_io.atomic_write_json(summary, out_dir / SUMMARY)
    return summary


async def replay(workload, targets: list[str], out_dir: Path, options: ReplayOptions | None = None) -> dict:
    """Replay ``workload`` (a Trace) open-loop against ``targets``; write results to ``out_dir``.

    Returns the summary (also written to ``out_dir/summary.json``).
    """
    options = options or ReplayOptions()
    if not targets:
        raise BurstpilotError("--target: at least one target URL is needed")
    if options.api not in ("completions", "chat"):
        raise BurstpilotError(f"--api: {options.api!r} is not 'completions' or 'chat'")
    if options.balance not in ("round-robin", "least-outstanding"):
        raise BurstpilotError(f"--balance: {options.balance!r} is not 'round-robin' or 'least-outstanding'")
    if options.workers < 1:
        raise BurstpilotError("--workers: need at least 1")
    out_dir = Path(out_dir)
    full = build_schedule(workload, options.include_failed, options.limit_s)
    si, sn = options.shard
    sched = full.shard(si, sn)
    shard_label = f"{si}/{sn}"
    done_rows = _prepare_out_dir(out_dir, sched, options)
    if done_rows:
        sched = sched.take(~np.isin(sched.index, np.fromiter(done_rows, dtype=np.int64)))
    PromptBuilder(options.tokenizer)  # a bad --tokenizer fails here, before the clock starts
    model = await preflight(targets, options)
    meta = {
        "fingerprint": full.fingerprint,
        "workload_requests": len(full),
        "shard": shard_label,
        "shard_requests": len(sched) + len(done_rows),
        "targets": targets,
        "model": model,
        "host": socket.gethostname(),
        "started_at": time.time(),
        "options": {k: v for k, v in asdict(options).items() if k != "timeouts"}
        | {"timeouts": asdict(options.timeouts)},
    }
    rec_io.atomic_write_json(meta, _meta_path(out_dir))
    progress = _Progress(len(sched) + len(done_rows), options, initial_done=len(done_rows))
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
            if options.workers == 1:
                await _run_inline(sched, targets, options, model, out_dir, shard_label, stop, progress)
            else:
                await _run_workers(sched, targets, options, model, out_dir, shard_label, stop, progress)
        interrupted = stop.is_set()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        progress.close()
    summary = finalize(
        out_dir,
        options.slo,
        scheduled=meta["shard_requests"],
        extra={"shard": shard_label, "interrupted": interrupted, "model": model},
    )
    if options.plot:
        from .plot import plot_latency

        plot_latency(rec_io.read_records(out_dir), out_dir / PLOT, options.slo)
    return summary


async def _run_inline(sched, targets, options, model, out_dir, shard_label, stop, progress) -> None:
    writer = rec_io.JsonlWriter(out_dir / rec_io.JSONL_NAME, options.flush_s)
    stats = Stats()
    sender = Sender(sched, targets, options, model, writer, stats, stop, shard_label, 0)

    async def report() -> None:
        while True:
            await asyncio.sleep(0.5)
            progress.update(*stats.take())

    reporter = None
    try:
        await sender.prepare()
        reporter = asyncio.create_task(report())
        await sender.run(time.perf_counter() + 0.02 - float(sched.scheduled_s[0]))
    finally:
        if reporter is not None:
            reporter.cancel()
        await sender.close()
        writer.close()
        progress.update(*stats.take())


async def _run_workers(sched, targets, options, model, out_dir, shard_label, stop, progress) -> None:
    ctx = mp.get_context("spawn")
    k_workers = min(options.workers, len(sched))
    procs, conns = [], []
    worker_opts = replace(options, progress=False, metrics_port=None)
    pos = np.arange(len(sched))
    for w in range(k_workers):
        parent, child = ctx.Pipe()
        part = sched.take(pos % k_workers == w)
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
        t0 = time.perf_counter() + 0.05 - float(sched.scheduled_s[0])
        for c in conns:
            c.send(t0)
        totals = np.zeros((k_workers, 4), dtype=np.int64)
        finished = [False] * k_workers
        forwarded = False
        while not all(finished):
            await asyncio.sleep(0.25)
            if stop.is_set() and not forwarded:
                forwarded = True
                for p in procs:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGTERM)
            ttfts: list[float] = []
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
                        sent, done, errors, inflight, new = msg
                        totals[w] = (sent, done, errors, inflight)
                        ttfts.extend(new)
                if not finished[w] and not procs[w].is_alive():
                    finished[w] = True
            s = totals.sum(axis=0)
            progress.update(int(s[0]), int(s[1]), int(s[2]), int(s[3]), ttfts)
    finally:
        for p in procs:
            p.join(timeout=options.grace_s + 5)
            if p.is_alive():
                p.kill()
                p.join()
