"""Derive the Llama-3-70B tensor-parallel-4 H100 profile from the measured 8B profile (see docs/sim.md).

No 4-GPU machine was measured; every term of the 8B step model is scaled by what it stands for:

* weights streamed per GPU and dense FLOPs per token per GPU: 70.6 B / 8.03 B parameters over 4 GPUs
  (``w_ms``, ``f_ms``, ``p1``: x 2.20);
* tensor-parallel all-reduces: 2 per layer x 80 layers, each ~15 us of latency at decode sizes (``w_ms`` +2.4 ms)
  and 8192 x 2 bytes per token per all-reduce over ~300 GB/s of NVLink bus bandwidth (``f_ms`` + 8.7 us);
* KV bytes per token read per GPU: 80 layers x 8 KV heads x 128 x 2 x 2 bytes = 320 KiB, a quarter per GPU
  (``k_ms``: x 2.5 / 4);
* one sequence's attention latency when the GPU is not filled: 80 layers instead of 32 (``kl_ms``: x 2.5);
* prefill attention FLOPs per token pair: 80 layers x 64 query heads over 32 x 32, per GPU a quarter
  (``p2``: x 1.25).

Usage: python calibration/derive_70b_tp4.py   (rewrites sim/profiles/h100-llama3-70b-tp4.json)
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "src" / "burstpilot" / "sim" / "profiles"


def derive(base: dict) -> dict:
    """The 70B TP4 profile from the 8B profile's JSON."""
    s = base["step_model"]
    dense = (70.6 / 8.03) / 4
    allreduce_latency_ms = 2 * 80 * 0.015
    allreduce_per_token_ms = 2 * 80 * 8192 * 2 / 300e9 * 1e3
    step = {
        "t0": s["t0"],
        "w_ms": s["w_ms"] * dense + allreduce_latency_ms,
        "f_ms": s["f_ms"] * dense + allreduce_per_token_ms,
        "n": s["n"],
        "k_ms": s["k_ms"] * 2.5 / 4,
        "kl_ms": s["kl_ms"] * 2.5,
        "p1": s["p1"] * dense,
        "p2": s["p2"] * 1.25,
    }
    prof = dict(base)
    prof.update(
        {
            "name": "h100-llama3-70b-tp4",
            "description": "4x NVIDIA H100 80GB (tensor parallel 4), Llama-3-70B-shaped decoder (bf16); "
            "step model derived from the measured 8B profile (calibration/derive_70b_tp4.py)",
            "model": "llama3-70b",
            "gpus_per_replica": 4,
            "weights_gib": round(70.6e9 * 2 / 2**30, 2),
            "kv_bytes_per_token": 80 * 8 * 128 * 2 * 2,
            "max_num_seqs": 256,
            "cold_start": {"median_s": 150.0, "min_s": 90.0, "max_s": 300.0, "sigma": 0.35},
            "step_model": {k: round(v, 9) for k, v in step.items()},
            "calibration": {"derived_from": "h100-llama3-8b", "method": "calibration/derive_70b_tp4.py"},
        }
    )
    return prof


def main() -> None:
    prof = derive(json.loads((PROFILES / "h100-llama3-8b.json").read_text()))
    (PROFILES / "h100-llama3-70b-tp4.json").write_text(json.dumps(prof, indent=2) + "\n")


if __name__ == "__main__":
    main()
