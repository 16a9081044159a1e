"""Small synthetic workloads for tests and benchmarks of the simulator.

The traces area owns real workload generation (``burstpilot.traces.generate``); this module only makes
renewal-process arrivals with given lengths, which is what the simulator's own tests need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Workload:
    """The columns of a Trace that the simulator reads."""

    arrival_s: np.ndarray
    request_tokens: np.ndarray
    response_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1]) if len(self.arrival_s) else 0.0


def gamma_arrivals(rate: float, shape: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times of a Gamma renewal process (shape 1 is Poisson) with mean rate ``rate`` per second."""
    n = int(rate * duration_s * 1.5) + 64
    gaps = rng.gamma(shape, 1.0 / (shape * rate), size=n)
    t = np.cumsum(gaps)
    while t[-1] < duration_s:
        t = np.concatenate([t, t[-1] + np.cumsum(rng.gamma(shape, 1.0 / (shape * rate), size=n))])
    return t[t < duration_s]


def synthetic(
    rate: float,
    duration_s: float,
    shape: float = 1.0,
    prompt_median: float = 600,
    output_median: float = 200,
    sigma: float = 0.8,
    max_total: int = 8192,
    seed: int = 0,
) -> Workload:
    """Gamma-renewal arrivals with lognormal prompt and output lengths (capped so prompt + output fits)."""
    rng = np.random.default_rng(seed)
    t = gamma_arrivals(rate, shape, duration_s, rng)
    n = len(t)
    prompt = np.clip(np.round(prompt_median * np.exp(sigma * rng.standard_normal(n))), 1, max_total // 2)
    out = np.clip(np.round(output_median * np.exp(sigma * rng.standard_normal(n))), 1, max_total // 2)
    return Workload(t, prompt.astype(np.int64), out.astype(np.int64))
