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


GRIDS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
GRIDS += (6.0, 10.0, 15.0, 20.0, 30.0, 60.0)
GRID_TOLERANCE = 0.005  # a timestamp is on a grid when within 0.5% of a grid step of a grid point
GRID_SHARE = 0.99  # "nearly every timestamp": at least this share on the grid
_PHASE_BINS = 1000
_PHASE_ALL, _PHASE_STRIDE = 1 << 17, 16


class ResolutionDetector:
    """The effective timestamp grid, found from the data in one pass over any number of chunks.

    Two steps. The *unit*: the coarsest of 1 s, 0.1 s, 10 ms, 1 ms that every timestamp is an exact
    multiple of (else, when all timestamps are multiples of the smallest positive gap of the first
    chunk measured from the first timestamp, that gap: a 1-s trace replayed 3x faster has 1/3-s
    ticks; else continuous). The *grid*: the largest candidate step (GRIDS, at least the unit) on
    which at least 99% of timestamps lie within 0.5% of a step of a grid point, at a common phase
    found from a histogram of phases, and where chance cannot explain it (a finer-grid trace puts
    all n points on a grid g/r times coarser with probability (r/g)^n; that must be below 1e-6).
    Collectors that batch requests onto a coarser grid (Mooncake: milliseconds on a 3-s grid with a
    few ms of jitter) are found this way.
    """

    def __init__(self):
        self.n = 0
        self.first: float | None = None
        self.exact = dict.fromkeys(RESOLUTIONS, True)
        self.tick: float | None = None  # smallest positive gap of the first chunk
        self.tick_ok = True
        self.phases = np.zeros((len(GRIDS), _PHASE_BINS), np.int64)
        self.sampled = 0

    def add(self, arrival_s: np.ndarray) -> None:
        a = np.asarray(arrival_s, np.float64)
        if len(a) == 0:
            return
        if self.first is None:
            self.first = float(a[0])
            gaps = np.diff(a)
            pos = gaps[gaps > 0]
            if len(pos) and (gaps == 0).any() and pos.min() >= 1e-6:
                self.tick = float(pos.min())
        self.n += len(a)
        # a multiple of a coarser unit is a multiple of every finer one: test the coarsest still open
        for r in RESOLUTIONS:
            if self.exact[r]:
                if _multiple_of(a, r):
                    break
                self.exact[r] = False
        if self.tick is not None and self.tick_ok:
            self.tick_ok = _multiple_of(a - self.first, self.tick, measured=True)
        # the phase histograms see every row of the first _PHASE_ALL rows, then every 16th (by the
        # row's index in the whole trace, so any chunking gives the same answer)
        idx = np.arange(self.n - len(a), self.n)
        sample = a[(idx < _PHASE_ALL) | (idx % _PHASE_STRIDE == 0)]
        self.sampled += len(sample)
        nonneg = len(sample) and sample.min() >= 0
        fl = np.empty_like(sample)
        for i, g in enumerate(GRIDS):
            if nonneg:  # x - floor(x) is exact and equals np.mod(x, 1.0) for x >= 0, at less cost
                ph = sample / g
                np.floor(ph, out=fl)
                ph -= fl
            else:
                ph = np.mod(sample / g, 1.0)
            ph *= _PHASE_BINS
            self.phases[i] += np.bincount(ph.astype(np.int64) % _PHASE_BINS, minlength=_PHASE_BINS)

    def finish(self) -> dict:
        """{resolution_s, unit_s, grid_share, found_by}: resolution_s is the grid to fit at (0 =
        continuous timestamps)."""
        if self.n < 2:
            return {"resolution_s": 0.0, "unit_s": 0.0, "grid_share": None, "found_by": "too few timestamps"}
        unit = next((r for r in RESOLUTIONS if self.exact[r]), 0.0)
        how = f"every timestamp a multiple of {unit:g} s" if unit else ""
        if not unit and self.tick is not None and self.tick_ok:
            unit = self.tick
            how = f"every timestamp a multiple of the smallest gap ({unit:.6g} s) from the first"
        best, share_best = unit, None
        w = int(np.ceil(GRID_TOLERANCE * _PHASE_BINS))
        for i, g in enumerate(GRIDS):
            if g <= max(unit, 0.0) * (1 + 1e-9) and unit:
                continue
            if unit and abs(g / unit - round(g / unit)) > 1e-6:
                continue  # a grid of the data's own unit only
            h = self.phases[i]
            # share of timestamps within the tolerance of the best common phase (circular)
            win = np.convolve(np.concatenate([h[-w:], h, h[:w]]), np.ones(2 * w + 1, np.int64), "valid")
            share = float(win.max() / self.sampled)
            finer = unit if unit else g * 2 * GRID_TOLERANCE
            chance = self.sampled * np.log(g / finer)
            if share >= GRID_SHARE and chance > np.log(1e6) and g > best:
                best, share_best = g, share
        if share_best is not None:
            how = (
                f"{100 * share_best:.1f}% of timestamps within {100 * GRID_TOLERANCE:g}% of a {best:g}-s grid"
                + (f" (stored unit {unit:g} s)" if unit else " (timestamps otherwise continuous)")
            )
        elif not unit:
            how = "continuous: no grid found"
        return {"resolution_s": float(best), "unit_s": float(unit), "grid_share": share_best, "found_by": how}


