"""Command line for `burstpilot evaluate` and `burstpilot demo`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from burstpilot.errors import BurstpilotError
from burstpilot.evaluation.harness import ALL_POLICIES

DEMO_POLICIES = ("oracle", "burstpilot", "hpa", "static-peak")


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="replay scaling policies on a workload: SLO attainment vs GPU-hours",
        description="Run every policy on the same workload through the discrete-event simulator; print a table, "
        "write DIR/results.json (rewritten after each policy) and plots.",
    )
    p.add_argument("--workload", required=True, help="trace file (any format read_trace reads)")
    p.add_argument("--profile", default="h100-llama3-8b", help="replica profile name or JSON path")
    p.add_argument(
        "--policies", default=",".join(ALL_POLICIES), help=f"comma list (default: {','.join(ALL_POLICIES)})"
    )
    p.add_argument("--slo", default="ttft=2s,tpot=100ms", help="e.g. ttft=2s,tpot=100ms,attainment=0.99")
    p.add_argument(
        "--cold-start", type=float, default=120.0, help="seconds from scale-up to ready (default 120)"
    )
    p.add_argument("--rps", type=float, default=None, help="compress time so the mean rate is this")
    p.add_argument("--duration", type=float, default=None, help="use only the first SECONDS of the workload")
    p.add_argument("--min-replicas", type=int, default=1)
    p.add_argument("--max-replicas", type=int, default=32)
    p.add_argument(
        "--capacity-scale",
        type=float,
        default=None,
        help="measured/modelled replica capacity (default: calibrate on the workload through the oracle)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(handler=run_evaluate)

    d = sub.add_parser(
        "demo",
        help="the main job: a BurstGPT-shaped burst on a small simulated pool, burstpilot vs a reactive autoscaler",
        description="Generate a BurstGPT-shaped workload for a small pool, replay it through the simulated "
        "fleet scaled by burstpilot, the HPA and the oracle, print the comparison and write a report.",
    )
    d.add_argument("--out", type=Path, default=Path("reports/demo"))
    d.add_argument("--profile", default="h100-llama3-8b")
    d.add_argument("--minutes", type=float, default=30.0, help="workload length (default 30)")
    d.add_argument("--rps", type=float, default=60.0, help="mean request rate (default 60)")
    d.add_argument("--cold-start", type=float, default=120.0)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(handler=run_demo)


_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "m": 60.0}


def parse_slo(text: str) -> dict[str, float]:
    """``ttft=2s,tpot=100ms[,attainment=0.99]`` -> {"ttft_s", "tpot_s", "attainment"}."""
    out: dict[str, float] = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        key, _, val = part.partition("=")
        key = key.strip().lower()
        if key == "attainment":
            try:
                out["attainment"] = float(val)
            except ValueError:
                raise BurstpilotError(f"--slo: attainment must be a number, got {val!r}") from None
            continue
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|)\s*", val)
        if key not in ("ttft", "tpot") or m is None:
            raise BurstpilotError(
                f"--slo: cannot read {part!r} (expected ttft=2s,tpot=100ms,attainment=0.99)"
            )
        out[f"{key}_s"] = float(m.group(1)) * _UNITS[m.group(2)]
    return out


def _spec(profile, slo: dict[str, float], cold_start: float, min_r: int, max_r: int):
    from burstpilot.policy import SLO, PoolSpec

    return PoolSpec(
        profile=profile.name,
        profile_obj=profile,
        gpus_per_replica=profile.gpus_per_replica,
        min_replicas=min_r,
        max_replicas=max_r,
        cold_start_s=cold_start,
        slo=SLO(
            ttft_s=slo.get("ttft_s", 2.0),
            tpot_s=slo.get("tpot_s", 0.1),
            attainment=slo.get("attainment", 0.99),
        ),
    )


def _progress():
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}% of the workload"),
        TimeElapsedColumn(),
    )


def evaluate_to_dir(
    workload, profile, spec, names, seed, cold_start, out: Path, meta: dict[str, Any], calibrate: bool = True
):
    from rich.console import Console

    from burstpilot.evaluation import report
    from burstpilot.evaluation.harness import evaluate

    out.mkdir(parents=True, exist_ok=True)
    with _progress() as progress:
        results, runs = evaluate(
            workload, profile, spec, names, seed, cold_start, out, progress, meta, calibrate
        )
    Console().print(
        report.rich_table(results, title=f"{len(workload)} requests, cold start {cold_start:.0f}s")
    )
    plots = report.plot(runs, out, spec.slo.ttft_s)
    return results, runs, plots


def run_evaluate(args) -> int:
    from burstpilot.evaluation.harness import prepare_workload
    from burstpilot.sim import load_profile
    from burstpilot.traces import read_trace
    from burstpilot.traces.generate import scale_replay

    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    bad = [n for n in names if n not in ALL_POLICIES]
    if bad or not names:
        raise BurstpilotError(
            f"--policies: unknown {', '.join(bad) or '(empty)'} (known: {', '.join(ALL_POLICIES)})"
        )
    slo = parse_slo(args.slo)
    if args.cold_start < 0:
        raise BurstpilotError("--cold-start must be >= 0")
    profile = load_profile(args.profile)
    trace = read_trace(args.workload)
    if args.duration:
        trace = trace.subset(trace.arrival_s < trace.arrival_s[0] + args.duration)
    if args.rps:
        trace = scale_replay(trace, rps=args.rps)
    workload, dropped = prepare_workload(trace, profile)
    spec = _spec(profile, slo, args.cold_start, args.min_replicas, args.max_replicas)
    if args.capacity_scale is not None:
        spec = spec.replace(capacity_scale=args.capacity_scale)
    meta = {"workload": str(args.workload), "profile": profile.name, "dropped_too_long": dropped}
    evaluate_to_dir(
        workload,
        profile,
        spec,
        names,
        args.seed,
        args.cold_start,
        args.out,
        meta,
        args.capacity_scale is None,
    )
    print(f"wrote {args.out / 'results.json'}, {args.out / 'replicas.png'}, {args.out / 'ttft.png'}")
    return 0


def run_demo(args) -> int:
    from burstpilot.evaluation import report
    from burstpilot.evaluation.harness import prepare_workload
    from burstpilot.sim import load_profile
    from burstpilot.traces.generate import generate_preset

    profile = load_profile(args.profile)
    # A weekday morning of BurstGPT-shaped traffic (10:00), scaled to a pool of a few replicas.
    trace = generate_preset(
        "burstgpt", duration_s=args.minutes * 60.0, rps=args.rps, seed=args.seed, start_s=10 * 3600.0
    )
    workload, dropped = prepare_workload(trace, profile)
    spec = _spec(profile, {"ttft_s": 2.0, "tpot_s": 0.1}, args.cold_start, 1, 16)
    meta = {
        "workload": f"burstgpt preset, {args.minutes:.0f} min at {args.rps:g} req/s",
        "profile": profile.name,
        "dropped_too_long": dropped,
        "mode": "discrete-event",
    }
    results, runs, plots = evaluate_to_dir(
        workload, profile, spec, DEMO_POLICIES, args.seed, args.cold_start, args.out, meta
    )
    pol = results["policies"]
    bp, hpa = pol["burstpilot"], pol["hpa"]
    lines = [
        "# burstpilot demo",
        "",
        f"Workload: {meta['workload']} ({len(workload)} requests; {dropped} longer than the model's context "
        f"dropped), profile `{profile.name}`, cold start {args.cold_start:.0f} s, SLO TTFT <= 2 s and TPOT <= 100 ms. "
        "Every policy replays the same requests through the discrete-event simulated fleet (seed "
        f"{args.seed}).",
        "",
        report.markdown_table(results),
        "",
        f"burstpilot: {bp['slo_attainment']:.2%} of requests within the SLO at {bp['gpu_hours']:.2f} GPU-hours "
        f"({bp['gpu_hours_vs_oracle']:.2f}x the oracle); HPA: {hpa['slo_attainment']:.2%} at "
        f"{hpa['gpu_hours']:.2f} GPU-hours ({hpa['gpu_hours_vs_oracle']:.2f}x).",
        "",
        "![replicas over time](replicas.png)",
        "",
        "![TTFT over time](ttft.png)",
        "",
    ]
    (args.out / "README.md").write_text("\n".join(lines))
    print(f"report: {args.out / 'README.md'} ({', '.join(p.name for p in plots)})")
    return 0
