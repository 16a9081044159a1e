"""Command line for `burstpilot sim`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from burstpilot.errors import BurstpilotError


def register(sub) -> None:
    parser = sub.add_parser("sim", help="simulated vLLM-compatible GPU serving replicas")
    parser.set_defaults(handler=lambda args: parser.print_help())
    s = parser.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")

    p = s.add_parser("profiles", help="list the shipped replica profiles")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_profiles)

    p = s.add_parser("predict", help="step time of a profile's model")
    p.add_argument("--profile", required=True)
    p.add_argument("--batch", type=int)
    p.add_argument("--context", type=int, help="KV tokens held by the batch in total")
    p.add_argument("--prefill-tokens", type=int)
    p.set_defaults(handler=_predict)

    p = s.add_parser("serve", help="one real-time replica with the vLLM HTTP API and metrics")
    _server_args(p)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", help="served model name (default: the profile's model)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.set_defaults(handler=_serve)

    p = s.add_parser("fleet", help="N replicas behind a least-outstanding router, rescalable while running")
    _server_args(p)
    p.add_argument("--replicas", type=int, required=True)
    p.add_argument("--port", type=int, default=8000, help="router port; replicas on port+1, port+2, ...")
    p.add_argument("--sd-file", help="Prometheus file-SD targets file to keep up to date")
    p.add_argument(
        "--replica-processes",
        type=int,
        default=0,
        help="spread the replicas over this many worker processes (default 0: all in the router's process)",
    )
    p.set_defaults(handler=_fleet)

    p = s.add_parser("simulate", help="discrete-event run of a workload file over a fixed pool")
    p.add_argument("workload", help="a trace file (any format `burstpilot trace` reads)")
    p.add_argument("--profile", required=True)
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the summary JSON here")
    p.set_defaults(handler=_simulate)

    profile = sub.add_parser("profile", help="replica profiles measured against a real endpoint")
    profile.set_defaults(handler=lambda args: profile.print_help())
    ps = profile.add_subparsers(dest="profile_command", metavar="SUBCOMMAND")
    p = ps.add_parser(
        "measure",
        help="sweep one replica with rising open-loop rates, find the highest that meets the SLO, fit the "
        "step-time model, write a profile JSON",
    )
    p.add_argument("--target", required=True, help="the replica's base URL, e.g. http://10.0.0.5:8000")
    p.add_argument("--workload", required=True, help="a trace file whose (prompt, output) lengths are drawn")
    p.add_argument("--slo", required=True, help="objectives, e.g. ttft=2s,tpot=100ms[,e2e=30s]")
    p.add_argument("--attainment", type=float, default=0.99, help="share of requests that must meet the SLO")
    p.add_argument("--base-profile", default="h100-llama3-8b",
                   help="the closest shipped profile (or JSON): memory, limits and the fit's starting terms")  # fmt: skip
    p.add_argument("--rates", help="ascending request rates to try, e.g. 1,2,4,6 (default: from the base)")
    p.add_argument("--level-duration", default="60s", help="how long each rate is held (default 60s)")
    p.add_argument("--bisect", type=int, default=4, help="bisection steps past the first failing rate")
    p.add_argument("--name", default="measured", help="the profile's name")
    p.add_argument("--api", choices=["completions", "chat"], default="completions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", help="where each level's records go (default: OUT's name + .levels/)")
    p.add_argument("--out", required=True, help="the profile JSON to write")
    p.set_defaults(handler=_profile_measure)


def _profile_measure(args) -> int:
    from burstpilot import units
    from burstpilot.loadtest.metrics import parse_slo
    from burstpilot.sim.measure import measure_profile
    from burstpilot.sim.profile import load_profile
    from burstpilot.traces import read_trace

    slo = parse_slo(args.slo)
    base = load_profile(args.base_profile)
    raw = json.loads(Path(base.path).read_text()) if Path(base.path).is_file() else _shipped_json(base.name)
    rates = None
    if args.rates:
        try:
            rates = [float(x) for x in args.rates.split(",") if x.strip()]
        except ValueError as exc:
            raise BurstpilotError(
                f"--rates: {args.rates!r} is not a comma-separated list of numbers"
            ) from exc
    duration = units.parse_duration(args.level_duration, "--level-duration")
    out = Path(args.out)
    work = Path(args.work_dir) if args.work_dir else out.with_name(out.name + ".levels")
    prof = measure_profile(
        args.target, read_trace(args.workload), slo, raw, work, goal=args.attainment, rates=rates,
        duration_s=duration, seed=args.seed, name=args.name, api=args.api, bisect=args.bisect,
    )  # fmt: skip
    prof["calibration"]["workload"] = str(args.workload)
    out.write_text(json.dumps(prof, indent=2) + "\n")
    cal = prof["calibration"]
    print(
        json.dumps({k: cal[k] for k in ("capacity_rps", "model_capacity_rps", "factors")} | {"out": str(out)})
    )
    return 0


def _shipped_json(name: str) -> dict:
    from importlib import resources

    return json.loads((resources.files("burstpilot.sim") / "profiles" / f"{name}.json").read_text())


def _server_args(p) -> None:
    p.add_argument("--profile", required=True, help="profile name or JSON path")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--cold-start", type=float, help="model-load seconds (default: drawn from the profile; 0: none)"
    )
    p.add_argument("--max-waiting", type=int, help="answer 503 when this many requests wait")
    p.add_argument("--seed", type=int, default=0)


def _profiles(args) -> int:
    from burstpilot.sim.profile import list_profiles, load_profile

    rows = [load_profile(n).summary() for n in list_profiles()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table("name", "gpu", "model", "GPUs", "KV tokens", "max seqs", "cold start s", "measured / derived")
    for r in rows:
        t.add_row(r["name"], r["gpu"], r["model"], str(r["gpus_per_replica"]), str(r["kv_capacity_tokens"]),
                  str(r["max_num_seqs"]), f"{r['cold_start_s']:.0f}", r["source"])  # fmt: skip
    # Profile names are what users type: never let an 80-column default truncate them in a pipe.
    Console(width=None if sys.stdout.isatty() else 220).print(t)
    return 0


def _predict(args) -> int:
    from burstpilot.sim.profile import load_profile

    prof = load_profile(args.profile)
    if args.prefill_tokens is not None:
        if args.batch is not None or args.context is not None:
            raise BurstpilotError(
                "--prefill-tokens goes alone; --batch with --context predicts a decode step"
            )
        if args.prefill_tokens < 1:
            raise BurstpilotError("--prefill-tokens must be >= 1")
        print(json.dumps({"prefill_ms": round(prof.prefill_ms(args.prefill_tokens), 4)}))
        return 0
    if args.batch is None or args.context is None:
        raise BurstpilotError("give --batch and --context (a decode step) or --prefill-tokens")
    if args.batch < 1 or args.context < 0:
        raise BurstpilotError("--batch must be >= 1 and --context >= 0")
    print(json.dumps({"decode_step_ms": round(prof.decode_ms(args.batch, args.context), 4)}))
    return 0


def _serve(args) -> int:
    from burstpilot.sim.profile import load_profile
    from burstpilot.sim.server import serve

    prof = load_profile(args.profile)
    print(
        f"burstpilot sim: {prof.name} serving '{args.model_name or prof.model}' on http://{args.host}:{args.port}"
    )
    asyncio.run(
        serve(
            prof,
            args.host,
            args.port,
            model_name=args.model_name,
            cold_start_s=args.cold_start,
            max_waiting=args.max_waiting,
            max_body_bytes=args.max_body_bytes,
            seed=args.seed,
        )
    )
    return 0


def _fleet(args) -> int:
    from burstpilot.sim.fleet import run_fleet
    from burstpilot.sim.profile import load_profile

    prof = load_profile(args.profile)
    if args.replicas < 0 or args.replica_processes < 0:
        raise BurstpilotError("--replicas and --replica-processes must be >= 0")
    print(f"burstpilot sim fleet: router on http://{args.host}:{args.port}, {args.replicas} x {prof.name}")
    asyncio.run(
        run_fleet(
            prof,
            args.replicas,
            args.port,
            host=args.host,
            sd_file=args.sd_file,
            cold_start_s=args.cold_start,
            max_waiting=args.max_waiting,
            seed=args.seed,
            replica_processes=args.replica_processes,
            profile_ref=args.profile,
        )
    )
    return 0


def _simulate(args) -> int:
    from burstpilot.sim.des import simulate
    from burstpilot.sim.profile import load_profile
    from burstpilot.traces import read_trace

    prof = load_profile(args.profile)
    trace = read_trace(args.workload)
    res = simulate(trace, prof, replicas=args.replicas, seed=args.seed)
    summary = res.summary() | {
        "profile": prof.name,
        "replicas": args.replicas,
        "workload": str(args.workload),
    }
    text = json.dumps(summary, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0
