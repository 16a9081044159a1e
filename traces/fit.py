"""Inter-arrival fits that stay correct when timestamps are rounded (BurstGPT: 1 second).

With timestamps floored to a resolution r, a gap is observed as an integer number of ticks
D = floor(T + X) - floor(T), where X is the true gap (in ticks) and T the unseen phase of the
earlier arrival, uniform within its tick. Then

    P(D = d) = G(d + 1) - 2 G(d) + G(d - 1),   G(x) = integral_0^x F(u) du,  G(x<=0) = 0,

the true density smoothed by the triangular kernel of two roundings, and P(D <= d) = G(d+1) - G(d).
For the Gamma distribution G(x) = x F(x; k, s) - k s F(x; k + 1, s); for the Weibull
G(x) = x - l Gamma(1 + 1/k) P(1/k, (x/l)^k). Maximum likelihood over these interval probabilities
("gamma-mle-interval-censored") is consistent where a naive fit on the rounded gaps breaks (zeros)
or is biased. Beyond DCUT ticks the smoothing is negligible and the density itself is used.
Timestamps finer than a millisecond are fitted by ordinary continuous maximum likelihood.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

DCUT = 50  # ticks: exact interval probabilities below, the density above
RESOLUTIONS = (1.0, 0.1, 0.01, 0.001)
MIN_GAPS = 20
MAX_SHAPE = 1000.0  # shapes are reported at most this (CV 3%): regular, not bursty


def detect_resolution(arrival_s: np.ndarray) -> float:
    """The timestamp tick: the coarsest of 1 s, 0.1 s, 0.01 s, 1 ms that every timestamp is a
    multiple of; else the smallest positive gap when every timestamp is a multiple of it from
    the first (a 1-second trace replayed 3x faster has 1/3-second ticks); else 0 (continuous)."""
    if len(arrival_s) < 2:
        return 0.0
    a = np.asarray(arrival_s, np.float64)

    def multiple_of(x, r):
        q = x / r
        return bool(np.all(np.abs(q - np.round(q)) <= 1e-6 * np.maximum(1.0, np.abs(q)) + 1e-9))

    for r in RESOLUTIONS:
        if multiple_of(a, r):
            return r
    gaps = np.diff(a)
    pos = gaps[gaps > 0]
    if len(pos) and (gaps == 0).any() and multiple_of(a - a[0], float(pos.min())):
        return float(pos.min())
    return 0.0


def method_name(resolution: float) -> str:
    if resolution > 0:
        return f"gamma-mle-interval-censored-{resolution:g}s"
    return "gamma-mle"


# ------------------------------------------------------------------------------------------------
# integrated CDFs


def _G_gamma(x, k, s):
    x = np.maximum(x, 0.0)
    return x * special.gammainc(k, x / s) - k * s * special.gammainc(k + 1, x / s)


def _G_weibull(x, k, lam):
    x = np.maximum(x, 0.0)
    a = 1.0 / k
    with np.errstate(over="ignore"):
        return x - lam * special.gamma(1 + a) * special.gammainc(a, (x / lam) ** k)


def _logpdf_gamma(x, k, s):
    return (k - 1) * np.log(x) - x / s - k * np.log(s) - special.gammaln(k)


def _logpdf_weibull(x, k, lam):
    with np.errstate(over="ignore"):
        return np.log(k / lam) + (k - 1) * np.log(x / lam) - (x / lam) ** k


def _cdf_gamma(x, k, s):
    return special.gammainc(k, np.maximum(x, 0) / s)


def _cdf_weibull(x, k, lam):
    with np.errstate(over="ignore"):
        return -np.expm1(-((np.maximum(x, 0) / lam) ** k))


_DISTS = {
    "gamma": (_G_gamma, _logpdf_gamma, _cdf_gamma),
    "weibull": (_G_weibull, _logpdf_weibull, _cdf_weibull),
}


def _discrete_logp(dist, d, p1, p2):
    """log P(D = d) for integer ticks d (array)."""
    G, logpdf, _ = _DISTS[dist]
    d = np.asarray(d, np.float64)
    small = d < DCUT
    out = np.empty_like(d)
    ds = d[small]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = G(ds + 1, p1, p2) - 2 * G(ds, p1, p2) + G(ds - 1, p1, p2)
        out[small] = np.log(np.maximum(p, 1e-300))
        out[~small] = logpdf(d[~small], p1, p2)
    return out


def _discrete_cdf(dist, d, p1, p2):
    G, _, cdf = _DISTS[dist]
    d = np.asarray(d, np.float64)
    return np.where(d < DCUT, G(d + 1, p1, p2) - G(d, p1, p2), cdf(d + 0.5, p1, p2))


def _ks_discrete(values, counts, dist, p1, p2) -> float:
    """KS distance between the empirical CDF of integer ticks and the model's discrete CDF,
    checked at both ends of every flat stretch of the empirical CDF."""
    ecdf = np.cumsum(counts) / counts.sum()
    at = _discrete_cdf(dist, values, p1, p2)
    before = np.concatenate([[0.0], ecdf[:-1]])
    prev_vals = values - 1
    at_prev = np.where(prev_vals >= 0, _discrete_cdf(dist, prev_vals, p1, p2), 0.0)
    return float(max(np.max(np.abs(ecdf - at)), np.max(np.abs(before - at_prev))))


def _mle_discrete(dist, values, counts, x0):
    def nll(theta):
        p1, p2 = np.exp(theta)
        return -np.dot(counts, _discrete_logp(dist, values, p1, p2))

    res = optimize.minimize(nll, np.log(x0), method="Nelder-Mead", options={"xatol": 1e-5, "fatol": 1e-7})
    return np.exp(res.x), -res.fun


def _exp_discrete(values, counts):
    def nll(log_s):
        return -np.dot(counts, _discrete_logp("gamma", values, 1.0, np.exp(log_s)))

    m = max(np.dot(values, counts) / counts.sum(), 1e-3)
    res = optimize.minimize_scalar(nll, bounds=(np.log(m) - 3, np.log(m) + 3), method="bounded")
    return float(np.exp(res.x))


def _value_counts(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct non-negative integers and their counts (bincount when the range is small)."""
    if len(d) and d.max() < 50_000_000:
        c = np.bincount(d)
        values = np.flatnonzero(c)
        return values, c[values]
    return np.unique(d, return_counts=True)


