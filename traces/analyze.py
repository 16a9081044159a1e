"""Trace characterization: the BurstGPT study's analysis as a tool.

``summarize(trace)`` returns the JSON-serializable summary (the schema is in docs/traces.md);
``analyze(trace, out_dir)`` also writes ``summary.json``, the figures and ``report.md``;
``analyze_stream(path, out_dir)`` does the same for a trace of any length in bounded memory.
Both run the same accumulators (``GroupStats``, ``TraceStats``) over time-ordered chunks, so a trace
that fits in memory gives the same summary either way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import numpy as np
from scipy import ndimage, signal, special, stats

from burstpilot.errors import BurstpilotError
from burstpilot.traces.accumulate import BottomK, BurstDetector, Grown, IntHist, SessionStats, hist_quantiles
from burstpilot.traces.fit import ResolutionDetector, WindowStats, fit_continuous, fit_ticks, method_name
from burstpilot.traces.report import make_figures, write_report
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
SAMPLE = 250_000  # rows for rank correlation (a hashed random subset; 2x that for binned medians)
GAP_SAMPLE = 200_000  # continuous gaps for the Weibull fit and the KS distances
CHUNK_ROWS = 1 << 20  # an in-memory trace is summarized in chunks of this many rows
TOKEN_PROBS = np.unique(np.concatenate([np.linspace(0, 1, 201), 1 - np.logspace(-2, -5, 16)]))
RESPONSE_PROBS = np.linspace(0, 1, 51)


def _q_hist(values: np.ndarray, counts: np.ndarray) -> dict:
    n = int(counts.sum())
    if n == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = hist_quantiles(values, counts, [0.5, 0.9, 0.99])
    return {
        "mean": float(np.dot(values.astype(float), counts) / n),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": int(values[-1]),
    }


def token_distribution(values: np.ndarray, counts: np.ndarray) -> dict:
    """Quantiles, CCDF tail exponent (Hill), lognormal fit and bimodality of a length column,
    exactly, from its histogram (distinct lengths ``values`` ascending, their ``counts``)."""
    out = _q_hist(values, counts)
    pos = values > 0
    v, c = values[pos], counts[pos]
    n = int(c.sum())
    if n < 50:
        return out | {"tail_exponent": None, "lognormal": None, "bimodality": None}
    k = max(int(0.02 * n), 20)
    cum = np.cumsum(c)
    # the k largest values and the (k+1)-th largest (the threshold), as np.partition would give
    thresh = float(v[np.searchsorted(cum, n - k - 1, side="right")])
    above = cum > n - k  # values holding at least one of the top k
    first = np.flatnonzero(above)[0]
    top_c = c[above].astype(float)
    top_c[0] = cum[first] - (n - k)
    top_v = v[above].astype(float)
    hill = None
    if thresh > 0 and top_v[0] != top_v[-1]:
        hill = float(1.0 / (np.dot(top_c, np.log(top_v / thresh)) / k))
    lv = np.log(v.astype(float))
    mu = float(np.dot(lv, c) / n)
    sigma = float(np.sqrt(max(np.dot((lv - mu) ** 2, c) / n, 0.0)))
    ks_ln = None
    if len(v) > 1 and sigma > 0:
        f = special.ndtr((lv - mu) / sigma)
        ks_ln = float(max(np.max(cum / n - f), np.max(f - (cum - c) / n)))
    return out | {
        "tail_exponent": hill,
        "tail_method": TAIL_METHOD,
        "tail_threshold": thresh,
        "lognormal": {"mu": mu, "sigma": sigma, "median": float(np.exp(mu)), "ks": ks_ln},
        "bimodality": _bimodality(lv, c) if len(v) > 1 else None,
    }


def _bimodality(lv: np.ndarray, c: np.ndarray) -> dict:
    """Modes of the smoothed histogram of log lengths and Sarle's bimodality coefficient."""
    n = float(c.sum())
    mu = np.dot(lv, c) / n
    m2, m3, m4 = (np.dot((lv - mu) ** p, c) / n for p in (2, 3, 4))
    g = float(m3 / m2**1.5) if m2 > 0 else 0.0
    kurt = float(m4 / m2**2 - 3) if m2 > 0 else 0.0
    bc = (g * g + 1) / (kurt + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))) if n > 3 else None
    hist, edges = np.histogram(lv, bins=80, weights=c)
    smooth = ndimage.gaussian_filter1d(hist.astype(float), 2.0)
    peaks, _ = signal.find_peaks(smooth, prominence=0.1 * smooth.max())
    centers = np.exp((edges[:-1] + edges[1:]) / 2)
    modes = [float(round(centers[p], 1)) for p in peaks]
    return {"coefficient": bc, "modes": modes, "bimodal": len(modes) >= 2}


