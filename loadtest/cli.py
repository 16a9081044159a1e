"""Command line for `burstpilot replay`.

burstpilot replay WORKLOAD --target URL [--target URL ...] --out DIR [options]
burstpilot replay merge DIR [DIR ...] --out DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
from pathlib import Path

from burstpilot.errors import BurstpilotError
from burstpilot.traces.readers import FORMATS
from burstpilot.units import parse_duration

EXIT_FAIL_UNDER = 3  # the run finished but missed --fail-under

DESCRIPTION = """\
Replay WORKLOAD against OpenAI-compatible --target endpoints and measure TTFT, TPOT, ITL, E2E, SLO attainment and
goodput. By default each request leaves at its recorded time (open loop: a slow server never slows the sending);
--request-rate sends generated arrivals instead, --concurrency runs a closed loop. The clock starts once every
target is ready (--wait-ready). 'burstpilot replay merge DIR... --out DIR' combines the shards of one replay.

Writes into --out: requests.jsonl (each request, as it finishes), requests.parquet, summary.json, summary.csv,
vllm-bench.json (the keys of vllm bench serve --save-result), server_metrics.jsonl (the targets' /metrics),
latency.png, report.md and report.html (open it in a browser), run.json.

Exit codes: 0 done, 2 bad input or a target that is not ready (nothing sent), 3 below --fail-under,
130 interrupted (the results so far are still written)."""


def _header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition(":")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY:VALUE (example: X-Request-Source:bench)")
    return key.strip(), value.strip()


def _extra_body(text: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"top_p\": 0.9}'")
    return data


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"need at least 1, got {v}")
    return v


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v


def parse_fail_under(text: str) -> dict[str, float]:
    """'0.99', 'attainment=0.99', 'goodput=8.5' or both, comma-separated."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.rpartition("=")
        key = key.strip().lower() if sep else "attainment"
        if key not in ("attainment", "goodput"):
            raise BurstpilotError(
                f"--fail-under: {part!r}: expected ATTAINMENT, attainment=A or goodput=REQ_PER_S"
            )
        try:
            out[key] = float(value)
        except ValueError:
            raise BurstpilotError(f"--fail-under {key}: {value.strip()!r} is not a number") from None
        if key == "attainment" and not 0 < out[key] <= 1:
            raise BurstpilotError(f"--fail-under attainment: must be in (0, 1], got {value.strip()}")
        if key == "goodput" and not out[key] >= 0:
            raise BurstpilotError(f"--fail-under goodput: must be >= 0 requests/s, got {value.strip()}")
    if not out:
        raise BurstpilotError("--fail-under: give an attainment (0.99) or goodput=REQ_PER_S")
    return out


def fail_under_misses(summary: dict, bar: dict[str, float]) -> list[str]:
    """What of ``bar`` the run missed (empty: it passed)."""
    slo = summary.get("slo") or {}
    misses = []
    if "attainment" in bar:
        att = slo.get("attainment")
        if att is None or att < bar["attainment"]:
            misses.append(f"attainment {'-' if att is None else f'{att:.4f}'} < {bar['attainment']:g}")
    if "goodput" in bar:
        good = slo.get("goodput")
        if good is None or good < bar["goodput"]:
            misses.append(
                f"goodput {'-' if good is None else f'{good:.2f}'} req/s < {bar['goodput']:g} req/s"
            )
    return misses


def register(sub) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a workload against OpenAI-compatible endpoints (open loop, SLO attainment, goodput)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "workload",
        metavar="WORKLOAD",
        help="trace file (any format `burstpilot trace` reads), or the word 'merge' followed by shard folders",
    )
    p.add_argument("dirs", nargs="*", metavar="DIR", help="after 'merge': the shards' output folders")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created)")

    t = p.add_argument_group("target")
    t.add_argument(
        "--target",
        action="append",
        metavar="URL",
        help="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000; repeat for several",
    )
    t.add_argument(
        "--api", choices=("completions", "chat"), default="completions",
        help="POST /v1/completions or /v1/chat/completions (default: completions)",
    )  # fmt: skip
    t.add_argument("--model", help="model name to request (default: the first one the first target lists)")
    t.add_argument(
        "--api-key",
        metavar="KEY",
        help="sent as 'Authorization: Bearer KEY' (default: $OPENAI_API_KEY when set); never written to disk",
    )
    t.add_argument(
        "--header",
        action="append",
        type=_header,
        default=None,
        metavar="KEY:VALUE",
        help="an HTTP header for every request; repeat for several (overrides --api-key's Authorization)",
    )
    t.add_argument(
        "--extra-body",
        type=_extra_body,
        metavar="JSON",
        help="a JSON object merged into every request body, e.g. '{\"top_p\": 0.9}' (its keys win)",
    )
    t.add_argument(
        "--no-stream", dest="stream", action="store_false",
        help="ask for whole answers instead of streams (TTFT is then the whole answer's time, as in vLLM)",
    )  # fmt: skip
    t.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="local Hugging Face tokenizer folder: prompts of the exact token length (needs `tokenizers`)",
    )
    t.add_argument(
        "--balance", choices=("round-robin", "least-outstanding"), default="round-robin",
        help="how requests are spread over several targets (default: round-robin)",
    )  # fmt: skip
    t.add_argument(
        "--wait-ready",
        default="10m",
        metavar="DUR",
        help="wait up to DUR for every target's GET /health (or /v1/models) to answer 200 before the clock "
        "starts, saying what it waits for; 0: do not wait (default: 10m)",
    )

    w = p.add_argument_group("workload")
    w.add_argument(
        "--format", choices=list(FORMATS), default="auto",
        help="the workload's trace format (default: auto, recognised by its header)",
    )  # fmt: skip
    w.add_argument("--include-failed", action="store_true", help="also send the rows the trace marks failed")
    w.add_argument(
        "--time-col", metavar="NAME", help="generic CSV: the arrival time column (with --format csv)"
    )
    w.add_argument(
        "--time-unit", choices=("s", "ms", "us", "ns", "datetime"), default="s",
        help="generic CSV: unit of --time-col (default: s)",
    )  # fmt: skip
    w.add_argument("--request-col", metavar="NAME", help="generic CSV: the prompt tokens column")
    w.add_argument("--response-col", metavar="NAME", help="generic CSV: the output tokens column")

    s = p.add_argument_group("schedule (default: each request at its recorded time)")
    s.add_argument(
        "--request-rate",
        type=_positive_float,
        metavar="R",
        help="generated arrivals at R requests/s instead of the trace's times (the trace gives token counts)",
    )
    s.add_argument(
        "--burstiness",
        type=_positive_float,
        default=1.0,
        metavar="B",
        help="with --request-rate: Gamma shape of the gaps, as vllm bench serve's: 1 Poisson, <1 burstier, "
        ">1 more regular (default: 1)",
    )
    s.add_argument("--seed", type=int, default=0, help="seed of the generated arrivals (default: 0)")
    s.add_argument(
        "--concurrency",
        type=_positive_int,
        metavar="N",
        help="a closed loop instead: N requests in flight, the next sent when one finishes",
    )
    s.add_argument(
        "--max-concurrency",
        type=_positive_int,
        metavar="N",
        help="open loop, but never more than N in flight (a request waits; the wait shows as dispatch lag)",
    )
    s.add_argument(
        "--warmup",
        type=_count,
        default=0,
        metavar="N",
        help="send N requests before the clock starts, left out of every result (default: 0)",
    )
    s.add_argument("--limit", type=_positive_int, metavar="N", help="send only the first N requests")
    s.add_argument(
        "--duration",
        metavar="DUR",
        help="send only the requests scheduled in the first DUR (e.g. 90s, 10m, 1h)",
    )
    s.add_argument(
        "--shard", default="0/1", metavar="i/n",
        help="send the deterministic share i of n (every n-th request; one pod each; default: 0/1)",
    )  # fmt: skip
    s.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="K",
        help="sending processes on this machine, when one core cannot keep the schedule (default: 1)",
    )

    o = p.add_argument_group("timeouts")
    o.add_argument("--connect-timeout", default="10s", metavar="DUR", help="TCP connect (default: 10s)")
    o.add_argument(
        "--first-token-timeout", default="60s", metavar="DUR", help="first text chunk (default: 60s)"
    )
    o.add_argument("--timeout", default="600s", metavar="DUR", help="whole request (default: 600s)")
    o.add_argument(
        "--grace", default="10s", metavar="DUR",
        help="on SIGINT/SIGTERM: how long requests in flight may still finish (default: 10s)",
    )  # fmt: skip

    r = p.add_argument_group("results")
    r.add_argument(
        "--slo", metavar="SPEC",
        help="objectives for attainment and goodput, e.g. ttft=2s,tpot=100ms[,e2e=30s][,itl=500ms][,attainment=0.99]",
    )  # fmt: skip
    r.add_argument(
        "--fail-under",
        metavar="BAR",
        help="exit 3 when the run misses it: an attainment (0.99), goodput=REQ_PER_S, or both comma-separated "
        "(needs --slo)",
    )
    r.add_argument(
        "--percentiles", default="50,90,99", metavar="LIST",
        help="percentiles of vllm-bench.json's latencies (default: 50,90,99)",
    )  # fmt: skip
    r.add_argument(
        "--server-metrics",
        action="append",
        metavar="URL|FILE",
        help="capture this Prometheus /metrics URL during the run, or the targets a file-SD JSON file lists "
        "(`sim fleet --sd-file`); repeat for several (default: each target's /metrics)",
    )
    r.add_argument(
        "--no-server-metrics", dest="server_metrics_off", action="store_true", help="capture no /metrics"
    )
    r.add_argument(
        "--server-metrics-interval", default="1s", metavar="DUR", help="time between captures (default: 1s)"
    )
    r.add_argument(
        "--resume", action="store_true", help="keep the finished requests in --out and send the rest"
    )
    r.add_argument("--no-plot", dest="plot", action="store_false", help="write no latency.png")
    r.add_argument(
        "--no-report", dest="report", action="store_false", help="write no report.md / report.html"
    )

    v = p.add_argument_group("while it runs")
    v.add_argument(
        "--no-progress", dest="progress", action="store_false",
        help="no progress display (on a terminal: a live display; elsewhere: a plain line every 10 s on stderr)",
    )  # fmt: skip
    v.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve the replay's own Prometheus counters and histograms on this port",
    )
    v.add_argument(
        "--metrics-addr", default="127.0.0.1", metavar="ADDR",
        help="address of --metrics-port (default: 127.0.0.1; 0.0.0.0 in a pod)",
    )  # fmt: skip
    p.set_defaults(handler=run)


