"""Every scaling policy on BurstGPT-shaped workloads and the shipped Azure trace, scaled to pools of 4-32 GPUs,
cold starts 60-180 s, through the discrete-event simulator. Writes bench/results/evaluation.json after each case.

    .venv/bin/python bench/evaluation_policies.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from shared_data import AZURE

from burstpilot.evaluation.harness import ALL_POLICIES, evaluate, prepare_workload
from burstpilot.policy import SLO, CapacityModel, PoolSpec
from burstpilot.sim import load_profile
from burstpilot.traces import read_trace
from burstpilot.traces.generate import generate_preset, scale_replay

OUT = Path(__file__).parent / "results" / "evaluation.json"
PROFILE = "h100-llama3-8b"


def burstgpt_day(rps: float, seed: int):
    """A weekday of BurstGPT-shaped traffic, 08:00-16:00, time-compressed 16x into 30 minutes (ramps, the
    midday dip and the API bursts arrive 16x faster than in the study, which stresses the cold start)."""
    t = generate_preset("burstgpt", duration_s=8 * 3600, rps=rps / 16, seed=seed, start_s=8 * 3600)
    return scale_replay(t, speedup=16)


def cases(quick: bool):
    for rps in (20.0,) if quick else (20.0, 80.0):
        for cold in (60.0,) if quick else (60.0, 180.0):
            yield f"burstgpt-day-{rps:g}rps-cold{cold:g}", lambda rps=rps: burstgpt_day(rps, 1), cold
    if AZURE.exists():
        for cold in (60.0,) if quick else (60.0, 180.0):
            # the one-hour Azure conversation trace, compressed 8x (7.5 minutes at about 44 req/s)
            yield f"azure-conv-x8-cold{cold:g}", lambda: scale_replay(read_trace(AZURE), speedup=8.0), cold


BASELINES = ("static-peak", "static-mean", "hpa", "keda", "kpa", "dynamo")


def targets(res: dict) -> dict:
    """The issue's targets for one case: burstpilot >= 99% attainment at <= 1.2x the oracle's GPU-hours, and
    >= 50% fewer SLO violations than the best baseline among those using no more GPU-hours than burstpilot."""
    pol = res["policies"]
    bp = pol["burstpilot"]
    cheaper = [n for n in BASELINES if pol[n]["gpu_hours"] <= bp["gpu_hours"]]
    best = min(cheaper, key=lambda n: pol[n]["slo_violations"]) if cheaper else None
    out = {
        "attainment_ok": bp["slo_attainment"] >= 0.99,
        "cost_ok": bp["gpu_hours_vs_oracle"] <= 1.2,
        "best_baseline_at_equal_or_lower_gpu_hours": best,
    }
    if best is not None:
        v = pol[best]["slo_violations"]
        out["violations_vs_best"] = bp["slo_violations"] / v if v else None
        out["violations_ok"] = bp["slo_violations"] <= 0.5 * v
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--targets-only", action="store_true", help="recompute the targets of the saved results")
    args = ap.parse_args()
    if args.targets_only:
        out = json.loads(OUT.read_text())
        for name, res in out["cases"].items():
            res["targets"] = targets(res)
            print(name, res["targets"])
        OUT.write_text(json.dumps(out, indent=2) + "\n")
        return
    profile = load_profile(PROFILE)
    out: dict = {"profile": PROFILE, "slo": {"ttft_s": 2.0, "tpot_s": 0.1}, "cases": {}}
    for name, make, cold in cases(args.quick):
        workload, dropped = prepare_workload(make(), profile)
        spec = PoolSpec(
            profile=PROFILE,
            model=CapacityModel.from_profile(profile),
            min_replicas=1,
            max_replicas=32,
            cold_start_s=cold,
            slo=SLO(ttft_s=2.0, tpot_s=0.1, attainment=0.99),
        )
        t0 = time.perf_counter()
        res, _ = evaluate(workload, profile, spec, ALL_POLICIES, seed=0, cold_start_s=cold)
        res["meta"]["workload"] = name
        res["meta"]["dropped_too_long"] = dropped
        res["meta"]["wall_s"] = time.perf_counter() - t0
        res["targets"] = targets(res)
        out["cases"][name] = res
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(out, indent=2) + "\n")
        print(name, f"{res['meta']['wall_s']:.0f}s")
        print(f"  capacity scale {res['meta']['capacity_scale']:.3f}")
        for pol, m in res["policies"].items():
            print(
                f"  {pol:12s} att={m['slo_attainment']:.4f} gpu_h={m['gpu_hours']:.2f} "
                f"x_oracle={m['gpu_hours_vs_oracle']:.2f} ttft_p99={m['ttft_p99_s']:.2f} events={m['scale_events']}"
            )


if __name__ == "__main__":
    main()
