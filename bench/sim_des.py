"""Discrete-event speed: one hour of a 20 req/s BurstGPT-shaped workload over 16 H100 replicas.

Target: at most 20 s of wall time on the development machine. Writes the figures under "des" in
bench/results/sim.json (other keys of that file are kept).

    .venv/bin/python bench/sim_des.py [--duration-s 3600] [--rps 20] [--replicas 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from burstpilot.sim import load_profile
from burstpilot.sim.des import SimCluster
from burstpilot.traces.generate import generate_preset

OUT = Path(__file__).parent / "results" / "sim.json"


def write(key: str, value: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data[key] = value
    OUT.write_text(json.dumps(data, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=3600.0)
    ap.add_argument("--rps", type=float, default=20.0)
    ap.add_argument("--replicas", type=int, default=16)
    ap.add_argument("--profile", default="h100-llama3-8b")
    args = ap.parse_args()
    profile = load_profile(args.profile)
    start = 10 * 3600  # a weekday morning: the preset's periodic shape rises through the hour
    trace = generate_preset("burstgpt", duration_s=args.duration_s, rps=args.rps, seed=0, start_s=start)
    trace = trace.shifted(-start)
    t0 = time.perf_counter()
    cluster = SimCluster(profile, trace, initial_replicas=args.replicas, seed=0)
    res = cluster.finish()
    wall = time.perf_counter() - t0
    steps = sum(r.engine.step for r in cluster.replicas)
    tokens = sum(r.engine.generation_tokens for r in cluster.replicas)
    fig = {
        "workload": f"burstgpt preset from 10:00, {args.duration_s:g} s at {args.rps:g} req/s (seed 0)",
        "profile": profile.name,
        "replicas": args.replicas,
        "requests": len(trace),
        "engine_steps": int(steps),
        "generated_tokens": int(tokens),
        "wall_s": round(wall, 2),
        "simulated_s_per_wall_s": round(res.end_time_s / wall, 1),
        "target_wall_s": 20.0,
        "summary": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.summary().items()},
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
    }
    write("des", fig)
    print(json.dumps(fig, indent=1))


if __name__ == "__main__":
    main()
