"""Fit the profile's step-time model to a measured table and write the fit report and the profile's model.

The model (burstpilot.sim.profile.StepModel) for a step of B decoding sequences holding C KV tokens and a
prefill of P tokens:

    step_ms = t0 + smax(w_ms, (B + P) f_ms) + C max(k_ms, kl_ms / B) + p1 P + p2 P^2

One least-squares fit (scipy.optimize.least_squares) on relative error over every measured point: decode
steps (P = 0), prefill steps (B = 0) and mixed steps. The report gives each point's relative error and the
largest, per kind.

Usage: python calibration/fit.py calibration/h100_llama3_8b_raw.csv \
           --report calibration/h100_llama3_8b_fit.json --profile sim/profiles/h100-llama3-8b.json
       python calibration/fit.py calibration/h200_llama3_8b_raw.csv --report calibration/h200_llama3_8b_fit.json \
           --profile sim/profiles/h200-llama3-8b.json --memory calibration/h200_llama3_8b_memory.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from burstpilot.sim.profile import GIB, StepModel


def read_table(path: Path) -> dict[str, np.ndarray]:
    rows = [r for r in csv.DictReader(line for line in path.open() if not line.startswith("#"))]
    out: dict[str, list] = {k: [] for k in ("kind", "batch", "context_len", "prefill_tokens", "ms")}
    for r in rows:
        for k in out:
            out[k].append(r[k] if k == "kind" else float(r[k]))
    return {k: np.asarray(v) for k, v in out.items()}


def fit(
    table: dict[str, np.ndarray], fixed: dict[str, float] | None = None, kinds: tuple[str, ...] | None = None
) -> tuple[StepModel, dict]:
    """Least squares on relative error; ``fixed`` holds parameters not fitted, ``kinds`` the points fitted."""
    if kinds is not None:
        sel = np.isin(table["kind"], kinds)
        table = {k: v[sel] for k, v in table.items()}
    fixed = dict(fixed or {})
    unknown = set(fixed) - set(StepModel.FIELDS)
    if unknown:
        raise SystemExit(f"--fix: no parameter {sorted(unknown)} (parameters: {', '.join(StepModel.FIELDS)})")
    kind = table["kind"]
    B, L, P, y = table["batch"], table["context_len"], table["prefill_tokens"], table["ms"]
    C = B * L

    free = [f for f in StepModel.FIELDS if f not in fixed]

    def model(x) -> StepModel:
        return StepModel(**(fixed | dict(zip(free, (float(v) for v in x), strict=True))))

    def predict(x) -> np.ndarray:
        m = model(x)
        return np.array([m.step_ms(int(b), c, int(p)) for b, c, p in zip(B, C, P, strict=True)])

    #      t0   w_ms  f_ms   n    k_ms   kl_ms  p1    p2
    start = dict(zip(StepModel.FIELDS, [2.0, 6.0, 0.02, 4.0, 4e-5, 3e-4, 0.005, 1e-6], strict=True))
    low = dict.fromkeys(StepModel.FIELDS, 0.0) | {"n": 1.0}
    high = dict.fromkeys(StepModel.FIELDS, np.inf) | {"n": 32.0}
    x0, lo, hi = ([d[f] for f in free] for d in (start, low, high))
    res = least_squares(lambda x: predict(x) / y - 1, x0, bounds=(lo, hi))
    m = model(res.x)
    pred = predict(res.x)
    err = pred / y - 1
    points = [
        {
            "kind": str(kind[i]),
            "batch": int(B[i]),
            "context_len": int(L[i]),
            "prefill_tokens": int(P[i]),
            "measured_ms": float(y[i]),
            "model_ms": round(float(pred[i]), 4),
            "rel_error": round(float(err[i]), 4),
        }
        for i in range(len(y))
    ]
    report = {
        "model": "step_ms = t0 + smax(w_ms, (B+P)*f_ms) + C*max(k_ms, kl_ms/B) + p1*P + p2*P^2, "
        "smax(a,b) = (a^n + b^n)^(1/n)",
        "params": {k: float(getattr(m, k)) for k in StepModel.FIELDS},
        "points_fitted": len(y),
        "fixed": sorted(fixed),
        "max_abs_rel_error": float(np.abs(err).max()),
        "mean_abs_rel_error": float(np.abs(err).mean()),
    }
    for k in ("decode", "prefill", "mixed"):
        sel = kind == k
        if sel.any():
            report[f"{k}_max_abs_rel_error"] = float(np.abs(err[sel]).max())
            report[f"{k}_mean_abs_rel_error"] = float(np.abs(err[sel]).mean())
    report["points"] = points
    return m, report


def memory_fields(mem: dict) -> dict:
    """The profile's memory fields from a measured memory record: its KV capacity is the measured one.

    ``reserved_gib`` holds the profile pass's activation peak and the memory outside PyTorch's allocator.
    """
    return {
        "gpu_memory_gib": round(mem["total_bytes"] / GIB, 9),
        "gpu_memory_utilization": mem["gpu_memory_utilization"],
        "weights_gib": round(mem["weights_bytes"] / GIB, 9),
        "reserved_gib": round((mem["activation_peak_bytes"] + mem["non_torch_bytes"]) / GIB, 9),
        "kv_bytes_per_token": mem["kv_bytes_per_token"],
        "block_size": mem["block_size"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="fit the step-time model to a measured table")
    ap.add_argument("table", type=Path)
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--profile", type=Path, help="profile JSON whose step_model and calibration are updated")
    ap.add_argument(
        "--memory",
        type=Path,
        help="measured memory (calibration/measure.py --memory): sets the profile's memory fields so that its "
        "KV capacity is the measured one",
    )
    ap.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE", help="a parameter not fitted")
    args = ap.parse_args(argv)
    table = read_table(args.table)
    fixed = {}
    for item in args.fix:
        name, _, value = item.partition("=")
        fixed[name] = float(value)
    model, report = fit(table, fixed)
    report["table"] = args.table.name
    header = args.table.open().readline().strip("# \n")
    report["measured_on"] = header
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "points"}, indent=1))
    if args.profile:
        prof = json.loads(args.profile.read_text())
        prof["step_model"] = {k: round(v, 9) for k, v in report["params"].items()}
        what = f"measured: step times ({report['points_fitted']} steps)" + (
            ", KV capacity" if args.memory else ""
        )
        prof["calibration"] = {
            "source": what,
            "table": f"calibration/{args.table.name}",
            "report": f"calibration/{args.report.name}",
            "measured_on": header,
            "max_abs_rel_error": round(report["max_abs_rel_error"], 4),
            "mean_abs_rel_error": round(report["mean_abs_rel_error"], 4),
            "decode_max_abs_rel_error": round(report["decode_max_abs_rel_error"], 4),
            "decode_mean_abs_rel_error": round(report["decode_mean_abs_rel_error"], 4),
        }
        if args.memory:
            prof.update(memory_fields(json.loads(args.memory.read_text())))
            prof["calibration"]["memory"] = f"calibration/{args.memory.name}"
        args.profile.write_text(json.dumps(prof, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
