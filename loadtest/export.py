"""Results in the shapes other tools read: the JSON of ``vllm bench serve --save-result`` and a flat CSV.

``vllm-bench.json`` has the keys and units of vLLM's serving benchmark result (``vllm/benchmarks/serve.py``):
counts and throughputs, then ``mean_/median_/std_/pNN_`` of ``ttft``, ``tpot``, ``itl`` and ``e2el`` in
milliseconds for the ``--percentiles`` asked for (vLLM's ``--metric-percentiles``), over the successful
requests, with vLLM's definitions (TPOT over requests of more than one output token, ITL pooled over every gap,
``max_output_tokens_per_s`` per one-second bucket, ``max_concurrent_requests`` from the send and end times).
``summary.csv`` is the same numbers as rows of ``metric,stat,value,unit``.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from burstpilot.errors import BurstpilotError

VLLM_NAME = "vllm-bench.json"
CSV_NAME = "summary.csv"
DEFAULT_PERCENTILES = (50.0, 90.0, 99.0)


def parse_percentiles(text: str) -> tuple[float, ...]:
    """'50,90,99' -> (50.0, 90.0, 99.0)."""
    try:
        ps = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise BurstpilotError(f"--percentiles: {text!r} is not a comma-separated list of numbers") from None
    if not ps or any(not 0 <= p <= 100 for p in ps):
        raise BurstpilotError(f"--percentiles: {text!r}: need numbers between 0 and 100 (example: 50,90,99)")
    return ps


def _word(p: float) -> str:
    return str(int(p)) if int(p) == p else str(p)  # vLLM's key: p99, p99.9


def _ms_stats(name: str, values: list[float], percentiles) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64) if values else np.zeros(1)  # vLLM reports 0 for no values
    out = {
        f"mean_{name}_ms": float(a.mean() * 1000),
        f"median_{name}_ms": float(np.median(a) * 1000),
        f"std_{name}_ms": float(a.std() * 1000),
    }
    for p in percentiles:
        out[f"p{_word(p)}_{name}_ms"] = float(np.percentile(a, p) * 1000)
    return out


def _peaks(ok: list[dict]) -> tuple[float, int]:
    """vLLM's max_output_tokens_per_s (tokens per one-second bucket) and max_concurrent_requests."""
    if not ok:
        return 0.0, 0
    starts = np.array([r["sent_s"] for r in ok])
    ends = starts + np.array([r["e2e_s"] for r in ok])
    t_min = float(starts.min())
    buckets = np.zeros(int(np.ceil(float(ends.max()) - t_min)) + 1)
    for r in ok:
        if r.get("ttft_s") is None:
            continue
        token_t = r["sent_s"] + r["ttft_s"] + np.concatenate([[0.0], np.cumsum(r.get("itl_s") or [])])
        idx = (token_t - t_min).astype(np.int64)
        np.add.at(buckets, idx[(idx >= 0) & (idx < buckets.size)], 1)
    events = sorted([(float(s), 1) for s in starts] + [(float(e), -1) for e in ends])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    return float(buckets.max()), peak


def vllm_result(records: list[dict], summary: dict, meta: dict, percentiles=DEFAULT_PERCENTILES) -> dict:
    """The ``vllm bench serve`` result dict of a replay."""
    ok = [r for r in records if not r.get("error") and r.get("ttft_s") is not None]
    opts = meta.get("options", {})
    ttfts = [r["ttft_s"] for r in ok]
    tpots = [r["tpot_s"] for r in ok if r.get("tpot_s") is not None and (r.get("output_tokens") or 0) > 1]
    itls = [g for r in ok for g in (r.get("itl_s") or ())]
    e2els = [r["e2e_s"] for r in ok]
    peak_tokens, peak_concurrency = _peaks(ok)
    mode = meta.get("schedule", {}).get("mode", "trace")
    if mode == "rate":
        rate = opts.get("request_rate")
    elif mode == "concurrency":
        rate = "inf"
    else:  # a trace has no configured rate: its mean
        rate = meta.get("schedule", {}).get("mean_rate")
    slo = summary.get("slo")
    duration = summary["duration_s"]
    result = {
        "date": time.strftime("%Y%m%d-%H%M%S", time.localtime(meta.get("started_at", time.time()))),
        "endpoint_type": "openai-chat" if opts.get("api") == "chat" else "openai",
        "backend": "openai-chat" if opts.get("api") == "chat" else "openai",
        "label": "burstpilot",
        "model_id": meta.get("model"),
        "tokenizer_id": opts.get("tokenizer"),
        "num_prompts": summary["requests"]["scheduled"],
        "request_rate": rate,
        "burstiness": opts.get("burstiness") if mode == "rate" else None,
        "max_concurrency": opts.get("concurrency") or opts.get("max_concurrency"),
        "duration": duration,
        "completed": len(ok),
        "failed": summary["requests"]["recorded"] - len(ok),
        "total_input_tokens": int(sum(r.get("prompt_tokens") or 0 for r in ok)),
        "total_output_tokens": int(sum(r.get("output_tokens") or 0 for r in ok)),
        "request_throughput": len(ok) / duration if duration > 0 else 0.0,
        "request_goodput": slo["goodput"] if slo else None,
        "output_throughput": summary["output_token_throughput"],
        "total_token_throughput": summary["total_token_throughput"],
        "max_output_tokens_per_s": peak_tokens,
        "max_concurrent_requests": peak_concurrency,
    }
    for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els)):
        result.update(_ms_stats(name, values, percentiles))
    return result


def summary_rows(summary: dict) -> list[tuple[str, str, float | int | None, str]]:
    """(metric, stat, value, unit) rows of the summary, latencies in milliseconds."""
    req = summary["requests"]
    rows: list[tuple] = [
        ("requests", "scheduled", req["scheduled"], "requests"),
        ("requests", "completed", req["completed"], "requests"),
        ("requests", "failed", req["failed"], "requests"),
        *((f"errors.{k}", "count", v, "requests") for k, v in req["errors"].items()),
        ("duration", "value", summary["duration_s"], "s"),
        ("request_throughput", "value", summary["request_rate"], "req/s"),
        ("output_token_throughput", "value", summary["output_token_throughput"], "tok/s"),
        ("total_token_throughput", "value", summary["total_token_throughput"], "tok/s"),
    ]
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s", "dispatch_lag_s"):
        stats = summary[key]
        name = key.removesuffix("_s")
        rows.append((name, "count", stats["count"], "requests" if key != "itl_s" else "gaps"))
        for stat, v in stats.items():
            if stat != "count":
                rows.append((name, stat, None if v is None else v * 1000, "ms"))
    if "slo" in summary:
        s = summary["slo"]
        rows += [
            ("slo_attainment", "value", s["attainment"], "share"),
            ("slo_attainment", "goal", s["attainment_goal"], "share"),
            ("goodput", "value", s["goodput"], "req/s"),
        ]
    for name, st in (summary.get("server_metrics") or {}).get("series", {}).items():
        for stat in ("mean", "p50", "p99", "max"):
            rows.append((name, stat, st[stat], ""))
    return rows


def write_csv(summary: dict, path: Path) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(("metric", "stat", "value", "unit"))
        for metric, stat, value, unit in summary_rows(summary):
            w.writerow((metric, stat, "" if value is None else value, unit))
    tmp.replace(path)
