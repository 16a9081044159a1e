"""What a policy reads each tick (``Observation``) and what it answers (``Decision``), shared by the decision core,
the baselines and the oracle; and the shape every policy's state has (``State``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol, get_args

# The bounds the decision core emits: which rule set the replica count.
CoreBound = Literal[
    "min",
    "throughput",
    "kv",
    "backlog",
    "cold-start",
    "stabilization",
    "missing-metrics",
    "headroom",
    "slo-feedback",
    "slo-budget",
]
# The bounds the baselines and the oracle emit (burstpilot.policy.baselines, burstpilot.policy.oracle).
BaselineBound = Literal["static", "concurrency", "request-rate", "oracle"]
Bound = CoreBound | BaselineBound
BOUNDS: frozenset[str] = frozenset(get_args(CoreBound) + get_args(BaselineBound))

# A limit that cut the count below what the bound asked for (None: none did).
LimitedBy = Literal["max-step", "max-replicas"]
LIMITS: frozenset[str] = frozenset(get_args(LimitedBy))


@dataclass(frozen=True)
class Observation:
    """What the metrics say about one pool at one tick.

    ``requests``, ``prompt_tokens`` and ``generation_tokens`` are counts during the last ``window_s`` seconds
    (None: unknown; ``window_s`` None means the spec's forecasting step). ``current`` is the replica count the
    target asks for (its scale subresource's spec); ``ready``, ``starting`` and ``pending`` split it by pod state.
    ``metrics_age_s`` is the age of the newest sample, None when the metrics are missing.

    The serving signals, all optional (None: not measured): ``completed`` requests finished in the window,
    ``preemptions`` in the window, ``ttft_p99_s`` and ``tpot_p99_s`` of the requests of the window,
    ``slo_violations``: how many of the requests completed (or refused) in the window missed the SLO.
    """

    time_s: float
    requests: float | None = None
    prompt_tokens: float | None = None
    generation_tokens: float | None = None
    waiting: float | None = None
    running: float | None = None
    kv_usage: float | None = None
    ttft_p99_s: float | None = None
    current: int = 0
    ready: int = 0
    starting: int = 0
    pending: int = 0
    metrics_age_s: float | None = 0.0
    window_s: float | None = None
    completed: float | None = None
    tpot_p99_s: float | None = None
    preemptions: float | None = None
    slo_violations: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Observation:
        """From ``to_dict`` output, also of an earlier version (unknown keys are ignored, new ones default)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Decision:
    """Desired replicas and why. ``bound`` names the rule that set the number; ``bounds`` has every rule's value;
    ``limited_by`` the limit (``max-step``, ``max-replicas``) that cut it, if one did."""

    replicas: int
    reason: str
    bound: Bound
    forecast: dict[str, Any] | None = None
    advisory: bool = False
    recommendation: int = 0  # the sizing before stabilization, rate limits and the min/max clamp
    bounds: dict[str, int] = field(default_factory=dict)
    limited_by: LimitedBy | None = None
    # the per-replica capacity it sized with: rate_per_replica, model_rate_per_replica, factor, source
    # (profile or learned), evidence_s, note (burstpilot.policy.learned)
    capacity: dict[str, Any] | None = None
    # the numbers behind it: the SLO signals, the scale-down hold used, the burst headroom
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.bound not in BOUNDS:
            raise ValueError(f"Decision.bound {self.bound!r} is not one of {sorted(BOUNDS)}")
        if self.limited_by is not None and self.limited_by not in LIMITS:
            raise ValueError(f"Decision.limited_by {self.limited_by!r} is not one of {sorted(LIMITS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class State(Protocol):
    """Every policy's state: immutable between ticks (``decide`` returns a new one) and JSON-serializable.

    A policy is ``new_state(spec) -> State`` and ``decide(spec, obs, state) -> (Decision, State)``; the class
    of its state also offers ``from_dict(d)``, which reads what ``to_dict`` wrote (and earlier versions of it).
    """

    def to_dict(self) -> dict[str, Any]: ...
