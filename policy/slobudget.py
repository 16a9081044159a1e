"""The SLO's error budget: the attainment the pool really reached, per replica count, fed back as a floor.

A ``99 %`` goal allows 1 % of requests to miss the SLO. The throughput, headroom and KV bounds size the pool
from the forecast and a per-replica rate; but part of what misses does not scale with the load: a long prompt's
prefill holds up the requests behind it on its replica (TTFT) and stalls its batch (TPOT), whatever the
utilization, and the fewer the replicas the more requests share each one. How many miss at a given count is
then something only the pool itself can tell. The budget keeps, per ready-replica count ``n``, exponentially
weighted sums of the completed and the violating requests of the ticks it served at a load the capacity model
calls normal (arrivals per ready replica at most the sizing's per-replica rate: the misses of an overloaded
tick are the load's, and the forecast and learned capacity answer those), with a time constant of
``COUNT_S`` (hours: a workload's length mix drifts over a day). Over a prior of ``PRIOR_VIOLATIONS / (1 -
goal)`` met requests (a pseudo-count that never decays: a count with a miss or two is not condemned), a count
*misses* when its violation rate is over the allowed ``1 - goal``. The *floor* is one above the largest count
that misses (bound ``slo-budget``), and at most one above the smallest count whose rate is no worse than the
best rate seen (at their own rates, among the counts with the prior's weight of requests or more; *worse* by a
one-sided two-proportion test at ``WORSE_Z``, since rates near 1 % over a few thousand requests differ by
10-20 % by chance alone): where more replicas do not lower the rate (a tail no count removes), it buys at most
one more than the smallest that does as well (a count whose sums decayed under the prior's weight is not
compared). The sums move slowly (hours), so the floor does not flap; it comes down as the misses that set it
age, or as the count under it, visited again, meets the goal.

Two more sums, over the hour a 99 % goal is judged over (``LONG_S``) and its twelfth (``SHORT_S``, the short
window of multiwindow burn-rate alerting), give the observed attainment and its *burn* (violation rate over the
allowed ``1 - goal``) that status reports. Missing data (no completion or violation count) leaves everything
unchanged; the floor never exceeds ``maxReplicas``.
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
COUNT_S = (
    6 * 3600.0
)  # sums decay over six hours: telling a 2 % count from a 1 % one takes thousands of requests
# A count's rate is "worse" than the best count's when the difference is over this many standard errors (a
# one-sided 95 % two-proportion test): rates near 1 % over a few thousand requests differ by 10-20 % by chance
WORSE_Z = 1.645
MIN_WEIGHT = 1e-3  # a count whose decayed sums fall under this many requests is forgotten


@dataclass(frozen=True)
class SloBudget:
    """Exponentially weighted completed and violating requests over the two windows and per count, the floor."""

    long_done: float = 0.0
    long_missed: float = 0.0
    short_done: float = 0.0
    short_missed: float = 0.0
    by_count: tuple[tuple[int, float, float], ...] = ()  # (ready replicas, completed, missed), by count
    floor: int = 0  # replicas; 0: no floor
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

    def observe(
        self, completed: float | None, missed: float | None, window_s: float, count: int | None = None
    ) -> SloBudget:
        """The sums after one window's counts; unchanged when either is missing (or not a count). The
        refused count as completed and missed, so ``missed`` above ``completed`` raises both. ``count``: the
        ready replicas that served the window at a normal load (None: an overloaded or empty pool's window,
        which goes into the two windows only)."""
        if completed is None or missed is None or not window_s > 0:
            return self
        if not (math.isfinite(completed) and math.isfinite(missed)) or completed < 0 or missed < 0:
            return self
        completed = max(completed, missed)
        wl, ws = math.exp(-window_s / LONG_S), math.exp(-window_s / SHORT_S)
        wc = math.exp(-window_s / COUNT_S)
        rows = []
        for n, done, miss in self.by_count:
            done, miss = wc * done, wc * miss
            if n == count:
                done, miss, count = done + completed, miss + missed, None
            if done >= MIN_WEIGHT:
                rows.append((n, done, miss))
        if count is not None and count > 0:
            rows.append((int(count), completed, missed))
        return replace(
            self,
            by_count=tuple(sorted(rows)),
            long_done=wl * self.long_done + completed,
            long_missed=wl * self.long_missed + missed,
            short_done=ws * self.short_done + completed,
            short_missed=ws * self.short_missed + missed,
        )

    def rates(self, goal: float) -> dict[int, float]:
        """The violation rate observed at each ready-replica count, over the prior."""
        prior = PRIOR_VIOLATIONS / max(1.0 - goal, 1e-6)
        return {n: miss / (done + prior) for n, done, miss in self.by_count}

    def step(self, goal: float, max_replicas: int) -> SloBudget:
        """The floor after this tick's sums (see the module's docstring)."""
        allowed = max(1.0 - goal, 1e-6)
        prior = PRIOR_VIOLATIONS / allowed
        rates = self.rates(goal)
        b_long, b_short = self.burn(goal)
        a_long, a_short = self.attainment(goal)
        observed = f"attainment {a_long:.2%} (1 h) / {a_short:.2%} (5 min), burn {b_long:.2f} / {b_short:.2f}"
        bad = [n for n, r in rates.items() if r > allowed]
        floor = max(bad) + 1 if bad else 0
        what = f"{max(bad)} ready missed {rates[max(bad)]:.2%}" if bad else "no count misses the goal"
        # "no better" compares counts at their own rates (over the prior, a count just visited would look
        # better than one long observed), those with the prior's weight of requests or more, by a test: a
        # count is worse than the best only when its rate is above the best's by more than chance explains
        seen = {n: (done, miss) for n, done, miss in self.by_count if done >= prior}
        if floor and seen:
            best = min(seen, key=lambda n: seen[n][1] / seen[n][0])
            flat = min(n for n in seen if not _worse(seen[n], seen[best]))
            if floor > flat + 1:
                floor = flat + 1
                r_best = seen[best][1] / seen[best][0]
                what += f"; more than {flat} ready do no better ({r_best:.2%} at {best}): at most {floor}"
        floor = min(floor, max_replicas)
        shown = ", ".join(f"{n}: {r:.2%}" for n, r in sorted(rates.items())[:8])
        tail = f"floor {floor}" if floor else "no floor"
        return replace(self, floor=floor, note=f"{observed}; per count {shown or '-'}: {what}, {tail}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "long_done": self.long_done,
            "long_missed": self.long_missed,
            "short_done": self.short_done,
            "short_missed": self.short_missed,
            "by_count": [list(r) for r in self.by_count],
            "floor": self.floor,
            "note": self.note,
        }

    def evidence(self, goal: float) -> dict[str, Any]:
        """What status and results.json show: observed attainment, burn, the floor and the rate per count."""
        b_long, b_short = self.burn(goal)
        a_long, a_short = self.attainment(goal)
        return {
            "attainment_1h": round(a_long, 5),
            "attainment_5min": round(a_short, 5),
            "burn_1h": round(b_long, 3),
            "burn_5min": round(b_short, 3),
            "floor": self.floor,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Any) -> SloBudget:
        """Reads ``to_dict``; None (a state saved before the budget existed) is a fresh budget."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise BurstpilotError("policy state: slo_budget must be an object")
        vals: dict[str, Any] = {}
        for key in ("long_done", "long_missed", "short_done", "short_missed"):
            x = d.get(key, 0.0)
            if not _count(x):
                raise BurstpilotError(
                    f"policy state: slo_budget.{key} must be a non-negative number, got {x!r}"
                )
            vals[key] = float(x)
        # a state saved with the earlier burst level (no per-count sums) starts with none
        rows = d.get("by_count", [])
        if not isinstance(rows, list):
            raise BurstpilotError("policy state: slo_budget.by_count must be a list")
        table = []
        for i, row in enumerate(rows):
            ok = (
                isinstance(row, list)
                and len(row) == 3
                and isinstance(row[0], int)
                and not isinstance(row[0], bool)
            )
            if not (ok and row[0] > 0 and _count(row[1]) and _count(row[2])):
                raise BurstpilotError(
                    f"policy state: slo_budget.by_count[{i}] must be [replicas > 0, completed, missed], got {row!r}"
                )
            table.append((row[0], float(row[1]), float(row[2])))
        floor = d.get("floor", 0)
        if isinstance(floor, bool) or not isinstance(floor, int) or floor < 0:
            raise BurstpilotError(
                f"policy state: slo_budget.floor must be a non-negative integer, got {floor!r}"
            )
        vals["by_count"], vals["floor"] = tuple(sorted(table)), floor
        return cls(**vals, note=str(d.get("note", "")))


def _worse(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether (completed, missed) ``a`` has a higher violation rate than ``b`` by more than chance explains:
    the two-proportion z-test at ``WORSE_Z`` on the (decayed) sums, with the rates pooled."""
    (da, ma), (db, mb) = a, b
    pooled = (ma + mb) / (da + db)
    se = math.sqrt(max(pooled * (1.0 - pooled), 1e-12) * (1.0 / da + 1.0 / db))
    return ma / da - mb / db > WORSE_Z * se


def _count(x: Any) -> bool:
    """A non-negative finite number (not a bool)."""
    return not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x) and x >= 0
