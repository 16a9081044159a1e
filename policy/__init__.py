"""The scaling decision core: pure functions from a pool's spec and metrics to desired replicas.

No I/O, no clock reads, no unseeded randomness; the operator and the evaluation call the same code.
"""

from burstpilot.policy.budget import PoolDemand, allocate_budget
from burstpilot.policy.core import Decision, Observation, decide, new_state, sizing
from burstpilot.policy.spec import SLO, Capacity, PoolSpec

__all__ = [
    "SLO",
    "Capacity",
    "Decision",
    "Observation",
    "PoolDemand",
    "PoolSpec",
    "allocate_budget",
    "decide",
    "new_state",
    "sizing",
]
