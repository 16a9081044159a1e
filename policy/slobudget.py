"""The SLO's error budget: the attainment the pool really reached, by replica count and load, fed back as a floor.

A ``99 %`` goal allows 1 % of requests to miss the SLO. The throughput, headroom and KV bounds size the pool
from the forecast and a per-replica rate; but part of what misses does not scale the way those bounds assume: a
long prompt's prefill holds up the requests behind it on its replica (TTFT) and stalls its batch (TPOT) at any
utilization, the more requests share a replica the more are held up, and at the same load per replica fewer
replicas pool worse (one replica has nowhere to route around a long prefill). How many miss is then something
only the pool itself can tell, and it depends on both the count and the load.

The budget keeps, per *cell* (ready replicas ``n``, band of the load per ready replica: the pool's arrival
rate smoothed over ``LOAD_TAU_S``, over ``n``; bands a factor ``BAND_RATIO`` wide), exponentially weighted sums
of the completed and the violating requests of the ticks it served, with a time constant of ``COUNT_S``
(hours: a workload's length mix drifts over a day). A cell's violation rate is taken over a prior of
``PRIOR_VIOLATIONS / (1 - goal)`` met requests (a pseudo-count that never decays: a cell with a miss or two is
not condemned); a cell counts as observed from a tenth of the prior's weight of requests. The rates are read
as monotone: more load per replica, or fewer replicas at the same load, never holds up fewer requests. So a
cell is expected to do at least as badly as every observed cell it is worse than (a *lower* bound), and no
worse than the best observed cell that is worse than it (an *upper* bound).

The rate the floor plans with at ``n`` replicas, for the forecast's mean rate over ``n``, is the cell's own
(raised to its lower bound) where observed. Where not: with more replicas than are ready now, the lower bound
(more replicas are worth trying until seen not to help); with as many or fewer, the upper bound (infinite
without one: a load per replica heavier than any seen at that count or fewer) where it is within the goal or
the last hour's burn is ``EXPLORE_BURN`` or more, else the lower bound: trying fewer replicas than the
evidence vouches for may cost violations, so it is paid from the budget, only while the last hour has spent
under half of its.

The *floor* (bound ``slo-budget``) is the fewest replicas whose planned rate is within the allowed ``1 -
goal``, and at most one above the smallest count whose own rate over every load is within ``FLAT`` of the best
such rate (where more replicas do no better it buys one, not the pool's maximum); where no count up to
``maxReplicas`` gets within the goal, the fewest within ``FLAT`` of the best planned. Every tick's expected
violation rate within the allowed one keeps the day's, and the floor follows the load through the day, unlike
a floor per replica count alone, which holds the count that missed at the day's peak all night.

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
COUNT_S = 6 * 3600.0  # sums decay over six hours: telling a 2 % band from a 1 % one takes thousands of requests
FLAT = 0.1  # rates within 10 % of the best seen are "no better": more replicas there buy nothing
COMPARE_SHARE = 0.1  # of the prior's weight: the fewest (decayed) requests for a cell to count as observed
MIN_WEIGHT = 1e-3  # a cell whose decayed sums fall under this many requests is forgotten
EXPLORE_BURN = 0.5  # fewer replicas than ever seen at a load are tried only while the last hour spent under half
LOAD_TAU_S = 60.0  # the arrival rate a tick's misses are filed under is smoothed over this long
BAND_RATIO = 2.0**0.25  # load bands a factor of 1.19 wide (finer than a replica more at up to five) ...
BAND_BASE = 1e-3  # ... from this many requests/s per replica (lighter loads fall in band 0)
MAX_BAND = 100  # 1e-3 x 2^25 requests/s per replica: beyond anything a replica serves


def band(load: float) -> int:
    """The band of a load per replica (requests/s)."""
    if not load > BAND_BASE:
        return 0
    return min(int(math.floor(math.log(load / BAND_BASE) / math.log(BAND_RATIO))), MAX_BAND)


def band_load(k: int) -> float:
    """The lightest load of band ``k`` (requests/s per replica)."""
    return BAND_BASE * BAND_RATIO**k


@dataclass(frozen=True)
class SloBudget:
    """Exponentially weighted completed and violating requests over the two windows and per cell (count, load
    band), the smoothed arrival rate, the floor."""

    long_done: float = 0.0
    long_missed: float = 0.0
    short_done: float = 0.0
    short_missed: float = 0.0
    cells: tuple[tuple[int, int, float, float], ...] = ()  # (ready replicas, band, completed, missed), sorted
    rate: float | None = None  # the pool's arrival rate smoothed over LOAD_TAU_S (requests/s); None: none yet
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
        self,
        completed: float | None,
        missed: float | None,
        window_s: float,
        ready: int = 0,
        arrivals: float | None = None,
    ) -> SloBudget:
        """The sums after one window's counts; unchanged when either count is missing (or not a count). The
        refused count as completed and missed, so ``missed`` above ``completed`` raises both. ``arrivals`` (the
        window's requests) move the smoothed rate; the window's requests are filed under the cell of the
        ``ready`` replicas and that rate over them (none when no replica was ready)."""
        if completed is None or missed is None or not window_s > 0:
            return self
        if not (math.isfinite(completed) and math.isfinite(missed)) or completed < 0 or missed < 0:
            return self
        completed = max(completed, missed)
        rate = self.rate
        if arrivals is not None and math.isfinite(arrivals) and arrivals >= 0:
            now = arrivals / window_s
            w = math.exp(-window_s / LOAD_TAU_S)
            rate = now if rate is None else w * rate + (1.0 - w) * now
        key = (int(ready), band(rate / ready)) if rate is not None and ready > 0 else None
        wl, ws = math.exp(-window_s / LONG_S), math.exp(-window_s / SHORT_S)
        wc = math.exp(-window_s / COUNT_S)
        rows = []
        for n, b, done, miss in self.cells:
            done, miss = wc * done, wc * miss
            if (n, b) == key:
                done, miss, key = done + completed, miss + missed, None
            if done >= MIN_WEIGHT:
                rows.append((n, b, done, miss))
        if key is not None:
            rows.append((*key, completed, missed))
        return replace(
            self,
            cells=tuple(sorted(rows)),
            rate=rate,
            long_done=wl * self.long_done + completed,
            long_missed=wl * self.long_missed + missed,
            short_done=ws * self.short_done + completed,
            short_missed=ws * self.short_missed + missed,
        )

    def observed(self, goal: float) -> dict[tuple[int, int], float]:
        """The observed cells' violation rates over the prior."""
        prior = PRIOR_VIOLATIONS / max(1.0 - goal, 1e-6)
        return {(n, b): miss / (done + prior) for n, b, done, miss in self.cells if done >= COMPARE_SHARE * prior}

    def by_count(self) -> dict[int, float]:
        """Each count's own violation rate over every load it served (no prior)."""
        sums: dict[int, list[float]] = {}
        for n, _, done, miss in self.cells:
            acc = sums.setdefault(n, [0.0, 0.0])
            acc[0] += done
            acc[1] += miss
        return {n: miss / done for n, (done, miss) in sums.items() if done > 0}

    def planned(self, goal: float, n: int, load: float, ready: int) -> float:
        """The violation rate expected of ``n`` replicas at ``load`` requests/s each while ``ready`` are
        (see the module's docstring); 0 where nothing is known."""
        seen = self.observed(goal)
        b = band(load)
        lower = max((r for (m, c), r in seen.items() if m >= n and c <= b), default=0.0)
        if (n, b) in seen:
            return max(seen[n, b], lower)
        if n > ready:
            return lower
        upper = max(min((r for (m, c), r in seen.items() if m <= n and c >= b), default=math.inf), lower)
        if upper <= 1.0 - goal or self.burn(goal)[0] >= EXPLORE_BURN:
            return upper
        return lower

    def step(self, goal: float, max_replicas: int, rate: float, ready: int = 0) -> SloBudget:
        """The floor for a pool expecting ``rate`` requests/s with ``ready`` replicas (see the module's
        docstring)."""
        allowed = max(1.0 - goal, 1e-6)
        b_long, b_short = self.burn(goal)
        a_long, a_short = self.attainment(goal)
        seen = f"attainment {a_long:.2%} (1 h) / {a_short:.2%} (5 min), burn {b_long:.2f} / {b_short:.2f}"
        counts = self.by_count()
        shown = ", ".join(f"{n}: {r:.2%}" for n, r in sorted(counts.items())[:8])
        most = max(int(max_replicas), 0)
        if not self.observed(goal) or not (rate > 0 and math.isfinite(rate)) or most < 1:
            return replace(self, floor=0, note=f"{seen}; per count {shown or '-'}: no floor")
        plan = [self.planned(goal, n, rate / n, ready) for n in range(1, most + 1)]
        ok = [n for n, r in enumerate(plan, 1) if r <= allowed]
        if ok:
            floor = ok[0]
            what = f"{floor} replicas ({rate / floor:.3g}/s each) expect {plan[floor - 1]:.2%}"
        else:
            best = min(plan)
            floor = next(n for n, r in enumerate(plan, 1) if r <= best * (1.0 + FLAT) + 1e-12)
            what = f"no count up to {most} expects the goal; {floor} expect {plan[floor - 1]:.2%}, no more do better"
        # where more replicas have done no better over every load, buy at most one above the best count
        if counts:
            best_count = min(counts.values())
            flat = min(n for n, r in counts.items() if r <= best_count * (1.0 + FLAT) + 1e-12)
            if floor > flat + 1:
                floor = flat + 1
                what += f"; more than {flat} ready do no better ({best_count:.2%}): at most {floor}"
        if floor == 1 and plan[0] <= allowed:
            floor = 0
        note = f"{seen}; per count {shown}; at {rate:.3g}/s {what}"
        return replace(self, floor=floor, note=note + (f", floor {floor}" if floor else ", no floor"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "long_done": self.long_done,
            "long_missed": self.long_missed,
            "short_done": self.short_done,
            "short_missed": self.short_missed,
            "cells": [list(r) for r in self.cells],
            "rate": self.rate,
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
        """Reads ``to_dict``; None (a state saved before the budget existed) is a fresh budget, and one saved
        with earlier sums (per count, ``by_count``) keeps its windows and starts its cells afresh."""
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
        rows = d.get("cells", [])
        if not isinstance(rows, list):
            raise BurstpilotError("policy state: slo_budget.cells must be a list")
        table = []
        for i, row in enumerate(rows):
            ints = isinstance(row, list) and len(row) == 4 and all(
                isinstance(x, int) and not isinstance(x, bool) for x in row[:2]
            )
            if not (ints and row[0] > 0 and 0 <= row[1] <= MAX_BAND and _count(row[2]) and _count(row[3])):
                raise BurstpilotError(
                    f"policy state: slo_budget.cells[{i}] must be [replicas > 0, band 0..{MAX_BAND}, completed, "
                    f"missed], got {row!r}"
                )
            table.append((row[0], row[1], float(row[2]), float(row[3])))
        rate = d.get("rate")
        if rate is not None and not _count(rate):
            raise BurstpilotError(f"policy state: slo_budget.rate must be a non-negative number, got {rate!r}")
        floor = d.get("floor", 0)
        if isinstance(floor, bool) or not isinstance(floor, int) or floor < 0:
            raise BurstpilotError(
                f"policy state: slo_budget.floor must be a non-negative integer, got {floor!r}"
            )
        vals["cells"], vals["floor"] = tuple(sorted(table)), floor
        vals["rate"] = None if rate is None else float(rate)
        return cls(**vals, note=str(d.get("note", "")))


def _count(x: Any) -> bool:
    """A non-negative finite number (not a bool)."""
    return not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x) and x >= 0
