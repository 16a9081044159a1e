"""Command line for `burstpilot evaluate` and `burstpilot demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from burstpilot.errors import BurstpilotError
from burstpilot.evaluation.harness import ALL_POLICIES
from burstpilot.policy.spec import DEFAULT_SLO
from burstpilot.slo import SLO

DEMO_PROFILE = "h100-llama3-70b-tp4"
REALTIME_POLICIES = ("burstpilot", "hpa")
LAG_WARN_S = 0.25


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
    p.add_argument(
        "--realtime",
        action="store_true",
        help="replay in real time through the load generator against simulated fleets the policies scale "
        "(all policies at once, each on its own fleet on 127.0.0.1)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(handler=run_evaluate)

    d = sub.add_parser(
        "demo",
        help="the main job: a BurstGPT-shaped burst on a small simulated pool, burstpilot vs a reactive autoscaler",
        description="Generate a BurstGPT-shaped workload for a small pool, replay it through the simulated "
        "fleet scaled by burstpilot, the HPA and the oracle, print the comparison and write a report.",
    )
    d.add_argument("--out", type=Path, default=Path("reports/demo"))
    d.add_argument("--profile", default=DEMO_PROFILE)
    d.add_argument(
        "--minutes", type=float, default=30.0, help="discrete-event part: workload minutes (default 30)"
    )
    d.add_argument(
        "--rps", type=float, default=6.0, help="discrete-event part: mean request rate (default 6)"
    )
    d.add_argument(
        "--cold-start", type=float, default=120.0, help="discrete-event part: cold start (default 120)"
    )
    d.add_argument(
        "--realtime-minutes",
        type=float,
        default=4.0,
        help="real-time part: minutes to replay (default 4; 0: skip)",
    )
    d.add_argument(
        "--realtime-rps", type=float, default=6.0, help="real-time part: mean request rate (default 6)"
    )
    d.add_argument(
        "--realtime-cold-start", type=float, default=30.0, help="real-time part: cold start (default 30)"
    )
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(handler=run_demo)


def parse_slo(text: str) -> SLO:
    """``ttft=2s,tpot=100ms[,attainment=0.99]``: a pool's SLO (burstpilot.slo's grammar); TTFT and TPOT the
    pool defaults where not given."""
    return SLO.parse(text, defaults=DEFAULT_SLO)


def _spec(profile, slo: SLO, cold_start: float, min_r: int, max_r: int):
    from burstpilot.policy import CapacityModel, PoolSpec

    return PoolSpec(
        profile=profile.name,
        model=CapacityModel.from_profile(profile),
        gpus_per_replica=profile.gpus_per_replica,
        min_replicas=min_r,
        max_replicas=max_r,
        cold_start_s=cold_start,
        slo=slo,
    )


def _console():
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=150)


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

    from burstpilot.evaluation import report
    from burstpilot.evaluation.harness import evaluate

    out.mkdir(parents=True, exist_ok=True)
    with _progress() as progress:
        results, runs = evaluate(
            workload, profile, spec, names, seed, cold_start, out, progress, meta, calibrate
        )
    console = _console()
    console.print(report.rich_table(results, title=f"{len(workload)} requests, cold start {cold_start:.0f}s"))
    if results["meta"].get("oracle"):
        console.print(oracle_line(results["meta"]["oracle"], spec.slo.attainment))
    plots = report.plot(runs, out, spec.slo.ttft_s)
    return results, runs, plots


def oracle_line(summary: dict[str, Any], goal: float) -> str:
    """One sentence on which plan the oracle search chose."""
    what = (
        f"a constant pool of {summary['param']:g} replicas"
        if summary["plan"] == "constant"
        else f"the {summary['plan']} plan at planning capacity scale {summary['param']:.3f}"
    )
    if summary["meets_goal"]:
        return (
            f"oracle: {what}, the fewest GPU-hours of the clairvoyant plans tried that meet {goal:.1%} "
            f"({summary['simulations']} simulations, the calibration's included)"
        )
    return f"oracle: no plan tried meets {goal:.1%}; {what} came closest"


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
    if args.realtime:
        if args.capacity_scale is None:
            raise BurstpilotError(
                "--realtime needs --capacity-scale (calibrate with a discrete-event run first)"
            )
        realtime_to_dir(workload, profile, spec, names, args.seed, args.cold_start, args.out, meta)
        return 0
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


def burstgpt_day(rps: float, seed: int, hours: float, speedup: float, start_h: float = 8.0):
    """A weekday of BurstGPT-shaped traffic from ``start_h`` o'clock, time-compressed ``speedup`` times: the
    morning ramp, the midday dip and the API bursts come ``speedup`` times faster, at a mean of ``rps``."""
    from burstpilot.traces.generate import generate_preset, scale_replay

    t = generate_preset(
        "burstgpt", duration_s=hours * 3600, rps=rps / speedup, seed=seed, start_s=start_h * 3600
    )
    return scale_replay(t, speedup=speedup)


def realtime_to_dir(workload, profile, spec, names, seed, cold_start, out: Path, meta: dict[str, Any]):
    """Every policy at once against its own real-time fleet; results.json, the table and the plots."""
    import asyncio

    from burstpilot.evaluation import report
    from burstpilot.evaluation.harness import build_policies, first_window_replicas, write_json
    from burstpilot.evaluation.realtime import run_realtime

    out.mkdir(parents=True, exist_ok=True)
    initial = first_window_replicas(spec, workload, 60.0)
    pols = build_policies(names, spec, workload, cold_start, initial)
    console = _console()
    with console.status(
        f"real-time replay: {len(workload)} requests over {workload.duration_s / 60:.1f} min against "
        f"{len(pols)} simulated fleets ({', '.join(p.name for p, _ in pols)})"
    ):
        runs = asyncio.run(
            run_realtime([p for p, _ in pols], spec, profile, workload, cold_start, initial, out, seed)
        )
    oracle = next((r.metrics["gpu_hours"] for r in runs if r.name == "oracle"), None)
    results: dict[str, Any] = {
        "meta": {
            **meta,
            "mode": "realtime",
            "cold_start_s": cold_start,
            "capacity_scale": spec.capacity_scale,
            "initial_replicas": initial,
            "requests": len(workload),
        },  # fmt: skip
        "policies": {},
    }
    for r in runs:
        if oracle:
            r.metrics["gpu_hours_vs_oracle"] = r.metrics["gpu_hours"] / oracle
        results["policies"][r.name] = r.metrics
    write_json(out / "results.json", results)
    console.print(
        report.rich_table(results, title=f"real time, {len(workload)} requests, cold start {cold_start:.0f}s")
    )
    report.plot(runs, out, spec.slo.ttft_s, bin_s=10.0)
    return results, runs


def run_demo(args) -> int:
    from burstpilot.evaluation import report
    from burstpilot.evaluation.harness import prepare_workload
    from burstpilot.sim import load_profile

    profile = load_profile(args.profile)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    slo = DEFAULT_SLO
    # 1. Discrete-event: a BurstGPT-shaped working day (08:00-16:00) compressed 16x, every policy, calibrated.
    trace = burstgpt_day(args.rps, args.seed, hours=args.minutes * 16 / 60, speedup=16.0)
    workload, dropped = prepare_workload(trace, profile)
    spec = _spec(profile, slo, args.cold_start, 1, 16)
    meta = {
        "workload": f"BurstGPT-shaped day from 08:00 compressed 16x: {args.minutes:.0f} min at {args.rps:g} req/s",
        "profile": profile.name,
        "dropped_too_long": dropped,
        "mode": "discrete-event",
    }
    results, _, _ = evaluate_to_dir(
        workload, profile, spec, ALL_POLICIES, args.seed, args.cold_start, out, meta
    )
    scale = results["meta"]["capacity_scale"]
    lines = [
        "# burstpilot demo",
        "",
        f"Profile `{profile.name}` ({profile.gpus_per_replica} GPUs per replica), SLO: TTFT <= 2 s and TPOT <= "
        "100 ms for 99% of requests. Capacity calibrated on the workload through a clairvoyant plan: scale "
        f"{scale:.3f} of the closed-form model.",
        "",
        oracle_line(results["meta"]["oracle"], spec.slo.attainment) + ".",
        "",
        f"## Every policy, discrete-event ({meta['workload']}, cold start {args.cold_start:.0f} s)",
        "",
        f"{len(workload)} requests ({dropped} longer than the model's context dropped); every policy replays the "
        f"same requests through the simulated fleet (seed {args.seed}).",
        "",
        report.markdown_table(results),
        "",
        "![replicas over time](replicas.png)",
        "",
        "![TTFT over time](ttft.png)",
        "",
    ]
    # 2. Real time: a few minutes through the load generator against fleets scaled by burstpilot and the HPA.
    if args.realtime_minutes > 0:
        rt_trace = burstgpt_day(args.realtime_rps, args.seed + 1, hours=args.realtime_minutes, speedup=60.0)
        rt_workload, _ = prepare_workload(rt_trace, profile)
        rt_spec = _spec(profile, slo, args.realtime_cold_start, 1, 16).replace(capacity_scale=scale)
        rt_meta = {
            "workload": f"BurstGPT-shaped morning compressed 60x: {args.realtime_minutes:g} min at "
            f"{args.realtime_rps:g} req/s",
            "profile": profile.name,
        }
        rt, _ = realtime_to_dir(
            rt_workload, profile, rt_spec, REALTIME_POLICIES, args.seed, args.realtime_cold_start,
            out / "realtime", rt_meta,
        )  # fmt: skip
        lag = max((m.get("dispatch_lag_p99_s") or 0.0) for m in rt["policies"].values())
        if lag > LAG_WARN_S:
            lines_lag = [
                f"**Warning:** the load generator sent requests up to {lag:.2f} s late (p99): this machine could "
                "not keep the real-time clock of both fleets, so the latencies below are inflated for every "
                "policy alike. The discrete-event table above is not affected.",
                "",
            ]
        else:
            lines_lag = []
        lines += [
            f"## Real time: burstpilot vs the HPA ({rt_meta['workload']}, cold start "
            f"{args.realtime_cold_start:.0f} s)",
            "",
            "The load generator replays the workload open-loop against two simulated fleets on 127.0.0.1; "
            "each fleet is scaled through its admin endpoint by a controller that scrapes the replicas' vLLM "
            "metrics, one by the burstpilot decision core (the operator's code), one by the HPA algorithm.",
            "",
            *lines_lag,
            report.markdown_table(rt),
            "",
            "![replicas over time](realtime/replicas.png)",
            "",
            "![TTFT over time](realtime/ttft.png)",
            "",
        ]
    (out / "README.md").write_text("\n".join(lines))
    print(f"report: {out / 'README.md'}")
    return 0
