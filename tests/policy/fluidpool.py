"""A hand-made pool for mechanism tests: a fluid model with a known true capacity, fast and deterministic.

Each replica serves up to ``peak = 1.1 x capacity`` requests/s; what it cannot serve waits. Its TPOT p99 is
``(0.2 + 0.8 rho^4) x`` the target at utilization ``rho`` = served / capacity (so 1 at the true capacity), its
TTFT p99 a fixed prefill share of the target plus the queue's wait. New replicas are ready after the cold start.
Late requests: those served beyond the capacity, the queue beyond what the pool drains within the TTFT
target, and ``tail(n)`` of what ``n`` ready replicas serve at any load (a long prompt holding up the requests
behind it: the fewer the replicas, the more share each); with ``report_violations``, each tick's are the
observation's ``slo_violations``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from burstpilot.policy import Decision, Observation, PoolSpec, decide, new_state

PEAK = 1.1  # most a replica serves, over its capacity at the SLO
TTFT_FLOOR = 0.3  # TTFT p99 on an idle replica, over the TTFT target


@dataclass
class FluidPool:
    spec: PoolSpec
    capacity: float  # the true requests/s one replica sustains at the SLO
    replicas: int = 1
    cold_start_s: float = 60.0
    prompt: float = 100.0
    output: float = 10.0
    t: float = 0.0
    queue: float = 0.0
    starting: list[float] = field(default_factory=list)  # ready times of the replicas starting
    state: object = None
    decisions: list[Decision] = field(default_factory=list)
    served_total: float = 0.0
    late_total: float = 0.0  # requests that missed the SLO (served over the TPOT target, or queued too long)
    arrived_total: float = 0.0
    ttft_floor: float = TTFT_FLOOR
    report_violations: bool = False  # pass the tick's late requests as the observation's slo_violations
    tail: Callable[[int], float] | None = None  # share late at any load with n ready replicas

    def __post_init__(self) -> None:
        self.state = new_state(self.spec)

    def tick(self, rate: float, missing: bool = False) -> Decision:
        w = self.spec.interval_s
        self.t += w
        ready_now = [s for s in self.starting if s <= self.t]
        self.replicas += len(ready_now)
        self.starting = [s for s in self.starting if s > self.t]
        n = self.replicas
        arrived = rate * w
        want = arrived + self.queue
        served = min(want, n * PEAK * self.capacity * w)
        self.queue = want - served
        rho = served / w / (n * self.capacity) if n else 0.0
        tpot = 0.2 + 0.8 * rho**4
        wait = self.queue / (served / w) if served > 0 else (math.inf if self.queue else 0.0)
        ttft = self.ttft_floor + min(wait, 1e6) / self.spec.slo.ttft_s
        self.arrived_total += arrived
        self.served_total += served
        late_before = self.late_total
        # Late: the share served beyond the pool's capacity (over the TPOT target), and the queue beyond what the
        # pool serves within the TTFT target.
        self.late_total += served * max(0.0, 1.0 - 1.0 / rho) if rho > 1.0 else 0.0
        self.late_total += max(0.0, self.queue - n * PEAK * self.capacity * self.spec.slo.ttft_s)
        if self.tail is not None and n:
            self.late_total += served * self.tail(n)
        obs = Observation(
            time_s=self.t,
            requests=arrived,
            prompt_tokens=arrived * self.prompt,
            generation_tokens=served * self.output,
            completed=served,
            preemptions=0.0,
            waiting=self.queue,
            running=rho * 30.0 * n,
            kv_usage=min(1.0, 0.3 * rho),
            ttft_p99_s=ttft * self.spec.slo.ttft_s,
            tpot_p99_s=tpot * self.spec.slo.tpot_s,
            current=n + len(self.starting),
            ready=n,
            starting=len(self.starting),
            metrics_age_s=None if missing else 0.0,
            window_s=w,
            slo_violations=min(self.late_total - late_before, served) if self.report_violations else None,
        )
        d, self.state = decide(self.spec, obs, self.state)
        self.decisions.append(d)
        self.apply(d.replicas)
        return d

    def apply(self, target: int) -> None:
        have = self.replicas + len(self.starting)
        if target > have:
            self.starting += [self.t + self.cold_start_s] * (target - have)
        elif target < have:
            drop = have - target
            while drop and self.starting:
                self.starting.pop()
                drop -= 1
            self.replicas -= drop

    def run(self, seconds: float, rate: Callable[[float], float], missing=lambda t: False) -> None:
        for _ in range(int(round(seconds / self.spec.interval_s))):
            t = self.t + self.spec.interval_s
            self.tick(rate(t), missing(t))

    @property
    def learned_rate(self) -> float:
        return self.decisions[-1].capacity["rate_per_replica"]
