"""Command line for `burstpilot evaluate` (and `evaluate merge`) and `burstpilot demo`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from burstpilot.errors import BurstpilotError
from burstpilot.evaluation import report
from burstpilot.evaluation.capacity import SOURCES
from burstpilot.evaluation.harness import Case, evaluate, merge, parse_shard, read_units, run_sweep
from burstpilot.evaluation.realtime import realtime_results, run_realtime
from burstpilot.evaluation.runner import (
    ALL_POLICIES,
    DEFAULT_POLICIES,
    make_policy,
    prepare_workload,
    write_json,
)
from burstpilot.policy.spec import DEFAULT_SLO, PoolSpec
from burstpilot.progress import DEFAULT_INTERVAL_S, Reporter
from burstpilot.sim import load_profile
from burstpilot.slo import SLO
from burstpilot.traces import read_trace
from burstpilot.traces.generate import generate_preset, scale_replay
from burstpilot.units import parse_duration

DEMO_PROFILE = "h100-llama3-70b-tp4"
REALTIME_POLICIES = ("burstpilot", "hpa")
LAG_WARN_S = 0.25


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="replay scaling policies on a workload: SLO attainment vs GPU-hours",
        description="Run every policy on the same workload through the discrete-event simulator, on the "
        "workload's own time axis; print the verdict and the table, write DIR/results.json, report.md, "
        "report.html and plots. 'evaluate merge DIR... --out DIR' joins the outputs of --shard runs.",
    )
    p.add_argument("workload", nargs="*", metavar="WORKLOAD",
                   help="trace file (any format `burstpilot trace` reads); with 'merge': shard output folders")  # fmt: skip
    p.add_argument(
        "--workload", dest="workload_flag", default=None, help=argparse.SUPPRESS
    )  # deprecated alias
    p.add_argument("--profile", default="h100-llama3-8b", help="replica profile name or JSON path")
    p.add_argument("--policies", default=",".join(DEFAULT_POLICIES),
                   help=f"comma list of {', '.join(ALL_POLICIES)}")  # fmt: skip
    p.add_argument("--slo", default="ttft=2s,tpot=100ms", help="e.g. ttft=2s,tpot=100ms,attainment=0.99")
    p.add_argument("--cold-start", default="120s",
                   help="median time from scale-up to ready; each replica draws its own from the profile's spread")  # fmt: skip
    p.add_argument("--exact-cold-start", action="store_true", help="every cold start exactly --cold-start")
    p.add_argument("--speedup", type=float, default=None,
                   help="compress time this many times (a stress case: bursts get shorter against the cold start)")  # fmt: skip
    p.add_argument("--duration", default=None, help="use only the first part of the workload (e.g. 30m, 2h)")
    p.add_argument("--min-replicas", type=int, default=1)
    p.add_argument("--max-replicas", type=int, default=32)
    p.add_argument("--capacity", choices=SOURCES, default="profile",
                   help="per-replica capacity: the profile's model, a one-replica load test in the simulator, "
                   "or (analysis only) fitted on the workload through the oracle")  # fmt: skip
    p.add_argument("--capacity-scale", type=float, default=None,
                   help="measured over modelled capacity from your own load test (capacity source: measured)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workers", type=int, default=None, help="parallel simulation processes (default: the CPUs)"
    )
    p.add_argument("--shard", default=None, metavar="i/n",
                   help="run only share i of n of the simulations; join the shards with 'evaluate merge'")  # fmt: skip
    p.add_argument("--realtime", action="store_true",
                   help="replay in real time through the load generator against simulated fleets the policies "
                   "scale (all at once, each on its own fleet on 127.0.0.1)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(handler=run_evaluate)

    d = sub.add_parser(
        "demo",
        help="the main job: a BurstGPT-shaped morning on a small simulated pool, burstpilot vs the others",
        description="A BurstGPT-shaped workload on its real time axis (no compression): every policy and the "
        "oracle in the discrete-event simulator, then a few minutes in real time through the load generator "
        "against simulated fleets scaled by burstpilot and the HPA; prints the verdict, writes a report.",
    )
    d.add_argument("--out", type=Path, default=Path("reports/demo"))
    d.add_argument("--profile", default=DEMO_PROFILE)
    d.add_argument(
        "--hours", type=float, default=2.0, help="discrete-event part: hours from 09:00 (default 2)"
    )
    d.add_argument(
        "--rps", type=float, default=6.0, help="discrete-event part: mean request rate (default 6)"
    )
    d.add_argument(
        "--cold-start", type=float, default=120.0, help="discrete-event part: cold start s (default 120)"
    )
    d.add_argument("--realtime-minutes", type=float, default=4.0,
                   help="real-time part: minutes to replay (default 4; 0: skip)")  # fmt: skip
    d.add_argument("--realtime-rps", type=float, default=6.0, help="real-time part: mean rate (default 6)")
    d.add_argument(
        "--realtime-cold-start", type=float, default=30.0, help="real-time part: cold start s (30)"
    )
    d.add_argument("--workers", type=int, default=None, help="parallel simulation processes")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(handler=run_demo)


def parse_slo(text: str) -> SLO:
    """``ttft=2s,tpot=100ms[,attainment=0.99]``: a pool's SLO (burstpilot.slo's grammar); TTFT and TPOT the
    pool defaults where not given."""
    return SLO.parse(text, defaults=DEFAULT_SLO)


def pool_spec(profile, slo: SLO, cold_start: float, min_r: int, max_r: int) -> PoolSpec:
    return PoolSpec(
        profile=profile.name,
        profile_obj=profile,
        gpus_per_replica=profile.gpus_per_replica,
        min_replicas=min_r,
        max_replicas=max_r,
        cold_start_s=cold_start,
        slo=slo,
    )


def _console():
    from rich.console import Console  # rich's console is only needed to print

    c = Console()
    return c if c.is_terminal else Console(width=160)


class Progress:
    """A sweep's units on the shared progress display (burstpilot.progress: rich's bar on a terminal, a plain
    line every few seconds elsewhere, e.g. ``kubectl logs``), with the last finished unit's result beside it."""

    def __init__(self, label: str):
        self.reporter = Reporter(label)
        self.task = self.reporter.add_task("simulation jobs")

    def __enter__(self) -> Progress:
        self.reporter.start()
        return self

    def __exit__(self, *exc) -> None:
        self.reporter.close()

    def start(self, units) -> None:
        self.reporter.update(self.task, total=len(units))

    def unit(self, r: dict[str, Any], done: int, total: int) -> None:
        m = r.get("metrics") or {}
        res = f"{m['slo_attainment']:.2%} at {m['gpu_hours']:.2f} GPU-h" if m else "no run"
        self.reporter.update(self.task, completed=done, total=total,
                             note=f"last: {r['case']} {r['unit']} {res} ({r['wall_s']:.0f} s)")  # fmt: skip


