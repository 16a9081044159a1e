"""Command line for `burstpilot replay`.

burstpilot replay WORKLOAD --target URL [--target URL ...] --out DIR [options]
burstpilot replay merge DIR [DIR ...] --out DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from burstpilot.errors import BurstpilotError


def register(sub) -> None:
    p = sub.add_parser(
        "replay",
        help="open-loop trace replay against OpenAI-compatible endpoints",
        description="Replay WORKLOAD open-loop against --target endpoints, or 'merge DIR...' shard results.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "workload", metavar="WORKLOAD", help="trace file (any format read_trace accepts), or 'merge'"
    )
    p.add_argument("dirs", nargs="*", metavar="DIR", help="with 'merge': shard output directories")
    p.add_argument(
        "--target", action="append", default=[], metavar="URL", help="endpoint base URL (repeatable)"
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument("--api", choices=("completions", "chat"), default="completions")
    p.add_argument("--model", default=None, help="model name (default: the first one the target lists)")
    p.add_argument("--no-stream", dest="stream", action="store_false", help="non-streaming requests")
    p.add_argument("--tokenizer", default=None, metavar="PATH", help="local Hugging Face tokenizer directory")
    p.add_argument("--include-failed", action="store_true", help="also replay rows the trace marks failed")
    p.add_argument("--format", choices=("auto", "burstgpt", "azure", "mooncake"), default="auto")
    p.add_argument("--limit", type=float, default=None, metavar="S", help="replay only the first S seconds")
    p.add_argument("--max-concurrency", type=int, default=None, metavar="N")
    p.add_argument("--balance", choices=("round-robin", "least-outstanding"), default="round-robin")
    p.add_argument("--connect-timeout", default="10s", metavar="DUR")
    p.add_argument("--first-token-timeout", default="60s", metavar="DUR")
    p.add_argument("--timeout", default="600s", metavar="DUR", help="total time per request")
    p.add_argument("--slo", default=None, metavar="SPEC", help="e.g. ttft=2s,tpot=100ms[,e2e=30s]")
    p.add_argument("--shard", default="0/1", metavar="i/n", help="replay the deterministic share i of n")
    p.add_argument("--workers", type=int, default=1, metavar="K", help="sending processes on this machine")
    p.add_argument(
        "--grace", default="10s", metavar="DUR", help="on SIGINT/SIGTERM, wait this long for in-flight"
    )
    p.add_argument("--resume", action="store_true", help="keep finished records in --out, send the rest")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT", help="serve Prometheus metrics")
    p.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--no-plot", dest="plot", action="store_false")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from burstpilot.units import parse_duration

    from .client import Timeouts
    from .merge import merge
    from .metrics import parse_slo
    from .runner import ReplayOptions, replay
    from .schedule import parse_shard

    slo = parse_slo(args.slo) if args.slo else None
    if args.workload == "merge":
        if not args.dirs:
            raise BurstpilotError(
                "replay merge: give the shard directories (burstpilot replay merge DIR... --out DIR)"
            )
        summary = merge([Path(d) for d in args.dirs], args.out, slo=slo, plot=args.plot)
        _print_summary(summary, args.out)
        return 0
    if args.dirs:
        raise BurstpilotError(
            f"replay: unexpected arguments {args.dirs} (one WORKLOAD; --target before each URL)"
        )
    if not args.target:
        raise BurstpilotError("replay: --target URL is required")
    from burstpilot.traces import read_trace

    if not Path(args.workload).is_file():
        raise BurstpilotError(f"{args.workload}: no such workload file")
    trace = read_trace(args.workload, fmt=args.format)
    options = ReplayOptions(
        api=args.api,
        model=args.model,
        stream=args.stream,
        tokenizer=args.tokenizer,
        include_failed=args.include_failed,
        limit_s=args.limit,
        max_concurrency=args.max_concurrency,
        balance=args.balance,
        timeouts=Timeouts(
            connect_s=parse_duration(args.connect_timeout, "--connect-timeout"),
            first_token_s=parse_duration(args.first_token_timeout, "--first-token-timeout"),
            total_s=parse_duration(args.timeout, "--timeout"),
        ),
        slo=slo,
        shard=parse_shard(args.shard),
        workers=args.workers,
        grace_s=parse_duration(args.grace, "--grace"),
        resume=args.resume,
        progress=args.progress,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        plot=args.plot,
    )
    summary = asyncio.run(replay(trace, args.target, args.out, options))
    _print_summary(summary, args.out)
    return 130 if summary.get("interrupted") else 0


def _print_summary(summary: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"replay summary ({out})")
    t.add_column("metric")
    for q in ("mean", "p50", "p90", "p99", "max"):
        t.add_column(q, justify="right")
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s", "dispatch_lag_s"):
        s = summary[key]
        t.add_row(
            key.removesuffix("_s") + " (ms)",
            *("-" if s[q] is None else f"{s[q] * 1e3:.1f}" for q in ("mean", "p50", "p90", "p99", "max")),
        )
    c = Console()
    c.print(t)
    req = summary["requests"]
    line = (
        f"completed {req['completed']}/{req['scheduled']}, failed {req['failed']} {json.dumps(req['errors'])}; "
        f"{summary['request_rate']:.1f} req/s, {summary['output_token_throughput']:.0f} output tok/s"
    )
    if "slo" in summary:
        s = summary["slo"]
        line += f"; SLO attainment {s['attainment']:.3f}, goodput {s['goodput']:.1f} req/s"
    c.print(line)
