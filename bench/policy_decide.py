"""What one burstpilot decision costs: the decision core (``burstpilot.policy.decide``, the code the operator runs
on every tick of every pool) timed tick by tick on the first hours of the 16-GPU weekday of the evaluation
benchmark, with the functions that take the time (cProfile, cumulative). The operator's CPU for N pools is about
N x the mean / the tick interval (500 pools at a 15 s interval and 10 ms a decision: a third of a core).

    .venv/bin/python bench/policy_decide.py [--case NAME] [--hours H] [--top N]

Writes bench/results/policy_decide.json; records os.getloadavg() (the machine is shared).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time
from pathlib import Path

import numpy as np
from evaluation_policies import cases

from burstpilot.evaluation.harness import prepare
from burstpilot.evaluation.runner import make_policy, run_policy

OUT = Path(__file__).parent / "results" / "policy_decide.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="day-weekday-16gpu-cold60")
    ap.add_argument("--hours", type=float, default=8.0, help="the first hours of the case's day (default 8)")
    ap.add_argument("--top", type=int, default=12, help="functions to list (default 12)")
    args = ap.parse_args()
    case = next(c for c in cases() if c.name == args.case)
    p = prepare(case, seed=0, search=False)
    workload = p.workload.subset(np.asarray(p.workload.arrival_s) < args.hours * 3600.0)

    def run(profile: cProfile.Profile | None) -> np.ndarray:
        policy, initial = make_policy("burstpilot", p.spec, workload, case.cold_start_s)
        ns: list[int] = []
        decide = policy.decide

        def timed(spec, obs, state):
            t0 = time.perf_counter_ns()
            out = decide(spec, obs, state)
            ns.append(time.perf_counter_ns() - t0)
            return out

        object.__setattr__(policy, "decide", timed)  # the policy is a frozen dataclass
        if profile is not None:
            profile.enable()
        run_policy(policy, p.spec, case.profile, workload, 0, case.cold_start_s, initial,
                   exact_cold_start=case.exact_cold_start)  # fmt: skip
        if profile is not None:
            profile.disable()
        return np.asarray(ns) / 1e6

    load0 = os.getloadavg()
    t0 = time.perf_counter()
    ms = run(None)
    wall = time.perf_counter() - t0
    prof = cProfile.Profile()
    run(prof)  # a second pass for where the time goes (cProfile slows it)
    stats = pstats.Stats(prof)
    total = sum(v[3] for k, v in stats.stats.items() if k[2] == "timed") or 1.0
    rows = sorted(
        ((f"{Path(k[0]).parent.name}/{Path(k[0]).name}:{k[2]}", v[3]) for k, v in stats.stats.items()),
        key=lambda r: -r[1],
    )
    top = [
        {"function": name, "share_of_decide": cum / total}
        for name, cum in rows
        if not name.startswith(("bench/", "evaluation/runner.py", "~")) and cum <= total * 1.0001
    ][: args.top]
    out = {
        "case": args.case,
        "hours": args.hours,
        "decisions": len(ms),
        "decide_ms_mean": float(ms.mean()),
        "decide_ms_p50": float(np.quantile(ms, 0.5)),
        "decide_ms_p99": float(np.quantile(ms, 0.99)),
        "decide_ms_max": float(ms.max()),
        "wall_s": wall,
        "top_functions": top,
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(
        f"{args.case}, first {args.hours:g} h: {len(ms)} decisions, mean {ms.mean():.2f} ms, "
        f"p99 {np.quantile(ms, 0.99):.2f} ms; share of the decision's time (a second pass, under cProfile):"
    )
    for t in top:
        print(f"  {100 * t['share_of_decide']:5.1f} %  {t['function']}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