def load_workload(path: str, duration: str | None, speedup: float | None):
    trace = read_trace(path)
    if duration:
        trace = trace.subset(trace.arrival_s < trace.arrival_s[0] + parse_duration(duration, "--duration"))
    if speedup:
        trace = scale_replay(trace, speedup=speedup)
    return trace


def run_evaluate(args) -> int:
    paths = list(args.workload)
    if paths and paths[0] == "merge":
        return run_merge(paths[1:], args.out)
    if args.workload_flag:
        print(
            "burstpilot: --workload is deprecated: give the workload as the first argument", file=sys.stderr
        )
        paths = [args.workload_flag, *paths]
    if len(paths) != 1:
        raise BurstpilotError("evaluate: give one WORKLOAD (or 'merge DIR...')")
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    slo = parse_slo(args.slo)
    cold = parse_duration(args.cold_start, "--cold-start")
    if cold < 0:
        raise BurstpilotError("--cold-start must be >= 0")
    if args.speedup is not None and args.speedup <= 0:
        raise BurstpilotError("--speedup must be > 0")
    profile = load_profile(args.profile)
    spec = pool_spec(profile, slo, cold, args.min_replicas, args.max_replicas)
    path = paths[0]
    label = Path(path).name + (f" compressed {args.speedup:g}x" if args.speedup else " (real time axis)")
    case = Case(
        name=Path(path).stem,
        workload=lambda: load_workload(path, args.duration, args.speedup),
        profile=profile,
        spec=spec,
        cold_start_s=cold,
        capacity=args.capacity,
        capacity_scale=args.capacity_scale,
        label=label,
        meta={"workload": str(path), "speedup": args.speedup or 1.0},
        exact_cold_start=args.exact_cold_start,
    )
    if args.realtime:
        return run_realtime_case(case, names, args.seed, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.shard:
        shard = parse_shard(args.shard)
        with Progress(f"evaluate shard {args.shard}") as prog:
            run_sweep([case], [args.seed], names, args.out, shard, args.workers, prog.unit, prog.start)
        print(f"wrote {args.out / 'units'}; join the shards with: burstpilot evaluate merge DIR... --out DIR")
        return 0
    with Progress("evaluate") as prog:
        res = evaluate(case, names, args.seed, args.out, args.workers, prog.unit, prog.start)
    show(res, args.out)
    return 0


def show(res: dict[str, Any], out: Path) -> None:
    """Print the verdict, the table and where the report is."""
    console = _console()
    console.print(report.verdict(res), style="bold")
    console.print(report.rich_table(res, title=report.case_title(res)))
    o = report.oracle_sentence(res)
    if o:
        console.print(o)
    console.print(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'report.html'} and the figures")


def run_merge(dirs: list[str], out: Path) -> int:
    if not dirs:
        raise BurstpilotError(
            "evaluate merge: give the shard output folders (evaluate merge DIR... --out DIR)"
        )
    merged = merge(read_units([Path(d) for d in dirs]))
    for (case, seed), res in merged.items():
        d = out if len(merged) == 1 else out / f"{case}-seed{seed}"
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "results.json", res)
        missing = (res["meta"].get("oracle") or {}).get("families_missing")
        report.write_reports(
            res, d, [f"Oracle families missing from the shards: {', '.join(missing)}."] if missing else []
        )
        show(res, d)
    return 0


