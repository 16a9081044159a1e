"""Discrete-event speed: a BurstGPT-shaped workload at 20 req/s over 16 H100 replicas, one hour and one day.

Targets on the development machine, one core: the hour in at most 20 s, the day (24 h from Monday 0:00, about
1.7 M requests) in at most 60 s. Writes the figures under "des" (the hour) and "des_24h" (the day) in
bench/results/sim.json (other keys of that file are kept), with the load average they ran at.

    .venv/bin/python bench/sim_des.py [--case 1h|24h|all] [--rps 20] [--replicas 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from burstpilot.sim import load_profile
from burstpilot.sim.des import SimCluster
from burstpilot.traces.generate import generate_preset

OUT = Path(__file__).parent / "results" / "sim.json"
CASES = {
    # key: (result key, start on the preset's week, duration, target wall seconds, label)
    "1h": ("des", 10 * 3600, 3600.0, 20.0, "from 10:00 (a weekday morning: the rate rises through the hour)"),
    "24h": ("des_24h", 0, 86400.0, 60.0, "Monday 0:00 to 24:00 (the whole diurnal cycle)"),
}


def write(key: str, value: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data[key] = value
    OUT.write_text(json.dumps(data, indent=1) + "\n")


def run(case: str, rps: float, replicas: int, profile_name: str) -> dict:
    key, start, duration, target, label = CASES[case]
    profile = load_profile(profile_name)
    trace = generate_preset("burstgpt", duration_s=duration, rps=rps, seed=0, start_s=start).shifted(-start)
    print(f"{case}: {len(trace):,} requests; simulating...", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    cluster = SimCluster(profile, trace, initial_replicas=replicas, seed=0)
    res = cluster.finish()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    fig = {
        "workload": f"burstgpt preset {label}, {duration:g} s at {rps:g} req/s (seed 0)",
        "profile": profile.name,
        "replicas": replicas,
        "requests": len(trace),
        "engine_steps": int(sum(r.engine.step for r in cluster.replicas)),
        "generated_tokens": int(sum(r.engine.generation_tokens for r in cluster.replicas)),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "simulated_s_per_wall_s": round(res.end_time_s / wall, 1),
        "target_wall_s": target,
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "summary": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.summary().items()},
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
    }
    write(key, fig)
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=[*CASES, "all"], default="all")
    ap.add_argument("--rps", type=float, default=20.0)
    ap.add_argument("--replicas", type=int, default=16)
    ap.add_argument("--profile", default="h100-llama3-8b")
    args = ap.parse_args()
    for case in CASES if args.case == "all" else [args.case]:
        print(json.dumps(run(case, args.rps, args.replicas, args.profile), indent=1), flush=True)


if __name__ == "__main__":
    main()