def correlation(sums: np.ndarray, req: np.ndarray, resp: np.ndarray) -> dict:
    """Pearson (exact, from the sums n, x, y, xx, yy, xy), Spearman and binned medians with a 90%
    band on the row sample ``req``/``resp``."""
    n, sx, sy, sxx, syy, sxy = sums
    vx, vy = sxx / max(n, 1) - (sx / max(n, 1)) ** 2, syy / max(n, 1) - (sy / max(n, 1)) ** 2
    if n < 3 or vx <= 0 or vy <= 0 or len(req) < 3 or req.std() == 0 or resp.std() == 0:
        return {"pearson": None, "spearman": None, "binned": None}
    pearson = float((sxy / n - sx * sy / n**2) / np.sqrt(vx * vy))
    spearman = _spearman(req[:SAMPLE], resp[:SAMPLE])
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


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share their mean rank), as scipy.stats.rankdata gives: counted
    from a histogram for non-negative integers (token lengths) instead of sorted."""
    if x.dtype.kind in "iu" and len(x) and x.min() >= 0 and x.max() < 1 << 24:
        c = np.bincount(x)
        cum = np.cumsum(c)
        return ((2 * cum - c + 1) / 2)[x]  # whole or half ranks: exact in float64
    return stats.rankdata(x)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """scipy.stats.spearmanr(x, y).statistic (NaN for constant input), with ranks from ``_ranks``."""
    if len(x) < 2 or (x[0] == x).all() or (y[0] == y).all():
        return float("nan")
    return float(np.corrcoef(np.column_stack((_ranks(x), _ranks(y))), rowvar=False)[1, 0])


def _sorted_quantiles(xs: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Quantiles of an ascending array (linear interpolation, as numpy's default)."""
    pos = np.asarray(probs) * (len(xs) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(xs) - 1)
    f = pos - lo
    return xs[lo] * (1 - f) + xs[hi] * f


def token_model(req_hist, req: np.ndarray, resp: np.ndarray) -> dict | None:
    """What the modeled generator samples from: request quantiles (exact, from the histogram of
    successful requests), and response quantiles in request-decile bins (from the row sample;
    keeps the request/response dependence)."""
    values, counts = req_hist
    if counts.sum() < 50 or len(req) < 50:
        return None
    edges = np.unique(hist_quantiles(values, counts, np.linspace(0, 1, 11)))
    b = np.clip(np.searchsorted(edges, req, side="right") - 1, 0, max(len(edges) - 2, 0))
    resp_q = []
    for i in range(max(len(edges) - 1, 1)):
        vals = resp[b == i]
        vals = np.sort(vals if len(vals) else resp)
        resp_q.append([float(v) for v in _sorted_quantiles(vals, RESPONSE_PROBS)])
    return {
        "request_probs": TOKEN_PROBS.tolist(),
        "request_quantiles": [float(v) for v in hist_quantiles(values, counts, TOKEN_PROBS)],
        "request_bin_edges": [float(e) for e in edges],
        "response_probs": RESPONSE_PROBS.tolist(),
        "response_quantiles": resp_q,
    }


