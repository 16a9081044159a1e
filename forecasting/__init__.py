"""Short-term rate forecasters with calibrated upper quantiles (see docs/forecasting.md).

f = make_forecaster("burst", step_s=10.0)
f.update(count)                       # NaN (or None) marks a missing sample
fc = f.forecast(horizon_s=120, quantiles=(0.5, 0.9, 0.95, 0.99))
g = from_state(f.to_state())          # resumes exactly
"""

from __future__ import annotations

from typing import Any

from burstpilot.errors import BurstpilotError
from burstpilot.forecasting.base import DEFAULT_QUANTILES, MAX_COUNT, STATE_VERSION, Forecast, Forecaster
from burstpilot.forecasting.burst import BurstForecaster
from burstpilot.forecasting.models import ETS, EWMA, Holt, LastValue, Seasonal

MODELS: dict[str, type[Forecaster]] = {
    cls.name: cls for cls in (LastValue, EWMA, Holt, ETS, Seasonal, BurstForecaster)
}

__all__ = [
    "DEFAULT_QUANTILES",
    "MAX_COUNT",
    "MODELS",
    "Forecast",
    "Forecaster",
    "from_state",
    "make_forecaster",
]


def make_forecaster(name: str, step_s: float, **params: Any) -> Forecaster:
    """A new forecaster: ``name`` in last, ewma, holt, ets, seasonal, burst; ``step_s`` the sample step."""
    cls = MODELS.get(name)
    if cls is None:
        raise BurstpilotError(f"unknown forecasting model {name!r} (choose from {', '.join(MODELS)})")
    return cls(step_s, **params)


def from_state(state: dict[str, Any]) -> Forecaster:
    """Resume a forecaster from ``Forecaster.to_state()``; it then forecasts exactly as the original."""
    if not isinstance(state, dict):
        raise BurstpilotError(f"forecaster state must be a JSON object, got {type(state).__name__}")
    missing = [
        k for k in ("model", "version", "step_s", "calib_window_s", "params", "ring") if k not in state
    ]
    if missing:
        raise BurstpilotError(f"forecaster state: field {missing[0]!r} is missing")
    if state["version"] != STATE_VERSION:
        raise BurstpilotError(f"forecaster state: version {state['version']!r} is not {STATE_VERSION}")
    cls = MODELS.get(state["model"]) if isinstance(state["model"], str) else None
    if cls is None:
        raise BurstpilotError(f"forecaster state: unknown model {state['model']!r}")
    try:
        return cls._from_state(state)
    except BurstpilotError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise BurstpilotError(f"forecaster state for model {state['model']!r} is damaged: {exc}") from None
