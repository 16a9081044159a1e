"""Small Trace-like workloads for tests that only read the columns replay uses."""

from types import SimpleNamespace

import numpy as np


def make_workload(arrival_s, request_tokens=8, response_tokens=4, failed=None):
    """A Trace-like workload (the columns replay reads)."""
    arrival = np.asarray(arrival_s, dtype=np.float64)
    n = arrival.size
    return SimpleNamespace(
        arrival_s=arrival,
        request_tokens=np.broadcast_to(np.asarray(request_tokens, dtype=np.int64), (n,)).copy(),
        response_tokens=np.broadcast_to(np.asarray(response_tokens, dtype=np.int64), (n,)).copy(),
        failed=np.zeros(n, dtype=bool) if failed is None else np.asarray(failed, dtype=bool),
        duration_s=float(arrival[-1] - arrival[0]) if n else 0.0,
    )
