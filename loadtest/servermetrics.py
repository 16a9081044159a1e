"""The target's own Prometheus ``/metrics``, captured while the replay runs (as NVIDIA AIPerf does).

Every ``interval_s`` each source is scraped at once and one JSON line per round goes to
``server_metrics.jsonl`` (times in the schedule frame, as the request records): the gauges and counters of
each URL (histogram buckets are left out). The summary and the plot put the few series that explain latency
beside it: KV-cache usage and the requests running and waiting (vLLM's names, which ``burstpilot sim`` serves
too).

A source is a URL, or a Prometheus file-SD JSON file (``[{"targets": ["host:port", ...]}]``, what ``burstpilot
sim fleet --sd-file`` writes): it is read again each round, so replicas that come and go are followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from burstpilot.errors import BurstpilotError

from .client import base_url
from .records import JsonlWriter

JSONL_NAME = "server_metrics.jsonl"

# name -> (what it is, how the URLs of one round combine, unit shown)
KEY_SERIES = {
    "vllm:kv_cache_usage_perc": ("KV-cache usage", "mean", "%"),
    "vllm:gpu_cache_usage_perc": ("KV-cache usage (vLLM v0 name)", "mean", "%"),
    "vllm:num_requests_running": ("requests running", "sum", ""),
    "vllm:num_requests_waiting": ("requests waiting", "sum", ""),
}
_KEPT_TYPES = ("gauge", "counter", "unknown")


def default_sources(targets: list[str]) -> list[str]:
    return [base_url(t) + "/metrics" for t in targets]


def check_sources(sources: list[str]) -> None:
    for s in sources:
        if not s.startswith(("http://", "https://")) and not Path(s).parent.is_dir():
            raise BurstpilotError(
                f"--server-metrics {s}: neither a URL nor a file in an existing folder (a file-SD JSON file)"
            )


def _sd_urls(path: Path) -> list[str]:
    """The /metrics URLs a file-SD file lists now ([] while it is absent or being rewritten)."""
    try:
        groups = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    urls = []
    for g in groups if isinstance(groups, list) else []:
        for t in (g.get("targets") or []) if isinstance(g, dict) else []:
            if isinstance(t, str) and t:
                urls.append(t if t.startswith(("http://", "https://")) else f"http://{t}/metrics")
    return urls


def parse_exposition(text: str) -> dict[str, float]:
    """``{'name{label="v",...}': value}`` for the gauges and counters of a Prometheus text exposition."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.type not in _KEPT_TYPES:
            continue
        for s in fam.samples:
            if s.name.endswith(("_created", "_bucket")):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
    return out


class Scraper:
    """Scrapes the sources every ``interval_s`` until stopped; ``notes`` says what could not be read."""

    def __init__(self, sources: list[str], out_dir: Path, interval_s: float, headers: dict[str, str]):
        self.sources = sources
        self.interval_s = max(float(interval_s), 0.05)
        self.headers = headers
        self.out_dir = out_dir
        self.rounds = 0
        self.notes: dict[str, str] = {}  # url -> why it is not captured
        self._dropped: set[str] = set()
        self._task: asyncio.Task | None = None
        self._writer: JsonlWriter | None = None

    def urls(self) -> list[str]:
        urls: list[str] = []
        for s in self.sources:
            urls.extend([s] if s.startswith(("http://", "https://")) else _sd_urls(Path(s)))
        return [u for u in dict.fromkeys(urls) if u not in self._dropped]

    async def _one(self, session: aiohttp.ClientSession, url: str) -> dict[str, float] | None:
        try:
            async with session.get(url) as resp:
                if resp.status != 200:
                    if resp.status in (401, 403, 404, 405):  # it will not change during the run
                        self._dropped.add(url)
                    self.notes[url] = f"HTTP {resp.status}"
                    return None
                text = await resp.text(errors="replace")
            return parse_exposition(text)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.notes[url] = f"{type(exc).__name__}: {exc}"[:120]
            return None
        except ValueError as exc:  # not the Prometheus text format
            self._dropped.add(url)
            self.notes[url] = f"not a Prometheus exposition: {exc}"[:120]
            return None

    async def _loop(self, t0: float) -> None:
        timeout = aiohttp.ClientTimeout(total=max(self.interval_s, 1.0))
        async with aiohttp.ClientSession(timeout=timeout, headers=self.headers) as session:
            next_at = time.perf_counter()
            while True:
                urls = self.urls()
                t_s = time.perf_counter() - t0
                got = await asyncio.gather(*(self._one(session, u) for u in urls))
                values = {u: v for u, v in zip(urls, got, strict=True) if v is not None}
                if values:
                    for u in values:
                        self.notes.pop(u, None)
                    self._writer.add({"t_s": round(t_s, 4), "metrics": values})
                    self.rounds += 1
                next_at += self.interval_s
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    def start(self, t0: float) -> None:
        self._writer = JsonlWriter(self.out_dir / JSONL_NAME, flush_s=1.0)
        self._task = asyncio.get_running_loop().create_task(self._loop(t0))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()


def read_rounds(out_dir: Path) -> list[dict]:
    """The captured rounds (a torn last line dropped, an unreadable one skipped: this is context, not results)."""
    path = out_dir / JSONL_NAME
    if not path.is_file():
        return []
    rounds = []
    for line in path.read_text(encoding="utf-8", errors="replace").split("\n")[:-1]:
        with contextlib.suppress(ValueError):
            r = json.loads(line)
            if (
                isinstance(r, dict)
                and isinstance(r.get("metrics"), dict)
                and isinstance(r.get("t_s"), float | int)
            ):
                rounds.append(r)
    return rounds


def key_series(rounds: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (times, values): each key series, its URLs and label sets combined per round (KEY_SERIES)."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for r in rounds:
        for name, (_, how, _) in KEY_SERIES.items():
            vals = [
                float(v)
                for per_url in r["metrics"].values()
                if isinstance(per_url, dict)
                for k, v in per_url.items()
                if (k == name or k.startswith(name + "{")) and isinstance(v, int | float)
            ]
            if vals:
                t, v = out.setdefault(name, ([], []))
                t.append(float(r["t_s"]))
                v.append(float(np.mean(vals) if how == "mean" else np.sum(vals)))
    return {k: (np.asarray(t), np.asarray(v)) for k, (t, v) in out.items()}


def summarize_rounds(rounds: list[dict], sources: list[str], notes: dict[str, str]) -> dict:
    """What summary.json says about the capture: rounds, the URLs seen, and mean/p50/p99/max of each key series."""
    urls = sorted({u for r in rounds for u in r["metrics"]})
    series = {}
    for name, (_, values) in key_series(rounds).items():
        what, how, unit = KEY_SERIES[name]
        series[name] = {
            "what": what,
            "combined": how,
            "mean": float(values.mean()),
            "p50": float(np.percentile(values, 50)),
            "p99": float(np.percentile(values, 99)),
            "max": float(values.max()),
        }
    return {"sources": sources, "rounds": len(rounds), "urls": urls, "not_captured": notes, "series": series}
