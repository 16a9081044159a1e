"""Hour by hour on the day cases: where the oracle's GPU-hours are saved, against burstpilot's.

A day case meets the goal on the day's requests taken together, so a schedule may let some hours fall under it
while others, with slack, pay for them. This re-runs, on each day case of the last full run
(bench/results/evaluation.json, seed 0, the same workloads), the schedule the oracle's search chose there (its
family and parameter, from the case's meta) and the named online policies, and writes per hour the requests,
the attainment and the mean replicas up (ready and starting) of each: bench/results/evaluation_hours.json and
bench/results/evaluation_hours.png. The oracle's re-run must reproduce its figures of the full run (same
schedule, seed and cold-start draws); where it does not, the script says so and exits non-zero, after writing
what it measured.

    .venv/bin/python bench/evaluation_hours.py [--cases NAME,...] [--policies burstpilot] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from evaluation_policies import cases

from burstpilot.evaluation.harness import prepare
from burstpilot.evaluation.oracle_search import WINDOW_S
from burstpilot.evaluation.runner import HOUR_S, SimRunner, make_policy, run_policy

RESULTS = Path(__file__).parent / "results"
FULL = RESULTS / "evaluation.json"
OUT = RESULTS / "evaluation_hours.json"
FIGURE = RESULTS / "evaluation_hours.png"
FLOOR_PCT = 95.0  # the attainment axis starts here, or at the 5 % below a case's worst hour


def replicas_by_hour(timeline: list[tuple[float, int, int]], end_s: float) -> list[float]:
    """The time-weighted mean of replicas up (ready + starting) in each hour of ``[0, end_s]``."""
    t = np.array([x[0] for x in timeline] + [end_s], dtype=float)
    up = np.array([x[1] + x[2] for x in timeline], dtype=float)
    out = []
    for k in range(int(math.ceil(end_s / HOUR_S))):
        a, b = k * HOUR_S, min((k + 1) * HOUR_S, end_s)
        lo, hi = np.clip(t[:-1], a, b), np.clip(t[1:], a, b)
        out.append(float(((hi - lo) * up).sum() / (b - a)) if b > a else 0.0)
    return out


def run_job(job: tuple[str, str, str | None, float | None]) -> dict:
    name, unit, family, param = job
    case = next(c for c in cases() if c.name == name)
    t0 = time.perf_counter()
    p = prepare(case, seed=0, search=False)
    if unit == "oracle":
        sr = SimRunner(
            case.profile, p.spec, p.workload, 0, case.cold_start_s, exact_cold_start=case.exact_cold_start
        )
        if family == "constant":
            run = sr.run_constant(int(param), "oracle")
        else:
            sched, initial = sr.follow(float(param), WINDOW_S[family])
            run = sr.run_schedule(sched, initial, family)
    else:
        policy, initial = make_policy(unit, p.spec, p.workload, case.cold_start_s)
        run = run_policy(policy, p.spec, case.profile, p.workload, 0, case.cold_start_s, initial,
                         exact_cold_start=case.exact_cold_start)  # fmt: skip
    m = run.metrics
    return {
        "case": name,
        "unit": unit,
        "schedule": f"{family} {param:g}" if unit == "oracle" else None,
        "wall_s": time.perf_counter() - t0,
        "slo_attainment": m["slo_attainment"],
        "gpu_hours": m["gpu_hours"],
        "hours_under_goal": m["hours_under_goal"],
        "worst_hour_attainment": m["worst_hour_attainment"],
        "requests_by_hour": m["requests_by_hour"],
        "attainment_by_hour": m["attainment_by_hour"],
        "replicas_by_hour": replicas_by_hour(run.timeline, float(p.workload.duration_s)),
    }


def figure(by_case: dict[str, dict[str, dict]], goal: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(by_case)
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 2.0 * len(names) + 0.4), squeeze=False, sharex=True)
    colors = {"oracle": "0.35", "burstpilot": "tab:blue"}
    for row, name in zip(axes, names, strict=True):
        said = []
        for unit, r in by_case[name].items():
            color = colors.get(unit, None)
            hours = np.arange(len(r["attainment_by_hour"])) + 0.5
            att = [np.nan if a is None else 100 * a for a in r["attainment_by_hour"]]
            row[0].step(hours, att, where="mid", color=color, label=unit)
            row[1].step(hours, r["replicas_by_hour"], where="mid", color=color, label=unit)
            said.append(
                f"{unit} {100 * r['slo_attainment']:.2f} % ({r['hours_under_goal']} h under), "
                f"{r['gpu_hours']:.1f} GPU-h"
            )
        row[0].axhline(100 * goal, color="tab:red", lw=0.8, ls="--")
        worst = min(100 * r["worst_hour_attainment"] for r in by_case[name].values())
        row[0].set_ylim(min(FLOOR_PCT, 5 * math.floor(worst / 5)), 100)
        row[0].set_ylabel("attainment %", fontsize=8)
        row[1].set_ylabel("replicas up", fontsize=8)
        row[1].set_ylim(bottom=0)
        row[0].set_title(f"{name}: {'; '.join(said)}", fontsize=8, loc="left")
        for ax in row:
            ax.tick_params(labelsize=7)
    handles, labels = axes[0][1].get_legend_handles_labels()
    handles.append(axes[0][0].get_lines()[-1])
    labels.append(f"goal {100 * goal:g} %")
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, frameon=False)
    for ax in axes[-1]:
        ax.set_xlabel("hour of the day", fontsize=8)
        ax.set_xticks(range(0, 25, 3))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=None, help="comma list (default: every day case of the last full run)")
    ap.add_argument("--policies", default="burstpilot", help="online policies to set beside the oracle")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    full = json.loads(FULL.read_text())["cases"]
    names = (
        args.cases.split(",") if args.cases else [n for n, c in full.items() if c["meta"]["kind"] == "day"]
    )
    jobs = []
    for name in names:
        o = full[name]["meta"]["oracle"]
        jobs.append((name, "oracle", o["family"], float(o["param"])))
        jobs += [(name, u, None, None) for u in args.policies.split(",")]
    load0 = os.getloadavg()
    by_case: dict[str, dict[str, dict]] = {}
    astray = []  # oracle re-runs that do not reproduce the full run's figures
    with ProcessPoolExecutor(args.workers) as ex:
        for r in ex.map(run_job, jobs):
            ref = full[r["case"]]["policies"][r["unit"]]
            r["as_in_full_run"] = math.isclose(r["slo_attainment"], ref["slo_attainment"], rel_tol=1e-9) and (
                math.isclose(r["gpu_hours"], ref["gpu_hours"], rel_tol=1e-9)
            )
            if r["unit"] == "oracle" and not r["as_in_full_run"]:
                astray.append(
                    f"{r['case']}: the oracle's schedule re-run gives {r['slo_attainment']:.4%} at "
                    f"{r['gpu_hours']:.2f} GPU-h, the full run {ref['slo_attainment']:.4%} at "
                    f"{ref['gpu_hours']:.2f}: not the same run"
                )
            by_case.setdefault(r["case"], {})[r["unit"]] = r
            print(f"{r['case']} {r['unit']}: {r['slo_attainment']:.2%} at {r['gpu_hours']:.1f} GPU-h, "
                  f"{r['hours_under_goal']} of {len(r['attainment_by_hour'])} hours under the goal "
                  f"(worst {r['worst_hour_attainment']:.2%}), {r['wall_s']:.0f} s", flush=True)  # fmt: skip
    goal = float(full[names[0]]["meta"]["slo"]["attainment"])
    out = {"loadavg_start": load0, "loadavg_end": os.getloadavg(), "goal": goal,
           "cases": {n: by_case[n] for n in names}}  # fmt: skip
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    figure(out["cases"], goal, FIGURE)
    print(f"wrote {OUT} and {FIGURE}")
    if astray:
        sys.exit("\n".join(astray))


if __name__ == "__main__":
    main()
