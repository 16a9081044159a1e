"""The two Llama-3-70B profiles, from measured tables and the per-layer terms measured on an H200 (docs/sim.md).

1. **What the 70B's layers cost relative to the 8B's, measured.** 20 of the 70B's 80 layers in bf16 were timed
   on one H200 (scaled to 80: ``calibration/measure.py --layers 20``) and fitted with the 8B H200 fit's
   ``t0``, ``n`` and ``p1`` held fixed, so that each remaining term compares like for like. The ratio of each
   term, 70B over 8B, is what the old derivation assumed from parameter counts:

   ======  =================================================  ========  ========
   term    stands for                                          assumed   measured
   ======  =================================================  ========  ========
   w_ms    weights streamed per step                           8.79      7.32
   f_ms    dense work per token                                8.79      8.36
   k_ms    KV bytes read per token (80 vs 32 layers)           2.5       2.44
   kl_ms   one sequence's attention latency (80 vs 32 layers)  2.5       2.49
   p2      prefill attention per token pair                    5.0       11.0
   ======  =================================================  ========  ========

   (the measured column is ``ratios_to_h200_llama3_8b`` in calibration/h200_llama3_70b_bf16_l20_fit.json).
   The larger matrices stream closer to the memory bandwidth (3.8 TB/s against the 8B's 3.2), so the
   weights' term grows less than the bytes do; prefill attention costs twice what head counts say.
   ``p1`` has no measured ratio (the 8B H200 fit puts it at 0) and keeps the dense ratio.

2. ``h100-llama3-70b-tp4`` (no 4-GPU machine measured): the measured H100 8B profile's terms x the measured
   ratios, split over 4 GPUs (weights, dense work, KV reads and prefill attention / 4), plus the
   tensor-parallel all-reduces: 2 per layer x 80 layers, ~15 us of latency each at decode sizes (``w_ms``
   + 2.4 ms) and 8192 x 2 bytes per token each over ~300 GB/s of NVLink bus bandwidth (``f_ms`` + 8.7 us).

3. ``h200-llama3-70b`` (FP8 weights on one H200, KV capacity measured with the whole FP8 model): the 70B bf16
   fit of step 1, its weight stream scaled by the bytes an FP8 checkpoint streams per step (layers in 1 byte,
   LM head in 2: 70.55 GB against 139.0 GB), and its dense-compute terms (``f_ms``, ``p1``, ``p2``) fitted to
   the measured FP8 steps that carry at least 1024 prompt tokens, where the FP8 matrix products run at
   cuBLAS's large-matrix rate. Decode is not fitted to the FP8 table: with few rows, PyTorch's FP8 kernels
   (cuBLAS, and the Triton kernel of calibration/measure.py) stream the weights at a quarter to a half of the
   bandwidth that serving engines' kernels reach (docs/sim.md compares the two).

Usage: .venv/bin/python calibration/derive_70b.py   (rewrites the two profiles and the two fit reports)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CAL = ROOT / "calibration"
PROFILES = ROOT / "sim" / "profiles"
sys.path.insert(0, str(CAL))

import fit  # noqa: E402  (calibration/fit.py, beside this script)

TERMS = ("w_ms", "f_ms", "k_ms", "kl_ms", "p2")
DENSE = 70.6 / 8.03
# weights streamed in one decode step: 80 layers of 855.6 M parameters and the 1.05 G-parameter LM head
LAYER_PARAMS, HEAD_PARAMS = 80 * 855.6e6, 128256 * 8192
FP8_STREAM = (LAYER_PARAMS * 1 + HEAD_PARAMS * 2) / ((LAYER_PARAMS + HEAD_PARAMS) * 2)
FP8_COMPUTE_MIN_PREFILL = 1024


def _rounded(params: dict) -> dict:
    return {k: round(float(v), 9) for k, v in params.items()}


def fit_70b_layers(h200_8b_report: dict) -> tuple[dict, dict]:
    """Fit the measured 70B bf16 layers with the 8B's t0, n and p1; returns (report, ratios 70B / 8B)."""
    base = h200_8b_report["params"]
    table = fit.read_table(CAL / "h200_llama3_70b_bf16_l20_raw.csv")
    _, report = fit.fit(table, {k: base[k] for k in ("t0", "n", "p1")})
    report["table"] = "h200_llama3_70b_bf16_l20_raw.csv"
    report["measured_on"] = (CAL / report["table"]).open().readline().strip("# \n")
    ratios = {k: report["params"][k] / base[k] for k in TERMS}
    report["ratios_to_h200_llama3_8b"] = {k: round(v, 4) for k, v in ratios.items()}
    return report, ratios


