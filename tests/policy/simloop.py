"""Drive the decision core against the discrete-event simulator, reading what a scrape would give each tick."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from burstpilot.policy import Decision, Observation, PoolSpec, decide, new_state
from burstpilot.sim.des import SimCluster


@dataclass
class Loop:
    """The pool, the policy state and what each tick decided."""

    cluster: SimCluster
    spec: PoolSpec
    state: object = None
    decisions: list[Decision] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = new_state(self.spec)
        self.prev = self.cluster.observe()
        self.seen = 0  # requests whose finish has been looked at

    def observation(self, t: float, window: float, hide: bool = False) -> Observation:
        c, o, prev = self.cluster, self.cluster.observe(), self.prev
        self.prev = o
        finish = c.arrival + c.e2e
        done = np.isfinite(finish) & (finish > t - window) & (finish <= t)
        tpot = c.tpot[done & np.isfinite(c.tpot)]
        if hide:  # the metrics went missing this tick
            return Observation(
                time_s=t, current=o.desired, ready=o.ready, starting=o.starting, metrics_age_s=None
            )
        return Observation(
            time_s=t,
            requests=float(o.requests_arrived - prev.requests_arrived),
            prompt_tokens=float(o.prompt_tokens - prev.prompt_tokens),
            generation_tokens=float(o.generation_tokens - prev.generation_tokens),
            completed=float(o.requests_finished - prev.requests_finished),
            preemptions=float(o.preemptions - prev.preemptions),
            waiting=float(o.waiting),
            running=float(o.running),
            kv_usage=float(o.kv_usage_mean),
            ttft_p99_s=float(np.quantile(o.ttft_recent_s, 0.99)) if len(o.ttft_recent_s) else None,
            tpot_p99_s=float(np.quantile(tpot, 0.99)) if len(tpot) else None,
            current=int(o.desired),
            ready=int(o.ready),
            starting=int(o.starting),
            metrics_age_s=0.0,
            window_s=window,
        )

    def run(self, until_s: float, hide=lambda t: False) -> None:
        step = self.spec.interval_s
        t = (self.times[-1] if self.times else 0.0) + step
        while t <= until_s + 1e-9:
            self.cluster.run_until(t)
            obs = self.observation(t, step, hide(t))
            d, self.state = decide(self.spec, obs, self.state)
            self.decisions.append(d)
            self.times.append(t)
            if d.replicas != obs.current:
                self.cluster.set_replicas(d.replicas)
            t += step
