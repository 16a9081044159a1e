"""The baseline forecasters: last value, EWMA, Holt and damped ETS (statsmodels), daily seasonal.

Holt and ETS are fitted with statsmodels on the recent window and refitted only every ``refit_every``
steps; between refits the level and trend follow the fitted smoothing recursions one step at a time, so an
update costs microseconds and a refit is amortized over many steps.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.forecasting.base import Forecaster


def _check_fraction(params: dict[str, Any], key: str, model: str, low: float = 0.0) -> float:
    value = params[key]
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BurstpilotError(f"model {model!r}: parameter {key} must be a number, got {value!r}") from None
    if not low < v <= 1.0:
        raise BurstpilotError(f"model {model!r}: parameter {key} must be in ({low:g}, 1], got {v:g}")
    return v


def _check_positive_int(params: dict[str, Any], key: str, model: str) -> int:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1 or value != int(value):
        raise BurstpilotError(f"model {model!r}: parameter {key} must be a positive integer, got {value!r}")
    return int(value)


class LastValue(Forecaster):
    """The last observed count, held flat."""

    name = "last"
    state_fields = ("level",)

    def _init_model(self) -> None:
        self.level = math.nan

    def _observe(self, x: float) -> None:
        self.level = x

    def _snapshot(self) -> tuple[float, float]:
        return (self.level, 0.0)

    def _point(self, h: int) -> float:
        return self.level


class EWMA(Forecaster):
    """Exponentially weighted moving average with smoothing ``alpha``, held flat."""

    name = "ewma"
    defaults = {"alpha": 0.3}
    state_fields = ("level",)

    def _init_model(self) -> None:
        self.alpha = _check_fraction(self.params, "alpha", self.name)
        self.level = math.nan

    def _observe(self, x: float) -> None:
        self.level = x if math.isnan(self.level) else self.level + self.alpha * (x - self.level)

    def _snapshot(self) -> tuple[float, float]:
        return (self.level, 0.0)

    def _point(self, h: int) -> float:
        return self.level


class _Smoothing(Forecaster):
    """Additive level + (damped) trend, parameters fitted by statsmodels every ``refit_every`` steps on the
    observed counts of the calibration window (missing steps are dropped from the fit)."""

    defaults = {"refit_every": 360, "min_fit": 30}
    state_fields = ("level", "trend", "alpha", "beta", "phi", "since_fit", "fit_n")

    def _init_model(self) -> None:
        self.refit_every = _check_positive_int(self.params, "refit_every", self.name)
        self.min_fit = _check_positive_int(self.params, "min_fit", self.name)
        self.level = math.nan
        self.trend = 0.0
        # Until the first fit: a plain, cautious smoother.
        self.alpha, self.beta, self.phi = 0.3, 0.05, self._initial_phi()
        self.since_fit = -1  # -1: never fitted
        self.fit_n = 0  # observations at the last fit

    def _initial_phi(self) -> float:
        return 1.0

    def _observe(self, x: float) -> None:
        # Refit when the history has doubled since the last fit (early on), then every refit_every steps.
        due = self.since_fit >= min(self.refit_every, self.fit_n)
        if self.since_fit == -1 and self.n_observed >= self.min_fit or self.since_fit >= 0 and due:
            history = self._ring.ordered()[:, 0]
            self._refit(np.append(history[~np.isnan(history)], x))
            return
        if self.since_fit >= 0:
            self.since_fit += 1
        if math.isnan(self.level):
            self.level = x
            return
        self.level, self.trend = self._step(self.level, self.trend, x)

    def _step(self, level: float, trend: float, x: float) -> tuple[float, float]:
        raise NotImplementedError

    def _fit(self, y: np.ndarray) -> tuple[float, float, float, float, float]:
        """(alpha, beta, phi, initial level, initial trend) from statsmodels."""
        raise NotImplementedError

    def _refit(self, y: np.ndarray) -> None:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                alpha, beta, phi, level, trend = self._fit(y)
        except (ValueError, np.linalg.LinAlgError):
            alpha = beta = phi = level = trend = math.nan
        if not all(math.isfinite(v) for v in (alpha, beta, phi, level, trend)):
            # statsmodels could not fit (e.g. a constant series): keep the previous parameters.
            alpha, beta, phi, level, trend = self.alpha, self.beta, self.phi, float(y[0]), 0.0
        self.since_fit = 0
        self.fit_n = len(y)
        self.alpha = min(max(alpha, 1e-4), 1.0)
        self.beta = min(max(beta, 0.0), 1.0)
        self.phi = min(max(phi, 0.0), 1.0)
        for v in y:  # run the fitted recursion over the window to the current state
            level, trend = self._step(level, trend, float(v))
        self.level, self.trend = level, trend

    def _snapshot(self) -> tuple[float, float]:
        return (self.level, self.trend)

    def trend_weight(self, h: int) -> float:
        # Step i ahead adds trend * sum_{j=1..i} phi^j; the mean of that over i = 1..h.
        phi = self.phi
        if phi >= 1.0:
            return (h + 1) / 2.0
        cum = np.cumsum(phi ** np.arange(1, h + 1))
        return float(cum.mean())

    def _point(self, h: int) -> float:
        return self.level + self.trend * self.trend_weight(h)


class Holt(_Smoothing):
    """Holt's linear trend (statsmodels ``ExponentialSmoothing(trend="add")``, least squares fit)."""

    name = "holt"

    def _step(self, level: float, trend: float, x: float) -> tuple[float, float]:
        new_level = self.alpha * x + (1.0 - self.alpha) * (level + trend)
        return new_level, self.beta * (new_level - level) + (1.0 - self.beta) * trend

    def _fit(self, y: np.ndarray) -> tuple[float, float, float, float, float]:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        res = ExponentialSmoothing(y, trend="add", initialization_method="estimated").fit()
        p = res.params
        return (p["smoothing_level"], p["smoothing_trend"], 1.0, p["initial_level"], p["initial_trend"])


