"""Run every benchmark in sequence; each writes its figures to bench/results/<area>.json.

    .venv/bin/python bench/run_all.py [--only traces,sim,...] [--skip loadtest]

The benchmarks share this machine's CPU, so they run one after another, never side by side. A benchmark that
fails is reported and the others still run; the exit code is non-zero when any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONSTANT_MAP = (
    "--cases",
    "day-weekday-16gpu-cold180,day-weekday-4gpu-cold180,day-weekday-32gpu-cold180,"
    "day-weekend-16gpu-cold180,day-weekend-4gpu-cold180,day-weekend-32gpu-cold180",
    "--constant",
    "1,2,3,4,6,8",
    "--out",
    "bench/results/evaluation_hours_constant.json",
)
# (area, script, arguments): the order puts the quick ones first.
BENCHMARKS = [
    ("sim", "sim_des.py"),
    ("sim", "sim_realtime.py"),
    ("sim", "sim_fleet.py"),
    ("traces", "traces_load_analyze.py"),
    ("forecasting", "forecasting_backtest.py"),
    ("loadtest", "loadtest_send_accuracy.py"),
    ("policy", "policy_burstpilot.py"),
    ("policy", "policy_decide.py"),  # what one decision costs (about 1 min)
    ("evaluation", "evaluation_policies.py"),
    ("evaluation", "evaluation_seeds.py"),  # burstpilot's spread over the simulator's seed (about 25 min)
    ("evaluation", "evaluation_hours.py"),  # the oracle and burstpilot hour by hour (about 6 min)
    # each constant count hour by hour on the six day workloads (about 8 min)
    ("evaluation", "evaluation_hours.py", *CONSTANT_MAP),
    ("operator", "operator_scale.py"),
    # about an hour: a local cluster with real KEDA, four controllers one after another; then the check of the
    # simulator's hpa and keda baselines against what the real ones did in it
    ("k8s_peers", "k8s_peers.py"),
    ("k8s_peers", "k8s_peers_check.py"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated areas to run")
    ap.add_argument("--skip", default="", help="comma-separated areas to leave out")
    args = ap.parse_args()
    only = {a for a in args.only.split(",") if a}
    skip = {a for a in args.skip.split(",") if a}
    failed = []
    for area, script, *argv in BENCHMARKS:
        if (only and area not in only) or area in skip:
            continue
        print(f"== {' '.join([script, *argv])}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / script), *argv], cwd=HERE.parent)
        print(
            f"== {script}: exit {rc} after {time.monotonic() - t0:.0f} s -> bench/results/{area}.json",
            flush=True,
        )
        if rc != 0:
            failed.append(script)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