def fit_interarrival(gaps_s: np.ndarray, resolution: float) -> dict:
    """Gamma, exponential and Weibull fits of inter-arrival gaps with KS distances.

    Scales are in seconds; ``gamma_scale`` is numpy's scale (mean gap = shape * scale).
    """
    gaps_s = np.asarray(gaps_s, np.float64)
    n = len(gaps_s)
    out = {"method": method_name(resolution), "resolution_s": resolution, "n": int(n)}
    if n < MIN_GAPS or not np.any(gaps_s > 0):
        return out | {
            k: None
            for k in (
                "gamma_shape",
                "gamma_scale",
                "cv",
                "ks_gamma",
                "ks_exponential",
                "weibull_shape",
                "weibull_scale",
                "ks_weibull",
                "exponential_scale",
                "mean_s",
            )
        }
    mean = float(gaps_s.mean())
    cv = float(gaps_s.std() / mean)
    if resolution > 0:
        d = np.round(gaps_s / resolution).astype(np.int64)
        values, counts = _value_counts(d)
        values_f = values.astype(np.float64)
        m = float(d.mean())
        k0 = float(_window_shapes_discrete(d, np.zeros(len(d), np.int64), 1)[0][0])
        k0 = k0 if np.isfinite(k0) else 1.0
        (k, s), _ = _mle_discrete("gamma", values_f, counts, (k0, m / k0))
        if k > MAX_SHAPE:  # (nearly) regular arrivals: the likelihood keeps rising with the shape
            k, s = MAX_SHAPE, m / MAX_SHAPE
        ks_g = _ks_discrete(values_f, counts, "gamma", k, s)
        (wk, wl), _ = _mle_discrete("weibull", values_f, counts, (min(max(k0**0.5, 0.1), 5.0), m))
        ks_w = _ks_discrete(values_f, counts, "weibull", wk, wl)
        es = _exp_discrete(values_f, counts)
        ks_e = _ks_discrete(values_f, counts, "gamma", 1.0, es)
        r = resolution
        s, wl, es = s * r, wl * r, es * r
    else:
        x = np.where(gaps_s > 0, gaps_s, gaps_s[gaps_s > 0].min() / 2)
        k, s = gamma_mle(x)
        xs = np.sort(x[subsample(len(x))])
        wk, wl = weibull_mle(xs)
        es = float(x.mean())
        ks_g = ks_sorted(xs, lambda v: special.gammainc(k, v / s))
        ks_w = ks_sorted(xs, lambda v: _cdf_weibull(v, wk, wl))
        ks_e = ks_sorted(xs, lambda v: -np.expm1(-v / es))
    return out | {
        "gamma_shape": float(k),
        "gamma_scale": float(s),
        "cv": cv,
        "ks_gamma": float(ks_g),
        "ks_exponential": float(ks_e),
        "weibull_shape": float(wk),
        "weibull_scale": float(wl),
        "ks_weibull": float(ks_w),
        "exponential_scale": float(es),
        "mean_s": mean,
    }


