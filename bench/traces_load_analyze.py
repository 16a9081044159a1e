"""Load and analyze a BurstGPT-sized trace beside pandas.read_csv of the same file, in one run.

Generates (once, cached outside the repository) a 5.3M-row BurstGPT-shaped CSV: the `burstgpt`
preset over 121 days (the length of BurstGPT_1 + BurstGPT_2) with 1-second timestamps. Then, each
in a fresh child process so that peak memory is measured per step (max RSS from wait4), with the
loads interleaved and repeated so that both readers see the same machine:
  1. pandas.read_csv and burstpilot read_trace, alternately, REPEAT times each (median kept);
  2. burstpilot: read_trace + the full analyze (figures and report), in memory;
  3. burstpilot: the streaming analyze (two passes over record batches, bounded memory);
  4. `trace convert` to Parquet (day partitions) and the full analyze read back from Parquet.
With --big N (e.g. 50000000) it also generates an N-row file over the same 121 days (never
committed) and runs the streaming analyze on it: peak memory and time per row against step 3.
Writes bench/results/traces.json with the load average before and after; a run without --big keeps the
last --big figures there, with the date they were measured.

    .venv/bin/python bench/traces_load_analyze.py [--rows 5300000] [--big 50000000] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "traces.json"
DAYS = 121
REPEAT = 3

LOAD_STEP = r"""
import json, sys, time
from burstpilot.traces import read_trace
t0 = time.perf_counter(); c0 = time.process_time()
trace = read_trace(sys.argv[1])
print(json.dumps({"rows": len(trace), "load_s": time.perf_counter() - t0, "load_cpu_s": time.process_time() - c0}))
"""

ANALYZE_STEP = r"""
import json, sys, time
t0 = time.perf_counter()
from burstpilot.traces import iter_trace, read_trace
from burstpilot.traces.analyze import analyze, analyze_stream
t1 = time.perf_counter(); c1 = time.process_time()
if sys.argv[3] == "stream":
    summary = analyze_stream(lambda: iter_trace(sys.argv[1]), sys.argv[2])
    t2 = t1; rows = summary["rows"]
else:
    trace = read_trace(sys.argv[1]); rows = len(trace)
    t2 = time.perf_counter()
    summary = analyze(trace, sys.argv[2])
t3 = time.perf_counter(); c3 = time.process_time()
print(json.dumps({"rows": rows, "import_s": t1 - t0, "load_s": t2 - t1, "analyze_s": t3 - t2,
                  "load_plus_analyze_s": t3 - t1, "cpu_s": c3 - c1,
                  "gamma_shape": summary["overall"]["interarrival"]["gamma_shape"],
                  "groups": len(summary["groups"])}))
"""

CONVERT_STEP = r"""
import json, sys, time
from burstpilot.traces import iter_trace
from burstpilot.traces.formats.parquet import write_parquet
t0 = time.perf_counter()
rows, days = write_parquet(iter_trace(sys.argv[1]), sys.argv[2])
print(json.dumps({"rows": rows, "days": days, "convert_s": time.perf_counter() - t0}))
"""

PANDAS_STEP = r"""
import json, sys, time
import pandas as pd
t0 = time.perf_counter(); c0 = time.process_time()
df = pd.read_csv(sys.argv[1])
print(json.dumps({"rows": len(df), "read_csv_s": time.perf_counter() - t0, "read_csv_cpu_s": time.process_time() - c0,
                  "pandas": pd.__version__}))
"""


def run_child(code: str, *args: str) -> dict:
    """Run a Python snippet in a child; return its JSON output plus its peak RSS (MiB)."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed with exit code {os.waitstatus_to_exitcode(status)}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def ensure_file(cache: Path, rows: int) -> Path:
    """A BurstGPT-shaped CSV of about ``rows`` rows over DAYS days, written day by day so that
    even 50M rows never sit in memory at once."""
    path = cache / f"burstgpt-shaped-daily-{rows}.csv"
    if path.exists():
        return path
    from burstpilot.traces import write_burstgpt_csv
    from burstpilot.traces.generate import generate_preset

    cache.mkdir(parents=True, exist_ok=True)
    print(f"generating {rows:,} rows over {DAYS} days -> {path}", flush=True)
    tmp = path.with_suffix(".partial")
    day_file = path.with_suffix(".day")
    rps = rows / (DAYS * 86400.0)
    with open(tmp, "wb") as out:
        for day in range(DAYS):
            t = generate_preset("burstgpt", duration_s=86400.0, rps=rps, seed=2024 + day,
                                start_s=day * 86400.0, round_timestamps=True)  # fmt: skip
            t.session_id[t.session_id >= 0] += day * 100_000_000  # sessions of different days differ
            write_burstgpt_csv(t, day_file)
            with open(day_file, "rb") as fh:
                if day:
                    fh.readline()  # the header once
                out.write(fh.read())
            if day % 10 == 0:
                print(f"  day {day}/{DAYS}", flush=True)
    day_file.unlink()
    tmp.rename(path)
    return path


