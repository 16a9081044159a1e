"""Trace characterization: the BurstGPT study's analysis as a tool.

``summarize(trace)`` returns the JSON-serializable summary (the schema is in docs/traces.md);
``analyze(trace, out_dir)`` also writes ``summary.json``, the figures and ``report.md``.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import timedelta
from pathlib import Path

import numpy as np
from scipy import ndimage, signal, special, stats

from burstpilot.errors import BurstpilotError
from burstpilot.traces.fit import (
    detect_resolution,
    fit_interarrival,
    fit_windows,
    ks_sorted,
    method_name,
    subsample,
)
from burstpilot.traces.table import NO_SESSION, Trace

log = logging.getLogger(__name__)

DAY_S = 86400.0
BURST_METHOD = (
    "1-second request counts at or above max(4 x baseline, baseline + 5 sqrt(baseline) + 5), where the "
    "baseline is the centered moving average over the refit window (a Poisson count reaches this less "
    "than once in 10^7 seconds); episodes closer than 5 s are merged"
)
TAIL_METHOD = "hill-top-2pct"
MAX_BURSTS = 50
SAMPLE = 250_000  # rows for rank correlation, KS and modes of token fits (evenly spaced subset)
TOKEN_PROBS = np.unique(np.concatenate([np.linspace(0, 1, 201), 1 - np.logspace(-2, -5, 16)]))
RESPONSE_PROBS = np.linspace(0, 1, 51)


def _q(x: np.ndarray) -> dict:
    if len(x) == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {
        "mean": float(x.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": int(x.max()),
    }


def token_distribution(x: np.ndarray) -> dict:
    """Quantiles, CCDF tail exponent (Hill), lognormal fit and bimodality of a length column."""
    out = _q(x)
    x = x[x > 0]
    if len(x) < 50:
        return out | {"tail_exponent": None, "lognormal": None, "bimodality": None}
    k = max(int(0.02 * len(x)), 20)
    part = np.partition(x, len(x) - k - 1)
    top = part[-k:].astype(float)
    thresh = float(part[-k - 1])
    hill = None if thresh <= 0 or top.min() == top.max() else float(1.0 / np.mean(np.log(top / thresh)))
    lx = np.log(x.astype(float))
    mu, sigma = float(lx.mean()), float(lx.std())
    sub = np.sort(lx[subsample(len(lx))])
    ks_ln = ks_sorted(sub, lambda v: special.ndtr((v - mu) / sigma)) if x.min() < x.max() else None
    return out | {
        "tail_exponent": hill,
        "tail_method": TAIL_METHOD,
        "tail_threshold": thresh,
        "lognormal": {"mu": mu, "sigma": sigma, "median": float(np.exp(mu)), "ks": ks_ln},
        "bimodality": _bimodality(lx[subsample(len(lx), SAMPLE)]) if x.min() < x.max() else None,
    }


def _bimodality(lx: np.ndarray) -> dict:
    """Modes of the smoothed histogram of log lengths and Sarle's bimodality coefficient."""
    n = len(lx)
    g = float(stats.skew(lx))
    kurt = float(stats.kurtosis(lx))
    bc = (g * g + 1) / (kurt + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))) if n > 3 else None
    hist, edges = np.histogram(lx, bins=80)
    smooth = ndimage.gaussian_filter1d(hist.astype(float), 2.0)
    peaks, _ = signal.find_peaks(smooth, prominence=0.1 * smooth.max())
    centers = np.exp((edges[:-1] + edges[1:]) / 2)
    modes = [float(round(centers[p], 1)) for p in peaks]
    return {"coefficient": bc, "modes": modes, "bimodal": len(modes) >= 2}