def subsample(n: int, k: int = 200_000) -> np.ndarray:
    """A deterministic, evenly spaced subset of row indices (all rows when n <= k)."""
    if n <= k:
        return np.arange(n)
    return np.linspace(0, n - 1, k).astype(np.int64)


def gamma_mle(x: np.ndarray) -> tuple[float, float]:
    """Continuous Gamma MLE (shape, scale): Minka's approximation polished by Newton steps."""
    m = float(x.mean())
    sst = np.log(m) - float(np.mean(np.log(x)))
    if sst <= 1e-12:  # equal gaps
        return MAX_SHAPE, m / MAX_SHAPE
    k = min((3 - sst + np.sqrt((sst - 3) ** 2 + 24 * sst)) / (12 * sst), MAX_SHAPE)
    for _ in range(6):
        k -= (np.log(k) - special.digamma(k) - sst) / (1 / k - special.polygamma(1, k))
        k = float(np.clip(np.nan_to_num(k, nan=MAX_SHAPE), 1e-3, MAX_SHAPE))
    return float(k), m / float(k)


def weibull_mle(x: np.ndarray) -> tuple[float, float]:
    """Continuous Weibull MLE (shape, scale) by solving the profile equation for the shape."""
    m = float(x.mean())
    y = x / m
    ly = np.log(y)
    mly = float(ly.mean())

    def eq(logk):
        k = np.exp(logk)
        yk = np.exp(k * ly - np.max(k * ly))
        return 1 / k + mly - float(np.dot(yk, ly) / yk.sum())

    logk = optimize.brentq(eq, np.log(0.02), np.log(50.0)) if eq(np.log(0.02)) * eq(np.log(50.0)) < 0 else 0.0
    k = float(np.exp(logk))
    return k, m * float(np.mean(y**k)) ** (1 / k)


def ks_sorted(xs: np.ndarray, cdf) -> float:
    n = len(xs)
    f = cdf(xs)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - f), np.max(f - (i - 1) / n)))


# ------------------------------------------------------------------------------------------------
# windowed refits


