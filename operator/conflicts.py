"""Other autoscalers on the same target: an HPA, or a KEDA ScaledObject (and the HPA KEDA makes for it).

Two controllers writing one ``/scale`` fight: each undoes the other's count every few seconds. burstpilot
refuses to act on a target another controller scales: the pool keeps deciding and reporting (as in Advisory
mode), its ``Conflict`` condition is True with the other controller's name, and one Warning Event says how to
resolve it. The HPAs and ScaledObjects of a namespace are listed at most every ``TTL_S`` and shared by the
namespace's pools; a listing that fails keeps the last one known.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from burstpilot.operator.kube import Autoscaler, TargetError

TTL_S = 30.0


def describe(other: Autoscaler) -> str:
    if other.kind == "HorizontalPodAutoscaler" and other.managed_by_keda:
        return f"HorizontalPodAutoscaler {other.name} (made by KEDA for ScaledObject {other.managed_by_keda})"
    return f"{other.kind} {other.name}"


def resolution(other: Autoscaler) -> str:
    if other.kind == "ScaledObject" or other.managed_by_keda:
        so = other.name if other.kind == "ScaledObject" else other.managed_by_keda
        return (
            f"delete ScaledObject {so} to let burstpilot scale, or set this pool's mode: Advisory and let KEDA "
            "scale from burstpilot_operator_desired_replicas (docs/operator.md, KEDA)"
        )
    return f"delete HorizontalPodAutoscaler {other.name} to let burstpilot scale, or set this pool's mode: Advisory"


def scaling(others: list[Autoscaler], kind: str, name: str) -> list[Autoscaler]:
    """The controllers among ``others`` that scale the target ``kind``/``name``; a ScaledObject and the HPA
    KEDA made for it count once (the ScaledObject)."""
    mine = [o for o in others if o.target_name == name and (o.target_kind or "Deployment") == kind]
    objects = {o.name for o in mine if o.kind == "ScaledObject"}
    return [o for o in mine if not (o.kind == "HorizontalPodAutoscaler" and o.managed_by_keda in objects)]


@dataclass
class ConflictFinder:
    """Per-namespace listings of the other autoscalers, shared by the pools of the operator."""

    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, tuple[float, list[Autoscaler]]] = field(default_factory=dict)

    def fresh(self, namespace: str) -> bool:
        """Whether ``others`` would answer from its cache (no API call)."""
        hit = self._seen.get(namespace)
        return hit is not None and self.clock() - hit[0] < TTL_S

    def others(self, namespace: str, listing: Callable[[str], list[Autoscaler]]) -> list[Autoscaler] | None:
        """The autoscalers of ``namespace`` (listed at most every TTL_S); None when never listed successfully."""
        hit = self._seen.get(namespace)
        if hit is not None and self.clock() - hit[0] < TTL_S:
            return hit[1]
        try:
            found = listing(namespace)
        except TargetError:
            return hit[1] if hit is not None else None
        self._seen[namespace] = (self.clock(), found)
        return found