def _multiple_of(x: np.ndarray, r: float, measured: bool = False) -> bool:
    """Whether every x is a whole multiple of r. ``measured``: r is itself a difference of two
    timestamps (the smallest gap), so it carries their rounding error, which grows with |q|."""
    q = x / r
    if np.array_equal(q, np.rint(q)):  # the common case (whole ticks), in two passes
        return True
    # a value stored on the grid is off by float rounding only: about 1e-16 of its size. A tolerance
    # relative to the tick count itself (1e-6 |q|) would accept anything once |q| passes 5e5.
    tol = np.minimum(0.01, 1e-6 * np.abs(q)) if measured else 1e-12 * np.abs(q)
    return bool(np.all(np.abs(q - np.rint(q)) <= 1e-9 + tol))


def detect_resolution(arrival_s: np.ndarray) -> float:
    """The timestamp grid to fit at (seconds; 0 = continuous): see ResolutionDetector."""
    det = ResolutionDetector()
    det.add(arrival_s)
    return det.finish()["resolution_s"]


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


_NONE_FIT = (
    "gamma_shape",
    "gamma_scale",
    "gamma_shape_ci95",
    "cv",
    "ks_gamma",
    "ks_exponential",
    "weibull_shape",
    "weibull_scale",
    "ks_weibull",
    "exponential_scale",
    "mean_s",
)
MIN_TICKS_PER_GAP = 0.2  # below: most arrivals share a tick with others and only counts per tick remain
MAX_CI_RATIO = 2.0  # a 95% interval wider than a factor 2 does not identify the shape


def fit_interarrival(gaps_s: np.ndarray, resolution: float) -> dict:
    """Gamma, exponential and Weibull fits of inter-arrival gaps with KS distances.

    Scales are in seconds; ``gamma_scale`` is numpy's scale (mean gap = shape * scale). With a
    grid (``resolution`` > 0) the gaps are fitted as interval-censored tick counts (``fit_ticks``);
    otherwise by continuous maximum likelihood (``fit_continuous``)."""
    gaps_s = np.asarray(gaps_s, np.float64)
    n = len(gaps_s)
    mean = float(gaps_s.mean()) if n else 0.0
    cv = float(gaps_s.std() / mean) if n and mean > 0 else None
    if resolution > 0:
        values, counts = _value_counts(np.round(gaps_s / resolution).astype(np.int64))
        return fit_ticks(values, counts, resolution, mean, cv)
    pos = gaps_s[gaps_s > 0]
    sample = np.sort(gaps_s[subsample(n)])
    return fit_continuous(
        n, mean, cv, len(pos), float(np.log(pos).sum()), float(pos.min()) if len(pos) else 0.0, sample
    )


def _empty(out: dict) -> dict:
    return out | dict.fromkeys(_NONE_FIT) | {"identifiable": False}


