"""Summary metrics of a replay, following the definitions of vLLM's serving benchmark.

- TTFT: from sending the request to the first streamed chunk that carries text.
- E2E: from sending the request to the end of its stream.
- TPOT: (E2E - TTFT) / (output_tokens - 1), for requests with more than one output token.
- ITL: every gap between two consecutive text-carrying chunks (pooled over all requests).
- Goodput: completed requests that meet every given SLO, per second of the run.

Latency quantiles are over successful requests; dispatch lag is over every sent request.
The run's duration spans from the earliest scheduled time to the last request's end.
"""

from __future__ import annotations

import numpy as np

from burstpilot import units

QUANTILES = (50, 90, 99)
SLO_KEYS = ("ttft", "tpot", "e2e", "itl")


def parse_slo(text: str) -> dict[str, float]:
    """'ttft=2s,tpot=100ms[,e2e=30s]' -> {'ttft': 2.0, 'tpot': 0.1, ...} in seconds."""
    return units.parse_slo(text, SLO_KEYS)


def _stats(values) -> dict[str, float | None]:
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"count": 0, "mean": None, **{f"p{q}": None for q in QUANTILES}, "max": None}
    qs = np.percentile(a, QUANTILES)
    return {
        "count": int(a.size),
        "mean": float(a.mean()),
        **{f"p{q}": float(v) for q, v in zip(QUANTILES, qs, strict=True)},
        "max": float(a.max()),
    }


def _col(records: list[dict], name: str) -> np.ndarray:
    return np.array([np.nan if r.get(name) is None else r[name] for r in records], dtype=np.float64)


def meets_slo(rec: dict, slo: dict[str, float]) -> bool:
    """A request meets the SLO when it succeeded and each given objective holds."""
    if rec.get("error"):
        return False
    for key, limit in slo.items():
        if key == "itl":
            value = rec.get("itl_max_s")
        else:
            value = rec.get(f"{key}_s")
        if key == "tpot" and value is None:
            continue  # a single-token response has no TPOT; it cannot violate it
        if value is None or value > limit:
            return False
    return True


def summarize(records: list[dict], slo: dict[str, float] | None = None, scheduled: int | None = None) -> dict:
    """The summary.json content for a list of per-request records."""
    n = len(records)
    ok = [r for r in records if not r.get("error")]
    errors: dict[str, int] = {}
    for r in records:
        if r.get("error"):
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    sent = [r for r in records if r.get("sent_s") is not None]
    sched = _col(records, "scheduled_s")
    sent_s = _col(sent, "sent_s")
    ends = _col(sent, "sent_s") + np.nan_to_num(_col(sent, "e2e_s"), nan=0.0)
    start = float(np.nanmin(sched)) if n else 0.0
    end = float(np.nanmax(ends)) if len(sent) else start
    duration = max(end - start, 1e-9)
    send_span = float(sent_s.max() - sent_s.min()) if len(sent) > 1 else 0.0
    out_tokens = int(sum(r.get("output_tokens") or 0 for r in ok))
    in_tokens = int(sum(r.get("prompt_tokens") or 0 for r in ok))
    itl = [g for r in ok for g in (r.get("itl_s") or ())]
    summary = {
        "requests": {
            "scheduled": int(scheduled if scheduled is not None else n),
            "recorded": n,
            "completed": len(ok),
            "failed": n - len(ok),
            "errors": dict(sorted(errors.items())),
        },
        "duration_s": duration if n else 0.0,
        "request_rate": len(ok) / duration if n else 0.0,
        "send_rate": (len(sent) - 1) / send_span if send_span > 0 else None,
        "prompt_tokens": in_tokens,
        "output_tokens": out_tokens,
        "output_token_throughput": out_tokens / duration if n else 0.0,
        "total_token_throughput": (in_tokens + out_tokens) / duration if n else 0.0,
        "ttft_s": _stats(_col(ok, "ttft_s")),
        "tpot_s": _stats(_col(ok, "tpot_s")),
        "itl_s": _stats(itl),
        "e2e_s": _stats(_col(ok, "e2e_s")),
        "dispatch_lag_s": _stats(_col(sent, "dispatch_lag_s")),
    }
    if slo:
        good = sum(1 for r in records if meets_slo(r, slo))
        summary["slo"] = {
            "objectives_s": dict(slo),
            "met": good,
            "attainment": good / n if n else None,
            "goodput": good / duration if n else 0.0,
        }
    return summary