def _columns(args):
    from burstpilot.traces import ColumnMap

    given = [args.time_col, args.request_col, args.response_col]
    if not any(given):
        return None
    if not all(given):
        raise BurstpilotError("a generic CSV needs --time-col, --request-col and --response-col")
    return ColumnMap(time=args.time_col, request=args.request_col, response=args.response_col,
                     time_unit=args.time_unit)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from .client import Timeouts
    from .export import parse_percentiles
    from .merge import merge
    from .metrics import parse_slo
    from .runner import ReplayOptions, event_loop_factory, replay
    from .schedule import parse_shard

    slo = parse_slo(args.slo) if args.slo else None
    bar = parse_fail_under(args.fail_under) if args.fail_under else None
    percentiles = parse_percentiles(args.percentiles)
    if args.workload == "merge":
        if not args.dirs:
            raise BurstpilotError(
                "replay merge: give the shard directories (burstpilot replay merge DIR... --out DIR)"
            )
        summary = merge([Path(d) for d in args.dirs], args.out, slo=slo, plot=args.plot, percentiles=percentiles,
                        report=args.report)  # fmt: skip
        return _conclude(summary, args.out, bar, args.report)
    if args.dirs:
        raise BurstpilotError(
            f"replay: unexpected arguments {args.dirs} (one WORKLOAD; --target before each URL)"
        )
    if not args.target:
        raise BurstpilotError("replay: --target URL is required")
    if bar is not None and slo is None:
        raise BurstpilotError("--fail-under: needs --slo (attainment and goodput are measured against it)")
    if args.server_metrics and args.server_metrics_off:
        raise BurstpilotError("--server-metrics and --no-server-metrics: give one")
    from burstpilot.traces import read_trace

    if not Path(args.workload).is_file():
        raise BurstpilotError(f"{args.workload}: no such workload file")
    trace = read_trace(args.workload, fmt=args.format, columns=_columns(args))
    options = ReplayOptions(
        api=args.api,
        model=args.model,
        stream=args.stream,
        tokenizer=args.tokenizer,
        include_failed=args.include_failed,
        duration_s=parse_duration(args.duration, "--duration") if args.duration else None,
        limit=args.limit,
        request_rate=args.request_rate,
        burstiness=args.burstiness,
        seed=args.seed,
        concurrency=args.concurrency,
        max_concurrency=args.max_concurrency,
        warmup=args.warmup,
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
        wait_ready_s=parse_duration(args.wait_ready, "--wait-ready"),
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY") or None,
        headers=dict(args.header or ()),
        extra_body=args.extra_body,
        server_metrics=[] if args.server_metrics_off else args.server_metrics,
        server_metrics_interval_s=parse_duration(args.server_metrics_interval, "--server-metrics-interval"),
        percentiles=percentiles,
        progress=args.progress,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        plot=args.plot,
        report=args.report,
    )
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        summary = runner.run(replay(trace, args.target, args.out, options))
    code = _conclude(summary, args.out, bar, args.report)
    return 130 if summary.get("interrupted") else code