def fit_ticks(values: np.ndarray, counts: np.ndarray, resolution: float, mean_s: float, cv) -> dict:
    """Interval-censored fits of gaps seen as whole ticks of ``resolution`` (distinct tick
    counts ``values`` with their ``counts``), with a 95% profile-likelihood interval of the shape
    and whether the grid lets the data identify it (``identifiable``)."""
    values = np.asarray(values, np.int64)
    counts = np.asarray(counts, np.int64)
    n = int(counts.sum())
    out = {"method": method_name(resolution), "resolution_s": resolution, "n": n}
    if n < MIN_GAPS or not np.any(values > 0):
        return _empty(out)
    values_f = values.astype(np.float64)
    m = float(np.dot(values_f, counts) / n)
    stats = _stats_from_hist(values, counts)
    k0 = float(_fit_stats_discrete(*stats)[0][0])
    k0 = k0 if np.isfinite(k0) else 1.0
    (k, s), _ = _mle_discrete("gamma", values_f, counts, (k0, m / k0))
    if k > MAX_SHAPE:  # (nearly) regular arrivals: the likelihood keeps rising with the shape
        k, s = MAX_SHAPE, m / MAX_SHAPE
    lo, hi = _profile_ci(values_f, counts, k, m)
    ks_g = _ks_discrete(values_f, counts, "gamma", k, s)
    (wk, wl), _ = _mle_discrete("weibull", values_f, counts, (min(max(k0**0.5, 0.1), 5.0), m))
    ks_w = _ks_discrete(values_f, counts, "weibull", wk, wl)
    es = _exp_discrete(values_f, counts)
    ks_e = _ks_discrete(values_f, counts, "gamma", 1.0, es)
    r = resolution
    identifiable = m >= MIN_TICKS_PER_GAP and lo > 0 and hi / lo <= MAX_CI_RATIO
    return out | {
        "gamma_shape": float(k),
        "gamma_scale": float(s * r),
        "gamma_shape_ci95": [float(lo), float(hi)],
        "cv": cv,
        "ks_gamma": float(ks_g),
        "ks_exponential": float(ks_e),
        "weibull_shape": float(wk),
        "weibull_scale": float(wl * r),
        "ks_weibull": float(ks_w),
        "exponential_scale": float(es * r),
        "mean_s": mean_s,
        "mean_ticks": m,
        "identifiable": bool(identifiable),
    }


def _profile_ci(values_f, counts, k, m) -> tuple[float, float]:
    """95% interval of the shape from the curvature of the profile log-likelihood in log shape,
    with the mean held at the observed mean (the mean of tick counts is unbiased under rounding)."""
    u, h = np.log(k), 0.02

    def ll(uu):
        kk = np.exp(uu)
        return float(np.dot(counts, _discrete_logp("gamma", values_f, kk, m / kk)))

    curv = (ll(u + h) - 2 * ll(u) + ll(u - h)) / h**2
    se = 1 / np.sqrt(-curv) if curv < 0 else np.inf  # a flat (or not concave) profile: no interval
    if not np.isfinite(se):
        return 0.0, float("inf")
    return float(k * np.exp(-1.96 * se)), float(min(k * np.exp(1.96 * se), np.finfo(float).max))


def fit_continuous(n: int, mean_s: float, cv, npos: int, sum_log_pos: float, min_pos: float, sample) -> dict:
    """Continuous maximum likelihood (Gamma from its sufficient statistics, Weibull and the KS
    distances on ``sample``, sorted gaps). Zero gaps count as half the smallest positive gap."""
    out = {"method": method_name(0.0), "resolution_s": 0.0, "n": int(n)}
    if n < MIN_GAPS or npos == 0:
        return _empty(out)
    zeros = n - npos
    half = min_pos / 2
    mean = (mean_s * n + zeros * half) / n
    mean_log = (sum_log_pos + zeros * np.log(half)) / n
    k = _gamma_shape_from_stats(np.log(mean) - mean_log)
    s = mean / k
    xs = np.where(np.asarray(sample) > 0, sample, half)
    wk, wl = weibull_mle(xs)
    es = mean
    se_u = 1 / np.sqrt(max(n * (special.polygamma(1, k) - 1 / k), 1e-300)) / k
    lo, hi = k * np.exp(-1.96 * k * se_u), k * np.exp(1.96 * k * se_u)
    return out | {
        "gamma_shape": float(k),
        "gamma_scale": float(s),
        "gamma_shape_ci95": [float(lo), float(hi)],
        "cv": cv,
        "ks_gamma": ks_sorted(xs, lambda v: special.gammainc(k, v / s)),
        "ks_exponential": ks_sorted(xs, lambda v: -np.expm1(-v / es)),
        "weibull_shape": float(wk),
        "weibull_scale": float(wl),
        "ks_weibull": ks_sorted(xs, lambda v: _cdf_weibull(v, wk, wl)),
        "exponential_scale": float(es),
        "mean_s": mean_s,
        "identifiable": bool(lo > 0 and hi / lo <= MAX_CI_RATIO),
    }


