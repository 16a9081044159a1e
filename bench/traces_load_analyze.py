"""Load and analyze a BurstGPT-sized trace; time pandas.read_csv on the same file in the same run.

Generates (once, cached outside the repository) a 5.3M-row BurstGPT-shaped CSV: the `burstgpt`
preset over 121 days (the length of BurstGPT_1 + BurstGPT_2) with 1-second timestamps. Then, each
in a fresh child process so that peak memory is measured per step (max RSS from wait4):
  1. burstpilot: read_trace + summarize (no figures) + the full analyze (figures and report);
  2. pandas.read_csv of the same file.
Writes bench/results/traces.json.

    .venv/bin/python bench/traces_load_analyze.py [--rows 5300000] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "traces.json"
DAYS = 121

BURSTPILOT_STEP = r"""
import json, sys, time
t0 = time.perf_counter(); c0 = time.process_time()
from burstpilot.traces import read_trace
from burstpilot.traces.analyze import analyze
t1 = time.perf_counter()
trace = read_trace(sys.argv[1])
t2 = time.perf_counter(); c2 = time.process_time()
summary = analyze(trace, sys.argv[2], figures=sys.argv[3] == "1")
t3 = time.perf_counter(); c3 = time.process_time()
print(json.dumps({"rows": len(trace), "import_s": t1 - t0, "load_s": t2 - t1, "analyze_s": t3 - t2,
                  "load_cpu_s": c2 - c0, "analyze_cpu_s": c3 - c2,
                  "gamma_shape": summary["overall"]["interarrival"]["gamma_shape"],
                  "groups": len(summary["groups"])}))
"""

PANDAS_STEP = r"""
import json, sys, time
import pandas as pd
t0 = time.perf_counter(); c0 = time.process_time()
df = pd.read_csv(sys.argv[1])
print(json.dumps({"rows": len(df), "read_csv_s": time.perf_counter() - t0, "read_csv_cpu_s": time.process_time() - c0}))
"""


def run_child(code: str, *args: str) -> dict:
    """Run a Python snippet in a child; return its JSON output plus its peak RSS (MiB)."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def ensure_file(cache: Path, rows: int) -> Path:
    path = cache / f"burstgpt-shaped-{rows}.csv"
    if path.exists():
        return path
    from burstpilot.traces import write_burstgpt_csv
    from burstpilot.traces.generate import generate_preset

    cache.mkdir(parents=True, exist_ok=True)
    print(f"generating {rows:,} rows over {DAYS} days -> {path}", flush=True)
    trace = generate_preset("burstgpt", duration_s=DAYS * 86400.0, rps=rows / (DAYS * 86400.0), seed=2024,
                            round_timestamps=True)  # fmt: skip
    tmp = path.with_suffix(".partial")
    write_burstgpt_csv(trace, tmp)
    tmp.rename(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_300_000)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "burstpilot-bench")
    args = ap.parse_args()
    path = ensure_file(args.cache, args.rows)
    size_mb = path.stat().st_size / 1e6
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        print("burstpilot load + summary (no figures)...", flush=True)
        nofig = run_child(BURSTPILOT_STEP, str(path), str(Path(tmp) / "a"), "0")
        print(json.dumps(nofig), flush=True)
        print("burstpilot load + full analyze (figures, report)...", flush=True)
        full = run_child(BURSTPILOT_STEP, str(path), str(Path(tmp) / "b"), "1")
        print(json.dumps(full), flush=True)
    print("pandas.read_csv...", flush=True)
    pandas = run_child(PANDAS_STEP, str(path))
    print(json.dumps(pandas), flush=True)
    total = full["load_s"] + full["analyze_s"]
    result = {
        "benchmark": "traces_load_analyze",
        "file": {
            "rows": full["rows"],
            "size_mb": round(size_mb, 1),
            "schema": "BurstGPT 8-column",
            "days": DAYS,
        },
        "burstpilot_summary_only": nofig,
        "burstpilot_full_analyze": full,
        "pandas_read_csv": pandas,
        "load_plus_analyze_s": total,
        "load_speedup_vs_pandas": pandas["read_csv_s"] / full["load_s"],
        "targets": {
            "load_plus_analyze_le_15s": total <= 15.0,
            "peak_rss_le_2gb": full["peak_rss_mib"] <= 2048,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "python": platform.python_version(),
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{full['rows']:,} rows ({size_mb:.0f} MB): load {full['load_s']:.2f} s, analyze {full['analyze_s']:.2f} s "
        f"(summary only {nofig['analyze_s']:.2f} s), peak RSS {full['peak_rss_mib']:.0f} MiB; "
        f"pandas.read_csv {pandas['read_csv_s']:.2f} s, peak RSS {pandas['peak_rss_mib']:.0f} MiB -> {OUT}"
    )


if __name__ == "__main__":
    main()
