"""Fit the profile's step-time model to a measured table and write the fit report and the profile's model.

The model (burstpilot.sim.profile.StepModel) for a step of B decoding sequences holding C KV tokens and a
prefill of P tokens:

    step_ms = t0 + smax(w_ms, (B + P) f_ms) + C max(k_ms, kl_ms / B) + p1 P + p2 P^2

One least-squares fit (scipy.optimize.least_squares) on relative error over every measured point: decode
steps (P = 0), prefill steps (B = 0) and mixed steps. The report gives each point's relative error and the
largest, per kind.

Usage: python calibration/fit.py calibration/h100_llama3_8b_raw.csv \
           --report calibration/h100_llama3_8b_fit.json --profile sim/profiles/h100-llama3-8b.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from burstpilot.sim.profile import StepModel


def read_table(path: Path) -> dict[str, np.ndarray]:
    rows = [r for r in csv.DictReader(line for line in path.open() if not line.startswith("#"))]
    out: dict[str, list] = {k: [] for k in ("kind", "batch", "context_len", "prefill_tokens", "ms")}
    for r in rows:
        for k in out:
            out[k].append(r[k] if k == "kind" else float(r[k]))
    return {k: np.asarray(v) for k, v in out.items()}


def fit(table: dict[str, np.ndarray]) -> tuple[StepModel, dict]:
    kind = table["kind"]
    B, L, P, y = table["batch"], table["context_len"], table["prefill_tokens"], table["ms"]
    C = B * L

    def model(x) -> StepModel:
        return StepModel(**dict(zip(StepModel.FIELDS, (float(v) for v in x), strict=True)))

    def predict(x) -> np.ndarray:
        m = model(x)
        return np.array([m.step_ms(int(b), c, int(p)) for b, c, p in zip(B, C, P, strict=True)])

    #      t0   w_ms  f_ms   n    k_ms   kl_ms  p1    p2
    x0 = [2.0, 6.0, 0.02, 4.0, 4e-5, 3e-4, 0.005, 1e-6]
    lo = [0, 0, 0, 1.0, 0, 0, 0, 0]
    hi = [np.inf, np.inf, np.inf, 32.0, np.inf, np.inf, np.inf, np.inf]
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
        "max_abs_rel_error": float(np.abs(err).max()),
        "mean_abs_rel_error": float(np.abs(err).mean()),
    }
    for k in ("decode", "prefill", "mixed"):
        sel = kind == k
        if sel.any():
            report[f"{k}_max_abs_rel_error"] = float(np.abs(err[sel]).max())
    report["points"] = points
    return m, report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="fit the step-time model to a measured table")
    ap.add_argument("table", type=Path)
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--profile", type=Path, help="profile JSON whose step_model and calibration are updated")
    args = ap.parse_args(argv)
    table = read_table(args.table)
    model, report = fit(table)
    report["table"] = args.table.name
    header = args.table.open().readline().strip("# \n")
    report["measured_on"] = header
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "points"}, indent=1))
    if args.profile:
        prof = json.loads(args.profile.read_text())
        prof["step_model"] = {k: round(v, 9) for k, v in report["params"].items()}
        prof["calibration"] = {
            "table": f"calibration/{args.table.name}",
            "report": f"calibration/{args.report.name}",
            "measured_on": header,
            "max_abs_rel_error": round(report["max_abs_rel_error"], 4),
            "mean_abs_rel_error": round(report["mean_abs_rel_error"], 4),
        }
        args.profile.write_text(json.dumps(prof, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
