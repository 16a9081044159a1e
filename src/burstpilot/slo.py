"""One SLO for every stage: its type, the ``--slo`` grammar, the per-request check, and the run's metrics.

The load generator (real requests), the simulator (simulated requests) and the evaluation (both modes) judge
requests the same way and report them in the same record:

- a request meets the SLO when it was answered (no error, not rejected) and each objective that is set holds:
  time to first token (TTFT), time per output token (TPOT), end-to-end latency (E2E) and the longest gap
  between two tokens (ITL). A response of a single token has no TPOT and no inter-token gap, so it cannot
  violate those two; a request without a first token violates TTFT and E2E.
- ``attainment`` is the share of requests that must meet it (a goal, not a per-request objective).

``RunMetrics`` is what a run's requests came to: counts, the SLO attainment and latency statistics with the
same quantiles everywhere (``QUANTILES``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from burstpilot import units
from burstpilot.errors import BurstpilotError

OBJECTIVES = ("ttft", "tpot", "e2e", "itl")  # per-request latency objectives, in seconds
QUANTILES = (50, 90, 99)  # percentiles every latency statistic reports


@dataclass(frozen=True)
class SLO:
    """Latency objectives in seconds (None: not part of this SLO) and the attainment goal."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None
    itl_s: float | None = None
    attainment: float = 0.99

    def __post_init__(self) -> None:
        for key in OBJECTIVES:
            v = getattr(self, f"{key}_s")
            if v is not None and not (math.isfinite(v) and v > 0):
                raise BurstpilotError(f"slo {key}: must be a positive number of seconds, got {v!r}")
        if not (math.isfinite(self.attainment) and 0 < self.attainment <= 1):
            raise BurstpilotError(f"slo attainment: must be in (0, 1], got {self.attainment!r}")

    @classmethod
    def parse(cls, text: str, defaults: SLO | None = None) -> SLO:
        """``ttft=2s,tpot=100ms[,e2e=30s][,itl=200ms][,attainment=0.99]`` (the grammar of every ``--slo``).

        Objectives not named are None, or ``defaults``' when given; unknown names and bad values name the part.
        """
        parsed = units.parse_slo(text, OBJECTIVES, ("attainment",))
        if defaults is None and not any(k in OBJECTIVES for k in parsed):
            raise BurstpilotError(f"--slo {text!r}: names no latency objective ({', '.join(OBJECTIVES)})")
        base = defaults or cls()
        kw = {f"{k}_s": v for k, v in parsed.items() if k in OBJECTIVES}
        if "attainment" in parsed:
            kw["attainment"] = parsed["attainment"]
        try:
            return cls(**{**base.to_dict(), **kw})
        except BurstpilotError as e:
            raise BurstpilotError(f"--slo: {e}") from None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> SLO | None:
        """Reads ``to_dict`` and the older shapes (``{"ttft": 2.0}``, ``{"ttft_s": 2.0}``); None stays None."""
        if d is None:
            return None
        kw: dict[str, Any] = {}
        for key, value in d.items():
            name = key[:-2] if key.endswith("_s") else key
            if name in OBJECTIVES:
                kw[f"{name}_s"] = None if value is None else float(value)
            elif name == "attainment" and value is not None:
                kw["attainment"] = float(value)
            else:
                raise BurstpilotError(
                    f"slo: unknown field {key!r} (known: {', '.join(OBJECTIVES)}, attainment)"
                )
        return cls(**kw)

    def to_dict(self) -> dict[str, float | None]:
        return {"ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "e2e_s": self.e2e_s, "itl_s": self.itl_s,
                "attainment": self.attainment}  # fmt: skip

    def objectives(self) -> dict[str, float]:
        """The objectives that are set, ``{"ttft": 2.0, ...}`` in seconds."""
        return {k: v for k in OBJECTIVES if (v := getattr(self, f"{k}_s")) is not None}

    def describe(self) -> str:
        """``TTFT <= 2 s, TPOT <= 100 ms for 99 % of requests``."""
        parts = [f"{k.upper()} <= {_fmt_s(v)}" for k, v in self.objectives().items()]
        return f"{', '.join(parts) or 'no latency objective'} for {self.attainment:.4g} of requests"

    def met(
        self,
        ttft_s: Any,
        tpot_s: Any = None,
        e2e_s: Any = None,
        itl_max_s: Any = None,
        failed: Any = None,
    ) -> np.ndarray:
        """Per request (arrays of equal length; NaN = not measured): answered and every set objective holds."""
        ttft = np.asarray(ttft_s, dtype=np.float64)
        n = ttft.shape[0]

        def col(a: Any, missing: float) -> np.ndarray:
            if a is None:
                return np.full(n, missing)
            return np.nan_to_num(np.asarray(a, dtype=np.float64), nan=missing)

        ok = np.ones(n, dtype=bool) if failed is None else ~np.asarray(failed, dtype=bool)
        ok &= ~np.isnan(ttft)  # no first token: not answered
        if self.ttft_s is not None:
            ok &= col(ttft, np.inf) <= self.ttft_s
        if self.tpot_s is not None:
            ok &= col(tpot_s, 0.0) <= self.tpot_s  # a single-token response has no TPOT
        if self.itl_s is not None:
            ok &= col(itl_max_s, 0.0) <= self.itl_s  # ... and no inter-token gap
        if self.e2e_s is not None:
            ok &= col(e2e_s, np.inf) <= self.e2e_s
        return ok


