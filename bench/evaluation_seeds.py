"""How far one policy's figures move with the simulator's seed alone: the same cases and workloads as
bench/evaluation_policies.py (its workloads are fixed; the seed draws the cold starts and the simulator's
randomness), the named policies re-run at each seed; writes bench/results/evaluation_seeds.json and prints one
line per run, then per case the spread (max / min GPU-hours, lowest attainment).

    .venv/bin/python bench/evaluation_seeds.py [--policies burstpilot] [--seeds 0,1,2] [--cases NAME,...]
        [--workers N]

No oracle is searched: "x oracle" needs the oracle of the same seed, which costs the whole benchmark's time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from evaluation_policies import cases, rerun_unit

OUT = Path(__file__).parent / "results" / "evaluation_seeds.json"


def run(job: tuple[str, str, int]) -> dict:
    name, unit, seed = job
    t0 = time.perf_counter()
    out = rerun_unit((name, "profile", unit, seed))
    return {"case": name, "unit": unit, "seed": seed, "wall_s": time.perf_counter() - t0,
            "metrics": out["metrics"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", default="burstpilot")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cases", default=None, help="comma list of case names (default: every day case)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    known = {c.name: c for c in cases()}
    names = args.cases.split(",") if args.cases else [n for n, c in known.items() if c.meta["kind"] == "day"]
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"--cases: unknown case(s): {', '.join(bad)} (known: {', '.join(known)})")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"--seeds: a comma list of integers, got {args.seeds!r}") from None
    jobs = [(n, u, s) for n in names for u in args.policies.split(",") for s in seeds]
    t0, rows = time.monotonic(), []
    with ProcessPoolExecutor(max_workers=args.workers or os.cpu_count()) as ex:
        for i, r in enumerate(ex.map(run, jobs), 1):
            m = r["metrics"]
            print(f"[{i}/{len(jobs)}] {r['case']} {r['unit']} seed {r['seed']}: {m['slo_attainment']:.2%} at "
                  f"{m['gpu_hours']:.1f} GPU-h ({r['wall_s']:.0f} s)", flush=True)  # fmt: skip
            rows.append(r)
    spread = {}
    for n in names:
        for u in args.policies.split(","):
            got = [r["metrics"] for r in rows if r["case"] == n and r["unit"] == u]
            gh = [m["gpu_hours"] for m in got]
            spread[f"{n}/{u}"] = {"gpu_hours_max_over_min": max(gh) / min(gh),
                                  "lowest_attainment": min(m["slo_attainment"] for m in got)}  # fmt: skip
            print(f"{n} {u}: GPU-hours {min(gh):.1f}-{max(gh):.1f} ({max(gh) / min(gh):.2f}x), lowest attainment "
                  f"{spread[f'{n}/{u}']['lowest_attainment']:.2%}")  # fmt: skip
    doc = {"benchmark": "evaluation_seeds", "seeds": seeds, "elapsed_s": time.monotonic() - t0,
           "load_average_1_5_15": list(os.getloadavg()), "runs": rows, "spread": spread}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out} in {doc['elapsed_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