def fit_windows(arrival_s: np.ndarray, window_s: float, resolution: float, t0: float | None = None) -> dict:
    """Gamma refits in consecutive windows (the study refits every 20 minutes).

    Returns column lists: ``start_s``, ``count`` (arrivals), ``rate`` (per second), ``gamma_shape``
    and ``gamma_scale`` (None where a window has fewer than MIN_GAPS gaps). The shape is the
    maximum of the window's likelihood profiled along the window's observed mean gap (the mean is
    unbiased under rounding); continuous timestamps use the Gamma MLE (Minka's fixed point).
    """
    a = np.asarray(arrival_s, np.float64)
    t0 = float(a[0]) if t0 is None else t0
    end = float(a[-1])
    nwin = max(int(np.floor((end - t0) / window_s)) + 1, 1)
    starts = t0 + window_s * np.arange(nwin)
    widx = np.minimum(((a - t0) // window_s).astype(np.int64), nwin - 1)
    count = np.bincount(widx, minlength=nwin)
    lengths = np.minimum(starts + window_s, max(end, starts[-1] + 1e-9)) - starts
    lengths[:-1] = window_s
    rate = count / np.maximum(lengths, 1e-9)
    gaps = np.diff(a)
    gw = widx[:-1]
    shape = np.full(nwin, np.nan)
    scale = np.full(nwin, np.nan)
    if len(gaps):
        ng = np.bincount(gw, minlength=nwin)
        if resolution > 0:
            d = np.round(gaps / resolution).astype(np.int64)
            k, m = _window_shapes_discrete(d, gw, nwin)
            shape, scale = k, m / k * resolution
        else:
            k, m = _window_shapes_continuous(gaps, gw, nwin)
            shape, scale = k, m / k
        bad = (ng < MIN_GAPS) | ~np.isfinite(shape) | ~(m > 0)
        shape[bad] = np.nan
        scale[bad] = np.nan
    return {
        "window_s": float(window_s),
        "start_s": starts.tolist(),
        "count": count.tolist(),
        "rate": rate.tolist(),
        "gamma_shape": _nan_to_none(shape),
        "gamma_scale": _nan_to_none(scale),
    }


def _nan_to_none(a):
    return [None if not np.isfinite(v) else float(v) for v in a]


def _window_shapes_continuous(gaps, gw, nwin):
    x = np.where(gaps > 0, gaps, np.nan)
    pos = np.isfinite(x)
    n = np.bincount(gw[pos], minlength=nwin).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.bincount(gw[pos], x[pos], minlength=nwin) / n
        mlog = np.bincount(gw[pos], np.log(x[pos]), minlength=nwin) / n
        s = np.maximum(np.log(m) - mlog, 1e-12)  # 0 for equal gaps: shape at the cap
        k = np.clip((3 - s + np.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s), 1e-3, MAX_SHAPE)
        for _ in range(4):
            k = k - (np.log(k) - special.digamma(k) - s) / (1 / k - special.polygamma(1, k))
            k = np.clip(np.nan_to_num(k, nan=MAX_SHAPE), 1e-3, MAX_SHAPE)
    return k, m


_KGRID = np.exp(np.linspace(np.log(0.03), np.log(MAX_SHAPE), 44))
_KGRID[[0, -1]] = 0.03, MAX_SHAPE
_WCUT = 16  # ticks: window fits use exact interval probabilities below, the density above
_TH_GRID = np.linspace(np.log(1e-5), np.log(1e7), 721)  # log scale in ticks, 4% steps
_TABLE: np.ndarray | None = None


def _logp_table() -> np.ndarray:
    """log P(D = d) for d < _WCUT on the (shape, log scale) grid: (K, len(_TH_GRID), _WCUT)."""
    global _TABLE
    if _TABLE is None:
        xs = np.arange(-1, _WCUT + 1, dtype=float)
        th = np.exp(_TH_GRID)
        G = _G_gamma(xs[None, None, :], _KGRID[:, None, None], th[None, :, None])
        p = G[:, :, 2:] - 2 * G[:, :, 1:-1] + G[:, :, :-2]
        _TABLE = np.log(np.maximum(p, 1e-300))
    return _TABLE


def _profile_loglik(hist, nl, s1, s2, m):
    """Log-likelihood on the shape grid with the scale tied to the mean: (W, K)."""
    table = _logp_table()
    K = _KGRID
    th = m[:, None] / K[None, :]  # (W, K) in ticks
    pos = (np.log(th) - _TH_GRID[0]) / (_TH_GRID[1] - _TH_GRID[0])
    pos = np.clip(pos, 0, len(_TH_GRID) - 1.001)
    i = pos.astype(np.int64)
    f = (pos - i)[:, :, None]
    kk = np.arange(len(K))[None, :]
    lp = table[kk, i] * (1 - f) + table[kk, i + 1] * f  # (W, K, _WCUT)
    part = np.einsum("wd,wkd->wk", hist, lp)
    with np.errstate(divide="ignore", invalid="ignore"):
        large = (
            (K[None, :] - 1) * s2[:, None]
            - s1[:, None] / th
            - nl[:, None] * (K[None, :] * np.log(th) + special.gammaln(K)[None, :])
        )
    return part + np.where(nl[:, None] > 0, large, 0.0)


def _grid_argmax(ll):
    """Best shape per row of a (W, K) log-likelihood grid, refined by a parabola in log shape."""
    K = _KGRID
    best = np.argmax(ll, axis=1)
    j = np.clip(best, 1, len(K) - 2)
    rows = np.arange(len(ll))
    y0, y1, y2 = ll[rows, j - 1], ll[rows, j], ll[rows, j + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = y0 - 2 * y1 + y2
        delta = np.where(denom < 0, 0.5 * (y0 - y2) / denom, 0.0)
    delta = np.clip(np.nan_to_num(delta), -1, 1)
    k = np.exp(np.log(K[j]) + delta * np.log(K[1] / K[0]))
    k[best == 0], k[best == len(K) - 1] = K[0], K[-1]  # at an end of the grid: the bound
    k[~np.isfinite(y1)] = np.nan
    return k


def _window_stats(d, gw, nwin):
    n = np.bincount(gw, minlength=nwin).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.bincount(gw, d.astype(float), minlength=nwin) / n
    small = d < _WCUT
    hist = np.bincount(gw[small] * _WCUT + d[small], minlength=nwin * _WCUT).reshape(nwin, _WCUT)
    big = ~small
    nl = np.bincount(gw[big], minlength=nwin).astype(float)
    s1 = np.bincount(gw[big], d[big].astype(float), minlength=nwin)
    s2 = np.bincount(gw[big], np.log(np.maximum(d[big], 1)), minlength=nwin)
    return n, m, hist.astype(float), nl, s1, s2


def _window_shapes_discrete(d, gw, nwin):
    """Profile likelihood over a log grid of shapes with the scale tied to the window's mean
    tick count (tabulated interval probabilities), refined by a parabola."""
    n, m, hist, nl, s1, s2 = _window_stats(d, gw, nwin)
    k = np.full(nwin, np.nan)
    active = np.flatnonzero((n >= MIN_GAPS) & (m > 0))
    if len(active):
        ll = _profile_loglik(hist[active], nl[active], s1[active], s2[active], m[active])
        k[active] = _grid_argmax(ll)
    return k, m