def correlation(req: np.ndarray, resp: np.ndarray) -> dict:
    """Pearson, Spearman and binned medians (with a 90% band) of response vs request tokens."""
    if len(req) < 3 or req.std() == 0 or resp.std() == 0:
        return {"pearson": None, "spearman": None, "binned": None}
    idx = subsample(len(req), SAMPLE)
    pearson = float(np.corrcoef(req, resp)[0, 1])
    spearman = float(stats.spearmanr(req[idx], resp[idx]).statistic)
    keep = subsample(len(req), 4 * SAMPLE)  # binned medians from an evenly spaced subset
    req, resp = req[keep], resp[keep]
    lo, hi = max(req.min(), 1), req.max()
    edges = np.unique(np.round(np.logspace(np.log10(lo), np.log10(hi + 1), 21)))
    b = np.clip(np.searchsorted(edges, req, side="right") - 1, 0, len(edges) - 2).astype(np.int16)
    order = np.argsort(b, kind="stable")  # radix sort on small integers
    bounds = np.searchsorted(b[order], np.arange(len(edges)))
    binned = {"request_lo": [], "request_hi": [], "count": [], "p5": [], "median": [], "p95": []}
    for i in range(len(edges) - 1):
        vals = resp[order[bounds[i] : bounds[i + 1]]]
        if len(vals) < 20:
            continue
        p5, p50, p95 = np.percentile(vals, [5, 50, 95])
        for key, v in zip(binned, (edges[i], edges[i + 1], len(vals), p5, p50, p95), strict=True):
            binned[key].append(float(v))
    return {"pearson": pearson, "spearman": spearman, "binned": binned}


