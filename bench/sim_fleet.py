"""Fleet on its step clocks: 16 replicas behind the router, in the router's process or spread over workers.

Starts `burstpilot sim fleet --replicas 16 --cold-start 0 [--replica-processes K]` as a child process, sends
Poisson arrivals (600 prompt tokens, 200 generated, streaming, through the router) for a measured window,
then reads every replica's `burstpilot_sim_step_lateness_seconds` histogram and token counter from /metrics.
Writes "fleet_<rps>rps" in bench/results/sim.json.

    .venv/bin/python bench/sim_fleet.py [--rps 40] [--seconds 20] [--processes 0 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from burstpilot.sim.fleet import free_port_block

OUT = Path(__file__).parent / "results" / "sim.json"
REPLICAS = 16


async def scrape(session, port: int) -> dict:
    text = await (await session.get(f"http://127.0.0.1:{port}/metrics")).text()
    out = {"buckets": {}}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "burstpilot_sim_step_lateness_seconds_bucket":
                out["buckets"][float(s.labels["le"])] = s.value
            elif s.name == "vllm:generation_tokens_total":
                out["tokens"] = s.value
    return out


async def drive(port: int, rps: float, seconds: float, warmup: float) -> dict:
    body = {"model": "llama3-8b", "prompt": "x", "burstpilot_prompt_tokens": 600, "max_tokens": 200,
            "ignore_eos": True, "stream": True}  # fmt: skip
    rng = np.random.default_rng(0)
    url = f"http://127.0.0.1:{port}"
    done = {"ok": 0, "failed": 0}

    async def one(session):
        try:
            async with session.post(url + "/v1/completions", json=body) as r:
                async for _ in r.content.iter_any():
                    pass
                done["ok" if r.status == 200 else "failed"] += 1
        except aiohttp.ClientError:
            done["failed"] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        ports = [port + 1 + i for i in range(REPLICAS)]
        tasks = []
        t0 = time.perf_counter()
        t = 0.0
        before = None
        while t < warmup + seconds:
            t += rng.exponential(1 / rps)
            await asyncio.sleep(max(0.0, t0 + t - time.perf_counter()))
            if before is None and t >= warmup:
                before = [await scrape(session, p) for p in ports]
                tb = time.perf_counter()
            tasks.append(asyncio.create_task(one(session)))
        after = [await scrape(session, p) for p in ports]
        window = time.perf_counter() - tb
        await asyncio.gather(*tasks)
    les = sorted(after[0]["buckets"])
    counts = np.array(
        [sum(a["buckets"][le] - b["buckets"][le] for a, b in zip(after, before, strict=True)) for le in les]
    )
    total = counts[-1]
    tokens = sum(a["tokens"] - b["tokens"] for a, b in zip(after, before, strict=True))

    def share_within(limit):
        i = les.index(limit)
        return float(counts[i] / total) if total else float("nan")

    return {
        "rps": rps,
        "window_s": round(window, 1),
        "tokens_per_s": round(tokens / window),
        "steps": int(total),
        "steps_within_5ms": round(share_within(0.005), 4),
        "steps_within_20ms": round(share_within(0.02), 4),
        "steps_within_100ms": round(share_within(0.1), 4),
        "requests_ok": done["ok"],
        "requests_failed": done["failed"],
        "load_average_1m": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rps", type=float, default=40.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--processes", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    runs = []
    for k in args.processes:
        port = free_port_block(REPLICAS + 1)
        # -P: the checkout's root (with its operator/ folder) stays off sys.path
        cmd = [sys.executable, "-P", "-m", "burstpilot.cli", "sim", "fleet", "--replicas", str(REPLICAS), "--profile",
               "h100-llama3-8b", "--port", str(port), "--cold-start", "0", "--replica-processes", str(k)]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            said = next((line for line in iter(proc.stdout.readline, "") if "ready: " in line), None)
            if not said:
                raise SystemExit(f"the fleet exited ({proc.wait()}) before it was ready")
            r = asyncio.run(drive(port, args.rps, args.seconds, args.warmup))
        finally:
            proc.terminate()
            proc.wait(20)
        r["replica_processes"] = k
        print(json.dumps(r), flush=True)
        runs.append(r)
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data[f"fleet_{args.rps:g}rps"] = {"replicas": REPLICAS, "profile": "h100-llama3-8b",
                     "request": "600 prompt tokens, 200 generated, streaming via the router", "runs": runs}  # fmt: skip
    OUT.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