class ETS(_Smoothing):
    """ETS(A,Ad,N): additive errors, damped additive trend (statsmodels ``ETSModel``, maximum likelihood)."""

    name = "ets"

    def _initial_phi(self) -> float:
        return 0.9

    def _step(self, level: float, trend: float, x: float) -> tuple[float, float]:
        err = x - (level + self.phi * trend)
        return level + self.phi * trend + self.alpha * err, self.phi * trend + self.beta * err

    def _fit(self, y: np.ndarray) -> tuple[float, float, float, float, float]:
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        model = ETSModel(y, error="add", trend="add", damped_trend=True)
        start = None
        if self.since_fit >= 0:  # warm start from the previous fit: about 3x fewer optimizer steps
            alpha = min(max(self.alpha, 1e-3), 0.999)
            beta = min(max(self.beta, 1e-4), alpha * 0.999)
            start = np.array([alpha, beta, min(max(self.phi, 0.81), 0.979), float(y[:10].mean()), 0.0])
        res = model.fit(disp=False, start_params=start)
        p = dict(zip(res.param_names, res.params, strict=True))
        return (
            p["smoothing_level"],
            p["smoothing_trend"],
            p["damping_trend"],
            p["initial_level"],
            p["initial_trend"],
        )


class Seasonal(Forecaster):
    """Daily seasonality: a deseasonalized EWMA level times a time-of-day profile.

    The profile holds the mean count per step in each ``bucket_s`` bucket of the day, smoothed across days
    with ``gamma``. It is used once ``min_days`` days have been seen and every bucket has data; before that
    the model is a plain EWMA with ``alpha`` (documented fallback). ``start_s`` is the time of day (seconds
    after midnight) at which the first step begins.
    """

    name = "seasonal"
    defaults = {
        "alpha": 0.3,
        "gamma": 0.2,
        "bucket_s": 900.0,
        "season_s": 86400.0,
        "min_days": 2.0,
        "start_s": 0.0,
    }
    state_fields = ("level", "raw_level", "profile", "seen")

    def _init_model(self) -> None:
        self.alpha = _check_fraction(self.params, "alpha", self.name)
        self.gamma = _check_fraction(self.params, "gamma", self.name)
        bucket, season = float(self.params["bucket_s"]), float(self.params["season_s"])
        if not (bucket >= self.step_s and season >= bucket and math.isfinite(season)):
            raise BurstpilotError(
                f"model 'seasonal': need step_s <= bucket_s <= season_s, got {self.step_s:g}, {bucket:g}, {season:g}"
            )
        self.bucket_s, self.season_s = bucket, season
        self.n_buckets = int(math.ceil(season / bucket))
        self.start_s = float(self.params["start_s"]) % season
        self.min_days = float(self.params["min_days"])
        self.level = math.nan  # deseasonalized
        self.raw_level = math.nan
        self.profile = [math.nan] * self.n_buckets
        self.seen = [0.0] * self.n_buckets  # observations per bucket (for the first-day running mean)

    def _bucket(self, step_index: int) -> int:
        t = (self.start_s + step_index * self.step_s) % self.season_s
        return min(int(t // self.bucket_s), self.n_buckets - 1)

    def active(self) -> bool:
        days = self.n_steps * self.step_s / self.season_s
        return days >= self.min_days and not any(math.isnan(p) for p in self.profile)

    def _factor(self, b: int) -> float:
        mean = float(np.mean(self.profile))
        return max(self.profile[b] / mean, 0.05) if mean > 0 else 1.0

    def _observe(self, x: float) -> None:
        b = self._bucket(self.n_steps)
        per_bucket = self.bucket_s / self.step_s
        self.seen[b] += 1.0
        weight = max(1.0 / self.seen[b], self.gamma / per_bucket)
        self.profile[b] = (
            x if math.isnan(self.profile[b]) else self.profile[b] + weight * (x - self.profile[b])
        )
        self.raw_level = (
            x if math.isnan(self.raw_level) else self.raw_level + self.alpha * (x - self.raw_level)
        )
        if self.active():
            z = x / self._factor(b)
            self.level = z if math.isnan(self.level) else self.level + self.alpha * (z - self.level)

    def _snapshot(self) -> tuple[float, float]:
        return (self._point(1), 0.0)

    def _point(self, h: int) -> float:
        if not self.active() or math.isnan(self.level):
            return self.raw_level
        factors = [self._factor(self._bucket(self.n_steps + i)) for i in range(h)]
        return self.level * float(np.mean(factors))
