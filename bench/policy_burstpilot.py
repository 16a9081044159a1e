"""The decision core alone on the evaluation benchmark's cases, against the other policies' figures of the last
full run (bench/results/evaluation.json, same workloads and seeds): the quick loop for judging a policy
change on the day-long yardstick before the full comparison re-runs every policy.

    .venv/bin/python bench/policy_burstpilot.py [--cases a,b] [--workers N]

Writes bench/results/policy_burstpilot.json: per case burstpilot's attainment, violations, GPU-hours, x oracle,
the learned capacity it ended with, the count of decisions per bound, and the figures it is compared with;
records os.getloadavg() (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from evaluation_policies import cases

from burstpilot.evaluation.harness import prepare, run_unit

RESULTS = Path(__file__).parent / "results"
FULL = RESULTS / "evaluation.json"
OUT = RESULTS / "policy_burstpilot.json"
COMPARE = ("oracle", "static-peak", "hpa", "keda", "kpa", "dynamo")


def run_case(name: str) -> dict:
    case = next(c for c in cases() if c.name == name)
    t0 = time.perf_counter()
    p = prepare(case, seed=0, search=False)
    r = run_unit(p, "burstpilot")
    m = r["metrics"]
    return {
        "case": name,
        "wall_s": time.perf_counter() - t0,
        "metrics": {
            k: m.get(k) for k in ("requests", "slo_attainment", "slo_violations", "gpu_hours", "meets_goal")
        },
        "capacity": m.get("capacity"),
        "reasons": r.get("reasons"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=None, help="comma list (default: every case of the last full run)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    full = json.loads(FULL.read_text())["cases"] if FULL.exists() else {}
    names = args.cases.split(",") if args.cases else [c.name for c in cases() if c.name in full]
    load0 = os.getloadavg()
    with ProcessPoolExecutor(args.workers) as ex:
        runs = list(ex.map(run_case, names))
    out = {"loadavg_start": load0, "loadavg_end": os.getloadavg(), "cases": {}}
    for run in runs:
        ref = full.get(run["case"], {}).get("policies", {})
        oracle = (ref.get("oracle") or {}).get("gpu_hours")
        m = run["metrics"]
        run["x_oracle"] = m["gpu_hours"] / oracle if oracle else None
        run["compare"] = {
            k: {f: ref[k].get(f) for f in ("requests", "slo_attainment", "slo_violations", "gpu_hours")}
            for k in COMPARE
            if k in ref
        }
        ref_n = {v.get("requests") for v in run["compare"].values()} - {None}
        if ref_n and ref_n != {m["requests"]}:  # the full run was made on another version of the workload
            run["compare_note"] = (
                f"not comparable: the full run's workload had {sorted(ref_n)} requests, this run's "
                f"{m['requests']} (re-run bench/evaluation_policies.py for this case)"
            )
            print(f"{run['case']}: {run['compare_note']}", flush=True)
        out["cases"][run["case"]] = run
        cap = run["capacity"] or {}
        print(
            f"{run['case']}: attainment {m['slo_attainment']:.4f}, {m['slo_violations']} violations, "
            f"{m['gpu_hours']:.1f} GPU-h"
            + (f" ({run['x_oracle']:.2f}x oracle {oracle:.1f})" if oracle else "")
            + f", capacity {cap.get('rate_per_replica', float('nan')):.3g}/s ({cap.get('factor', 1):.2f}x profile), "
            f"{run['wall_s']:.0f} s",
            flush=True,
        )
        for k, v in run["compare"].items():
            print(
                f"    {k:12s} {v['slo_attainment']:.4f} {v['slo_violations']:6d} {v['gpu_hours']:.1f} GPU-h"
            )
    OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
