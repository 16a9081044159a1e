"""Hour by hour on the day cases: where the oracle's GPU-hours are saved, against burstpilot's.

A day case meets the goal on the day's requests taken together, so a schedule may let some hours fall under it
while others, with slack, pay for them. This re-runs, on each day case of the last full run
(bench/results/evaluation.json, seed 0, the same workloads), the schedule the oracle's search chose there (its
family and parameter, from the case's meta) and the named online policies, and writes per hour the requests,
the attainment and the mean replicas up (ready and starting) of each: bench/results/evaluation_hours.json and
bench/results/evaluation_hours.png. With ``--constant 1,2,...``, constant pools of those counts too (capped at
each case's maxReplicas): what each count misses hour by hour at whatever load the hour brings, and the hours
no count meets the goal in (the largest count's misses, a tail no replica removes); the figure is then a map
of each count's violations hour by hour with the oracle's and the policies' replicas across it. The oracle's re-run must reproduce its figures of the full run (same
schedule, seed and cold-start draws); where it does not, the script says so and exits non-zero, after writing
what it measured.

    .venv/bin/python bench/evaluation_hours.py [--cases NAME,...] [--policies burstpilot] [--constant 1,2,3,4]
                                               [--workers N] [--out PATH.json]
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
    if unit == "oracle" or family == "pool":
        sr = SimRunner(
            case.profile, p.spec, p.workload, 0, case.cold_start_s, exact_cold_start=case.exact_cold_start
        )
        if family == "pool":
            run = sr.run_constant(int(param), unit)
        elif family == "constant":
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
        "max_replicas": p.spec.max_replicas,
        "gpus_per_replica": p.spec.gpus_per_replica,
        "wall_s": time.perf_counter() - t0,
        "slo_attainment": m["slo_attainment"],
        "gpu_hours": m["gpu_hours"],
        "hours_under_goal": m["hours_under_goal"],
        "worst_hour_attainment": m["worst_hour_attainment"],
        "requests_by_hour": m["requests_by_hour"],
        "attainment_by_hour": m["attainment_by_hour"],
        "replicas_by_hour": replicas_by_hour(run.timeline, float(p.workload.duration_s)),
    }


def count_per_hour(units: dict[str, dict], goal: float) -> dict:
    """Two schedules of one constant count per hour, read off the constant pools' hours (each hour as that count
    served it all day long: no cold starts, no carry-over from a different count the hour before, so an
    approximation of what switching counts would give): the fewest replica-hours that keep *every* hour at the
    goal (the fewest count that meets each; the largest run where none does), and the fewest that meet the
    *day's* goal (an exact dynamic program over the day's violations, the budget ``(1 - goal)`` of its requests).
    The first is what a policy that holds the goal hour by hour could at best cost; the gap between the two is
    what spending the day's budget across its hours is worth, which only a schedule that knows the day can plan.
    """
    counts = sorted(int(u.split("-")[1]) for u in units if u.startswith("constant-"))
    first = units[f"constant-{counts[0]}"]
    req, gpus = first["requests_by_hour"], first["gpus_per_replica"]
    att = {n: [1.0 if a is None else a for a in units[f"constant-{n}"]["attainment_by_hour"]] for n in counts}
    every = [next((n for n in counts if att[n][h] >= goal), counts[-1]) for h in range(len(req))]
    budget = math.floor((1 - goal) * sum(req))
    best: dict[int, tuple[int, list[int]]] = {
        0: (0, [])
    }  # violations so far -> (fewest replica-hours, counts)
    for h, r in enumerate(req):
        nxt: dict[int, tuple[int, list[int]]] = {}
        for v, (cost, path) in best.items():
            for n in counts:
                v2 = v + round(r * (1 - att[n][h]))
                if v2 <= budget and (v2 not in nxt or nxt[v2][0] > cost + n):
                    nxt[v2] = (cost + n, [*path, n])
        best = nxt
    day = min(best.values()) if best else None
    return {
        "every_hour": {"counts": every, "gpu_hours": float(sum(every) * gpus)},
        "day_goal": None if day is None else {"counts": day[1], "gpu_hours": float(day[0] * gpus)},
    }


def no_count_meets(units: dict[str, dict], goal: float) -> dict:
    """The hours the largest constant pool run leaves under the goal (no count up to it meets them) and their
    share of the day's requests."""
    name = max((u for u in units if u.startswith("constant-")), key=lambda u: int(u.split("-")[1]))
    r = units[name]
    hours = [h for h, a in enumerate(r["attainment_by_hour"]) if a is not None and a < goal]
    total = sum(r["requests_by_hour"])
    return {
        "count": int(name.split("-")[1]),
        "hours": hours,
        "requests_share": sum(r["requests_by_hour"][h] for h in hours) / total if total else 0.0,
    }


