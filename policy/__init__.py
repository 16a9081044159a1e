"""The scaling decision core: pure functions from a pool's spec and metrics to desired replicas.

No I/O, no clock reads, no unseeded randomness; the operator and the evaluation call the same code. The caller
resolves a named replica profile (``PoolSpec.from_crd(..., resolve_profile=...)`` or
``PoolSpec(model=CapacityModel.from_profile(...))``).
"""

from burstpilot.policy.budget import PoolDemand, allocate_budget
from burstpilot.policy.capacity import Capacity, CapacityModel, StepTimes
from burstpilot.policy.core import decide, new_state, sizing
from burstpilot.policy.observation import Bound, Decision, LimitedBy, Observation, State
from burstpilot.policy.spec import SLO, PoolSpec
from burstpilot.policy.state import Lengths, PolicyState

__all__ = [
    "SLO",
    "Bound",
    "Capacity",
    "CapacityModel",
    "Decision",
    "Lengths",
    "LimitedBy",
    "Observation",
    "PolicyState",
    "PoolDemand",
    "PoolSpec",
    "State",
    "StepTimes",
    "allocate_budget",
    "decide",
    "new_state",
    "sizing",
]
