"""Command line for `burstpilot forecast`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from burstpilot.errors import BurstpilotError


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BurstpilotError(f"--{what}: expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def register(sub) -> None:
    parser = sub.add_parser("forecast", help="short-term request and token rate forecasts")
    parser.set_defaults(handler=lambda args: parser.print_help())
    fsub = parser.add_subparsers(dest="forecast_command", metavar="SUBCOMMAND")
    bt = fsub.add_parser(
        "backtest",
        help="rolling-origin backtest of the forecasters on a trace",
        description="Bin a trace into counts per step, feed every model step by step, forecast at each "
        "origin and score against what happened next. Writes DIR/backtest.json and DIR/bands_<series>.png.",
    )
    bt.add_argument(
        "trace", type=Path, help="trace file (BurstGPT, Azure LLM, Mooncake; see `burstpilot trace`)"
    )
    bt.add_argument("--format", default="auto", help="trace format (default: auto)")
    bt.add_argument("--step", type=float, default=10.0, help="step in seconds (default 10)")
    bt.add_argument("--horizon", type=float, default=120.0, help="horizon in seconds (default 120)")
    bt.add_argument(
        "--models",
        default="last,ewma,holt,ets,seasonal,burst",
        help="comma-separated models (default: all of last,ewma,holt,ets,seasonal,burst)",
    )
    bt.add_argument(
        "--series",
        default="requests,tokens",
        help="comma-separated series: requests, prompt_tokens, output_tokens, tokens (default requests,tokens)",
    )
    bt.add_argument(
        "--quantiles", default="0.5,0.9,0.95,0.99", help="quantile levels (default 0.5,0.9,0.95,0.99)"
    )
    bt.add_argument("--warmup", type=float, default=600.0, help="seconds fed before the first scored origin")
    bt.add_argument("--stride", type=int, default=1, help="score every N-th origin (default 1: all)")
    bt.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    bt.add_argument(
        "--keep-time-grid",
        action="store_true",
        help="bin arrivals as recorded even when they lie on a coarse time grid (default: spread each over "
        "its grid cell, so a step that is not a multiple of the grid does not alias)",
    )
    bt.add_argument("--out", type=Path, required=True, help="output directory")
    bt.set_defaults(handler=_backtest)


def _backtest(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from burstpilot.forecasting import MODELS
    from burstpilot.forecasting.backtest import bin_trace, model_entry, run_model, time_grid_s, write_json
    from burstpilot.forecasting.base import check_quantiles
    from burstpilot.progress import Reporter
    from burstpilot.traces import read_trace

    models = _names(args.models)
    for m in models:
        if m not in MODELS:
            raise BurstpilotError(f"--models: unknown model {m!r} (choose from {', '.join(MODELS)})")
    if not models:
        raise BurstpilotError("--models: name at least one model")
    quantiles = check_quantiles(_floats(args.quantiles, "quantiles"))
    if not (args.step > 0 and args.horizon > 0):
        raise BurstpilotError("--step and --horizon must be positive numbers of seconds")
    series_names = _names(args.series)
    if not args.trace.exists():
        raise BurstpilotError(f"{args.trace}: no such file")
    console = Console(stderr=True)
    trace = read_trace(args.trace, fmt=args.format)
    grid = time_grid_s(trace.arrival_s)
    series = bin_trace(trace, args.step, series_names, dequantize=not args.keep_time_grid)
    if grid is not None and not args.keep_time_grid:
        console.print(
            f"note: the timestamps lie on a {grid:g} s grid; each arrival is spread over its grid cell "
            "before binning (--keep-time-grid to bin them as recorded)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "trace": str(args.trace),
        "step_s": args.step,
        "horizon_s": args.horizon,
        "quantiles": list(quantiles),
        "warmup_s": args.warmup,
        "stride": args.stride,
        "time_grid_s": grid,
        "dequantized": bool(grid is not None and not args.keep_time_grid),
        "primary_series": series_names[0],
        "models": {},
        "series": {},
    }
    out_json = args.out / "backtest.json"
    runs: dict[str, dict[str, dict]] = {}
    total = sum(len(c) for c in series.values()) * len(models)
    with Reporter("forecast backtest") as progress:
        task = progress.add_task("backtest", total=total, unit=" steps")
        for sname, counts in series.items():
            runs[sname] = {}
            doc["series"][sname] = {
                "n_steps": len(counts),
                "mean_rate": float(counts.mean() / args.step),
                "models": {},
            }
            for m in models:
                progress.update(task, note=f"{sname}: {m}")
                run = run_model(
                    counts,
                    args.step,
                    m,
                    [args.horizon],
                    quantiles,
                    warmup_s=args.warmup,
                    stride=args.stride,
                    advance=lambda n: progress.update(task, advance=n),
                )
                runs[sname][m] = run["horizons"][args.horizon] | {"update_ns": run["update_ns"]}
                entry = model_entry(run, args.horizon)
                doc["series"][sname]["models"][m] = entry
                if sname == series_names[0]:
                    doc["models"][m] = entry
                write_json(out_json, doc)
    if not args.no_plots:
        from burstpilot.forecasting.plots import plot_bands

        for sname, counts in series.items():
            plot_bands(
                args.out / f"bands_{sname}.png",
                f"{args.trace.name}: {sname}, {args.horizon:g} s horizon, {args.step:g} s step",
                counts,
                args.step,
                int(-(-args.horizon // args.step)),
                runs[sname],
                quantiles,
                warmup_steps=int(-(-args.warmup // args.step)),
                unit=sname.replace("_", " "),
            )
    out = Console(width=None if sys.stdout.isatty() else 200)
    for sname in series:
        table = Table(title=f"{sname} (step {args.step:g} s, horizon {args.horizon:g} s, rates per second)")
        table.add_column("model")
        table.add_column("MAE", justify="right")
        table.add_column("sMAPE %", justify="right")
        for q in quantiles:
            table.add_column(f"pinball {q:g}", justify="right")
        for q in quantiles:
            table.add_column(f"cover {q:g}", justify="right")
        hq = 0.9 if 0.9 in quantiles else quantiles[-1]
        table.add_column(f"peak>q{hq:g}", justify="right")
        table.add_column("update ms", justify="right")
        for m, e in doc["series"][sname]["models"].items():
            table.add_row(
                m,
                f"{e['mae']:.3g}",
                f"{e['smape']:.1f}",
                *[f"{e['pinball'][str(q)]:.3g}" for q in quantiles],
                *[f"{e['coverage'][str(q)]:.3f}" for q in quantiles],
                f"{e['peak_exceed_rate'][str(hq)]:.3f}",
                f"{e['update_ms']:.3f}",
            )
        out.print(table)
    out.print(f"wrote {out_json}" + ("" if args.no_plots else f" and {args.out}/bands_*.png"))
    return 0
