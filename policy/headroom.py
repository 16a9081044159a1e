"""Burst headroom: the standing margin for bursts shorter than the cold start, sized from the SLO's budget.

A burst that ends before a new replica could start is met only by the replicas already up. The forecaster
gives the distribution of the busiest step's rate within the horizon (its peak quantiles). With ``n``
replicas of capacity ``c`` (requests/s each at the SLO) a step at rate ``x`` leaves about
``(x - n c) * step - n c * TTFT`` requests un-absorbed (what exceeds the pool's rate, less what a queue the pool
drains within the TTFT target holds). The attainment goal allows ``(1 - goal)`` of the horizon's requests to
miss the SLO; bursts may use ``BURST_SHARE`` of that budget (the rest is left to the latency tails no
replica count removes). The headroom bound is the fewest replicas whose expected un-absorbed requests stay
within that budget: none is bought while the expected violations from bursts are already within it.

Before the forecaster has fitted its bands on ``MIN_CALIBRATION`` past origins of the horizon, its peak
quantiles are its prior (``burstpilot.forecasting.burst``: Poisson counts around a level with a 20 % CV), and
the headroom is sized from that prior like any band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LEVELS = (0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)  # the peak quantiles asked of the forecaster
BURST_SHARE = 0.5


@dataclass(frozen=True)
class Headroom:
    replicas: int
    expected_violations: float  # un-absorbed requests expected in the horizon at `replicas`
    budget: float  # requests the goal allows to miss in the horizon from bursts

    def to_dict(self) -> dict[str, float]:
        return {
            "replicas": self.replicas,
            "expected_violations": round(self.expected_violations, 3),
            "budget": round(self.budget, 3),
        }


def expected_unabsorbed(
    peaks: dict[float, float], n: int, rate: float, step_s: float, ttft_s: float
) -> float:
    """E[(X - n rate) * step - n rate * ttft]^+ for the busiest step's rate X, from its quantiles (each level's
    probability mass put at the upper end of its interval: an upper bound)."""
    cap = n * rate
    absorb = cap * ttft_s
    total, below = 0.0, 0.0
    for q in sorted(peaks):
        x = peaks[q]
        total += (q - below) * max(0.0, (x - cap) * step_s - absorb)
        below = q
    last = peaks[max(peaks)]
    total += (1.0 - below) * max(0.0, (last - cap) * step_s - absorb)
    return total


def headroom(
    peaks: dict[float, float],
    mean_rate: float,
    horizon_s: float,
    per_replica: float,
    step_s: float,
    ttft_s: float,
    attainment: float,
    most: int,
) -> Headroom:
    """The fewest replicas (up to ``most``) whose expected un-absorbed burst requests fit the budget."""
    budget = max(0.0, (1.0 - attainment) * BURST_SHARE * max(mean_rate, 0.0) * horizon_s)
    finite = {q: x for q, x in peaks.items() if math.isfinite(x)}
    if not finite or not per_replica > 0:
        return Headroom(0, 0.0, budget)

    def excess(n: int) -> float:
        return expected_unabsorbed(finite, n, per_replica, step_s, ttft_s)

    lo, hi = 0, max(int(most), 0)
    if excess(hi) > budget:
        return Headroom(hi, excess(hi), budget)
    while lo < hi:  # excess falls as n grows: the smallest n within the budget
        mid = (lo + hi) // 2
        if excess(mid) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return Headroom(lo, excess(lo), budget)