def _previous_big() -> dict | None:
    """The last run's --big figures, so that a run without --big keeps them (with the date they were measured)
    instead of writing them over with nothing."""
    try:
        old = json.loads(OUT.read_text())
    except (OSError, ValueError):
        return None
    big = old.get("big_stream_analyze") if isinstance(old, dict) else None
    if not isinstance(big, dict):
        return None
    return {"measured_at": old.get("measured_at"), **big}  # one carried before keeps its own date


def _write(result: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_300_000)
    ap.add_argument(
        "--big", type=int, default=0, help="also stream-analyze a generated file of this many rows"
    )
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "burstpilot-bench")
    args = ap.parse_args()
    path = ensure_file(args.cache, args.rows)
    size_mb = path.stat().st_size / 1e6
    load_before = os.getloadavg()
    big_before = None if args.big else _previous_big()
    pandas_runs, load_runs = [], []
    for i in range(REPEAT):
        print(f"load round {i + 1}/{REPEAT}: pandas.read_csv, then read_trace", flush=True)
        pandas_runs.append(run_child(PANDAS_STEP, str(path)))
        load_runs.append(run_child(LOAD_STEP, str(path)))
        print(json.dumps({"pandas": pandas_runs[-1], "burstpilot": load_runs[-1]}), flush=True)
    pandas_s = statistics.median(r["read_csv_s"] for r in pandas_runs)
    load_s = statistics.median(r["load_s"] for r in load_runs)
    with tempfile.TemporaryDirectory() as tmp:
        print("burstpilot load + full analyze (in memory)...", flush=True)
        full = run_child(ANALYZE_STEP, str(path), str(Path(tmp) / "a"), "memory")
        print(json.dumps(full), flush=True)
        print("burstpilot streaming analyze...", flush=True)
        stream = run_child(ANALYZE_STEP, str(path), str(Path(tmp) / "b"), "stream")
        print(json.dumps(stream), flush=True)
        print("trace convert to Parquet, then analyze from Parquet...", flush=True)
        pq_dir = Path(tmp) / "t.parquet"
        convert = run_child(CONVERT_STEP, str(path), str(pq_dir))
        pq_mb = sum(p.stat().st_size for p in pq_dir.rglob("*.parquet")) / 1e6
        from_parquet = run_child(ANALYZE_STEP, str(pq_dir), str(Path(tmp) / "c"), "memory")
        print(json.dumps({"convert": convert, "analyze_from_parquet": from_parquet}), flush=True)
    result = {
        "benchmark": "traces_load_analyze",
        "file": {
            "rows": full["rows"],
            "size_mb": round(size_mb, 1),
            "schema": "BurstGPT 8-column",
            "days": DAYS,
        },
        "pandas_read_csv": {"median_s": pandas_s, "runs": pandas_runs},
        "burstpilot_read_trace": {"median_s": load_s, "runs": load_runs},
        "load_vs_pandas": load_s / pandas_s,
        "burstpilot_full_analyze": full,
        "burstpilot_stream_analyze": stream,
        "parquet": {"convert": convert, "size_mb": round(pq_mb, 1), "analyze": from_parquet},
        "big_stream_analyze": big_before,  # kept from an earlier run, dated, unless --big measures it
        "targets": {
            "load_le_1.2x_pandas": load_s <= 1.2 * pandas_s,
            "full_analyze_le_6s": full["load_plus_analyze_s"] <= 6.0,
            "full_analyze_le_1.2gb": full["peak_rss_mib"] * 2**20 <= 1.2e9,
            "big_stream_le_2gb": big_before["peak_rss_mib"] * 2**20 <= 2e9 if big_before else None,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "python": platform.python_version(),
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write(result)  # the 5.3M figures are kept even if the long run below fails
    if args.big:
        big_path = ensure_file(args.cache, args.big)
        with tempfile.TemporaryDirectory() as tmp:
            print(f"burstpilot streaming analyze of {args.big:,} rows...", flush=True)
            la = os.getloadavg()
            big = run_child(ANALYZE_STEP, str(big_path), str(Path(tmp) / "big"), "stream")
            big |= {
                "file_mb": round(big_path.stat().st_size / 1e6, 1),
                "loadavg_before": la,
                "loadavg_after": os.getloadavg(),
                "cpu_us_per_row": 1e6 * big["cpu_s"] / big["rows"],
                "cpu_us_per_row_5m": 1e6 * stream["cpu_s"] / stream["rows"],
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            print(json.dumps(big), flush=True)
        result["big_stream_analyze"] = big
        result["targets"]["big_stream_le_2gb"] = big["peak_rss_mib"] * 2**20 <= 2e9
        result["machine"]["loadavg_after"] = os.getloadavg()
        _write(result)
    print(
        f"{full['rows']:,} rows ({size_mb:.0f} MB): pandas.read_csv {pandas_s:.2f} s, read_trace {load_s:.2f} s "
        f"({load_s / pandas_s:.2f}x); load + full analyze {full['load_plus_analyze_s']:.2f} s, "
        f"{full['peak_rss_mib']:.0f} MiB; streaming {stream['load_plus_analyze_s']:.2f} s, "
        f"{stream['peak_rss_mib']:.0f} MiB -> {OUT}"
    )


if __name__ == "__main__":
    main()
