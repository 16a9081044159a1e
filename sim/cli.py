"""Command line for `burstpilot sim`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from burstpilot.errors import BurstpilotError
from burstpilot.sim.fleet import DEFAULT_MAX_REPLICAS


def register(sub) -> None:
    parser = sub.add_parser("sim", help="simulated vLLM-compatible GPU serving replicas")
    parser.set_defaults(handler=lambda args: parser.print_help())
    s = parser.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")

    p = s.add_parser("profiles", help="list the shipped replica profiles")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_profiles)

    p = s.add_parser(
        "predict",
        help="step time of a profile's model",
        description="Predict one engine step of a profile's step-time model: a decode step of --batch "
        "sequences (each holding --context tokens, or --kv-tokens in total), or a prefill of --prefill-tokens.",
    )
    p.add_argument("--profile", required=True, help="profile name (see `sim profiles`) or JSON path")
    p.add_argument("--batch", type=int, metavar="N", help="decoding sequences in the step")
    kv = p.add_mutually_exclusive_group()
    kv.add_argument(
        "--context", type=int, metavar="TOKENS", help="context length of each sequence, in tokens"
    )
    kv.add_argument("--kv-tokens", type=int, metavar="TOKENS", help="KV tokens held by the whole batch")
    p.add_argument("--prefill-tokens", type=int, metavar="TOKENS", help="prompt tokens prefilled in one step")
    p.set_defaults(handler=_predict)

    p = s.add_parser(
        "serve",
        help="one real-time replica with the vLLM HTTP API and metrics",
        description="One simulated replica with the vLLM/OpenAI HTTP API and vLLM's /metrics. It prints when "
        "the simulated model load (cold start) is over, and while it waits.",
    )
    _server_args(p)
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--model-name", help="served model name (default: the profile's model)")
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="answer 413 to larger request bodies (default 1 MiB)",
    )
    p.set_defaults(handler=_serve)

    p = s.add_parser(
        "fleet",
        help="N replicas behind a least-outstanding router, rescalable while running",
        description="N simulated replicas behind a least-outstanding-requests router; POST /admin/replicas "
        '{"replicas": N} rescales while it runs. It prints each replica that becomes ready, and while the '
        "cold start goes on.",
    )
    _server_args(p)
    p.add_argument("--replicas", type=int, required=True, metavar="N", help="replicas to start with")
    p.add_argument(
        "--max-replicas",
        type=int,
        metavar="N",
        default=DEFAULT_MAX_REPLICAS,
        help=f"most replicas POST /admin/replicas may ask for (default {DEFAULT_MAX_REPLICAS})",
    )
    p.add_argument(
        "--port", type=int, default=8000, help="router port; replicas on port+1, port+2, ... (default 8000)"
    )
    p.add_argument(
        "--sd-file", help="Prometheus file-SD targets file listing the ready replicas, kept up to date"
    )
    p.add_argument(
        "--replica-processes",
        type=int,
        metavar="K",
        default=0,
        help="spread the replicas over this many worker processes (default 0: all in the router's process)",
    )
    p.set_defaults(handler=_fleet)

    p = s.add_parser("simulate", help="discrete-event run of a workload file over a fixed pool")
    p.add_argument("workload", help="a trace file (any format `burstpilot trace` reads)")
    p.add_argument("--profile", required=True, help="profile name (see `sim profiles`) or JSON path")
    p.add_argument(
        "--replicas", type=int, default=4, help="replicas in the pool, all ready at t=0 (default 4)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the simulation (default 0)")
    p.add_argument("--slo", help="also report SLO attainment, e.g. ttft=2s,tpot=100ms (the --slo grammar)")
    p.add_argument("--out", metavar="FILE", help="write the summary JSON here")
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
    p.add_argument(
        "--slo",
        required=True,
        help="objectives and goal, e.g. ttft=2s,tpot=100ms[,e2e=30s][,attainment=0.99]",
    )
    p.add_argument(
        "--attainment",
        type=float,
        default=None,
        help="share of requests that must meet the SLO (default: the --slo's attainment, 0.99 unless given)",
    )
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
    from burstpilot.sim.measure import measure_profile
    from burstpilot.sim.profile import load_profile
    from burstpilot.slo import SLO
    from burstpilot.traces import read_trace

    slo = SLO.parse(args.slo)
    goal = slo.attainment if args.attainment is None else args.attainment
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
        args.target, read_trace(args.workload), slo, raw, work, goal=goal, rates=rates,
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
    p.add_argument("--profile", required=True, help="profile name (see `sim profiles`) or JSON path")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--cold-start",
        type=float,
        metavar="SECONDS",
        help="model-load seconds (default: drawn from the profile; 0: none)",
    )
    p.add_argument("--max-waiting", type=int, metavar="N", help="answer 503 when this many requests wait")
    p.add_argument(
        "--seed", type=int, default=0, help="random seed of cold starts and reply lengths (default 0)"
    )


def _say(prefix: str):
    """Status lines on stdout, flushed at once so that they show in a pipe or a log file too."""

    def notify(msg: str) -> None:
        print(f"{prefix}: {msg}", flush=True)

    return notify


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
        if args.batch is not None or args.context is not None or args.kv_tokens is not None:
            raise BurstpilotError(
                "--prefill-tokens goes alone; --batch with --context or --kv-tokens predicts a decode step"
            )
        if args.prefill_tokens < 1:
            raise BurstpilotError("--prefill-tokens must be >= 1")
        print(json.dumps({"prefill_ms": round(prof.prefill_ms(args.prefill_tokens), 4)}))
        return 0
    if args.batch is None or (args.context is None and args.kv_tokens is None):
        raise BurstpilotError(
            "give --batch with --context (tokens per sequence) or --kv-tokens (the batch's total), "
            "or --prefill-tokens"
        )
    if not 1 <= args.batch <= prof.max_num_seqs:
        raise BurstpilotError(f"--batch must be from 1 to the profile's max_num_seqs, {prof.max_num_seqs}")
    if args.context is not None:
        if not 1 <= args.context <= prof.max_model_len:
            raise BurstpilotError(
                f"--context must be from 1 to the profile's max_model_len, {prof.max_model_len}"
            )
        kv_tokens = args.batch * args.context
    else:
        kv_tokens = args.kv_tokens
        if kv_tokens < args.batch:
            raise BurstpilotError("--kv-tokens must be at least --batch (every sequence holds a token)")
    if kv_tokens > prof.kv_capacity_tokens:
        raise BurstpilotError(
            f"{kv_tokens} KV tokens do not fit the profile's KV cache of {prof.kv_capacity_tokens} tokens"
        )
    out = {"decode_step_ms": round(prof.decode_ms(args.batch, kv_tokens), 4), "batch": args.batch,
           "kv_tokens": kv_tokens, "context_per_sequence": round(kv_tokens / args.batch, 1)}  # fmt: skip
    print(json.dumps(out))
    return 0


def _serve(args) -> int:
    from burstpilot.sim.profile import load_profile
    from burstpilot.sim.server import serve

    prof = load_profile(args.profile)
    say = _say("burstpilot sim serve")
    say(f"{prof.name} serving '{args.model_name or prof.model}' on http://{args.host}:{args.port}")
    try:
        asyncio.run(
            serve(prof, args.host, args.port, model_name=args.model_name, cold_start_s=args.cold_start,
                  max_waiting=args.max_waiting, max_body_bytes=args.max_body_bytes, seed=args.seed, notify=say)
        )  # fmt: skip
    except OSError as exc:
        raise BurstpilotError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    return 0


def _fleet(args) -> int:
    from burstpilot.sim.fleet import run_fleet
    from burstpilot.sim.profile import load_profile

    prof = load_profile(args.profile)
    if args.replicas < 0 or args.replica_processes < 0:
        raise BurstpilotError("--replicas and --replica-processes must be >= 0")
    if args.replicas > args.max_replicas:
        raise BurstpilotError(f"--replicas {args.replicas} is above --max-replicas {args.max_replicas}")
    say = _say("burstpilot sim fleet")
    say(
        f"router on http://{args.host}:{args.port}, {args.replicas} x {prof.name} (at most {args.max_replicas})"
    )
    asyncio.run(
        run_fleet(prof, args.replicas, args.port, host=args.host, sd_file=args.sd_file,
                  cold_start_s=args.cold_start, max_waiting=args.max_waiting, seed=args.seed,
                  replica_processes=args.replica_processes, profile_ref=args.profile,
                  max_replicas=args.max_replicas, notify=say)
    )  # fmt: skip
    return 0


def _simulate(args) -> int:
    from burstpilot.sim.des import simulate
    from burstpilot.sim.profile import load_profile
    from burstpilot.slo import SLO
    from burstpilot.traces import read_trace

    slo = SLO.parse(args.slo) if args.slo else None
    prof = load_profile(args.profile)
    trace = read_trace(args.workload)
    res = simulate(trace, prof, replicas=args.replicas, seed=args.seed)
    summary = res.summary(slo) | {
        "profile": prof.name,
        "replicas": args.replicas,
        "workload": str(args.workload),
    }
    text = json.dumps(summary, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0