def derive_tp4(h100_8b: dict, ratios: dict) -> dict:
    """The 70B TP4 H100 profile from the measured H100 8B profile and the measured per-term ratios."""
    s = h100_8b["step_model"]
    allreduce_latency_ms = 2 * 80 * 0.015
    allreduce_per_token_ms = 2 * 80 * 8192 * 2 / 300e9 * 1e3
    step = {
        "t0": s["t0"],
        "w_ms": s["w_ms"] * ratios["w_ms"] / 4 + allreduce_latency_ms,
        "f_ms": s["f_ms"] * ratios["f_ms"] / 4 + allreduce_per_token_ms,
        "n": s["n"],
        "k_ms": s["k_ms"] * ratios["k_ms"] / 4,
        "kl_ms": s["kl_ms"] * ratios["kl_ms"],
        "p1": s["p1"] * DENSE / 4,
        "p2": s["p2"] * ratios["p2"] / 4,
    }
    prof = dict(h100_8b)
    prof.update(
        {
            "name": "h100-llama3-70b-tp4",
            "description": "4x NVIDIA H100 80GB (tensor parallel 4), Llama-3-70B-shaped decoder (bf16); step "
            "model derived from the measured H100 8B profile with the 70B/8B term ratios measured on an H200 "
            "(calibration/derive_70b.py)",
            "model": "llama3-70b",
            "gpus_per_replica": 4,
            "weights_gib": round(70.6e9 * 2 / 2**30, 2),
            "kv_bytes_per_token": 80 * 8 * 128 * 2 * 2,
            "max_num_seqs": 256,
            "cold_start": {"median_s": 150.0, "min_s": 90.0, "max_s": 300.0, "sigma": 0.35},
            "step_model": _rounded(step),
            "calibration": {
                "source": "derived: from h100-llama3-8b with the 70B/8B term ratios measured on an H200",
                "derived_from": "h100-llama3-8b",
                "method": "calibration/derive_70b.py",
                "term_ratios": "calibration/h200_llama3_70b_bf16_l20_fit.json",
            },
        }
    )
    return prof


def derive_h200_fp8(layers_report: dict, template: dict) -> tuple[dict, dict]:
    """The single-H200 FP8 70B profile and the report of its compute-term fit."""
    p = layers_report["params"]
    fixed = {k: p[k] for k in ("t0", "n", "k_ms", "kl_ms")} | {"w_ms": p["w_ms"] * FP8_STREAM}
    table = fit.read_table(CAL / "h200_llama3_70b_fp8_raw.csv")
    sel = table["prefill_tokens"] >= FP8_COMPUTE_MIN_PREFILL
    model, report = fit.fit({k: v[sel] for k, v in table.items()}, fixed)
    report["table"] = "h200_llama3_70b_fp8_raw.csv"
    report["measured_on"] = (CAL / report["table"]).open().readline().strip("# \n")
    report["points_selected"] = f"steps with >= {FP8_COMPUTE_MIN_PREFILL} prompt tokens"
    pred = np.array(
        [
            model.step_ms(int(b), b * c, int(n))
            for b, c, n in zip(table["batch"], table["context_len"], table["prefill_tokens"], strict=True)
        ]
    )
    dec = table["kind"] == "decode"
    ratio = table["ms"][dec] / pred[dec]
    report["decode_measured_over_model"] = {
        "min": round(float(ratio.min()), 3),
        "median": round(float(np.median(ratio)), 3),
        "max": round(float(ratio.max()), 3),
        "note": "PyTorch's FP8 kernels at few rows against the model's weight stream (derived from bf16)",
    }
    mem = json.loads((CAL / "h200_llama3_70b_fp8_memory.json").read_text())
    prof = dict(template)
    prof.update(fit.memory_fields(mem))
    prof.update(
        {
            "name": "h200-llama3-70b",
            "description": "NVIDIA H200 141GB, Llama-3-70B-shaped decoder with FP8 weights (bf16 KV cache); KV "
            "capacity and prefill measured, decode derived from measured bf16 layers "
            "(calibration/derive_70b.py); cold start assumed",
            "gpu": "H200-141GB-HBM3e",
            "model": "llama3-70b",
            "gpus_per_replica": 1,
            "cold_start": {"median_s": 120.0, "min_s": 75.0, "max_s": 240.0, "sigma": 0.35},
            "step_model": _rounded(report["params"]),
            "calibration": {
                "source": "measured: KV capacity, FP8 prefill; derived: decode from 20 measured bf16 layers",
                "method": "calibration/derive_70b.py",
                "table": "calibration/h200_llama3_70b_fp8_raw.csv",
                "report": "calibration/h200_llama3_70b_fp8_fit.json",
                "memory": "calibration/h200_llama3_70b_fp8_memory.json",
                "measured": "KV capacity; prefill and mixed steps with >= 1024 prompt tokens (FP8)",
                "derived": "decode: weight stream and attention from 20 measured bf16 layers",
                "measured_on": report["measured_on"],
            },
        }
    )
    return prof, report


def derive_all() -> dict[str, dict]:
    """Every file this script writes, by path relative to the repository."""
    h200_8b = json.loads((CAL / "h200_llama3_8b_fit.json").read_text())
    layers, ratios = fit_70b_layers(h200_8b)
    tp4 = derive_tp4(json.loads((PROFILES / "h100-llama3-8b.json").read_text()), ratios)
    fp8, fp8_report = derive_h200_fp8(layers, json.loads((PROFILES / "h200-llama3-8b.json").read_text()))
    return {
        "calibration/h200_llama3_70b_bf16_l20_fit.json": layers,
        "calibration/h200_llama3_70b_fp8_fit.json": fp8_report,
        "sim/profiles/h100-llama3-70b-tp4.json": tp4,
        "sim/profiles/h200-llama3-70b.json": fp8,
    }


def main() -> None:
    for rel, data in derive_all().items():
        indent = 2 if rel.startswith("sim/") else 1
        (ROOT / rel).write_text(json.dumps(data, indent=indent) + "\n")
        print("wrote", rel)


if __name__ == "__main__":
    main()
