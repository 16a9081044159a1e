"""Common machinery of the rate forecasters: input checks, the bounded history, state, bands.

Every forecaster sees one series of counts at a fixed step (requests, prompt tokens or output tokens
per step) and keeps a bounded ring of the most recent steps together with what it predicted at each of
them. That ring is what calibrates the quantiles: the realized future of every past origin is compared
with what the model said at that origin (split-conformal style), so the bands follow the errors the model
actually makes on this series, over the last ``calib_window_s`` seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats

from burstpilot.errors import BurstpilotError

STATE_VERSION = 1
DEFAULT_QUANTILES = (0.5, 0.9, 0.95, 0.99)
# Fewer completed origins than this in the ring: bands fall back to the model's parametric form.
MIN_CALIBRATION = 30
# The largest count one step may hold. Far beyond any serving fleet (10^11 tokens/s at a 10 s step), it keeps
# every sum and square the models form exact enough and far from float64's range; a larger count is a
# metrics glitch, and update() rejects it by value (the caller treats it as a missing sample).
MAX_COUNT = 1e12
# The most steps the calibration ring may hold (about 11.6 days at a 10 s step).
MAX_RING_STEPS = 100_000


@dataclass(frozen=True)
class Forecast:
    """A forecast over the next ``horizon_s`` seconds (rounded up to whole steps).

    ``mean_rate``: expected events per second over the horizon. ``rate_quantiles[q]``: the q-quantile of
    the average rate over the horizon (per second). ``peak_quantiles[q]``: the q-quantile of the highest
    per-step rate within the horizon (per second).
    """

    model: str
    horizon_s: float
    mean_rate: float
    rate_quantiles: dict[float, float] = field(default_factory=dict)
    peak_quantiles: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "horizon_s": self.horizon_s,
            "mean_rate": self.mean_rate,
            "rate_quantiles": {str(q): v for q, v in self.rate_quantiles.items()},
            "peak_quantiles": {str(q): v for q, v in self.peak_quantiles.items()},
        }


def _check_number(value: Any, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise BurstpilotError(f"{what} must be a number, got {value!r}") from None
    return x


def check_count(value: Any, step_index: int) -> float:
    """A count for one step: a finite number ≥ 0, or NaN/None for a missing sample (returned as NaN)."""
    if value is None:
        return math.nan
    x = _check_number(value, f"count at step {step_index}")
    if math.isnan(x):
        return math.nan
    if math.isinf(x):
        raise BurstpilotError(f"count at step {step_index} is infinite; pass NaN for a missing sample")
    if x < 0:
        raise BurstpilotError(f"count at step {step_index} is negative ({x:g}); counts must be >= 0")
    if x > MAX_COUNT:
        raise BurstpilotError(
            f"count at step {step_index} ({x:g}) is above {MAX_COUNT:g}, the most one step may hold; "
            "pass NaN for an implausible sample"
        )
    return x


def check_quantiles(quantiles: Any) -> tuple[float, ...]:
    qs = tuple(_check_number(q, "quantile") for q in quantiles)
    if not qs:
        raise BurstpilotError("quantiles: give at least one level in (0, 1)")
    for q in qs:
        if not 0.0 < q < 1.0:
            raise BurstpilotError(f"quantile {q:g} is outside (0, 1)")
    return qs


class Ring:
    """A fixed-size ring of rows (float64), oldest overwritten first."""

    def __init__(self, size: int, width: int):
        self.data = np.full((size, width), np.nan)
        self.count = 0  # rows ever pushed

    def push(self, row) -> None:
        self.data[self.count % len(self.data)] = row
        self.count += 1

    def ordered(self) -> np.ndarray:
        """The rows held, oldest first."""
        size = len(self.data)
        if self.count <= size:
            return self.data[: self.count]
        head = self.count % size
        return np.concatenate([self.data[head:], self.data[:head]])

    def to_state(self) -> dict[str, Any]:
        """Plain lists, NaN written as None (JSON has no NaN). Whole-array conversions: a policy's state is
        written every tick, and a row at a time through Python floats was a tenth of a decision's time."""
        held = self.ordered()
        rows = held.astype(object)
        rows[np.isnan(held)] = None
        return {"size": len(self.data), "count": self.count, "rows": rows.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any], width: int) -> Ring:
        ring = cls(int(state["size"]), width)
        count = int(state["count"])
        rows = state["rows"]
        if rows:
            # None reads as NaN; a value that is not a number raises ValueError or TypeError
            held = np.array(rows, dtype=float)
            if held.ndim != 2 or held.shape[1] != width:
                raise ValueError(
                    f"ring rows must be {width} numbers each, got an array of shape {held.shape}"
                )
            ring.data[(count - len(held) + np.arange(len(held))) % len(ring.data)] = held
        # (re-placed where the original ring held them, so pushes continue identically)
        ring.count = count
        return ring


