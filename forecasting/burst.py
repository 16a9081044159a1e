"""burstpilot's burst-aware forecaster.

Per step it keeps, in O(1):

* a bank of exponentially smoothed levels (one per ``alphas`` entry), each with a damped trend;
* the index of dispersion ``D`` of the counts (variance / mean of a step's count at a locally constant
  rate: 1 for Poisson arrivals, CV² of the inter-arrival times for a Gamma-renewal process), estimated online
  from squared successive differences, which a slowly moving level does not inflate;
* a rise detector: a count more than ``rise_z`` standard deviations above the reference level and in the
  top ``rise_p`` of the ring's one-step residuals, or two in a row beyond ``rise_z2`` / ``rise_p2``, starts a
  burst component (the excess of the new counts over the reference), so a burst onset lifts the forecast
  at the step it is seen (or the next one); the component ends when the fastest level falls back to within
  one standard deviation of the reference;
* the persistence of bursts: for each onset, the share of its excess still present ``persist_lag`` steps
  later, smoothed over onsets (``persist_rate``); the burst component is scaled by it, so series whose
  bursts are one-step spikes stop lifting the horizon mean while level shifts keep doing so.

At forecast time, for a horizon of h steps, it works on the ring of the last ``calib_window_s`` seconds:

1. weights the options (every level, flat or with its trend, plus the burst component decaying by each
   ``rhos`` value per step) by the squared error of their past h-step means on this series
   ((best MSE / MSE) ** ``combine_power``);
2. estimates the relative variance ``v`` of the rate over the horizon (what the level cannot know: bursts
   and drifts) by the method of moments from the realized h-step sums: E[(S - m)^2] = D m + v m^2;
3. models the arrivals in the horizon as negative binomial with mean m = h * level and variance
   D m + v m^2 (a Gamma-mixed over-dispersed count), and the per-step counts within the horizon as
   over-dispersed counts around a Gamma(1, v) level multiplier, which gives the distribution of the peak
   step: P(max <= x) = E_L[F(x | L)^h];
4. recalibrates both distributions on the same ring (quantile recalibration, a conformal-style correction):
   the probability integral transforms of the realized sums and peaks under the past predictive
   distributions give, for a target level q, the level q' whose past quantiles were exceeded with
   frequency 1 - q; the q' quantile of today's distribution is returned. The correction is shrunk toward q
   with a prior weight of ``prior_weight`` origins.

Until the ring holds ``MIN_CALIBRATION`` completed origins of the horizon, the bands are the prior: Poisson
counts (D = 1) around the point forecast, the level's relative variance ``level_cv`` squared.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from burstpilot.errors import BurstpilotError
from burstpilot.forecasting.base import MIN_CALIBRATION, Forecaster, realized

ALPHAS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.7)
# Persistence of a detected burst within the horizon: the excess decays by rho per step.
RHOS = (0.0, 0.5, 0.8, 0.9, 0.97, 1.0)
# Origins inside detected bursts needed before their persistence is learned from the ring.
MIN_BURST_ORIGINS = 6
# Cap on the relative variance v of the horizon's rate (a coefficient of variation of 10): beyond it the
# Gamma level multiplier has no usable quantiles, and no forecast that wide means anything.
MAX_LEVEL_VAR = 100.0
NUMERIC = (
    "rise_z",
    "rise_z2",
    "rise_p",
    "rise_p2",
    "disp_decay",
    "trend_decay",
    "trend_damping",
    "level_cv",
    "prior_weight",
    "combine_power",
    "persist_rate",
)


def _nb_cdf(k: np.ndarray, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Negative binomial CDF (scipy's parameterization) through the regularized incomplete beta function,
    without scipy.stats' per-call argument handling (this runs on every past origin at each forecast)."""
    k = np.floor(k)
    return np.where(k < 0, 0.0, special.betainc(n, np.maximum(k, 0.0) + 1.0, p))


