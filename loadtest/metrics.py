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

from burstpilot.slo import SLO, LatencyStats, RunMetrics


def parse_slo(text: str) -> SLO:
    """'ttft=2s,tpot=100ms[,e2e=30s][,itl=200ms][,attainment=0.99]' (burstpilot.slo's grammar)."""
    return SLO.parse(text)


def _num(v) -> float:
    """A stored value as a number (NaN when it is none: missing, text, a boolean, infinite)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return np.nan
    v = float(v)
    return v if np.isfinite(v) else np.nan


def _col(records: list[dict], name: str) -> np.ndarray:
    return np.array([_num(r.get(name)) for r in records], dtype=np.float64)


def summarize(records: list[dict], slo: SLO | None = None, scheduled: int | None = None) -> dict:
    """The summary.json content for a list of per-request records."""
    n = len(records)
    failed = np.array([bool(r.get("error")) or np.isnan(_num(r.get("ttft_s"))) for r in records], dtype=bool)
    run = RunMetrics.from_requests(
        _col(records, "ttft_s"), _col(records, "tpot_s"), _col(records, "e2e_s"), failed, slo,
        _col(records, "itl_max_s"),
    )  # fmt: skip
    ok = [r for r, f in zip(records, failed, strict=True) if not f]
    errors: dict[str, int] = {}
    examples: dict[str, str] = {}
    for r, f in zip(records, failed, strict=True):
        if f:
            kind = str(r.get("error") or "empty_response")
            errors[kind] = errors.get(kind, 0) + 1
            examples.setdefault(kind, str(r.get("error_detail") or "")[:200])
    sent = [r for r in records if not np.isnan(_num(r.get("sent_s")))]
    sched = _col(records, "scheduled_s")
    sent_s = _col(sent, "sent_s")
    ends = _col(sent, "sent_s") + np.nan_to_num(_col(sent, "e2e_s"), nan=0.0)
    start = float(np.nanmin(sched)) if np.isfinite(sched).any() else 0.0
    end = float(np.nanmax(ends)) if np.isfinite(ends).any() else start
    duration = max(end - start, 1e-9)
    send_span = float(sent_s.max() - sent_s.min()) if len(sent) > 1 else 0.0
    out_tokens = int(np.nansum([_num(r.get("output_tokens")) for r in ok])) if ok else 0
    in_tokens = int(np.nansum([_num(r.get("prompt_tokens")) for r in ok])) if ok else 0
    itl = [_num(g) for r in ok if isinstance(r.get("itl_s"), list) for g in r["itl_s"]]
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
        "ttft_s": run.ttft.to_dict(),
        "tpot_s": run.tpot.to_dict(),
        "itl_s": LatencyStats.of(itl).to_dict(),
        "e2e_s": run.e2e.to_dict(),
        "dispatch_lag_s": LatencyStats.of(_col(sent, "dispatch_lag_s")).to_dict(),
        "error_examples": dict(sorted(examples.items())),  # the first error_detail of each kind
    }
    if slo is not None:
        summary["slo"] = {
            "objectives_s": slo.objectives(),
            "attainment_goal": slo.attainment,
            "met": run.slo_met,
            "attainment": run.slo_attainment if n else None,
            "goodput": (run.slo_met or 0) / duration if n else 0.0,
        }
    return summary
