"""The oracle's schedules: every future arrival known, the fewest replica-slots that serve a per-slot need, given the
cold start.

Time is cut into slots. Slot ``t`` needs ``r[t]`` ready replicas: the arrivals of that slot (or of a window
of slots around it) at the capacity model's sustainable rate (``burstpilot.policy.capacity``, no headroom). A
replica costs one slot per slot it is up (cold or ready) and becomes ready ``cold`` slots after it is started;
replicas present at time 0 are ready at once, and nothing can start before time 0 (so before slot ``cold`` at
most ``initial`` replicas are ready).

With ``x[t] >= r[t]`` ready replicas the cost is ``sum(x) + cold * (number of starts)``. It splits over replica
layers (layer ``k`` is up at ``t`` when ``x[t] >= k``), and each layer's best schedule is greedy: stay up through a
gap of ``g`` idle slots between two needed spells when ``g <= cold`` (cheaper than a restart), otherwise stop
and restart ``cold`` slots before the next spell. The layers' schedules nest, so together they are the least-cost
schedule *for that need in this slot cost model*; ``tests/policy/test_oracle.py`` checks it against exhaustive
search on small cases. Whether a need ``r`` is the right one (enough for the SLO, and no more) is a question
about the served latencies, which the closed-form capacity model only estimates: ``burstpilot.evaluation``
answers it in the simulator, by searching over the schedules' sizing and choosing the cheapest that meets the SLO.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.policy.baselines import Policy
from burstpilot.policy.capacity import replica_rate
from burstpilot.policy.core import Decision
from burstpilot.policy.spec import PoolSpec


@dataclass(frozen=True)
class OracleSchedule:
    slot_s: float
    cold_slots: int
    required: list[int]  # ready replicas each slot needs
    ready: list[int]  # ready replicas each slot in the least-cost schedule
    requested: list[int]  # replicas to ask for during each slot (ready plus those starting)
    cost_slots: int  # replica-slots paid, starting included
    starts: int = 0
    spells: list[tuple[int, int, int]] = field(default_factory=list)  # (layer, first up slot, last up slot)

    @property
    def gpu_seconds_per_gpu(self) -> float:
        return self.cost_slots * self.slot_s

    def replicas_at(self, time_s: float) -> int:
        i = int(math.floor(time_s / self.slot_s + 1e-9))
        if i < 0:
            return self.requested[0] if self.requested else 0
        if i >= len(self.requested):
            return self.requested[-1] if self.requested else 0
        return self.requested[i]


def schedule(required: Sequence[int], cold_slots: int, initial: int, slot_s: float = 1.0) -> OracleSchedule:
    """The least-cost schedule that has ``required[t]`` replicas ready in every slot it can."""
    if cold_slots < 0 or initial < 0 or slot_s <= 0:
        raise BurstpilotError("oracle: cold_slots and initial must be >= 0, slot_s > 0")
    n = len(required)
    r = [int(max(0, x)) for x in required]
    # Nothing started at or after time 0 is ready before slot `cold_slots`.
    r = [min(x, initial) if t < cold_slots else x for t, x in enumerate(r)]
    layers = max([initial, *r]) if n else 0
    ready = [0] * n
    requested = [0] * n
    cost = 0
    starts = 0
    spells: list[tuple[int, int, int]] = []
    for k in range(1, layers + 1):
        need = [t for t in range(n) if r[t] >= k]
        up: list[tuple[int, int]] = []  # spells [a, b] the layer is ready
        if need:
            a = b = need[0]
            for t in need[1:]:
                if t - b - 1 <= cold_slots:
                    b = t
                else:
                    up.append((a, b))
                    a = b = t
            up.append((a, b))
        if k <= initial and up and up[0][0] - 0 <= cold_slots:
            up[0] = (0, up[0][1])  # keep an initial replica through a short lead-in
        for i, (a, b) in enumerate(up):
            initial_spell = k <= initial and i == 0 and a == 0
            first = a if initial_spell else a - cold_slots
            for t in range(a, b + 1):
                ready[t] += 1
            for t in range(max(first, 0), b + 1):
                requested[t] += 1
            cost += b - a + 1 + (0 if initial_spell else cold_slots)
            starts += 0 if initial_spell else 1
            spells.append((k, a, b))
    return OracleSchedule(
        slot_s=float(slot_s),
        cold_slots=int(cold_slots),
        required=r,
        ready=ready,
        requested=requested,
        cost_slots=int(cost),
        starts=starts,
        spells=spells,
    )


def required_replicas(
    spec: PoolSpec,
    arrival_s: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    duration_s: float,
    slot_s: float,
    window_slots: int = 1,
) -> list[int]:
    """Replicas each slot needs at the capacity model's full rate (no headroom): for the slot's own arrivals, or
    with ``window_slots`` > 1 for the mean rate and mean lengths of the window of that many slots centred on it
    (slot ``t`` sees slots ``t - (w - 1) // 2`` to ``t + w // 2``, cut at the ends)."""
    if window_slots < 1:
        raise BurstpilotError(f"oracle: window_slots must be >= 1, got {window_slots}")
    n = max(1, int(math.ceil(duration_s / slot_s - 1e-9)))
    idx = np.minimum((np.asarray(arrival_s) // slot_s).astype(np.int64), n - 1)
    counts = np.bincount(idx, minlength=n).astype(float)
    psum = np.bincount(idx, weights=np.asarray(prompt_tokens, dtype=float), minlength=n)
    osum = np.bincount(idx, weights=np.asarray(output_tokens, dtype=float), minlength=n)
    if window_slots > 1:
        w = int(window_slots)

        def centred(a: np.ndarray) -> np.ndarray:
            return np.convolve(a, np.ones(w))[w // 2 : w // 2 + n]

        slots = centred(np.ones(n))
        counts, psum, osum = centred(counts) / slots, centred(psum) / slots, centred(osum) / slots
    out = []
    for c, ps, os_ in zip(counts, psum, osum, strict=True):
        if c <= 0:
            out.append(0)
            continue
        rate = replica_rate(spec, ps / c, max(os_ / c, 1.0)).rate
        out.append(int(math.ceil(c / slot_s / rate - 1e-9)))
    return out


def oracle_policy(the_schedule: OracleSchedule, name: str = "oracle"):
    """The schedule as a policy with the decision core's shape (it reads only the clock from the observation)."""

    def decide(spec, obs, state):
        n = the_schedule.replicas_at(obs.time_s)
        return Decision(replicas=n, reason="oracle schedule", bound="oracle", recommendation=n), state

    slot = the_schedule.slot_s
    return Policy(name, lambda spec: {}, decide, lambda spec: slot, scrape_s=slot, capacity_source="oracle")