def _nb_params(mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scipy's nbinom (n, p) for a given mean and variance (variance floored just above the mean)."""
    mean = np.maximum(mean, 1e-9)
    var = np.maximum(var, mean * (1.0 + 1e-6))
    p = mean / var
    return mean * p / (1.0 - p), p


def _nb_ppf(qs: np.ndarray, mean: float, var: float) -> np.ndarray:
    """Negative binomial quantiles for a mean and variance. scipy's nbinom.ppf aborts the process (a C++
    domain_error) on a NaN parameter, so the parameters are checked first; where they are not usable, or
    where the mean is so large that the count is continuous for every purpose, the gamma distribution of
    the same mean and variance answers instead."""
    qs = np.asarray(qs, dtype=float)
    mean = max(float(mean), 1e-9)
    var = max(float(var), mean * (1.0 + 1e-6))
    if not (math.isfinite(mean) and math.isfinite(var)):
        return np.full(len(qs), mean if math.isfinite(mean) else 0.0)
    n, p = _nb_params(np.asarray(mean), np.asarray(var))
    if mean <= 1e9 and math.isfinite(float(n)) and float(n) > 0 and 0.0 < float(p) < 1.0:
        out = stats.nbinom.ppf(qs, n, p)
    else:
        out = stats.gamma.ppf(qs, mean * mean / var, scale=var / mean)
    return np.where(np.isfinite(out), out, mean)


def _window_means(counts: np.ndarray) -> np.ndarray:
    """Per ring row: the mean of the observed counts from the start of the ring up to that row (the
    calibration window's mean at the newest row; NaN before the first observed count)."""
    seen = ~np.isnan(counts)
    n = np.cumsum(seen)
    total = np.cumsum(np.where(seen, counts, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


class BurstForecaster(Forecaster):
    name = "burst"
    defaults = {
        "alphas": ALPHAS,
        "rhos": RHOS,
        "rise_z": 3.5,
        "rise_z2": 2.0,
        "rise_p": 0.01,
        "rise_p2": 0.05,
        "disp_decay": 0.02,
        "trend_decay": 0.1,
        "trend_damping": 0.9,
        "level_cv": 0.2,
        "prior_weight": 20.0,
        "peak_nodes": 8,
        "combine_power": 8.0,
        "persist_lag": 2,
        "persist_rate": 0.2,
    }
    state_fields = (
        "levels",
        "trends",
        "burst",
        "persist",
        "pending",
        "pending_age",
        "prev_x",
        "dsq",
        "dmean",
        "streak",
        "rises",
    )

    def _init_model(self) -> None:
        p = self.params
        alphas = p["alphas"]
        if not isinstance(alphas, list | tuple) or not alphas:
            raise BurstpilotError(f"model 'burst': alphas must be a non-empty list, got {alphas!r}")
        self.alphas = [float(a) for a in alphas]
        if not all(0.0 < a <= 1.0 for a in self.alphas):
            raise BurstpilotError(f"model 'burst': every alpha must be in (0, 1], got {alphas!r}")
        self.params["alphas"] = list(self.alphas)
        rhos = p["rhos"]
        if not isinstance(rhos, list | tuple) or not rhos or not all(0.0 <= float(r) <= 1.0 for r in rhos):
            raise BurstpilotError(
                f"model 'burst': rhos must be a non-empty list of values in [0, 1], got {rhos!r}"
            )
        self.rhos = [float(r) for r in rhos]
        self.params["rhos"] = list(self.rhos)
        for key in (*NUMERIC, "peak_nodes", "persist_lag"):
            try:
                p[key] = float(p[key]) if key in NUMERIC else int(p[key])
            except (TypeError, ValueError):
                raise BurstpilotError(f"model 'burst': {key} must be a number, got {p[key]!r}") from None
        for key in ("rise_z", "rise_z2", "level_cv", "prior_weight"):
            if not float(p[key]) >= 0.0:
                raise BurstpilotError(f"model 'burst': {key} must be >= 0, got {p[key]!r}")
        for key in ("disp_decay", "trend_decay", "persist_rate"):
            if not 0.0 < float(p[key]) <= 1.0:
                raise BurstpilotError(f"model 'burst': {key} must be in (0, 1], got {p[key]!r}")
        if not 0.0 <= float(p["trend_damping"]) < 1.0:
            raise BurstpilotError(
                f"model 'burst': trend_damping must be in [0, 1), got {p['trend_damping']!r}"
            )
        if p["persist_lag"] < 1:
            raise BurstpilotError(f"model 'burst': persist_lag must be >= 1, got {p['persist_lag']!r}")
        if int(p["peak_nodes"]) < 1:
            raise BurstpilotError(f"model 'burst': peak_nodes must be >= 1, got {p['peak_nodes']!r}")
        self.ref = min(range(len(self.alphas)), key=lambda i: abs(self.alphas[i] - 0.15))
        self.levels = [math.nan] * len(self.alphas)
        self.trends = [0.0] * len(self.alphas)  # per level: EW mean of its smoothing increments
        self.burst = 0.0  # excess of the fastest level over the reference while a rise is on
        self.persist = 1.0  # learned share of an onset's excess still there persist_lag steps later
        self.pending = 0.0  # excess of the onset being followed (0: none)
        self.pending_age = 0
        self.prev_x = math.nan
        self.dsq = math.nan  # EW mean of (x_t - x_{t-1})^2 / 2
        self.dmean = math.nan  # EW mean of x
        self.streak = 0  # consecutive steps above rise_z2 (and in the upper rise_p2 tail)
        self.rises = 0  # rise detections so far
        self._selection = None  # (n_steps, h) -> the last _select result; derived, not state

    @property
    def snapshot_width(self) -> int:  # type: ignore[override]
        return 2 * len(self.params.get("alphas", ALPHAS)) + 2

    # -- per step -------------------------------------------------------------------------------------

    def dispersion(self) -> float:
        """Current index of dispersion D (>= 1)."""
        if math.isnan(self.dsq) or not self.dmean > 0:
            return 1.0
        return max(self.dsq / self.dmean, 1.0)

    def _observe(self, x: float) -> None:
        p = self.params
        if math.isnan(self.levels[0]):
            self.levels = [x] * len(self.alphas)
            self.dmean = x
            self.prev_x = x
            return
        d = self.dispersion()
        ref = self.levels[self.ref]
        z = (x - ref) / math.sqrt(d * max(ref, 1.0))
        # Dispersion: successive differences, Huber-clipped so one burst does not blow it up for long.
        if not math.isnan(self.prev_x):
            half_sq = 0.5 * (x - self.prev_x) ** 2
            cap = 25.0 * d * max(self.dmean, 1.0)
            self.dsq = half_sq if math.isnan(self.dsq) else self.dsq
            self.dsq += p["disp_decay"] * (min(half_sq, cap) - self.dsq)
        self.dmean += p["disp_decay"] * (x - self.dmean)
        beta = p["trend_decay"]
        for i, a in enumerate(self.alphas):
            step = a * (x - self.levels[i])
            self.levels[i] += step
            self.trends[i] += beta * (step - self.trends[i])
        # Rise detector: one count far out (z > rise_z and in the upper rise_p tail of the ring's
        # residuals), or two in a row beyond rise_z2 / rise_p2.
        up = self._tail_probability(x, ref) if z > p["rise_z2"] else 1.0
        self.streak = self.streak + 1 if up < p["rise_p2"] else 0
        onset = self.streak >= 2 or z > p["rise_z"] and up < p["rise_p"]
        new_ref = self.levels[self.ref]
        excess = max(x if self.streak < 2 else 0.5 * (x + self.prev_x), self.levels[-1]) - new_ref
        if self.pending > 0.0:
            # How much of an onset's excess is still there persist_lag steps later: the learned persistence.
            self.pending_age += 1
            if self.pending_age >= p["persist_lag"]:
                kept = min(max((x - new_ref) / self.pending, 0.0), 1.0)
                self.persist += p["persist_rate"] * (kept - self.persist)
                self.pending = 0.0
        if onset:
            if self.burst == 0.0:
                self.rises += 1
                if self.pending == 0.0 and excess > 0.0:
                    self.pending, self.pending_age = excess, 0
            self.burst = max(excess, 0.0)
        elif self.burst > 0.0:
            # The burst lasts while the fastest level stays a step's standard deviation above the reference.
            fast_excess = self.levels[-1] - new_ref
            self.burst = fast_excess if fast_excess > math.sqrt(d * max(new_ref, 1.0)) else 0.0
        self.prev_x = x

    def _tail_probability(self, x: float, ref: float) -> float:
        """Share of the ring's one-step residuals (count minus the previous reference level, over the
        square root of that level) at least as large as this one; 0 while the ring is short. Heavy-tailed series (token counts) thus need a larger jump to count as
        a rise than the dispersion alone says."""
        rows = self._ring.ordered()
        if len(rows) <= MIN_CALIBRATION:
            return 0.0
        prev = rows[:-1, 1 + self.ref]
        resid = (rows[1:, 0] - prev) / np.sqrt(np.maximum(prev, 1.0))
        resid = resid[~np.isnan(resid)]
        if len(resid) < MIN_CALIBRATION:
            return 0.0
        s = (x - ref) / math.sqrt(max(ref, 1.0))
        return float(np.mean(resid >= s))

    def _observe_missing(self) -> None:
        # No difference across a gap, and a rise needs two consecutive observed steps.
        self.prev_x = math.nan
        self.streak = 0

    def _snapshot(self) -> tuple[float, ...]:
        return (*self.levels, *self.trends, self.burst * self.persist, self.dispersion())

    def trend_weight(self, h: int) -> float:
        phi = float(self.params["trend_damping"])
        if phi == 0.0:
            return 0.0
        return float(np.cumsum(phi ** np.arange(1, h + 1)).mean())

    def burst_weights(self, h: int) -> np.ndarray:
        """Mean over i = 1..h of rho^i, per persistence option."""
        steps = np.arange(1, h + 1)
        return np.array([float(np.mean(r**steps)) for r in self.rhos])

    def _options(
        self, levels: np.ndarray, trends: np.ndarray, window: np.ndarray, burst: np.ndarray, h: int
    ) -> np.ndarray:
        """Predictions of every option per row, shape (n, (2K+1)*R): each level flat or with its damped trend,
        and the calibration window's mean (``window``), each plus the burst excess with each persistence."""
        base = np.concatenate([levels, levels + trends * self.trend_weight(h), window[:, None]], axis=1)
        lift = burst[:, None] * self.burst_weights(h)[None, :]
        return np.maximum(base[:, :, None] + lift[:, None, :], 0.0).reshape(len(levels), -1)

    # -- forecast -------------------------------------------------------------------------------------

    def _select(
        self, h: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Weights of the options (each level, flat or with its damped trend, plus the burst excess with
        each persistence rho) from the squared error of their past h-step means on the ring
        (inverse-MSE^combine_power weights); with the past origins' realized sums and peaks, combined
        predictions and dispersions. Until the ring holds MIN_BURST_ORIGINS origins inside detected bursts,
        a burst is taken to last the whole horizon (the largest rho), the cautious choice."""
        key = (self.n_steps, h)
        if self._selection is not None and self._selection[0] == key:
            return self._selection[1]
        result = self._select_uncached(h)
        self._selection = (key, result)  # forecast() asks twice (point, then bands) per call
        return result

    def _select_uncached(self, h: int) -> tuple[np.ndarray, ...]:
        rows = self._ring.ordered()
        idx, sums, peaks = realized(rows[:, 0], h)
        k, r = len(self.alphas), len(self.rhos)
        persist = int(np.argmax(self.rhos))
        w = np.zeros((2 * k + 1, r))
        if len(idx) < MIN_CALIBRATION:
            w[self.ref, persist] = 1.0
            return w.ravel(), idx, sums, peaks, np.zeros(0), np.zeros(0)
        levels = rows[idx, 1 : 1 + k]
        trends = rows[idx, 1 + k : 1 + 2 * k]
        burst = rows[idx, 1 + 2 * k]
        disp = rows[idx, 2 + 2 * k]
        window = _window_means(rows[:, 0])[idx]
        window = np.where(np.isnan(window), levels[:, self.ref], window)
        options = self._options(levels, trends, window, burst, h)
        mse = ((options - (sums / h)[:, None]) ** 2).mean(axis=0).reshape(2 * k + 1, r)
        if np.count_nonzero(burst > 0) < MIN_BURST_ORIGINS:
            mse = np.where(np.arange(r)[None, :] == persist, mse, np.inf)
        floor = max(float(mse.min()), 1e-12 * (1.0 + float(np.mean(sums / h)) ** 2))  # ties: equal weights
        w = (floor / np.maximum(mse, floor)) ** float(self.params["combine_power"])
        w = (w / w.sum()).ravel()
        return w, idx, sums, peaks, options @ w, disp

    def _point(self, h: int) -> float:
        w = self._select(h)[0]
        window = _window_means(self._ring.ordered()[:, 0])[-1]
        if math.isnan(window):  # every step of the window missing
            window = self.levels[self.ref]
        one = np.asarray
        burst = one([self.burst * self.persist])
        options = self._options(one([self.levels]), one([self.trends]), one([window]), burst, h)
        return float(options[0] @ w)

    def _bands(self, h: int, mean_count: float, qs: tuple[float, ...]) -> tuple[list[float], list[float]]:
        _, idx, sums, peaks, pred, disp = self._select(h)
        d_now = self.dispersion()
        v_prior = float(self.params["level_cv"]) ** 2
        qs_arr = np.asarray(qs)
        if len(pred) >= MIN_CALIBRATION:
            m = np.maximum(pred * h, 1e-9)
            excess = ((sums - m) ** 2 - disp * m).sum()
            v = min(max(excess / (m**2).sum(), 0.0), MAX_LEVEL_VAR)
            w = float(self.params["prior_weight"])
            n = len(pred)
            u_sum = self._pit_sum(sums, m, disp, v)
            u_peak = self._pit_peak(peaks, pred, disp, v, h)
            q_sum = (n * np.quantile(u_sum, qs_arr) + w * qs_arr) / (n + w)
            q_peak = (n * np.quantile(u_peak, qs_arr) + w * qs_arr) / (n + w)
        else:
            # The prior: Poisson counts around a level with a CV of level_cv. Not the dispersion measured so far:
            # on a young history it rests on a few successive differences (an idle step, then 93 requests,
            # reads D above 2000), and its tails would ask for the whole pool.
            v, q_sum, q_peak, d_now = v_prior, qs_arr, qs_arr, 1.0
        q_sum = np.clip(q_sum, 1e-4, 1 - 1e-4)
        q_peak = np.clip(q_peak, 1e-4, 1 - 1e-4)
        m_now = max(mean_count * h, 1e-9)
        rate_q = _nb_ppf(q_sum, m_now, d_now * m_now + v * m_now**2) / h
        peak_q = self._peak_ppf(q_peak, max(mean_count, 1e-9), d_now, v, h)
        return list(rate_q), list(np.maximum(peak_q, rate_q))

    @staticmethod
    def _pit_sum(sums: np.ndarray, m: np.ndarray, disp: np.ndarray, v: float) -> np.ndarray:
        n, p = _nb_params(m, disp * m + v * m**2)
        s = np.round(sums)
        return 0.5 * (_nb_cdf(s - 1, n, p) + _nb_cdf(s, n, p))

    def _nodes(self, v: float) -> np.ndarray:
        """Equal-probability nodes of the Gamma(mean 1, variance v) level multiplier."""
        k = int(self.params["peak_nodes"])
        if v <= 1e-9 or k == 1:
            return np.ones(1)
        shape = 1.0 / v
        nodes = stats.gamma.ppf((np.arange(k) + 0.5) / k, shape, scale=v)
        mean = float(nodes.mean())
        if not (math.isfinite(mean) and mean > 0.0):  # a shape too small for mid-bin quantiles
            return np.ones(1)
        return nodes / mean

    def _peak_cdf(self, x: np.ndarray, mu: np.ndarray, disp: np.ndarray, v: float, h: int) -> np.ndarray:
        """P(max of h steps <= x), x and mu/disp broadcast along the first axis."""
        nodes = self._nodes(v)
        means = np.maximum(mu[:, None] * nodes[None, :], 1e-9)
        n, p = _nb_params(means, disp[:, None] * means)
        f = _nb_cdf(np.broadcast_to(x[:, None], n.shape), n, p)
        return (f**h).mean(axis=1)

    def _pit_peak(self, peaks: np.ndarray, mu: np.ndarray, disp: np.ndarray, v: float, h: int) -> np.ndarray:
        x = np.round(peaks)
        return 0.5 * (self._peak_cdf(x - 1, mu, disp, v, h) + self._peak_cdf(x, mu, disp, v, h))

    def _peak_ppf(self, qs: np.ndarray, mu: float, disp: float, v: float, h: int) -> np.ndarray:
        nodes = self._nodes(v)
        top = float(nodes.max()) * mu
        hi = float(_nb_ppf(np.asarray([1.0 - 1e-4 / h]), top, disp * top)[0]) + 1.0
        # Candidate values: every integer up to 400, a geometric grid above.
        if hi <= 400:
            grid = np.arange(0.0, hi + 1.0)
        else:
            grid = np.unique(np.concatenate([np.arange(0.0, 400.0), np.round(np.geomspace(400.0, hi, 300))]))
        cdf = self._peak_cdf(grid, np.full(len(grid), mu), np.full(len(grid), disp), v, h)
        pos = np.searchsorted(cdf, qs, side="left")
        return grid[np.minimum(pos, len(grid) - 1)]