def run_realtime_case(case: Case, names, seed: int, out: Path) -> int:
    bad = [n for n in names if n == "oracle" or n.startswith("static")]
    names = [n for n in names if n not in bad]
    if bad:
        print(f"burstpilot: --realtime runs online policies only; skipping {', '.join(bad)}", file=sys.stderr)
    workload, _ = prepare_workload(case.workload(), case.profile)
    res = realtime_to_dir(workload, case, names, seed, out)
    report.write_reports(res, out)
    show(res, out)
    return 0


def realtime_to_dir(workload, case: Case, names, seed: int, out: Path) -> dict[str, Any]:
    """Every policy at once against its own real-time fleet; results.json, the reports and the plots."""
    out.mkdir(parents=True, exist_ok=True)
    spec = case.spec if case.capacity_scale is None else case.spec.replace(capacity_scale=case.capacity_scale)
    pols = [make_policy(n, spec, workload, case.cold_start_s) for n in names]
    initial = pols[0][1] if pols else spec.min_replicas
    t0 = time.monotonic()
    print(
        f"real-time replay: {len(workload)} requests over {workload.duration_s / 60:.1f} min against "
        f"{len(pols)} simulated fleets ({', '.join(p.name for p, _ in pols)}); results in about "
        f"{workload.duration_s / 60 + 0.5:.0f} min",
        flush=True,
    )
    runs = asyncio.run(
        run_realtime(
            [p for p, _ in pols],
            spec,
            case.profile,
            workload,
            case.cold_start_s,
            initial,
            out,
            seed,
            heartbeat_s=DEFAULT_INTERVAL_S,
        )  # fmt: skip
    )
    res = realtime_results(runs, spec, case, workload, initial, time.monotonic() - t0)
    write_json(out / "results.json", res)
    return res


