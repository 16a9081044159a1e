"""The replay schedule: which workload rows are sent, when, and with which token counts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from burstpilot.errors import BurstpilotError


@dataclass(frozen=True)
class Schedule:
    """Rows to send, in send order. ``scheduled_s`` is in the frame of the whole (unsharded) workload."""

    index: np.ndarray  # int64, row of the workload trace
    scheduled_s: np.ndarray  # float64, seconds after the first request of the workload
    prompt_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64, becomes max_tokens
    fingerprint: str  # identifies the (unsharded) workload, so shards of different workloads don't merge

    def __len__(self) -> int:
        return int(self.index.size)

    def take(self, mask: np.ndarray) -> Schedule:
        return Schedule(
            self.index[mask],
            self.scheduled_s[mask],
            self.prompt_tokens[mask],
            self.output_tokens[mask],
            self.fingerprint,
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


def build_schedule(trace, include_failed: bool = False, limit_s: float | None = None) -> Schedule:
    """The schedule of a Trace (anything with arrival_s, request_tokens, response_tokens, failed)."""
    arrival = np.asarray(trace.arrival_s, dtype=np.float64)
    req = np.asarray(trace.request_tokens, dtype=np.int64)
    resp = np.asarray(trace.response_tokens, dtype=np.int64)
    failed = np.asarray(trace.failed, dtype=bool)
    index = np.arange(arrival.size, dtype=np.int64)
    keep = np.ones(arrival.size, dtype=bool) if include_failed else ~failed
    if arrival.size and np.any(np.diff(arrival) < 0):
        order = np.argsort(arrival, kind="stable")
        arrival, req, resp, keep, index = arrival[order], req[order], resp[order], keep[order], index[order]
    arrival, req, resp, index = arrival[keep], req[keep], resp[keep], index[keep]
    if arrival.size == 0:
        raise BurstpilotError("workload: no requests to replay (all rows failed? try --include-failed)")
    rel = arrival - arrival[0]
    if limit_s is not None:
        m = rel < limit_s
        rel, req, resp, index = rel[m], req[m], resp[m], index[m]
    req = np.maximum(req, 1)
    resp = np.maximum(resp, 1)  # a failed row has no response; ask for one token
    h = hashlib.sha256()
    for a in (index, rel, req, resp):
        h.update(np.ascontiguousarray(a).tobytes())
    return Schedule(index, rel, req, resp, h.hexdigest()[:16])