def count_map(by_case: dict[str, dict[str, dict]], goal: float, path: Path) -> None:
    """Per case, the violation rate of each constant count in each hour (green within the goal's allowance, red
    over it), with the replicas the oracle and the online policies ran drawn across it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    allowed = 100 * (1 - goal)
    names = list(by_case)
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.5 * len(names) + 0.9), squeeze=False)
    lines = {"oracle": ("black", "oracle"), "burstpilot": ("tab:blue", "burstpilot")}
    image = None
    for ax, name in zip(axes[:, 0], names, strict=True):
        units = by_case[name]
        counts = sorted(int(u.split("-")[1]) for u in units if u.startswith("constant-"))
        miss = np.array(
            [
                [np.nan if a is None else 100 * (1 - a) for a in units[f"constant-{n}"]["attainment_by_hour"]]
                for n in counts
            ]
        )
        hours = miss.shape[1]
        image = ax.imshow(
            np.minimum(miss, 5 * allowed), origin="lower", aspect="auto", cmap="RdYlGn_r",
            norm=TwoSlopeNorm(vmin=0, vcenter=allowed, vmax=5 * allowed), extent=(0, hours, -0.5, len(counts) - 0.5),
        )  # fmt: skip
        ax.set_yticks(range(len(counts)), [str(n) for n in counts])
        best = [n for n in counts if units[f"constant-{n}"]["slo_attainment"] >= goal]
        runs = []
        for unit, (color, label) in lines.items():
            if unit in units:
                r = units[unit]
                y = np.interp(r["replicas_by_hour"], counts, range(len(counts)))
                ax.step(np.arange(hours + 1), [*y, y[-1]], where="post", color=color, lw=1.6, label=label)
                runs.append(f"{unit} {100 * r['slo_attainment']:.2f} % at {r['gpu_hours']:.0f} GPU-h")
        per = count_per_hour(units, goal)
        plan = f"a count per hour: each hour at the goal {per['every_hour']['gpu_hours']:.0f} GPU-h"
        if per["day_goal"] is not None:
            plan += f", the day's goal {per['day_goal']['gpu_hours']:.0f}"
        fewest = f"fewest constant at the goal: {best[0]}" if best else "no constant count meets the goal"
        ax.set_title(f"{name}: {'; '.join(runs)}\n{fewest}; {plan}", fontsize=8, loc="left")
        ax.set_ylabel("replicas", fontsize=8)
        ax.set_xticks(range(0, hours + 1, 3))
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("hour of the day", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.86, 1 - 0.35 / fig.get_figheight()))
    cax = fig.add_axes((0.88, 0.1, 0.015, 0.8))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label(f"violations in the hour, % (the goal allows {allowed:g} %)", fontsize=8)
    ticks = [t for t in bar.get_ticks() if t <= 5 * allowed]
    bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks[:-1]] + [f"{ticks[-1]:g} and more"])
    bar.ax.tick_params(labelsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
            color = colors.get(unit)
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
    ap.add_argument(
        "--constant", default="", help="constant pools to add, e.g. 1,2,3,4 (capped at maxReplicas)"
    )
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument(
        "--out", type=Path, default=OUT, help=f"the results file (default {OUT}); the figure beside it"
    )
    args = ap.parse_args()
    counts = sorted({int(x) for x in args.constant.split(",") if x.strip()})
    full = json.loads(FULL.read_text())["cases"]
    names = (
        args.cases.split(",") if args.cases else [n for n, c in full.items() if c["meta"]["kind"] == "day"]
    )
    jobs = []
    for name in names:
        o = full[name]["meta"]["oracle"]
        jobs.append((name, "oracle", o["family"], float(o["param"])))
        jobs += [(name, u, None, None) for u in args.policies.split(",") if u]
        top = int(full[name]["meta"]["max_replicas"])
        jobs += [(name, f"constant-{n}", "pool", float(n)) for n in sorted({min(n, top) for n in counts})]
    load0 = os.getloadavg()
    by_case: dict[str, dict[str, dict]] = {}
    astray = []  # oracle re-runs that do not reproduce the full run's figures
    with ProcessPoolExecutor(args.workers) as ex:
        for r in ex.map(run_job, jobs):
            ref = full[r["case"]]["policies"].get(r["unit"])
            r["as_in_full_run"] = (
                None
                if ref is None
                else (
                    math.isclose(r["slo_attainment"], ref["slo_attainment"], rel_tol=1e-9)
                    and math.isclose(r["gpu_hours"], ref["gpu_hours"], rel_tol=1e-9)
                )
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
    if counts:
        out["no_count_meets"] = {n: no_count_meets(by_case[n], goal) for n in names}
        out["count_per_hour"] = {n: count_per_hour(by_case[n], goal) for n in names}
        for n, v in out["count_per_hour"].items():
            day = v["day_goal"]
            print(f"{n}: a count per hour, every hour at the goal {v['every_hour']['gpu_hours']:.1f} GPU-h, the "
                  f"day's goal {'-' if day is None else format(day['gpu_hours'], '.1f')} GPU-h")  # fmt: skip
        for n, v in out["no_count_meets"].items():
            print(f"{n}: at {v['count']} replicas (the most run), {len(v['hours'])} hours under the goal "
                  f"({v['requests_share']:.0%} of the requests): {v['hours']}")  # fmt: skip
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    fig_path = args.out.with_suffix(".png")
    (count_map if counts else figure)(out["cases"], goal, fig_path)
    print(f"wrote {args.out} and {fig_path}")
    if astray:
        sys.exit("\n".join(astray))


if __name__ == "__main__":
    main()