def burstgpt_window(rps: float, seed: int, hours: float, start_h: float, day: int = 0):
    """BurstGPT-shaped traffic on its own time axis (no compression): ``hours`` from ``start_h`` o'clock of
    day ``day`` (0 Monday ... 6 Sunday) at a mean of ``rps`` over the week's profile."""
    start = day * 86400 + start_h * 3600
    t = generate_preset("burstgpt", duration_s=hours * 3600, rps=rps, seed=seed, start_s=start)
    return scale_replay(t, speedup=1.0, start_s=start)


def run_demo(args) -> int:
    profile = load_profile(args.profile)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    slo = DEFAULT_SLO
    # 1. Discrete-event: a BurstGPT-shaped weekday morning from 09:00, real time axis, every policy.
    case = Case(
        name="demo",
        workload=lambda: burstgpt_window(args.rps, args.seed, args.hours, 9.0),
        profile=profile,
        spec=pool_spec(profile, slo, args.cold_start, 1, 16),
        cold_start_s=args.cold_start,
        label=f"BurstGPT-shaped weekday from 09:00, {args.hours:g} h at {args.rps:g} req/s (real time axis)",
    )
    with Progress("demo") as prog:
        res = evaluate(case, ALL_POLICIES, args.seed, out, args.workers, prog.unit, prog.start)
    notes = [
        "Every policy replays the same requests through the simulated fleet on the workload's own time axis "
        "(no compression); every replica a policy starts draws its cold start from the profile's spread around "
        f"{args.cold_start:.0f} s; every policy reads the pool's metrics as Prometheus scraped them and sizes "
        "from the replica profile (capacity source: profile). The oracle knows every arrival: a reference, "
        "not a policy.",
        "",
    ]
    files = report.write_reports(res, out, notes)
    show(res, out)
    lines = [report.markdown(res, [f for f in files if f.suffix == ".png"], out, notes)]
    # 2. Real time: a few minutes through the load generator against fleets scaled by burstpilot and the HPA.
    if args.realtime_minutes > 0:
        rt_case = Case(
            name="demo-realtime",
            workload=lambda: burstgpt_window(
                args.realtime_rps, args.seed + 1, args.realtime_minutes / 60, 10.0
            ),
            profile=profile,
            spec=pool_spec(profile, slo, args.realtime_cold_start, 1, 16),
            cold_start_s=args.realtime_cold_start,
            label=f"BurstGPT-shaped 10:00, {args.realtime_minutes:g} min at {args.realtime_rps:g} req/s, real time",
        )
        wl, _ = prepare_workload(rt_case.workload(), profile)
        rt = realtime_to_dir(wl, rt_case, REALTIME_POLICIES, args.seed, out / "realtime")
        rt_files = report.write_reports(rt, out / "realtime")
        _console().print(report.rich_table(rt, title=report.case_title(rt)))
        lag = max((m.get("dispatch_lag_p99_s") or 0.0) for m in rt["policies"].values())
        lines += [
            "",
            f"## Real time: burstpilot vs the HPA ({rt_case.label}, cold start {args.realtime_cold_start:.0f} s)",
            "",
            "The load generator replays the workload open-loop against two simulated fleets on 127.0.0.1; each "
            "fleet is scaled through its admin endpoint by a controller that scrapes the replicas' vLLM metrics, "
            "one by the burstpilot decision core (the operator's code), one by the HPA algorithm.",
            "",
        ]
        if lag > LAG_WARN_S:
            lines += [
                f"**Warning:** the load generator sent requests up to {lag:.2f} s late (p99): this machine could "
                "not keep the real-time clock of both fleets, so the latencies below are inflated for every "
                "policy alike. The discrete-event table above is not affected.",
                "",
            ]
        lines += [report.verdict(rt), "", report.markdown_table(rt), ""]
        lines += [f"![{f.stem}](realtime/{f.name})" for f in rt_files if f.suffix == ".png"]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print(f"report: {out / 'README.md'} and {out / 'report.html'}")
    return 0
