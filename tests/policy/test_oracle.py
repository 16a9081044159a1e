"""``schedule`` is the least-cost schedule for a given per-slot need, in the slot cost model (a replica costs a slot per
slot it is up, a start costs the cold start, nothing started is ready before it): checked against exhaustive
search over every ready-replica sequence on small cases. This proves the layer construction, not that the need
is right: whether a schedule meets the SLO, and which need is the cheapest that does, the simulator decides
(``burstpilot.evaluation.oracle_search``, tested in tests/evaluation)."""

import itertools

import numpy as np
import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.policy import Capacity, PoolSpec
from burstpilot.policy.oracle import required_replicas, schedule


def brute_force(required, cold, initial):
    """Least cost over every ready-replica sequence x (x[t] >= required[t] where reachable)."""
    n = len(required)
    top = max([initial, *required])
    best = None
    for xs in itertools.product(range(top + 1), repeat=n):
        prev, cost, ok = initial, 0, True
        for t, x in enumerate(xs):
            need = required[t] if t >= cold else min(required[t], initial)
            if x < need or (x > prev and t < cold):
                ok = False
                break
            cost += x + cold * max(0, x - prev)
            prev = x
        if ok and (best is None or cost < best):
            best = cost
    return best


def cases():
    rng = np.random.default_rng(7)
    for _ in range(60):
        n = int(rng.integers(1, 7))
        yield [int(v) for v in rng.integers(0, 4, n)], int(rng.integers(0, 4)), int(rng.integers(0, 3))
    yield [0, 3, 0, 0, 0, 3], 2, 0
    yield [2, 0, 0, 0, 0, 2], 3, 2


@pytest.mark.parametrize("required,cold,initial", list(cases()))
def test_oracle_matches_exhaustive_search(required, cold, initial):
    p = schedule(required, cold, initial)
    assert p.cost_slots == brute_force(required, cold, initial)
    for t, need in enumerate(p.required):
        assert p.ready[t] >= need
        assert p.requested[t] >= p.ready[t]


def test_short_gap_kept_long_gap_restarted():
    keep = schedule([1, 0, 0, 1], cold_slots=2, initial=1)
    assert keep.ready == [1, 1, 1, 1] and keep.starts == 0 and keep.cost_slots == 4
    restart = schedule([1, 0, 0, 0, 0, 1], cold_slots=2, initial=1)
    assert restart.ready == [1, 0, 0, 0, 0, 1]
    assert restart.requested == [1, 0, 0, 1, 1, 1]  # started two slots ahead
    assert restart.cost_slots == 2 + 2


def test_replicas_at_reads_the_slot():
    p = schedule([0, 0, 0, 2, 2], cold_slots=2, initial=0, slot_s=10.0)
    assert p.replicas_at(5.0) == 0 and p.replicas_at(12.0) == 2 and p.replicas_at(45.0) == 2


def test_required_replicas_per_slot_or_centred_window():
    # one replica serves 1 request/s of these lengths; 30 requests arrive in slot 1 (of 10 s)
    spec = PoolSpec(capacity=Capacity(decode_tokens_per_s=100.0, prefill_tokens_per_s=1e15))
    arrivals = np.full(30, 15.0)
    args = (arrivals, np.ones(30), np.full(30, 100.0), 40.0, 10.0)
    assert required_replicas(spec, *args) == [0, 3, 0, 0]
    # window of 3 slots: slot 0 sees slots 0-1 (mean 15 requests), 1 and 2 see 10, slot 3 sees slots 2-3
    assert required_replicas(spec, *args, window_slots=3) == [2, 1, 1, 0]
    with pytest.raises(BurstpilotError, match="window_slots"):
        required_replicas(spec, *args, window_slots=0)
