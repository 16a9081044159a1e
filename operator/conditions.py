"""Status conditions following the Kubernetes API conventions (type, status, reason, message, times)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONDITION_TYPES = ("Ready", "MetricsAvailable", "ScalingLimited", "BudgetLimited", "Conflict")


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str = ""

    @property
    def status_str(self) -> str:
        return "Unknown" if self.status is None else ("True" if self.status else "False")


def merge_conditions(
    old: list[dict[str, Any]] | None, new: list[Condition], generation: int, now: str
) -> tuple[list[dict[str, Any]], list[Condition]]:
    """The new condition list and the conditions whose status or reason changed.

    ``lastTransitionTime`` moves only when the status changes; conditions not in ``new`` are kept as they were.
    """
    by_type = {c["type"]: dict(c) for c in (old or []) if "type" in c}
    changed = []
    for cond in new:
        prev = by_type.get(cond.type)
        status = cond.status_str
        moved = prev is None or prev.get("status") != status
        if prev is None or moved or prev.get("reason") != cond.reason:
            changed.append(cond)
        by_type[cond.type] = {
            "type": cond.type,
            "status": status,
            "reason": cond.reason,
            "message": cond.message,
            "observedGeneration": generation,
            "lastTransitionTime": now if moved else prev.get("lastTransitionTime", now),
        }
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(by_type.values(), key=lambda c: (order.get(c["type"], len(order)), c["type"])), changed
