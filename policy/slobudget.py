"""The SLO's error budget: observed attainment fed back into the standing burst headroom.

A ``99 %`` goal allows 1 % of requests to miss the SLO. The burst headroom (``burstpilot.policy.headroom``) sizes
the standing margin from the forecaster's peak quantiles, but bursts shorter than the cold start that the
forecaster does not see coming are met only by what stands; when they keep costing violations, the forecast's
peaks are too low for this workload. The budget watches what the pool really achieved and moves a *level*
``L`` (the burst headroom sizes for bursts ``L`` times as far above the mean rate as the forecaster's peak
quantiles: ``mean + L (peak - mean)``) in bounded steps:

- each tick with a count of the window's completed requests and of those that missed the SLO, two
  exponentially weighted sums (``LONG_S``: the hour a 99 % goal is judged over; ``SHORT_S``: its twelfth, as in
  multiwindow burn-rate alerting) give the violation rate, over a prior of ``PRIOR_VIOLATIONS / (1 - goal)``
  requests that met the SLO (a pseudo-count that never decays: the budget starts with room for
  ``PRIOR_VIOLATIONS`` misses), so a cold start or a quiet pool with a miss or two reads as within budget,
  not as an alarm;
- the *burn* is that rate over the allowed ``1 - goal`` (1: the budget is spent exactly as fast as the goal
  allows). In a tick whose own requests missed more than the goal allows while both windows burn faster than
  1 (the hour is over budget *and* the violations are still coming), the level rises by
  ``burn_short ** (window / RISE_S)``, at most ``MAX_RISE`` a tick. Only ticks that miss raise it: what the
  replicas bought by a rise do shows only after a cold start, and rising on every tick of a burning window
  would wind the level up long past what that needs;
- while both windows burn at most ``LOWER_BURN`` (attainment comfortably above the goal) and the forecast alone
  asks for no more than the pool has, it falls by at most ``MAX_FALL`` a tick; in between it holds;
- missing data (no completion or violation count) leaves everything unchanged; the level stays within
  ``[1, LEVEL_MAX]``, so it never sizes below what the forecast asks for and never more than a bounded margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from burstpilot.errors import BurstpilotError

LONG_S = 3600.0  # the goal is judged over hours: an hour of requests is the budget's window
SHORT_S = 300.0  # LONG_S / 12, the short window of multiwindow burn-rate alerting: "still burning now"
# The prior: the requests that this many violations take at the goal's rate (300 at 99 %), all met. Fewer than
# ~3 violations cannot be told from Poisson noise at the goal's rate (3 expected, sd 1.7), so a handful of
# misses on a cold or quiet pool does not alarm.
PRIOR_VIOLATIONS = 3.0
# A burn of b raises the level by a factor b per RISE_S of missing ticks (at most MAX_RISE a tick): the short
# window's length, so one short window of misses at a burn b buys bursts b times as tall.
RISE_S = 300.0
MAX_RISE = 1.05  # at most +5 % a tick: the level doubles in no less than 14 ticks (2.4 min at 10 s)
# At most -2 % a tick: it halves in no less than 34 ticks (6 min at 10 s), slower than it rises:
# under-provisioning costs the SLO, over-provisioning GPU-seconds that the budget's hour easily pays for.
MAX_FALL = 0.98
LOWER_BURN = 0.5  # lower only while half the budget or less is being spent (attainment >= 99.5 % at 99 %)
# The bursts the headroom sizes for rise at most 4x as far above the mean as the forecaster's peak quantiles
# (its q0.999 is the top of its distribution; beyond that the margin is a static peak pool).
LEVEL_MAX = 4.0


@dataclass(frozen=True)
class SloBudget:
    """Exponentially weighted completed and violating requests over the two windows, and the level."""

    long_done: float = 0.0
    long_missed: float = 0.0
    short_done: float = 0.0
    short_missed: float = 0.0
    level: float = 1.0
    note: str = "no attainment observed yet"

    def burn(self, goal: float) -> tuple[float, float]:
        """(long-window burn, short-window burn): the observed violation rate over the allowed 1 - goal."""
        allowed = max(1.0 - goal, 1e-6)
        prior_done = PRIOR_VIOLATIONS / allowed
        return (
            self.long_missed / (self.long_done + prior_done) / allowed,
            self.short_missed / (self.short_done + prior_done) / allowed,
        )

    def attainment(self, goal: float) -> tuple[float, float]:
        """The observed attainment over the two windows, with the prior (1 - burn x (1 - goal))."""
        b_long, b_short = self.burn(goal)
        return 1.0 - b_long * (1.0 - goal), 1.0 - b_short * (1.0 - goal)

    def observe(self, completed: float | None, missed: float | None, window_s: float) -> SloBudget:
        """The sums after one window's counts; unchanged when either is missing (or not a count). The
        refused count as completed and missed, so ``missed`` above ``completed`` raises both."""
        if completed is None or missed is None or not window_s > 0:
            return self
        if not (math.isfinite(completed) and math.isfinite(missed)) or completed < 0 or missed < 0:
            return self
        completed = max(completed, missed)
        wl, ws = math.exp(-window_s / LONG_S), math.exp(-window_s / SHORT_S)
        return replace(
            self,
            long_done=wl * self.long_done + completed,
            long_missed=wl * self.long_missed + missed,
            short_done=ws * self.short_done + completed,
            short_missed=ws * self.short_missed + missed,
        )

    def step(self, goal: float, window_s: float, missed_now: bool, forecast_fits: bool) -> SloBudget:
        """The level after this tick's burn. ``missed_now``: this tick's requests missed more than the goal
        allows; ``forecast_fits``: the forecast alone asks for no more replicas than the pool has (no burst it
        sees would need the margin about to be let go)."""
        b_long, b_short = self.burn(goal)
        a_long, a_short = self.attainment(goal)
        seen = f"attainment {a_long:.2%} (1 h) / {a_short:.2%} (5 min), burn {b_long:.2f} / {b_short:.2f}"
        level = self.level
        if b_long > 1.0 and b_short > 1.0 and missed_now:
            level = min(level * min(b_short ** (window_s / RISE_S), MAX_RISE), LEVEL_MAX)
            what = "over budget and missing now: raise" if level > self.level else "over budget, at the most"
        elif b_long <= LOWER_BURN and b_short <= LOWER_BURN and level > 1.0:
            if forecast_fits:
                level = max(level * MAX_FALL, 1.0)
                what = "well within budget: lower"
            else:
                what = "within budget but the forecast asks for more than the pool has: hold"
        else:
            what = "hold"
        return replace(self, level=level, note=f"{seen}: {what}, burst level {level:.2f}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "long_done": self.long_done,
            "long_missed": self.long_missed,
            "short_done": self.short_done,
            "short_missed": self.short_missed,
            "level": self.level,
            "note": self.note,
        }

    def evidence(self, goal: float) -> dict[str, Any]:
        """What status and results.json show: observed attainment, burn, level."""
        b_long, b_short = self.burn(goal)
        a_long, a_short = self.attainment(goal)
        return {
            "attainment_1h": round(a_long, 5),
            "attainment_5min": round(a_short, 5),
            "burn_1h": round(b_long, 3),
            "burn_5min": round(b_short, 3),
            "level": round(self.level, 4),
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Any) -> SloBudget:
        """Reads ``to_dict``; None (a state saved before the budget existed) is a fresh budget."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise BurstpilotError("policy state: slo_budget must be an object")
        vals = {}
        for key in ("long_done", "long_missed", "short_done", "short_missed", "level"):
            x = d.get(key, 1.0 if key == "level" else 0.0)
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x < 0:
                raise BurstpilotError(
                    f"policy state: slo_budget.{key} must be a non-negative number, got {x!r}"
                )
            vals[key] = float(x)
        if not 1.0 <= vals["level"] <= LEVEL_MAX:
            raise BurstpilotError(
                f"policy state: slo_budget.level {vals['level']!r} is outside [1, {LEVEL_MAX:g}]"
            )
        return cls(**vals, note=str(d.get("note", "")))