def _fmt_s(v: float) -> str:
    return f"{v * 1000:.4g} ms" if v < 1 else f"{v:.4g} s"


@dataclass(frozen=True)
class LatencyStats:
    """count, mean, the ``QUANTILES`` and max of the finite values (None when there are none)."""

    count: int = 0
    mean: float | None = None
    percentiles: dict[int, float | None] = field(default_factory=lambda: dict.fromkeys(QUANTILES))
    max: float | None = None

    @classmethod
    def of(cls, values: Iterable[float] | np.ndarray) -> LatencyStats:
        a = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
        a = a[np.isfinite(a)]
        if a.size == 0:
            return cls()
        qs = np.percentile(a, QUANTILES)
        return cls(int(a.size), float(a.mean()), {q: float(v) for q, v in zip(QUANTILES, qs, strict=True)},
                   float(a.max()))  # fmt: skip

    def p(self, q: int) -> float | None:
        return self.percentiles[q]

    def to_dict(self) -> dict[str, float | int | None]:
        return {"count": self.count, "mean": self.mean, **{f"p{q}": v for q, v in self.percentiles.items()},
                "max": self.max}  # fmt: skip


@dataclass(frozen=True)
class RunMetrics:
    """What the requests of one run came to, the same record for real and simulated requests."""

    requests: int
    completed: int
    failed: int
    ttft: LatencyStats
    tpot: LatencyStats
    e2e: LatencyStats
    slo: SLO | None = None
    slo_met: int | None = None  # requests that met the SLO (None: no SLO given)

    @classmethod
    def from_requests(
        cls,
        ttft_s: Any,
        tpot_s: Any,
        e2e_s: Any,
        failed: Any,
        slo: SLO | None = None,
        itl_max_s: Any = None,
    ) -> RunMetrics:
        """From per-request arrays (NaN = not measured; ``failed``: error, rejected or unanswered)."""
        ttft = np.asarray(ttft_s, dtype=np.float64)
        tpot = np.asarray(tpot_s, dtype=np.float64)
        e2e = np.asarray(e2e_s, dtype=np.float64)
        bad = np.asarray(failed, dtype=bool) | np.isnan(ttft)
        ok = ~bad
        met = None if slo is None else int(slo.met(ttft, tpot, e2e, itl_max_s, bad).sum())
        return cls(
            requests=int(ttft.shape[0]),
            completed=int(ok.sum()),
            failed=int(bad.sum()),
            ttft=LatencyStats.of(ttft[ok]),
            tpot=LatencyStats.of(tpot[ok]),
            e2e=LatencyStats.of(e2e[ok]),
            slo=slo,
            slo_met=met,
        )

    @property
    def slo_attainment(self) -> float | None:
        """Share of requests that met the SLO (1.0 for a run without requests; None without an SLO)."""
        if self.slo_met is None:
            return None
        return self.slo_met / self.requests if self.requests else 1.0

    @property
    def slo_violations(self) -> int | None:
        return None if self.slo_met is None else self.requests - self.slo_met

    @property
    def meets_goal(self) -> bool | None:
        """The attainment reached the SLO's goal (None without an SLO)."""
        att = self.slo_attainment
        return None if att is None or self.slo is None else att >= self.slo.attainment

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "completed": self.completed,
            "failed": self.failed,
            "slo": None if self.slo is None else self.slo.to_dict(),
            "slo_met": self.slo_met,
            "slo_attainment": self.slo_attainment,
            "slo_violations": self.slo_violations,
            "ttft_s": self.ttft.to_dict(),
            "tpot_s": self.tpot.to_dict(),
            "e2e_s": self.e2e.to_dict(),
        }
