"""Every scaling policy and the oracle on day-long workloads at the real time axis, through the discrete-event
simulator; writes bench/results/evaluation.json (after each case) with per policy attainment, violations,
GPU-hours, x oracle, capacity source, and each case's run time.

Day-long cases (no compression): 24 h of the BurstGPT preset, a weekday (Tuesday) and a weekend day
(Saturday: the same pool, the preset's weekend rate, 0.54 of the Tuesday's), for pools of about 4 GPUs (h100-llama3-8b, 1 GPU a replica), 16 and 32 GPUs (h100-llama3-70b-tp4,
4 GPUs a replica), cold starts 60, 180 and 600 s; the Azure conversation trace (one hour) on its own clock. A
pool "of about N GPUs" is the one the day's busiest minute needs at the replica's load-tested capacity (the
one-replica load test of burstpilot.evaluation.capacity): the mean rate is set so that this holds. The
30-minute cases compressed 16x are kept, labelled "stress": they shorten every burst against the cold start.

    .venv/bin/python bench/evaluation_policies.py [--cases day-weekday-16gpu-cold180,...] [--quick]
        [--shard i/n --out DIR] [--merge DIR...] [--rerun UNIT,...] [--workers N] [--list]

Every case runs its units (one per policy, one per oracle family) in --workers processes; --shard runs one
share of all the units (for a Kubernetes Indexed Job or several machines) into DIR, --merge joins shard outputs
into the results file. --rerun runs only the named units (e.g. burstpilot, after a policy change) on the chosen
cases of the results file and replaces their rows, the other policies' and the oracle's kept; the case's meta
says which units were re-run and when. Figures are recorded with os.getloadavg() (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
from shared_data import AZURE

from burstpilot.evaluation.capacity import measure_capacity
from burstpilot.evaluation.harness import Case, merge, parse_shard, prepare, read_units, run_sweep, run_unit
from burstpilot.evaluation.runner import DEFAULT_POLICIES, TUNED_POLICIES, prepare_workload
from burstpilot.policy import SLO, CapacityModel, PoolSpec
from burstpilot.sim import load_profile
from burstpilot.traces import read_trace
from burstpilot.traces.generate import WEEKDAY, generate_preset, scale_replay

OUT = Path(__file__).parent / "results" / "evaluation.json"
POLICIES = DEFAULT_POLICIES + TUNED_POLICIES
SLO_ = SLO(ttft_s=2.0, tpot_s=0.1, attainment=0.99)
DAY = 86400.0
TUESDAY, SATURDAY = 1, 5
POOLS = {4: "h100-llama3-8b", 16: "h100-llama3-70b-tp4", 32: "h100-llama3-70b-tp4"}
UNIT_RPS_SEED = 11


def spec_for(profile, cold: float, max_replicas: int) -> PoolSpec:
    return PoolSpec(profile=profile.name, model=CapacityModel.from_profile(profile), gpus_per_replica=profile.gpus_per_replica,
                    min_replicas=1, max_replicas=max_replicas, cold_start_s=cold, slo=SLO_)  # fmt: skip


@cache
def peak_to_mean(day: int) -> float:
    """The preset day's busiest minute over its mean rate (from a day generated at 10 req/s)."""
    t = generate_preset("burstgpt", duration_s=DAY, rps=10.0, seed=UNIT_RPS_SEED, start_s=day * DAY)
    counts = np.bincount(((t.arrival_s - day * DAY) // 60).astype(int), minlength=1440)
    return float(counts.max() / counts.mean())


@cache
def measured_rate(profile_name: str) -> float:
    """One replica's load-tested rate at the SLO on the preset's length mix."""
    profile = load_profile(profile_name)
    t = generate_preset("burstgpt", duration_s=3600, rps=10.0, seed=UNIT_RPS_SEED, start_s=10 * 3600)
    w, _ = prepare_workload(scale_replay(t, speedup=1.0), profile)
    return measure_capacity(profile, spec_for(profile, 60.0, 1), w).detail["measured_rate"]


def day_rps(gpus: int, day: int) -> float:
    """The mean rate of ``day`` for the pool "of about ``gpus`` GPUs": the one a weekday's busiest minute
    needs. A weekend day is the same pool facing the preset's weekend traffic (``WEEKDAY``: 0.5-0.55 of a
    Tuesday's); one day of the preset alone has the same hourly shape on every day of the week, so sizing a
    Saturday's own busiest minute would repeat the Tuesday."""
    profile = load_profile(POOLS[gpus])
    replicas = gpus / profile.gpus_per_replica
    weekday_rps = replicas * measured_rate(profile.name) * 0.85 / peak_to_mean(TUESDAY)
    return weekday_rps * float(WEEKDAY[day] / WEEKDAY[TUESDAY])


def preset_day(rps: float, day: int, seed: int):
    t = generate_preset("burstgpt", duration_s=DAY, rps=rps, seed=seed, start_s=day * DAY)
    return scale_replay(t, speedup=1.0, start_s=day * DAY)


def stress_day(rps: float, seed: int):
    """08:00-16:00 of a weekday compressed 16x into 30 minutes (the earlier benchmark's cases)."""
    t = generate_preset("burstgpt", duration_s=8 * 3600, rps=rps / 16, seed=seed, start_s=DAY + 8 * 3600)
    return scale_replay(t, speedup=16)


def cases() -> list[Case]:
    out: list[Case] = []

    def add(name, make, profile_name, cold, max_replicas, label, kind, **meta):
        profile = load_profile(profile_name)
        out.append(Case(name=name, workload=make, profile=profile, spec=spec_for(profile, cold, max_replicas),
                        cold_start_s=cold, label=label, meta={"kind": kind, **meta}))  # fmt: skip

    grid = [(16, TUESDAY, c) for c in (60.0, 180.0, 600.0)] + [(4, TUESDAY, 180.0), (32, TUESDAY, 180.0)]
    grid += [(16, SATURDAY, 180.0), (4, SATURDAY, 180.0), (32, SATURDAY, 180.0)]
    for gpus, day, cold in grid:
        which = "weekday" if day == TUESDAY else "weekend"
        profile_name = POOLS[gpus]
        gpr = load_profile(profile_name).gpus_per_replica
        add(
            f"day-{which}-{gpus}gpu-cold{cold:g}",
            lambda gpus=gpus, day=day: preset_day(day_rps(gpus, day), day, seed=1),
            profile_name, cold, 2 * gpus // gpr,
            f"BurstGPT preset, 24 h {which} ({'Tuesday' if day == TUESDAY else 'Saturday'}), pool of about "
            f"{gpus} GPUs, cold start {cold:g} s, real time axis",
            "day", gpus=gpus,
        )  # fmt: skip
    if AZURE.exists():
        add("azure-conv-1h-16gpu-cold180", lambda: read_trace(AZURE), POOLS[16], 180.0, 8,
            "Azure LLM inference trace 2023 (conversation), its own hour and rate, real time axis", "trace")  # fmt: skip
    for rps, cold in ((20.0, 60.0), (20.0, 180.0)):
        add(f"stress-30min-x16-{rps:g}rps-cold{cold:g}", lambda rps=rps: stress_day(rps, 1), "h100-llama3-8b",
            cold, 32, f"STRESS: a weekday 08:00-16:00 compressed 16x into 30 min at {rps:g} req/s", "stress")  # fmt: skip
    return out


def rerun_unit(job: tuple) -> dict:
    """One unit of one case, alone (the case found by name among ``cases()`` with the capacity suffix):
    ``(name, capacity, unit)``, or ``(name, capacity, unit, seed)`` for another simulator seed than 0."""
    name, capacity, unit, *rest = job
    case = next(c for c in cases() if c.name == name.removesuffix(f"+{capacity}"))
    case.name, case.capacity = name, capacity
    p = prepare(case, seed=rest[0] if rest else 0, search=False)
    return run_unit(p, unit)


def summary_line(name: str, res: dict) -> str:
    m = res["meta"]
    return (
        f"{name}: {m['requests']:,} requests, {m['elapsed_s']:.0f} s wall ({m['wall_s']:.0f} s of simulation)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=None, help="comma list of case names (default: all)")
    ap.add_argument("--quick", action="store_true", help="the stress cases and the Azure hour only")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--capacity", choices=("profile", "measured"), default="profile",
                    help="the policies' capacity source (measured: a one-replica load test; case names get "
                    "'+measured')")  # fmt: skip
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--shard", default=None, metavar="i/n", help="run share i of n of every case's units")
    ap.add_argument("--out", type=Path, default=None, help="with --shard: the shard's output folder")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="join shard folders into the results")
    ap.add_argument("--rerun", default=None, metavar="UNIT,...",
                    help="re-run only these units on the chosen cases already in the results file")  # fmt: skip
    args = ap.parse_args()
    all_cases = cases()
    if args.capacity != "profile":
        for c in all_cases:
            c.name, c.capacity = f"{c.name}+{args.capacity}", args.capacity
    if args.list:
        for c in all_cases:
            print(f"{c.name:40s} {c.label}")
        return
    chosen = all_cases
    if args.quick:
        chosen = [c for c in all_cases if c.meta["kind"] != "day"]
    if args.cases:
        want = set(args.cases.split(","))
        chosen = [c for c in all_cases if c.name in want]
        if len(chosen) != len(want):
            raise SystemExit(f"unknown case(s): {', '.join(want - {c.name for c in all_cases})}")
    saved = json.loads(OUT.read_text()) if OUT.exists() else {}
    out: dict = {"profile_pools": POOLS, "slo": {"ttft_s": 2.0, "tpot_s": 0.1, "attainment": 0.99},
                 "cases": {k: v for k, v in saved.get("cases", {}).items() if "meta" in v and "case" in v["meta"]}}  # fmt: skip

    def save(name: str, res: dict) -> None:
        res["meta"].pop(
            "plot", None
        )  # the figures' series stay in the evaluate output, not in the bench file
        res["meta"]["loadavg"] = os.getloadavg()
        res["meta"]["cpus"] = os.cpu_count()
        out["cases"][name] = res
        write(name)

    def write(name: str) -> None:
        """This case into the file as it is now (another run may have written other cases since)."""
        now = json.loads(OUT.read_text()) if OUT.exists() else {}
        doc = {**out, "cases": {**now.get("cases", {}), name: out["cases"][name]}}
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(doc, indent=1) + "\n")

    if args.merge:
        for (name, _), res in merge(read_units(args.merge)).items():
            res["meta"]["elapsed_s"] = None
            save(name, res)
            print(f"{name}: merged")
        return
    if args.rerun:
        units = args.rerun.split(",")
        bad = [u for u in units if u not in POLICIES]
        if bad:
            raise SystemExit(f"--rerun: not a policy of this benchmark: {', '.join(bad)}")
        jobs = [(c.name, args.capacity, u) for c in chosen if c.name in out["cases"] for u in units]
        skipped = [c.name for c in chosen if c.name not in out["cases"]]
        if skipped:
            print(f"not in {OUT.name} (run them in full first): {', '.join(skipped)}", flush=True)
        with ProcessPoolExecutor(max(1, args.workers or 2)) as ex:
            for r in ex.map(rerun_unit, jobs):
                res = out["cases"][r["case"]]
                m = dict(r["metrics"])
                oracle = res["policies"].get("oracle", {}).get("gpu_hours")
                m["gpu_hours_vs_oracle"] = m["gpu_hours"] / oracle if oracle else None
                res["policies"][r["unit"]] = m
                res["meta"].setdefault("rerun", {})[r["unit"]] = {
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "wall_s": r["wall_s"],
                    "loadavg": os.getloadavg(),
                }  # fmt: skip
                write(r["case"])
                print(f"{r['case']}: {r['unit']} re-run, att={m['slo_attainment']:.4f} gpu_h={m['gpu_hours']:.2f} "
                      f"x_oracle={m['gpu_hours_vs_oracle']}", flush=True)  # fmt: skip
        return
    if args.shard:
        if args.out is None:
            raise SystemExit("--shard needs --out DIR")
        run_sweep(chosen, [0], POLICIES, args.out, parse_shard(args.shard), args.workers,
                  on_unit=lambda r, d, n: print(f"{d}/{n} {r['case']} {r['unit']} {r['wall_s']:.0f} s", flush=True))  # fmt: skip
        return
    for case in chosen:
        t0 = time.perf_counter()
        units = run_sweep([case], [0], POLICIES, None, workers=args.workers,
                          on_unit=lambda r, d, n: print(f"  {d}/{n} {r['unit']} {r['wall_s']:.0f} s", flush=True))  # fmt: skip
        res = merge(units)[(case.name, 0)]
        res["meta"]["elapsed_s"] = time.perf_counter() - t0
        save(case.name, res)
        print(summary_line(case.name, res), flush=True)
        for pol, m in res["policies"].items():
            vs = m["gpu_hours_vs_oracle"]
            print(f"  {pol:12s} {'MET ' if m['meets_goal'] else 'miss'} att={m['slo_attainment']:.4f} "
                  f"x_oracle={vs if vs is None else round(vs, 2)} gpu_h={m['gpu_hours']:.2f} "
                  f"viol={m['slo_violations']} cap={m['capacity_source']}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