def _gamma_shape_from_stats(sst: float) -> float:
    """Gamma MLE shape from log(mean) - mean(log): Minka's approximation and Newton steps."""
    if sst <= 1e-12:  # equal gaps
        return MAX_SHAPE
    k = min((3 - sst + np.sqrt((sst - 3) ** 2 + 24 * sst)) / (12 * sst), MAX_SHAPE)
    for _ in range(6):
        k -= (np.log(k) - special.digamma(k) - sst) / (1 / k - special.polygamma(1, k))
        k = float(np.clip(np.nan_to_num(k, nan=MAX_SHAPE), 1e-3, MAX_SHAPE))
    return float(k)


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
    """Gamma refits in consecutive windows of one time-ordered arrival array (see WindowStats)."""
    a = np.asarray(arrival_s, np.float64)
    t0 = float(a[0]) if t0 is None else t0
    ws = WindowStats(t0, float(a[-1]), window_s, resolution)
    ws.add(a)
    return ws.finish()


class WindowStats:
    """Per-window sufficient statistics of the gaps, accumulated over time-ordered chunks, and the
    per-window Gamma refits (the study refits every 20 minutes).

    A gap belongs to the window of its earlier arrival. With a grid the statistics are the
    histogram of tick counts below _WCUT and, above, their count, sum and sum of logs; the shape
    maximizes the window's interval-censored likelihood profiled along the window's mean tick
    count (unbiased under rounding), on a log grid of shapes refined by a parabola whose curvature
    gives the standard error. Continuous timestamps use the Gamma MLE from the sums of gaps and log
    gaps. Both are then bias-corrected to first order, k (n - 3) / n + 2 / (3 n) (the small-sample
    bias of the Gamma shape MLE), and come with a 95% interval. Windows with fewer than MIN_GAPS gaps
    get none.
    """

    def __init__(self, t0: float, t1: float, window_s: float, resolution: float):
        self.t0, self.window_s, self.resolution = float(t0), float(window_s), float(resolution)
        self.end = float(t1)
        self.nwin = max(int(np.floor((self.end - self.t0) / window_s)) + 1, 1)
        w = self.nwin
        self.count = np.zeros(w, np.int64)
        self.failures = np.zeros(w, np.int64)
        self.ng = np.zeros(w, np.int64)
        self.sum = np.zeros(w)
        if resolution > 0:
            self.hist = np.zeros((w, _WCUT), np.int64)
            self.nl = np.zeros(w)
            self.s2 = np.zeros(w)
        else:
            self.npos = np.zeros(w)
            self.slog = np.zeros(w)
        self.last: float | None = None

    def window_of(self, a: np.ndarray) -> np.ndarray:
        return np.clip(((a - self.t0) // self.window_s).astype(np.int64), 0, self.nwin - 1)

    def add(self, a: np.ndarray, failed: np.ndarray | None = None, sec=None, gaps=None, ticks=None) -> None:
        """A time-ordered chunk; a caller that has them passes ``sec`` (whole seconds since t0,
        int64), ``gaps`` (from the previous chunk's last arrival on) and ``ticks`` (the gaps in
        whole grid steps), which are then not computed again."""
        if len(a) == 0:
            return
        w = self.nwin
        if sec is not None and self.window_s.is_integer():
            # floor(floor(x) / W) == floor(x / W) for a whole W: the same windows as window_of
            widx = np.minimum(sec // int(self.window_s), w - 1)
        else:
            widx = self.window_of(a)
        self.count += np.bincount(widx, minlength=w)
        if failed is not None:
            self.failures += np.bincount(widx[np.asarray(failed, bool)], minlength=w)
        if self.last is None:
            gaps, gw = (np.diff(a) if gaps is None else gaps), widx[:-1]
        else:
            gaps = np.diff(a, prepend=self.last) if gaps is None else gaps
            gw = np.concatenate([self.window_of(np.array([self.last])), widx[:-1]])
        self.last = float(a[-1])
        if len(gaps) == 0:
            return
        self.ng += np.bincount(gw, minlength=w)
        if self.resolution > 0:
            d = np.round(gaps / self.resolution).astype(np.int64) if ticks is None else ticks
            self.sum += np.bincount(gw, d.astype(float), minlength=w)
            small = d < _WCUT
            self.hist += np.bincount(gw[small] * _WCUT + d[small], minlength=w * _WCUT).reshape(w, _WCUT)
            big = ~small
            self.nl += np.bincount(gw[big], minlength=w)
            self.s2 += np.bincount(gw[big], np.log(np.maximum(d[big], 1)), minlength=w)
        else:
            self.sum += np.bincount(gw, gaps, minlength=w)
            pos = gaps > 0
            self.npos += np.bincount(gw[pos], minlength=w)
            self.slog += np.bincount(gw[pos], np.log(gaps[pos]), minlength=w)

    def finish(self) -> dict:
        """Column lists: ``start_s``, ``count``, ``rate`` (per second), ``gamma_shape`` with its
        95% interval (``gamma_shape_lo``, ``gamma_shape_hi``) and ``gamma_scale``; None where a
        window has too few gaps."""
        w = self.nwin
        starts = self.t0 + self.window_s * np.arange(w)
        lengths = np.full(w, self.window_s)
        lengths[-1] = max(self.end - starts[-1], 1e-9) if w > 1 else max(self.end - starts[-1], 1e-9)
        rate = self.count / lengths
        n = self.ng.astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            m = self.sum / n
        shape = np.full(w, np.nan)
        se_u = np.full(w, np.nan)
        active = np.flatnonzero((self.ng >= MIN_GAPS) & (m > 0))
        if len(active):
            if self.resolution > 0:
                s1 = self.sum - self.hist @ np.arange(_WCUT)
                k, se = _fit_stats_discrete(
                    n[active],
                    m[active],
                    self.hist[active].astype(float),
                    self.nl[active],
                    s1[active],
                    self.s2[active],
                )
            else:
                k, se = _fit_stats_continuous(n[active], m[active], self.npos[active], self.slog[active])
            # first-order small-sample bias correction of the shape MLE
            k = np.where(k < MAX_SHAPE, k * (n[active] - 3) / n[active] + 2 / (3 * n[active]), k)
            shape[active], se_u[active] = k, se
        scale = m / shape * (self.resolution if self.resolution > 0 else 1.0)
        lo, hi = shape * np.exp(-1.96 * se_u), shape * np.exp(1.96 * se_u)
        return {
            "window_s": float(self.window_s),
            "start_s": starts.tolist(),
            "count": self.count.tolist(),
            "rate": rate.tolist(),
            "gamma_shape": _nan_to_none(shape),
            "gamma_shape_lo": _nan_to_none(lo),
            "gamma_shape_hi": _nan_to_none(hi),
            "gamma_scale": _nan_to_none(scale),
        }


def _nan_to_none(a):
    a = np.asarray(a, np.float64)
    return [v if ok else None for v, ok in zip(a.tolist(), np.isfinite(a).tolist(), strict=True)]


def _fit_stats_continuous(n, m, npos, slog):
    """Gamma shape MLE per window from the sums (zero gaps ignored) and the standard error of
    log shape from the Fisher information with the mean profiled out."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mlog = slog / npos
        mpos = m * n / npos  # mean of the positive gaps (zeros add nothing to the sum)
        s = np.maximum(np.log(mpos) - mlog, 1e-12)  # 0 for equal gaps: shape at the cap
        k = np.clip((3 - s + np.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s), 1e-3, MAX_SHAPE)
        for _ in range(4):
            k = k - (np.log(k) - special.digamma(k) - s) / (1 / k - special.polygamma(1, k))
            k = np.clip(np.nan_to_num(k, nan=MAX_SHAPE), 1e-3, MAX_SHAPE)
        se_u = 1 / np.sqrt(np.maximum(npos * (special.polygamma(1, k) - 1 / k), 1e-300)) / k
    return k, se_u


def _stats_from_hist(values: np.ndarray, counts: np.ndarray):
    """One window's statistics from a histogram of tick counts."""
    small = values < _WCUT
    hist = np.zeros((1, _WCUT))
    hist[0, values[small]] = counts[small]
    big = ~small
    n = np.array([float(counts.sum())])
    m = np.array([float(np.dot(values, counts)) / n[0]])
    nl = np.array([float(counts[big].sum())])
    s1 = np.array([float(np.dot(values[big].astype(float), counts[big]))])
    s2 = np.array([float(np.dot(np.log(np.maximum(values[big], 1)), counts[big]))])
    return n, m, hist, nl, s1, s2


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
    """Best shape per row of a (W, K) log-likelihood grid, refined by a parabola in log shape;
    and the standard error of log shape from the parabola's curvature."""
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
    h = np.log(K[2] / K[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        se_u = np.where(denom < 0, h / np.sqrt(-denom), np.nan)
    return k, se_u


def _fit_stats_discrete(n, m, hist, nl, s1, s2):
    """Per-window shape (and standard error of log shape) from tick statistics."""
    k = np.full(len(n), np.nan)
    se = np.full(len(n), np.nan)
    ok = np.flatnonzero(m > 0)
    if len(ok):
        ll = _profile_loglik(hist[ok], nl[ok], s1[ok], s2[ok], m[ok])
        k[ok], se[ok] = _grid_argmax(ll)
    return k, se