def find_bursts(arrival: np.ndarray, t0: float, t1: float, window_s: float):
    """Burst episodes (BURST_METHOD) of one arrival array: a list of {start_s, duration_s,
    peak_rps, requests} (the largest peaks), overall statistics, and a per-row mask of requests
    inside an episode."""
    det = BurstDetector(t0, t1, window_s)
    det.add(np.asarray(arrival, np.float64), np.zeros(len(arrival), bool))
    eps, st, spans = det.finish(0, MAX_BURSTS)
    sec = np.minimum((arrival - t0).astype(np.int64), det.nb - 1)
    i = np.searchsorted(spans[:, 0], sec, side="right") - 1 if len(spans) else np.full(len(sec), -1)
    inside = (i >= 0) & (sec <= spans[np.maximum(i, 0), 1]) if len(spans) else np.zeros(len(sec), bool)
    st.pop("inside")
    return eps, st | {"method": BURST_METHOD}, inside


def _by_deciles(x: np.ndarray, n: np.ndarray, f: np.ndarray):
    """Mean of x and failure rate (failures f over requests n) in deciles of x."""
    edges = np.unique(np.quantile(x, np.linspace(0, 1, 11)))
    b = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(len(edges) - 2, 0))
    nb, fb, cnt = np.bincount(b, n), np.bincount(b, f), np.bincount(b)
    ok = nb > 0
    return (np.bincount(b, x)[ok] / cnt[ok]).tolist(), (fb[ok] / nb[ok]).tolist()