def _sorted_quantiles(xs: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Quantiles of an ascending array (linear interpolation, as numpy's default)."""
    pos = np.asarray(probs) * (len(xs) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(xs) - 1)
    f = pos - lo
    return xs[lo] * (1 - f) + xs[hi] * f


def token_model(req: np.ndarray, resp: np.ndarray) -> dict | None:
    """What the modeled generator samples from: request quantiles, and response quantiles in
    request-quantile bins (keeps the request/response dependence)."""
    if len(req) < 50:
        return None
    keep = subsample(len(req), 4 * SAMPLE)
    req, resp = req[keep], resp[keep]
    req_sorted = np.sort(req)
    edges = np.unique(_sorted_quantiles(req_sorted, np.linspace(0, 1, 11)))
    b = np.clip(np.searchsorted(edges, req, side="right") - 1, 0, max(len(edges) - 2, 0))
    resp_q = []
    for i in range(max(len(edges) - 1, 1)):
        vals = resp[b == i]
        vals = np.sort(vals if len(vals) else resp)
        resp_q.append([float(v) for v in _sorted_quantiles(vals, RESPONSE_PROBS)])
    return {
        "request_probs": TOKEN_PROBS.tolist(),
        "request_quantiles": [float(v) for v in _sorted_quantiles(req_sorted, TOKEN_PROBS)],
        "request_bin_edges": [float(e) for e in edges],
        "response_probs": RESPONSE_PROBS.tolist(),
        "response_quantiles": resp_q,
    }


def find_bursts(arrival: np.ndarray, t0: float, t1: float, window_s: float):
    """Burst episodes (BURST_METHOD): a list of {start_s, duration_s, peak_rps, requests} (the
    largest peaks), overall statistics, and a per-row mask of requests inside an episode."""
    nb = int(np.floor(t1 - t0)) + 1
    none = {"count": 0, "fraction_of_requests": 0.0, "method": BURST_METHOD}
    if len(arrival) < 2 or nb < 3:
        return [], none, np.zeros(len(arrival), bool)
    # work on occupied seconds only (a trace of months has millions of empty ones)
    sec = np.minimum((arrival - t0).astype(np.int64), nb - 1)
    first = np.concatenate([[0], np.flatnonzero(np.diff(sec)) + 1])
    occ = sec[first]
    cnt = np.diff(np.append(first, len(sec)))
    cand = np.flatnonzero(cnt >= 5)  # the threshold is never below 5
    w = max(int(window_s), 1)
    lo = np.maximum(occ[cand] - w // 2, 0)
    hi = np.minimum(occ[cand] + w // 2 + 1, nb)
    base = (np.searchsorted(sec, hi) - np.searchsorted(sec, lo)) / (hi - lo)
    hot = cnt[cand] >= np.maximum(4 * base, base + 5 * np.sqrt(base) + 5)
    if not hot.any():
        return [], none, np.zeros(len(arrival), bool)
    where = occ[cand[hot]]
    split = np.flatnonzero(np.diff(where) > 5)
    heads = np.concatenate([[0], split + 1])
    starts = where[heads]
    ends = where[np.concatenate([split, [len(where) - 1]])]
    peaks = np.maximum.reduceat(cnt[cand[hot]], heads).astype(float)
    reqs = np.searchsorted(sec, ends + 1) - np.searchsorted(sec, starts)
    ep = np.searchsorted(starts, sec, side="right") - 1
    in_burst = (ep >= 0) & (sec <= ends[np.maximum(ep, 0)])
    order = np.argsort(-peaks, kind="stable")[:MAX_BURSTS]
    order = order[np.argsort(starts[order])]
    eps = [
        {
            "start_s": float(t0 + starts[i]),
            "duration_s": float(ends[i] - starts[i] + 1),
            "peak_rps": float(peaks[i]),
            "requests": int(reqs[i]),
        }
        for i in order
    ]
    return (
        eps,
        {
            "count": int(len(starts)),
            "fraction_of_requests": float(reqs.sum() / len(arrival)),
            "method": BURST_METHOD,
        },
        in_burst,
    )


def _by_deciles(x: np.ndarray, n: np.ndarray, f: np.ndarray):
    """Mean of x and failure rate (failures f over requests n) in deciles of x."""
    edges = np.unique(np.quantile(x, np.linspace(0, 1, 11)))
    b = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(len(edges) - 2, 0))
    nb, fb, cnt = np.bincount(b, n), np.bincount(b, f), np.bincount(b)
    ok = nb > 0
    return (np.bincount(b, x)[ok] / cnt[ok]).tolist(), (fb[ok] / nb[ok]).tolist()


def failures_vs_load(arrival, failed, t0: float, window_s: float, bin_s: float = 60.0) -> dict | None:
    """Failure rate by decile of per-minute load, and by decile of relative load: the 10-second
    count over the mean 10-second count of its refit window (how far above its own level traffic
    is, which is what a burst is); with the rank correlation of per-minute load and failure rate."""
    if not failed.any() or len(arrival) < 100:
        return None
    idx = ((arrival - t0) // bin_s).astype(np.int64)
    n = np.bincount(idx)
    f = np.bincount(idx, failed.astype(float))
    busy = n > 0
    n, f = n[busy], f[busy]
    load, rate = _by_deciles(n / bin_s, n, f)
    rho = stats.spearmanr(n, f / n).statistic if len(n) > 2 and n.std() > 0 else float("nan")
    short = 10.0
    i10 = ((arrival - t0) // short).astype(np.int64)
    n10 = np.bincount(i10)
    f10 = np.bincount(i10, failed.astype(float))
    w = np.arange(len(n10)) * short // window_s
    wmean = np.bincount(w.astype(np.int64), n10) / np.bincount(w.astype(np.int64))
    busy10 = n10 > 0
    ratio = n10[busy10] / wmean[w[busy10].astype(np.int64)]
    rel, rel_rate = _by_deciles(ratio, n10[busy10], f10[busy10])
    return {
        "bin_s": bin_s,
        "load_rps": load,
        "failure_rate": rate,
        "spearman_load_failure": None if not np.isfinite(rho) else float(rho),
        "relative_bin_s": short,
        "relative_load": rel,
        "relative_failure_rate": rel_rate,
    }


def periodicity(arrival: np.ndarray, t0: float, t1: float, clock_offset: float, weekday0: int | None):
    """Hourly and weekday rate profiles (req/s) and the lag-24h correlation of hourly counts;
    None when the span is shorter than a day."""
    if t1 - t0 < DAY_S:
        return None
    off = clock_offset
    h_idx = np.floor((arrival + off) / 3600.0).astype(np.int64)
    h_first = int(np.floor((t0 + off) / 3600.0))
    h_last = int(np.floor((t1 + off) / 3600.0))
    counts = np.bincount(h_idx - h_first, minlength=h_last - h_first + 1).astype(float)
    hours = np.arange(h_first, h_last + 1)
    hod = hours % 24
    hourly = np.bincount(hod, counts, minlength=24) / np.maximum(np.bincount(hod, minlength=24), 1) / 3600
    day = hours // 24
    dow = (day + (weekday0 or 0)) % 7
    covered = np.bincount(dow, minlength=7)
    weekday = np.bincount(dow, counts, minlength=7) / np.maximum(covered, 1) / 3600
    acf = None
    if len(counts) > 36 and counts.std() > 0:
        acf = float(np.corrcoef(counts[:-24], counts[24:])[0, 1])  # hour h vs the same hour a day later
    peak = float(hourly.max())
    return {
        "hourly": [float(v) for v in hourly],
        "weekday": [float(v) if c else None for v, c in zip(weekday, covered, strict=True)],
        "weekday_origin": "calendar (Monday first)" if weekday0 is not None else "day 0 of the trace first",
        "daily_autocorrelation": acf,
        "trough_to_peak": float(hourly.min() / peak) if peak > 0 else None,
        "hourly_counts": counts.tolist() if len(counts) <= 24 * 400 else None,
    }


def sessions(trace: Trace) -> dict | None:
    has = trace.session_id != NO_SESSION
    if not trace.has_sessions or not has.any():
        return None
    sid = trace.session_id[has]
    t = trace.arrival_s[has]
    order = np.argsort(sid, kind="stable")  # rows are in time order already
    s_sorted, t_sorted = sid[order], t[order]
    same = s_sorted[1:] == s_sorted[:-1]
    heads = np.concatenate([[0], np.flatnonzero(~same) + 1])
    uniq = s_sorted[heads]
    turns = np.diff(np.append(heads, len(s_sorted)))
    gaps = np.diff(t_sorted)[same]
    hist = np.bincount(np.minimum(turns, 20))
    return {
        "count": int(len(uniq)),
        "rows_with_session": int(has.sum()),
        "single_turn_fraction": float(np.mean(turns == 1)),
        "median_turns": float(np.median(turns)),
        "p75_turns": float(np.percentile(turns, 75)),
        "mean_turns": float(turns.mean()),
        "turns_histogram": hist[1:].tolist(),
        "gap_between_turns_s": _q(gaps) if len(gaps) else None,
    }


def group_summary(sub: Trace, t0: float, t1: float, resolution: float, window_s: float, clock, weekday0):
    span = max(t1 - t0, 1e-9)
    a = sub.arrival_s
    gaps = np.diff(a)
    inter = fit_interarrival(gaps, resolution)
    windows = fit_windows(a, window_s, resolution, t0=t0) if len(a) >= 2 else None
    if windows is not None:
        widx = np.minimum(((a - t0) // window_s).astype(np.int64), len(windows["start_s"]) - 1)
        wf = np.bincount(widx, sub.failed.astype(float), minlength=len(windows["start_s"]))
        wn = np.bincount(widx, minlength=len(windows["start_s"]))
        windows["failure_rate"] = [float(f / n) if n else None for f, n in zip(wf, wn, strict=True)]
        shapes = np.array([s for s in windows["gamma_shape"] if s is not None])
        inter["window_gamma_shape_median"] = float(np.median(shapes)) if len(shapes) else None
        inter["windows_fitted"] = int(len(shapes))
    else:
        inter["window_gamma_shape_median"] = None
    inter["window_s"] = float(window_s)
    if len(gaps) and resolution > 0:
        inter["zero_gap_fraction"] = float(np.mean(gaps < resolution / 2))
        # with most gaps below one tick, rounded gaps say little about the shape
        inter["resolution_limited"] = inter["zero_gap_fraction"] > 0.9
    ok = ~sub.failed
    bursts, burst_stats, in_burst = find_bursts(a, t0, t1, window_s)
    for key, sel in (("failure_rate_in_bursts", in_burst), ("failure_rate_outside_bursts", ~in_burst)):
        burst_stats[key] = float(sub.failed[sel].mean()) if sel.any() else None
    return {
        "rows": int(len(sub)),
        "mean_rps": float(len(sub) / span),
        "failure_rate": float(sub.failed.mean()) if len(sub) else 0.0,
        "interarrival": inter,
        "request_tokens": token_distribution(sub.request_tokens),
        "response_tokens": token_distribution(sub.response_tokens[ok]),
        "correlation": correlation(sub.request_tokens[ok], sub.response_tokens[ok]),
        "bursts": bursts,
        "burst_stats": burst_stats,
        "failures_vs_load": failures_vs_load(a, sub.failed, t0, window_s),
        "periodicity": periodicity(a, t0, t1, clock, weekday0),
        "windows": windows,
        "token_model": token_model(sub.request_tokens[ok], sub.response_tokens[ok]),
    }


def summarize(trace: Trace, window_s: float = 1200.0, progress=None) -> dict:
    """The characterization of ``trace`` as a JSON-serializable dict."""
    if len(trace) < 2:
        raise BurstpilotError(
            f"{trace.source or 'trace'}: need at least 2 requests to analyze, got {len(trace)}"
        )
    if window_s <= 0:
        raise BurstpilotError("--window must be positive")
    t0, t1 = float(trace.arrival_s[0]), float(trace.arrival_s[-1])
    if t1 <= t0:
        raise BurstpilotError(
            f"{trace.source or 'trace'}: all {len(trace)} requests arrive at the same time; nothing to analyze"
        )
    resolution = detect_resolution(trace.arrival_s)
    clock = trace.clock_offset_s if trace.clock_offset_s is not None else 0.0
    weekday0 = None
    if trace.origin is not None:
        weekday0 = (trace.origin - timedelta(seconds=clock)).weekday()
    labelled = [(m, lt, mask) for m, lt, mask in trace.groups() if m or lt]
    steps = 1 + len(labelled)
    args = (t0, t1, resolution, window_s, clock, weekday0)
    # the groups are independent and numpy releases the GIL in its heavy loops: use the cores
    with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 4)) as pool:
        futures = [pool.submit(group_summary, trace, *args)]
        futures += [
            pool.submit(lambda mask=mask: group_summary(trace.subset(mask), *args)) for _, _, mask in labelled
        ]
        for done, fut in enumerate(as_completed(futures), start=1):
            fut.result()
            if progress:
                progress(done, steps, f"{done}/{steps} groups")
    overall = futures[0].result()
    out_groups = [
        {"model": m or None, "log_type": lt or None} | fut.result()
        for (m, lt, _), fut in zip(labelled, futures[1:], strict=True)
    ]
    return {
        "source": trace.source,
        "format": trace.format,
        "rows": int(len(trace)),
        "bad_rows": int(trace.bad_rows),
        "bad_lines": list(trace.bad_lines),
        "start_s": t0,
        "duration_s": t1 - t0,
        "mean_rps": overall["mean_rps"],
        "failure_rate": overall["failure_rate"],
        "origin": trace.origin.isoformat() if trace.origin else None,
        "clock_offset_s": trace.clock_offset_s,
        "timestamp_resolution_s": resolution,
        "interarrival_method": method_name(resolution),
        "burst_method": BURST_METHOD,
        "window_s": float(window_s),
        "overall": overall,
        "groups": out_groups,
        "periodicity": overall["periodicity"],
        "sessions": sessions(trace),
    }


def _clean(v):
    """NaN and infinities become null, numpy scalars plain numbers (strict JSON)."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def to_json(summary: dict) -> str:
    """Strict JSON (no NaN). The C encoder handles the common case; a summary that holds a NaN
    somewhere is cleaned in Python first. Long summaries (months of windows) are written compact."""
    windows = summary["overall"].get("windows") or {"start_s": []}
    indent = 1 if len(windows["start_s"]) <= 500 else None
    try:
        return json.dumps(summary, indent=indent, allow_nan=False, default=_np_default)
    except ValueError:
        return json.dumps(_clean(summary), indent=indent, allow_nan=False)


def _np_default(v):
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def analyze(trace: Trace, out_dir, window_s: float = 1200.0, figures: bool = True, progress=None) -> dict:
    """Characterize ``trace``; write ``summary.json`` first, then figures and ``report.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(trace, window_s, progress)
    (out / "summary.json").write_text(to_json(summary))
    figs = {}
    if figures:
        from burstpilot.traces.report import make_figures

        figs = make_figures(trace, summary, out)
    from burstpilot.traces.report import write_report

    write_report(summary, figs, out / "report.md")
    return summary
