"""The replay schedule: which requests are sent, when, and with which token counts.

Three ways to time the requests (the workload always gives their token counts, row after row):

- ``trace`` (the default): each request at its recorded arrival time, relative to the first one;
- ``rate``: a generated arrival process of ``rate`` requests/s whose gaps are Gamma-distributed with shape
  ``burstiness`` (1: Poisson; below 1 burstier, above 1 more regular), as ``vllm bench serve --request-rate R
  --burstiness B`` draws them, from a seeded generator;
- ``concurrency``: a closed loop, no times at all: N requests in flight, the next one sent when one finishes.

``limit`` keeps the first requests, ``duration_s`` the ones scheduled before that time (a closed loop stops
sending then). With ``rate`` or ``concurrency`` and a ``limit`` above the workload's size, the rows are used
again from the first.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from burstpilot.errors import BurstpilotError

MODES = ("trace", "rate", "concurrency")


@dataclass(frozen=True)
class Schedule:
    """Requests to send, in send order. ``scheduled_s`` is in the frame of the whole (unsharded) schedule."""

    index: np.ndarray  # int64, the request's place in the whole schedule (the trace row in trace mode)
    row: np.ndarray  # int64, the workload row whose token counts it has
    scheduled_s: np.ndarray  # float64, seconds after the first request (0 in a closed loop: sent when free)
    prompt_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64, becomes max_tokens
    fingerprint: str  # identifies the (unsharded) schedule, so shards of different runs don't merge
    mode: str = "trace"

    def __len__(self) -> int:
        return int(self.index.size)

    def take(self, mask: np.ndarray) -> Schedule:
        return Schedule(
            self.index[mask],
            self.row[mask],
            self.scheduled_s[mask],
            self.prompt_tokens[mask],
            self.output_tokens[mask],
            self.fingerprint,
            self.mode,
        )

    def shard(self, i: int, n: int) -> Schedule:
        """Deterministic share i of n: every n-th request, so each shard keeps the workload's shape."""
        return self.take(np.arange(len(self)) % n == i)


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' with 0 <= i < n."""
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError as exc:
        raise BurstpilotError(f"--shard: {text!r} is not i/n (example: 0/4)") from exc
    if n < 1 or not 0 <= i < n:
        raise BurstpilotError(f"--shard: {text!r}: need 0 <= i < n")
    return i, n


def gamma_arrivals(n: int, rate: float, burstiness: float, seed: int) -> np.ndarray:
    """n arrival times starting at 0 whose gaps are Gamma(shape=burstiness, scale=1/(rate*burstiness)):
    mean gap 1/rate, coefficient of variation 1/sqrt(burstiness)."""
    if not (math.isfinite(rate) and rate > 0):
        raise BurstpilotError(
            f"--request-rate: must be a positive number of requests per second, got {rate!r}"
        )
    if not (math.isfinite(burstiness) and burstiness > 0):
        raise BurstpilotError(f"--burstiness: must be a positive number, got {burstiness!r}")
    gaps = np.random.default_rng(seed).gamma(burstiness, 1.0 / (rate * burstiness), size=max(n - 1, 0))
    return np.concatenate([[0.0], np.cumsum(gaps)]) if n else np.zeros(0)


def build_schedule(
    trace,
    include_failed: bool = False,
    duration_s: float | None = None,
    limit: int | None = None,
    mode: str = "trace",
    rate: float | None = None,
    burstiness: float = 1.0,
    seed: int = 0,
) -> Schedule:
    """The schedule of a Trace (anything with arrival_s, request_tokens, response_tokens, failed)."""
    if mode not in MODES:
        raise BurstpilotError(f"schedule: unknown mode {mode!r} (one of {', '.join(MODES)})")
    if limit is not None and limit < 1:
        raise BurstpilotError(f"--limit: need at least 1 request, got {limit}")
    if duration_s is not None and not duration_s > 0:
        raise BurstpilotError(f"--duration: must be positive, got {duration_s!r}")
    arrival = np.asarray(trace.arrival_s, dtype=np.float64)
    req = np.asarray(trace.request_tokens, dtype=np.int64)
    resp = np.asarray(trace.response_tokens, dtype=np.int64)
    failed = np.asarray(trace.failed, dtype=bool)
    rows = np.arange(arrival.size, dtype=np.int64)
    if arrival.size and np.any(np.diff(arrival) < 0):
        order = np.argsort(arrival, kind="stable")
        arrival, req, resp, failed, rows = arrival[order], req[order], resp[order], failed[order], rows[order]
    keep = np.ones(arrival.size, dtype=bool) if include_failed else ~failed
    arrival, req, resp, rows = arrival[keep], req[keep], resp[keep], rows[keep]
    if arrival.size == 0:
        raise BurstpilotError("workload: no requests to replay (all rows failed? try --include-failed)")
    if mode == "trace":
        times = arrival - arrival[0]
        if duration_s is not None:
            m = times < duration_s
            times, req, resp, rows = times[m], req[m], resp[m], rows[m]
        if limit is not None:
            times, req, resp, rows = times[:limit], req[:limit], resp[:limit], rows[:limit]
        index = rows.copy()
    else:
        n = limit if limit is not None else arrival.size
        if mode == "rate":
            if rate is None:
                raise BurstpilotError("schedule: the rate mode needs a request rate")
            if duration_s is not None and limit is None:
                n = max(1, math.ceil(rate * duration_s * 1.5 + 10 * math.sqrt(rate * duration_s)))
            times = gamma_arrivals(n, rate, burstiness, seed)
            if duration_s is not None:
                times = times[times < duration_s]
        else:
            times = np.zeros(n)
        index = np.arange(times.size, dtype=np.int64)
        take = index % arrival.size
        rows, req, resp = rows[take], req[take], resp[take]
    req = np.maximum(req, 1)
    resp = np.maximum(resp, 1)  # a failed row has no response; ask for one token
    h = hashlib.sha256()
    if mode != "trace":  # (a trace-timed schedule keeps the fingerprint older versions gave it)
        h.update(f"{mode}:{rate}:{burstiness}:{seed}".encode())
        h.update(rows.tobytes())
    for a in (index, times, req, resp):
        h.update(np.ascontiguousarray(a).tobytes())
    return Schedule(index, rows, times, req, resp, h.hexdigest()[:16], mode)