def failures_vs_load(n_min, f_min, n10, f10, window_s: float, rows: int) -> dict | None:
    """Failure rate by decile of per-minute load, and by decile of relative load: the 10-second
    count over the mean 10-second count of its refit window (how far above its own level traffic
    is, which is what a burst is); with the rank correlation of per-minute load and failure rate."""
    bin_s, short = 60.0, 10.0
    if f_min.sum() == 0 or rows < 100:
        return None
    busy = n_min > 0
    n, f = n_min[busy].astype(float), f_min[busy].astype(float)
    load, rate = _by_deciles(n / bin_s, n, f)
    rho = _spearman(n_min[busy], f / n) if len(n) > 2 and n.std() > 0 else float("nan")
    w = (np.arange(len(n10)) * short // window_s).astype(np.int64)
    wmean = np.bincount(w, n10) / np.bincount(w)
    busy10 = n10 > 0
    ratio = n10[busy10] / wmean[w[busy10]]
    rel, rel_rate = _by_deciles(ratio, n10[busy10].astype(float), f10[busy10].astype(float))
    return {
        "bin_s": bin_s,
        "load_rps": load,
        "failure_rate": rate,
        "spearman_load_failure": None if not np.isfinite(rho) else float(rho),
        "relative_bin_s": short,
        "relative_load": rel,
        "relative_failure_rate": rel_rate,
    }


def periodicity(counts: np.ndarray, h_first: int, t0: float, t1: float, weekday0: int | None):
    """Hourly and weekday rate profiles (req/s) and the lag-24h correlation of hourly counts
    (``counts`` per clock hour from hour ``h_first``); None when the span is shorter than a day."""
    if t1 - t0 < DAY_S:
        return None
    counts = counts.astype(float)
    hours = np.arange(h_first, h_first + len(counts))
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


class GroupStats:
    """Everything one group's summary needs, accumulated over time-ordered chunks."""

    def __init__(self, ctx: dict):
        self.ctx = ctx
        t0, t1, res, window_s = ctx["t0"], ctx["t1"], ctx["resolution"], ctx["window_s"]
        self.t0, self.res, self.window_s = t0, res, window_s
        self.rows = 0
        self.failed = 0
        self.last: float | None = None
        self.gap_n, self.gap_sum, self.gap_sq = 0, 0.0, 0.0
        if res > 0:
            self.ticks = IntHist()
            self.tick_counts = IntHist()  # arrivals per occupied grid step
            self.run_tick: int | None = None
            self.run_len = 0
        else:
            self.npos, self.slog, self.min_pos = 0, 0.0, np.inf
            self.gap_sample = BottomK(GAP_SAMPLE, salt=1)
        self.windows = WindowStats(t0, t1, window_s, res)
        self.bursts = BurstDetector(t0, t1, window_s)
        self.minute = (Grown(), Grown())
        self.ten = (Grown(), Grown())
        self.h_first = int(np.floor((t0 + ctx["clock"]) / 3600.0))
        self.hours = Grown()
        self.req = IntHist()  # all requests
        self.req_ok = IntHist()  # successful requests (the token model)
        self.resp_ok = IntHist()
        self.sums = np.zeros(6)
        self.pairs = BottomK(2 * SAMPLE, salt=2)

    def add(self, a: np.ndarray, req: np.ndarray, resp: np.ndarray, failed: np.ndarray) -> None:
        n = len(a)
        if n == 0:
            return
        self.rows += n
        self.failed += int(failed.sum())
        gaps = np.diff(a) if self.last is None else np.diff(a, prepend=self.last)
        self.last = float(a[-1])
        if len(gaps):
            self.gap_n += len(gaps)
            self.gap_sum += float(gaps.sum())
            self.gap_sq += float(np.dot(gaps, gaps))
            if self.res > 0:
                ticks = np.round(gaps / self.res).astype(np.int64)
                self.ticks.add(ticks)
            else:
                pos = gaps[gaps > 0]
                self.npos += len(pos)
                self.slog += float(np.log(pos).sum())
                if len(pos):
                    self.min_pos = min(self.min_pos, float(pos.min()))
                self.gap_sample.add(gaps)
        if self.res > 0:
            self._runs(np.round((a - self.t0) / self.res).astype(np.int64))
        sec = (a - self.t0).astype(np.int64)  # whole seconds since the start (a >= t0)
        self.windows.add(a, failed, sec, gaps, ticks if self.res > 0 and len(gaps) else None)
        self.bursts.add(a, failed, sec)
        m = sec // 60
        self.minute[0].add(m)
        self.minute[1].add(m, where=failed)
        d = sec // 10
        self.ten[0].add(d)
        self.ten[1].add(d, where=failed)
        self.hours.add(np.floor((a + self.ctx["clock"]) / 3600.0).astype(np.int64) - self.h_first)
        self.req.add(req)
        ok = ~failed
        rq, rs = req[ok], resp[ok]
        self.req_ok.add(rq)
        self.resp_ok.add(rs)
        x, y = rq.astype(np.float64), rs.astype(np.float64)
        self.sums += (len(x), x.sum(), y.sum(), np.dot(x, x), np.dot(y, y), np.dot(x, y))
        self.pairs.add(rq, rs)

    def _runs(self, q: np.ndarray) -> None:
        """Arrivals per occupied grid step (runs of equal tick indices)."""
        heads = np.concatenate([[0], np.flatnonzero(np.diff(q)) + 1])
        lens = np.diff(np.append(heads, len(q)))
        if self.run_tick is not None and q[0] == self.run_tick:
            lens[0] += self.run_len
        elif self.run_tick is not None:
            self.tick_counts.add(np.array([self.run_len]))
        self.tick_counts.add(lens[:-1])
        self.run_tick, self.run_len = int(q[-1]), int(lens[-1])

    def finish(self) -> tuple[dict, dict]:
        ctx = self.ctx
        span = max(ctx["t1"] - ctx["t0"], 1e-9)
        mean = self.gap_sum / self.gap_n if self.gap_n else 0.0
        cv = None
        if self.gap_n and mean > 0:
            cv = float(np.sqrt(max(self.gap_sq / self.gap_n - mean**2, 0.0)) / mean)
        plot = {}
        if self.res > 0:
            tv, tc = self.ticks.values_counts()
            inter = fit_ticks(tv, tc, self.res, mean, cv)
            plot["tick_gaps"] = (tv, tc)
        else:
            gs = np.sort(self.gap_sample.sample()[0]) if self.gap_sample.cols else np.zeros(0)
            inter = fit_continuous(self.gap_n, mean, cv, self.npos, self.slog, float(self.min_pos), gs)
            plot["gap_sample"] = gs
        windows = None
        if self.rows >= 2:
            windows = self.windows.finish()
            wn = self.windows.count
            windows["failure_rate"] = [
                float(f / c) if c else None for f, c in zip(self.windows.failures, wn, strict=True)
            ]
            shapes = np.array([s for s in windows["gamma_shape"] if s is not None])
            inter["window_gamma_shape_median"] = float(np.median(shapes)) if len(shapes) else None
            inter["windows_fitted"] = int(len(shapes))
        else:
            inter["window_gamma_shape_median"] = None
        inter["window_s"] = float(self.window_s)
        if self.res > 0 and self.gap_n:
            inter["zero_gap_fraction"] = float(tc[tv == 0].sum() / self.gap_n) if len(tv) else 0.0
            inter["resolution_limited"] = not inter.get("identifiable", False)
            inter["grid"] = self._grid_counts(span)
        eps, bstats, _ = self.bursts.finish(self.failed, MAX_BURSTS)
        inside_n, inside_f = bstats.pop("inside")
        bstats["method"] = BURST_METHOD
        bstats["failure_rate_in_bursts"] = inside_f / inside_n if inside_n else None
        out_n = self.rows - inside_n
        bstats["failure_rate_outside_bursts"] = (self.failed - inside_f) / out_n if out_n else None
        rq, rs = self.pairs.sample() or (np.zeros(0, np.int64), np.zeros(0, np.int64))
        req_ok = self.req_ok.values_counts()
        summary = {
            "rows": int(self.rows),
            "mean_rps": float(self.rows / span),
            "failure_rate": float(self.failed / self.rows) if self.rows else 0.0,
            "interarrival": inter,
            "request_tokens": token_distribution(*self.req.values_counts()),
            "response_tokens": token_distribution(*self.resp_ok.values_counts()),
            "correlation": correlation(self.sums, rq, rs),
            "bursts": eps,
            "burst_stats": bstats,
            "failures_vs_load": failures_vs_load(
                self.minute[0].a, self.minute[1].a, self.ten[0].a, self.ten[1].a, self.window_s, self.rows
            ),
            "periodicity": periodicity(self.hours.a, self.h_first, ctx["t0"], ctx["t1"], ctx["weekday0"]),
            "windows": windows,
            "token_model": token_model(req_ok, rq, rs),
        }
        plot |= {
            "minute_counts": self.minute[0].a,
            "ten_counts": self.ten[0].a,
            "request_hist": self.req.values_counts(),
            "response_hist": self.resp_ok.values_counts(),
        }
        return summary, plot

    def _grid_counts(self, span: float) -> dict:
        """What a coarse grid still tells: arrivals per grid step and their dispersion."""
        self.tick_counts.add(np.array([self.run_len]) if self.run_tick is not None else np.zeros(0, np.int64))
        self.run_tick = None
        v, c = self.tick_counts.values_counts()
        steps = int(np.floor(span / self.res)) + 1
        occupied = int(c.sum())
        total = float(np.dot(v.astype(float), c))
        mean = total / steps
        var = float(np.dot(v.astype(float) ** 2, c)) / steps - mean**2
        q = _q_hist(v, c)
        return {
            "step_s": self.res,
            "steps": steps,
            "occupied_fraction": occupied / steps,
            "arrivals_per_occupied_step": {k: q[k] for k in ("mean", "p50", "p99", "max")},
            "dispersion_index": float(var / mean) if mean > 0 else None,
            "shape_from_dispersion": float(mean / var) if var > 0 else None,
        }


def _sessions_summary(ss: SessionStats) -> dict | None:
    if ss.rows == 0:
        return None
    turns = ss.turns
    gaps = ss.gaps.sample()
    gap_q = None
    if ss.gap_n:
        g = np.sort(gaps[0])
        p50, p90, p99 = _sorted_quantiles(g, np.array([0.5, 0.9, 0.99]))
        gap_q = {
            "mean": ss.gap_sum / ss.gap_n,
            "p50": float(p50),
            "p90": float(p90),
            "p99": float(p99),
            "max": ss.gap_max,
        }
    hist = np.bincount(np.minimum(turns, 20))
    return {
        "count": int(len(turns)),
        "rows_with_session": int(ss.rows),
        "single_turn_fraction": float(np.mean(turns == 1)),
        "median_turns": float(np.median(turns)),
        "p75_turns": float(np.percentile(turns, 75)),
        "mean_turns": float(turns.mean()),
        "turns_histogram": hist[1:].tolist(),
        "gap_between_turns_s": gap_q,
    }


def _session_keys(chunk: Trace) -> np.ndarray:
    """Session ids comparable across chunks: the integers, or a stable hash of text labels."""
    if chunk.session_labels is None:
        return chunk.session_id
    labels = np.asarray(chunk.session_labels, dtype=object)
    h = np.array(
        [
            int.from_bytes(hashlib.blake2b(str(x).encode(), digest_size=8).digest(), "little") >> 1
            for x in labels
        ]
        + [NO_SESSION],
        np.int64,
    )
    return h[np.where(chunk.session_id >= 0, chunk.session_id, len(labels))]


def _group_rows(chunk: Trace):
    """((model, log type), (arrival, request, response, failed)) of each group with a model or a
    log type, its rows in time order: one stable sort by group code, then contiguous slices (what
    ``Trace.groups()`` masks select, without a pass over every column per group)."""
    nl = max(len(chunk.log_types), 1)
    key = (chunk.model_codes.astype(np.int64) + 1) * (nl + 1) + (chunk.log_type_codes + 1)
    counts = np.bincount(key)
    if len(counts) < 1 << 15:
        key = key.astype(np.int16)  # numpy sorts 16-bit integers by radix (stable, linear)
    order = np.argsort(key, kind="stable")
    ends = np.cumsum(counts)
    cols = None
    out = []
    for k in np.flatnonzero(counts):
        mc, lc = divmod(int(k), nl + 1)
        m = str(chunk.models[mc - 1]) if mc >= 1 else ""
        lt = str(chunk.log_types[lc - 1]) if lc >= 1 else ""
        if not (m or lt):
            continue
        if cols is None:
            cols = [
                c[order] for c in (chunk.arrival_s, chunk.request_tokens, chunk.response_tokens, chunk.failed)
            ]
        lo, hi = int(ends[k] - counts[k]), int(ends[k])
        out.append(((m, lt), tuple(c[lo:hi] for c in cols)))
    return out


class TraceStats:
    """The whole summary, accumulated over time-ordered chunks of one trace."""

    def __init__(self, t0, t1, resolution, window_s, clock, weekday0, meta: dict):
        self.ctx = {
            "t0": t0,
            "t1": t1,
            "resolution": resolution["resolution_s"],
            "window_s": window_s,
            "clock": clock,
            "weekday0": weekday0,
        }
        self.resolution = resolution
        self.meta = meta
        self.overall = GroupStats(self.ctx)
        self.groups: dict[tuple[str, str], GroupStats] = {}
        self.sessions = SessionStats(SAMPLE)
        self.has_sessions = False
        self.last = -np.inf
        self.rows = 0
        self.pool = ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 4))

    def add(self, chunk: Trace) -> None:
        a = chunk.arrival_s
        if len(a) == 0:
            return
        if a[0] < self.last or (len(a) > 1 and np.any(np.diff(a) < 0)):
            bad = self.rows + (int(np.argmax(np.diff(a) < 0)) + 1 if a[0] >= self.last else 0)
            raise BurstpilotError(
                f"{chunk.source}: rows are not in time order (near data row {bad + 1}); streaming analysis "
                "needs a time-ordered trace: analyze it without --stream, or sort it first"
            )
        self.last = float(a[-1])
        self.rows += len(a)
        work = [(self.overall, a, chunk.request_tokens, chunk.response_tokens, chunk.failed)]
        for (m, lt), cols in _group_rows(chunk):
            g = self.groups.get((m, lt))
            if g is None:
                g = self.groups[(m, lt)] = GroupStats(self.ctx)
            work.append((g, *cols))
        # the groups are independent and numpy releases the GIL in its heavy loops: use the cores
        for f in [self.pool.submit(w[0].add, *w[1:]) for w in work]:
            f.result()
        if chunk.has_sessions:
            self.has_sessions = True
            sid = _session_keys(chunk)
            has = sid != NO_SESSION
            self.sessions.add(sid[has], a[has])

    def finish(self) -> tuple[dict, dict]:
        ctx = self.ctx
        items = sorted(self.groups.items(), key=lambda kv: (-kv[1].rows, kv[0]))
        done = [self.pool.submit(g.finish) for g in [self.overall] + [g for _, g in items]]
        self.pool.shutdown()
        overall, plot = done[0].result()
        plots = {"all": plot}
        groups = []
        for ((m, lt), _), fut in zip(items, done[1:], strict=True):
            s, p = fut.result()
            groups.append({"model": m or None, "log_type": lt or None} | s)
            plots[" / ".join(x for x in (m, lt) if x)] = p
        res = self.resolution
        summary = {
            "source": self.meta["source"],
            "format": self.meta["format"],
            "rows": int(self.rows),
            "bad_rows": int(self.meta["bad_rows"]),
            "bad_lines": list(self.meta["bad_lines"]),
            "start_s": ctx["t0"],
            "duration_s": ctx["t1"] - ctx["t0"],
            "mean_rps": overall["mean_rps"],
            "failure_rate": overall["failure_rate"],
            "origin": self.meta["origin"].isoformat() if self.meta["origin"] else None,
            "clock_offset_s": self.meta["clock_offset_s"],
            "timestamp_resolution_s": res["resolution_s"],
            "timestamp_unit_s": res["unit_s"],
            "resolution_found_by": res["found_by"],
            "interarrival_method": method_name(res["resolution_s"]),
            "burst_method": BURST_METHOD,
            "window_s": float(ctx["window_s"]),
            "overall": overall,
            "groups": groups,
            "periodicity": overall["periodicity"],
            "sessions": _sessions_summary(self.sessions) if self.has_sessions else None,
        }
        return summary, plots


