"""Command line for `burstpilot trace`: analyze, generate, info, convert."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from burstpilot.errors import BurstpilotError
from burstpilot.traces import formats


def _add_read_args(p: argparse.ArgumentParser, window: bool = True) -> None:
    g = p.add_argument_group("reading")
    g.add_argument(
        "--format",
        default="auto",
        choices=formats.choices(),
        help="trace format (default: auto, recognised by content)",
    )
    g.add_argument("--model", action="append", help="keep only this model (repeatable)")
    g.add_argument("--log-type", action="append", help="keep only this log type (repeatable)")
    if window:
        g.add_argument("--start", type=float, help="keep arrivals at or after this time (s, trace axis)")
        g.add_argument("--end", type=float, help="keep arrivals before this time (s, trace axis)")
    g.add_argument("--no-failed", action="store_true", help="drop failed requests")
    g.add_argument("--skip-bad-rows", action="store_true", help="drop malformed rows and count them")
    c = p.add_argument_group("generic CSV column mapping (implies --format csv when the header is unknown)")
    c.add_argument("--time-col")
    c.add_argument("--time-unit", default="s", choices=["s", "ms", "us", "ns", "datetime"])
    c.add_argument("--request-col")
    c.add_argument("--response-col")
    c.add_argument("--model-col")
    c.add_argument("--log-type-col")
    c.add_argument("--session-col")
    c.add_argument("--elapsed-col")
    c.add_argument("--failed-col")


def _columns(args):
    from burstpilot.traces import ColumnMap

    columns = None
    if args.time_col or args.request_col or args.response_col:
        missing = [f for f in ("time_col", "request_col", "response_col") if not getattr(args, f)]
        if missing:
            raise BurstpilotError(
                "a column mapping needs " + ", ".join("--" + m.replace("_", "-") for m in missing)
            )
        columns = ColumnMap(
            time=args.time_col,
            request=args.request_col,
            response=args.response_col,
            model=args.model_col,
            log_type=args.log_type_col,
            session=args.session_col,
            elapsed=args.elapsed_col,
            failed=args.failed_col,
            time_unit=args.time_unit,
        )
    return columns


def _read_kwargs(args, window=True) -> dict:
    kw = dict(
        fmt=args.format,
        model=args.model,
        log_type=args.log_type,
        include_failed=not args.no_failed,
        skip_bad_rows=args.skip_bad_rows,
        columns=_columns(args),
    )
    if window:
        kw |= dict(start_s=args.start, end_s=args.end)
    return kw


def _read(args, path=None, window=True):
    from burstpilot.traces import read_trace

    return read_trace(path or args.trace, **_read_kwargs(args, window))


def _iter(args):
    from burstpilot.traces import iter_trace

    return iter_trace(args.trace, **_read_kwargs(args))


def cmd_analyze(args) -> int:
    from burstpilot.progress import Reporter
    from burstpilot.traces.analyze import analyze, analyze_stream
    from burstpilot.traces.report import verdict

    with Reporter("trace analyze") as prog:
        task = prog.add_task("analyzing", unit=" steps")

        def step(i, n, what):
            prog.update(task, completed=i, total=n, note=what)

        if args.stream:
            summary = analyze_stream(
                lambda: _iter(args),
                args.out,
                window_s=args.window,
                figures=not args.no_figures,
                progress=step,
            )
        else:
            trace = _read(args)
            summary = analyze(
                trace, args.out, window_s=args.window, figures=not args.no_figures, progress=step
            )
    out = Path(args.out)
    print(verdict(summary))
    print(f"report: {out / 'report.md'} (and {out / 'report.html'}, self-contained: open it in a browser)")
    print(f"summary: {out / 'summary.json'}")
    return 0


def cmd_generate(args) -> int:
    from burstpilot.traces import write_burstgpt_csv
    from burstpilot.traces.generate import generate_modeled, generate_preset, scale_rate, scale_replay

    sources = [x for x in (args.preset, args.from_trace, args.fit) if x]
    if len(sources) != 1:
        raise BurstpilotError("choose exactly one of --preset, --from, --fit")
    if args.preset:
        if args.rps is None or args.duration is None:
            raise BurstpilotError("--preset needs --rps and --duration")
        trace = generate_preset(
            args.preset,
            duration_s=args.duration,
            rps=args.rps,
            seed=args.seed,
            start_s=args.start or 0.0,
            failure_rate=args.failure_rate,
            round_timestamps=args.round_timestamps,
        )
    elif args.from_trace:
        src = _read(args, path=args.from_trace, window=False)
        if (args.rps is None) == (args.speedup is None):
            raise BurstpilotError(
                "--from needs exactly one of --rps (keeps the clock) or --speedup (compresses time)"
            )
        if args.speedup is not None:
            trace = scale_replay(src, speedup=args.speedup, start_s=args.start, duration_s=args.duration)
        else:
            trace = scale_rate(
                src,
                args.rps,
                method=args.method,
                start_s=args.start,
                duration_s=args.duration,
                seed=args.seed,
            )
    else:
        if args.rps is None or args.duration is None:
            raise BurstpilotError("--fit needs --rps and --duration")
        path = Path(args.fit)
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BurstpilotError(f"{path}: cannot read summary ({exc})") from exc
        trace = generate_modeled(
            summary,
            rps=args.rps,
            duration_s=args.duration,
            start_s=args.start,
            seed=args.seed,
            source=str(path),
            round_timestamps=args.round_timestamps,
        )
    write_burstgpt_csv(trace, args.out)
    print(f"{len(trace):,} requests over {trace.duration_s:.0f} s ({trace.mean_rps:.3f} req/s) -> {args.out}")
    return 0


def cmd_info(args) -> int:
    trace = _read(args)
    info = {
        "source": trace.source,
        "format": trace.format,
        "rows": len(trace),
        "bad_rows": trace.bad_rows,
        "start_s": float(trace.arrival_s[0]),
        "duration_s": trace.duration_s,
        "mean_rps": trace.mean_rps,
        "failure_rate": float(trace.failed.mean()),
        "origin": trace.origin.isoformat() if trace.origin else None,
        "groups": [{"model": m, "log_type": lt, "rows": int(mask.sum())} for m, lt, mask in trace.groups()],
        "sessions": trace.has_sessions,
    }
    print(json.dumps(info, indent=1))
    return 0


def cmd_convert(args) -> int:
    from burstpilot.traces import write_burstgpt_csv
    from burstpilot.traces.formats.parquet import write_parquet

    out = Path(args.out)
    if out.suffix == ".parquet":
        # streamed: record batches in, one Parquet folder per day out (any length, bounded memory)
        rows, days = write_parquet(_iter(args), out)
        print(f"{rows:,} rows -> {out} ({days} day partitions)")
        return 0
    trace = _read(args)
    write_burstgpt_csv(trace, out)
    print(f"{len(trace):,} rows -> {out}")
    return 0


def register(sub) -> None:
    parser = sub.add_parser("trace", help="read, characterize and generate traces")
    parser.set_defaults(handler=lambda args: parser.print_help())
    ts = parser.add_subparsers(dest="trace_command", metavar="SUBCOMMAND")

    p = ts.add_parser("analyze", help="characterize a trace: summary.json, report.md and figures")
    p.add_argument("trace", help="trace file (BurstGPT, Azure, Mooncake or generic CSV; .gz too)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--window", type=float, default=1200.0, help="refit window, seconds (default 1200)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument(
        "--stream",
        action="store_true",
        help="read in record batches, two passes, memory bounded whatever the length (needs a time-ordered trace)",
    )
    _add_read_args(p)
    p.set_defaults(handler=cmd_analyze)

    p = ts.add_parser("generate", help="generate a burst-preserving workload as BurstGPT CSV")
    src = p.add_argument_group("source (one of)")
    src.add_argument(
        "--preset", choices=["burstgpt"], help="built-in workload with the BurstGPT study's shape"
    )
    src.add_argument("--from", dest="from_trace", metavar="TRACE", help="replay scaling of a trace")
    src.add_argument("--fit", metavar="SUMMARY", help="modeled scaling from an analyze summary.json")
    p.add_argument("--out", required=True, help="output CSV (BurstGPT schema; .gz compresses)")
    p.add_argument(
        "--rps",
        type=float,
        help="target mean request rate over the span; with --from the trace keeps its clock (see --method)",
    )
    p.add_argument(
        "--method",
        choices=["replay", "modeled"],
        default="replay",
        help="--from --rps: replay = thin the trace's own requests (rate down) or lay its other days over it "
        "(rate up); modeled = sample its per-window Gamma fit at the scaled rate (default: replay)",
    )
    p.add_argument(
        "--speedup",
        type=float,
        help="--from: compress time by this factor instead (shortens every burst and the day; explicit only)",
    )
    p.add_argument("--start", type=float, help="start on the trace's time axis, seconds")
    p.add_argument("--duration", type=float, help="span to generate (or to take from --from), seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--failure-rate", type=float, default=0.02, help="preset: mean failure rate (default 0.02)"
    )
    p.add_argument(
        "--round-timestamps", action="store_true", help="round arrivals down to whole seconds (as BurstGPT)"
    )
    _add_read_args(p, window=False)
    p.set_defaults(handler=cmd_generate)

    p = ts.add_parser("info", help="rows, span, rate and groups of a trace (JSON)")
    p.add_argument("trace")
    _add_read_args(p)
    p.set_defaults(handler=cmd_info)

    p = ts.add_parser(
        "convert", help="rewrite a trace (after filters) as BurstGPT CSV, or as Parquet partitioned by day"
    )
    p.add_argument("trace")
    p.add_argument(
        "--out",
        required=True,
        help="W.csv (BurstGPT 8-column CSV; .gz compresses) or DIR.parquet (a folder: day=N/part-K.parquet, "
        "streamed in record batches)",
    )
    _add_read_args(p)
    p.set_defaults(handler=cmd_convert)