def realized(counts: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each origin j whose next ``h`` counts are all present: (j, sum, max) of counts[j+1 : j+h+1]."""
    n = len(counts) - h
    if n <= 0:
        empty = np.zeros(0)
        return empty.astype(int), empty, empty
    future = sliding_window_view(counts[1:], h)[:n]
    ok = ~np.isnan(future).any(axis=1)
    idx = np.nonzero(ok)[0]
    return idx, future[ok].sum(axis=1), future[ok].max(axis=1)


class Forecaster:
    """Base class. Subclasses implement ``_observe(x)``, ``_snapshot()``, ``_point(h)`` and may override
    ``_bands``. ``update``/``forecast``/``to_state`` are the public contract (docs/interfaces.md)."""

    name: ClassVar[str] = ""
    # Model-specific parameters with their defaults (validated and stored in the state).
    defaults: ClassVar[dict[str, Any]] = {}
    # Parameters earlier versions had and this one no longer uses: accepted (saved states load) and dropped.
    legacy_params: ClassVar[frozenset[str]] = frozenset()
    # Attributes (floats, ints, lists of floats) that make up the model's internal state.
    state_fields: ClassVar[tuple[str, ...]] = ()
    # Columns recorded per step next to the count: what the model predicted at that origin.
    snapshot_width: ClassVar[int] = 2

    def __init__(self, step_s: float, calib_window_s: float = 3600.0, **params: Any):
        step = _check_number(step_s, "step_s")
        if not (math.isfinite(step) and step > 0):
            raise BurstpilotError(f"step_s must be a positive number of seconds, got {step_s!r}")
        window = _check_number(calib_window_s, "calib_window_s")
        if not (math.isfinite(window) and window >= step):
            raise BurstpilotError(f"calib_window_s must be at least one step ({step:g} s), got {window!r}")
        if window / step > MAX_RING_STEPS:
            raise BurstpilotError(
                f"calib_window_s / step_s = {window / step:.3g} steps: the calibration window holds at most "
                f"{MAX_RING_STEPS} steps"
            )
        unknown = sorted(set(params) - set(self.defaults) - set(self.legacy_params))
        if unknown:
            allowed = ", ".join(["calib_window_s", *sorted(self.defaults)]) or "none"
            raise BurstpilotError(
                f"model {self.name!r}: unknown parameter {unknown[0]!r} (allowed: {allowed})"
            )
        self.step_s = step
        self.calib_window_s = window
        self.params = {**self.defaults, **{k: v for k, v in params.items() if k not in self.legacy_params}}
        self.n_steps = 0  # steps seen, missing ones included
        self.n_observed = 0  # steps with a count
        self.stale_steps = 0  # consecutive missing steps at the end of the history
        size = max(int(math.ceil(window / step)), 2)
        self._ring = Ring(size, 1 + self.snapshot_width)
        self._init_model()

    # -- the public contract --------------------------------------------------------------------------

    def update(self, count: Any) -> None:
        """Feed the count of the step that just ended; NaN (or None) marks a missing sample.

        A missing sample advances the clock but leaves the estimates as they were; the ring records it as
        missing, and origins whose future contains it are left out of the calibration.
        """
        x = check_count(count, self.n_steps)
        if math.isnan(x):
            self.stale_steps += 1
            self._observe_missing()
        else:
            self.stale_steps = 0
            self.n_observed += 1
            self._observe(x)
        self.n_steps += 1
        self._ring.push([x, *self._snapshot()])

    def forecast(self, horizon_s: float = 120.0, quantiles=DEFAULT_QUANTILES) -> Forecast:
        """Forecast the next ``horizon_s`` seconds (rounded up to whole steps)."""
        horizon = _check_number(horizon_s, "horizon_s")
        if not (math.isfinite(horizon) and horizon > 0):
            raise BurstpilotError(f"horizon_s must be a positive number of seconds, got {horizon_s!r}")
        if horizon / self.step_s > MAX_RING_STEPS:
            raise BurstpilotError(
                f"horizon_s ({horizon:g}) is more than {MAX_RING_STEPS} steps of {self.step_s:g} s"
            )
        qs = check_quantiles(quantiles)
        if self.n_observed == 0:
            raise BurstpilotError(
                f"model {self.name!r} has no observed samples yet ({self.n_steps} missing); "
                "call update() with a count first"
            )
        h = self.horizon_steps(horizon)
        mean_count = max(float(self._point(h)), 0.0)
        rate_q, peak_q = self._bands(h, mean_count, qs)
        rate_q, peak_q = _monotone(qs, rate_q), _monotone(qs, peak_q)
        per_s = 1.0 / self.step_s
        return Forecast(
            model=self.name,
            horizon_s=horizon,
            mean_rate=mean_count * per_s,
            rate_quantiles={q: max(float(v), 0.0) * per_s for q, v in zip(qs, rate_q, strict=True)},
            peak_quantiles={q: max(float(v), 0.0) * per_s for q, v in zip(qs, peak_q, strict=True)},
        )

    def calibration_origins(self, horizon_s: float) -> int:
        """How many past origins of the calibration window have their whole ``horizon_s`` observed: the sample
        the bands are fitted on (below ``MIN_CALIBRATION`` they are the model's prior)."""
        idx, _, _ = realized(self._ring.ordered()[:, 0], self.horizon_steps(horizon_s))
        return len(idx)

    def horizon_steps(self, horizon_s: float) -> int:
        return max(1, int(math.ceil(horizon_s / self.step_s - 1e-9)))

    def to_state(self) -> dict[str, Any]:
        """A JSON-serializable document; ``from_state`` resumes exactly from it."""
        return {
            "model": self.name,
            "version": STATE_VERSION,
            "step_s": self.step_s,
            "calib_window_s": self.calib_window_s,
            "params": dict(self.params),
            "n_steps": self.n_steps,
            "n_observed": self.n_observed,
            "stale_steps": self.stale_steps,
            "ring": self._ring.to_state(),
            "model_state": {k: _encode(getattr(self, k)) for k in self.state_fields},
        }

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> Forecaster:
        obj = cls(state["step_s"], calib_window_s=state["calib_window_s"], **state["params"])
        obj.n_steps = int(state["n_steps"])
        obj.n_observed = int(state["n_observed"])
        obj.stale_steps = int(state["stale_steps"])
        obj._ring = Ring.from_state(state["ring"], 1 + obj.snapshot_width)
        model_state = state["model_state"]
        for key in cls.state_fields:
            if key not in model_state:
                raise BurstpilotError(f"forecaster state: field model_state.{key} is missing")
            setattr(obj, key, _decode(model_state[key]))
        return obj

    # -- what subclasses provide ----------------------------------------------------------------------

    def _init_model(self) -> None:
        raise NotImplementedError

    def _observe(self, x: float) -> None:
        raise NotImplementedError

    def _observe_missing(self) -> None:
        """Default: a missing step changes nothing."""

    def _snapshot(self) -> tuple[float, ...]:
        """(a, b): at this origin the model predicts a + b * trend_sum(i) counts for step i ahead."""
        raise NotImplementedError

    def _point(self, h: int) -> float:
        """Mean count per step over the next h steps."""
        raise NotImplementedError

    def trend_weight(self, h: int) -> float:
        """Mean over i = 1..h of the trend multiplier at step i (for snapshots (a, b))."""
        return 0.0

    # -- bands from the model's own recent errors -----------------------------------------------------

    def _bands(self, h: int, mean_count: float, qs: tuple[float, ...]) -> tuple[list[float], list[float]]:
        """Empirical bands: quantiles of the recent Pearson residuals (actual - predicted) / sqrt(predicted)
        of the horizon mean and of the horizon peak, scaled to the current prediction. Until the ring holds
        ``MIN_CALIBRATION`` completed origins, Poisson quantiles around the prediction."""
        rows = self._ring.ordered()
        idx, sums, peaks = realized(rows[:, 0], h)
        if len(idx) < MIN_CALIBRATION:
            return _poisson_bands(h, mean_count, qs)
        pred = np.maximum(rows[idx, 1] + rows[idx, 2] * self.trend_weight(h), 0.0)
        scale_past = np.sqrt(np.maximum(pred, 1.0) / h)
        r_mean = (sums / h - pred) / scale_past
        r_peak = (peaks - pred) / scale_past
        scale_now = math.sqrt(max(mean_count, 1.0) / h)
        rq = mean_count + np.quantile(r_mean, qs) * scale_now
        pq = mean_count + np.quantile(r_peak, qs) * scale_now
        return list(rq), list(np.maximum(pq, rq))


def _monotone(qs: tuple[float, ...], values) -> list[float]:
    """``values`` (one per level in ``qs``) made non-decreasing in the level: a quantile never falls below a
    lower level's (numerical fallbacks at extreme counts, e.g. a non-finite Poisson ppf replaced by the mean,
    could otherwise invert them)."""
    order = np.argsort(np.asarray(qs, dtype=float), kind="stable")
    v = np.asarray(values, dtype=float)
    out = np.empty_like(v)
    out[order] = np.fmax.accumulate(v[order])
    return list(out)


def _poisson_bands(h: int, mean_count: float, qs: tuple[float, ...]) -> tuple[list[float], list[float]]:

    lam = max(mean_count, 1e-9)
    rq = stats.poisson.ppf(qs, lam * h) / h
    # Peak of h independent Poisson steps: P(max <= x) = F(x)^h.
    pq = stats.poisson.ppf(np.asarray(qs) ** (1.0 / h), lam)
    rq, pq = np.where(np.isfinite(rq), rq, lam), np.where(np.isfinite(pq), pq, lam)
    return list(rq), list(np.maximum(pq, rq))


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_encode(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, float | np.floating):
        v = float(value)
        return None if math.isnan(v) else v
    if isinstance(value, np.integer):
        return int(value)
    return value


def _decode(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value