def _check(source: str, n: int, t0: float, t1: float, window_s: float) -> None:
    if n < 2:
        raise BurstpilotError(f"{source or 'trace'}: need at least 2 requests to analyze, got {n}")
    if window_s <= 0:
        raise BurstpilotError("--window must be positive")
    if t1 <= t0:
        raise BurstpilotError(
            f"{source or 'trace'}: all {n} requests arrive at the same time; nothing to analyze"
        )


def _weekday0(origin, clock):
    return (origin - timedelta(seconds=clock)).weekday() if origin is not None else None


def _meta(t: Trace) -> dict:
    return {
        "source": t.source,
        "format": t.format,
        "bad_rows": t.bad_rows,
        "bad_lines": t.bad_lines,
        "origin": t.origin,
        "clock_offset_s": t.clock_offset_s,
    }


def summarize_with_plots(trace: Trace, window_s: float = 1200.0, progress=None) -> tuple[dict, dict]:
    """The summary of an in-memory trace, and the data its figures are drawn from."""
    n = len(trace)
    t0 = float(trace.arrival_s[0]) if n else 0.0
    t1 = float(trace.arrival_s[-1]) if n else 0.0
    _check(trace.source, n, t0, t1, window_s)
    det = ResolutionDetector()
    det.add(trace.arrival_s)
    clock = trace.clock_offset_s if trace.clock_offset_s is not None else 0.0
    acc = TraceStats(t0, t1, det.finish(), window_s, clock, _weekday0(trace.origin, clock), _meta(trace))
    steps = max((n + CHUNK_ROWS - 1) // CHUNK_ROWS, 1)
    for i, lo in enumerate(range(0, n, CHUNK_ROWS), start=1):
        acc.add(trace._slice(lo, lo + CHUNK_ROWS))
        if progress:
            progress(i, steps, f"rows {min(lo + CHUNK_ROWS, n):,}/{n:,}")
    return acc.finish()


def summarize(trace: Trace, window_s: float = 1200.0, progress=None) -> dict:
    """The characterization of ``trace`` as a JSON-serializable dict."""
    return summarize_with_plots(trace, window_s, progress)[0]


def summarize_stream(chunks_factory, window_s: float = 1200.0, progress=None) -> tuple[dict, dict]:
    """The summary of a trace too large for memory, from ``chunks_factory()`` (a callable that
    returns a fresh iterator of time-ordered Trace chunks, e.g. ``lambda: iter_trace(path)``).
    Two passes: the first finds the span and the timestamp grid, the second accumulates. Memory
    is bounded by the span and fixed samples, not the row count; the result equals ``summarize``
    of the same trace in memory."""
    det = ResolutionDetector()
    n, t0, t1, meta = 0, np.inf, -np.inf, None
    for chunk in chunks_factory():
        if len(chunk) == 0:
            continue
        meta = meta or _meta(chunk)
        det.add(chunk.arrival_s)
        n += len(chunk)
        t0, t1 = min(t0, float(chunk.arrival_s.min())), max(t1, float(chunk.arrival_s.max()))
        last = chunk
        if progress:
            progress(0, None, f"scanning: {n:,} rows")
    if meta is None:
        raise BurstpilotError("trace: no rows to analyze")
    meta |= {"bad_rows": last.bad_rows, "bad_lines": last.bad_lines}
    _check(meta["source"], n, t0, t1, window_s)
    clock = meta["clock_offset_s"] if meta["clock_offset_s"] is not None else 0.0
    acc = TraceStats(t0, t1, det.finish(), window_s, clock, _weekday0(meta["origin"], clock), meta)
    done = 0
    for chunk in chunks_factory():
        acc.add(chunk)
        done += len(chunk)
        if progress:
            progress(done, n, f"rows {done:,}/{n:,}")
    return acc.finish()


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


def _write(summary: dict, plots: dict, out: Path, figures: bool) -> dict:
    (out / "summary.json").write_text(to_json(summary))
    figs = make_figures(summary, plots, out) if figures else {}
    write_report(summary, figs, out / "report.md")
    return summary


def analyze(trace: Trace, out_dir, window_s: float = 1200.0, figures: bool = True, progress=None) -> dict:
    """Characterize ``trace``; write ``summary.json`` first, then figures and ``report.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary, plots = summarize_with_plots(trace, window_s, progress)
    return _write(summary, plots, out, figures)


def analyze_stream(chunks_factory, out_dir, window_s: float = 1200.0, figures: bool = True, progress=None):
    """``analyze`` for a trace read in record batches (``chunks_factory()`` returns a fresh
    iterator of chunks, e.g. ``lambda: iter_trace(path)``): bounded memory at any length."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary, plots = summarize_stream(chunks_factory, window_s, progress)
    return _write(summary, plots, out, figures)
