"""A GPU budget shared by several pools: who gets how many replicas when their wishes don't all fit."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from burstpilot.errors import BurstpilotError


@dataclass(frozen=True)
class PoolDemand:
    """One pool's wish: ``desired`` replicas of ``gpus_per_replica`` GPUs; ``min_replicas`` are served first."""

    name: str
    desired: int
    min_replicas: int = 0
    gpus_per_replica: int = 1
    priority: int = 0


def allocate_budget(demands: Iterable[PoolDemand], gpus: int) -> dict[str, int]:
    """Grant replicas within ``gpus`` GPUs in total.

    First every pool's ``min_replicas`` (higher priority first), then the rest of each wish, higher priority
    first; pools of equal priority take one replica at a time in turn (by name), so they share fairly. A pool
    whose next replica does not fit is skipped, so a smaller replica of another pool may still use the rest.
    Pure and deterministic.
    """
    pools = sorted(demands, key=lambda d: (-d.priority, d.name))
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        raise BurstpilotError("budget: pool names must be unique")
    left = int(gpus)
    granted = {p.name: 0 for p in pools}
    for p in pools:  # minimums first
        n = min(p.min_replicas, max(left, 0) // p.gpus_per_replica)
        granted[p.name] = n
        left -= n * p.gpus_per_replica
    for prio in sorted({p.priority for p in pools}, reverse=True):
        tier = [p for p in pools if p.priority == prio]
        progress = True
        while progress:
            progress = False
            for p in tier:
                if granted[p.name] < p.desired and p.gpus_per_replica <= left:
                    granted[p.name] += 1
                    left -= p.gpus_per_replica
                    progress = True
    return granted
