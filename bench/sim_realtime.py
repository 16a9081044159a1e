"""Real-time throughput: tokens per second one simulator process streams while it stays on its step clock.

One `Replica` (h100-llama3-8b, no cold start) runs in a child process; this process keeps N streaming
completions open (short prompts, long replies, ignore_eos), replacing each one that ends, and counts SSE
events. After a warm-up the child's counters are reset and read back after the measured window: tokens it
delivered, steps, and how late its step ends ran against the simulated step clock (p50/p99/max), plus its CPU
use. Target: >= 10,000 tokens/s with steps on time. Writes "realtime" in bench/results/sim.json.

    .venv/bin/python bench/sim_realtime.py [--streams 128 256] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np

OUT = Path(__file__).parent / "results" / "sim.json"


def child(port: int) -> None:
    from aiohttp import web

    from burstpilot.sim import load_profile
    from burstpilot.sim.replica import Replica
    from burstpilot.sim.server import ReplicaServer, start_site

    async def main():
        rep = Replica(load_profile("h100-llama3-8b"), cold_start_s=0.0)
        rep.start()
        mark = {"t": time.perf_counter(), "cpu": time.process_time(), "tokens": 0, "steps": 0}

        async def reset(request):
            rec = rep.recent
            rec.lateness.clear()
            mark.update(t=time.perf_counter(), cpu=time.process_time(), tokens=rec.tokens, steps=rec.steps)
            return web.json_response({})

        async def stats(request):
            wall = time.perf_counter() - mark["t"]
            rec = rep.recent
            late = np.array(rec.lateness) * 1000
            return web.json_response(
                {
                    "wall_s": wall,
                    "tokens": rec.tokens - mark["tokens"],
                    "steps": rec.steps - mark["steps"],
                    "tokens_per_s": (rec.tokens - mark["tokens"]) / wall,
                    "mean_step_ms": wall * 1000 / max(1, rec.steps - mark["steps"]),
                    "lateness_ms": {
                        "p50": float(np.percentile(late, 50)),
                        "p99": float(np.percentile(late, 99)),
                        "max": float(late.max()),
                    },
                    "server_cpu_share": (time.process_time() - mark["cpu"]) / wall,
                    "load_average_1m": os.getloadavg()[0],
                }
            )

        app = ReplicaServer(rep).app()
        app.router.add_post("/bench/reset", reset)
        app.router.add_get("/bench/stats", stats)
        await start_site(app, "127.0.0.1", port)
        await asyncio.Event().wait()

    asyncio.run(main())


async def load(url: str, streams: int, seconds: float, warmup: float) -> dict:
    body = {"model": "llama3-8b", "prompt": "x", "burstpilot_prompt_tokens": 64, "max_tokens": 1024,
            "ignore_eos": True, "stream": True}  # fmt: skip
    stop = time.perf_counter() + warmup + seconds
    events = [0]

    async def worker(session):
        while time.perf_counter() < stop:
            async with session.post(url + "/v1/completions", json=body) as r:
                async for chunk in r.content.iter_any():
                    events[0] += chunk.count(b"data: ")
                    if time.perf_counter() >= stop:
                        break

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(streams)]
        await asyncio.sleep(warmup)
        await session.post(url + "/bench/reset")
        e0, t0 = events[0], time.perf_counter()
        await asyncio.sleep(seconds)
        stats = await (await session.get(url + "/bench/stats")).json()
        client_rate = (events[0] - e0) / (time.perf_counter() - t0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    stats["client_events_per_s"] = client_rate
    stats["streams"] = streams
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    results = []
    for n in args.streams:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(port)], env=os.environ.copy())
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.1)
            r = asyncio.run(load(url, n, args.seconds, args.warmup))
        finally:
            proc.terminate()
            proc.wait(10)
        print(json.dumps(r), flush=True)
        results.append(r)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data["realtime"] = {
        "profile": "h100-llama3-8b",
        "request": "64 prompt tokens, 1024 generated, streaming",
        "target_tokens_per_s": 10000,
        "runs": results,
        "cpu_cores": os.cpu_count(),
    }
    OUT.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