def _conclude(summary: dict, out: Path, bar: dict | None, report: bool) -> int:
    """Prints the summary table, the warnings and the verdict; the exit code of --fail-under."""
    from rich.console import Console
    from rich.table import Table

    from .report import verdict, warnings

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
        f"completed {req['completed']:,}/{req['scheduled']:,}, failed {req['failed']:,} {json.dumps(req['errors'])}; "
        f"{summary['request_rate']:.1f} req/s, {summary['output_token_throughput']:.0f} output tok/s"
    )
    if "slo" in summary:
        s = summary["slo"]
        att = "-" if s["attainment"] is None else f"{s['attainment']:.3f}"
        line += f"; SLO attainment {att}, goodput {s['goodput']:.1f} req/s"
    c.print(line, highlight=False, soft_wrap=True)
    for w in warnings(summary):
        c.print(f"[bold yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    if report:
        c.print(f"report: {out / 'report.html'}", highlight=False, soft_wrap=True)
    misses = fail_under_misses(summary, bar) if bar else []
    text = verdict(summary) + (f"; FAILED --fail-under: {', '.join(misses)}" if misses else "")
    c.print(f"[bold]verdict:[/] {text}", highlight=False, soft_wrap=True)
    return EXIT_FAIL_UNDER if misses else 0
