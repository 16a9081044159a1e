"""What a controller reads: the pool's metrics as Prometheus scraped them, not the simulator's exact state.

The evaluation samples the simulated pool every ``scrape_s`` seconds, as Prometheus scrapes the replicas'
``/metrics`` (and the router's): counters (requests arrived at the router, requests finished, prompt and
generation tokens, preemptions) and gauges over the *serving* replicas only (ready and not draining; a
terminating pod's series is gone, and the HPA ignores pods with a deletion timestamp): requests running and
waiting, mean KV-cache usage. The TTFTs of the requests that got their first token since the last scrape go
with each sample (the TTFT histogram's new observations).

A policy's tick at time ``t`` reads ``observation(t, window_s, ...)``: gauges are the last sample at or before
``t`` (a gauge's instant value in PromQL), counters the increase between the last samples at or before
``t - window_s`` and ``t`` (``increase(x[window])`` without extrapolation), the TTFT p99 and mean over the
window's observations, and the mean inter-token latency as (mean running batch x window) / generation tokens.
Pod counts (ready, starting, desired) come from the Kubernetes API, not from the scrape: the caller passes them.

``MetricsSeries`` is plain data (``to_dict`` / ``from_dict``), so a series recorded from a real cluster's
Prometheus replays through any policy (``replay``) to compare its decisions with what a real controller did.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.policy.baselines import Policy, ScrapedObservation
from burstpilot.policy.core import Decision
from burstpilot.policy.spec import PoolSpec

COUNTERS = ("arrived", "finished", "prompt_tokens", "generation_tokens", "preemptions")
GAUGES = ("running", "waiting", "kv_usage")


@dataclass(frozen=True)
class Sample:
    """One scrape of the pool: counters since the start, gauges over the serving replicas."""

    time_s: float
    arrived: float
    finished: float
    prompt_tokens: float
    generation_tokens: float
    preemptions: float
    running: float
    waiting: float
    kv_usage: float | None  # mean over the serving replicas; None with none serving
    ttft_s: tuple[float, ...] = ()  # first tokens since the previous scrape
    tpot_s: tuple[float, ...] = ()  # TPOTs of the requests finished since the previous scrape
    # requests since the start that finished missing the SLO or were refused (the count an SLO histogram query
    # gives on a real cluster); None: not recorded
    violated: float | None = None


@dataclass
class MetricsSeries:
    """The scraped series of one pool, in time order."""

    samples: list[Sample] = field(default_factory=list)
    _times: list[float] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._times = [s.time_s for s in self.samples]

    def add(self, sample: Sample) -> None:
        if self.samples and sample.time_s < self.samples[-1].time_s:
            raise BurstpilotError(f"metrics series: sample at {sample.time_s} s is older than the last one")
        self.samples.append(sample)
        self._times.append(sample.time_s)

    def _index(self, t: float) -> int:
        """Index of the last sample at or before ``t`` (-1: none)."""
        return bisect.bisect_right(self._times, t + 1e-9) - 1

    def last(self, t: float) -> Sample | None:
        i = self._index(t)
        return self.samples[i] if i >= 0 else None

    def increase(self, name: str, t: float, window_s: float) -> float | None:
        """``increase(name[window])``: last sample at or before ``t`` minus the last at or before ``t - window``
        (the series' start counts as zero). None when no sample lies in ``(t - window, t]`` (or, for the
        optional ``violated``, when the last sample does not record it)."""
        if name == "violated":
            j = self._index(t)
            if j < 0 or self.samples[j].violated is None:
                return None
        elif name not in COUNTERS:
            raise BurstpilotError(f"metrics series: {name!r} is not a counter ({', '.join(COUNTERS)})")
        j = self._index(t)
        if j < 0 or self.samples[j].time_s <= t - window_s + 1e-9:
            return None
        i = self._index(t - window_s)
        before = (getattr(self.samples[i], name) or 0.0) if i >= 0 else 0.0
        return max(0.0, getattr(self.samples[j], name) - before)

    def observation(
        self, t: float, window_s: float, current: int, ready: int, starting: int, pending: int = 0
    ) -> ScrapedObservation:
        """What a controller reads at ``t`` over the last ``window_s`` seconds (see the module docstring)."""
        j = self._index(t)
        if j < 0:
            return ScrapedObservation(
                time_s=t, current=current, ready=ready, starting=starting, pending=pending,
                metrics_age_s=None, window_s=window_s,
            )  # fmt: skip
        last = self.samples[j]
        i = self._index(t - window_s)
        in_window = self.samples[i + 1 : j + 1]
        inc = {name: self.increase(name, t, window_s) for name in COUNTERS}
        ttfts = np.fromiter((x for s in in_window for x in s.ttft_s), dtype=float)
        ttfts = ttfts[np.isfinite(ttfts)]
        tpots = np.fromiter((x for s in in_window for x in s.tpot_s), dtype=float)
        tpots = tpots[np.isfinite(tpots)]
        gen = inc["generation_tokens"]
        batch = float(np.mean([s.running for s in in_window])) if in_window else None
        itl = batch * window_s / gen if gen and batch else None
        return ScrapedObservation(
            time_s=t,
            requests=inc["arrived"],
            prompt_tokens=inc["prompt_tokens"],
            generation_tokens=inc["generation_tokens"],
            waiting=last.waiting,
            running=last.running,
            kv_usage=last.kv_usage,
            ttft_p99_s=float(np.quantile(ttfts, 0.99)) if len(ttfts) else None,
            tpot_p99_s=float(np.quantile(tpots, 0.99)) if len(tpots) else None,
            completed=inc["finished"],
            preemptions=inc["preemptions"],
            slo_violations=self.increase("violated", t, window_s),
            current=current,
            ready=ready,
            starting=starting,
            pending=pending,
            metrics_age_s=max(0.0, t - last.time_s),
            window_s=window_s,
            ttft_mean_s=float(np.mean(ttfts)) if len(ttfts) else None,
            itl_mean_s=itl,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": [
                {**asdict(s), "ttft_s": list(s.ttft_s), "tpot_s": list(s.tpot_s)} for s in self.samples
            ]
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MetricsSeries:
        """Reads ``to_dict`` (a recorded series: one object per scrape with the Sample fields)."""
        out = cls()
        for k, row in enumerate(d.get("samples") or []):
            try:
                kw = {name: float(row[name]) for name in ("time_s", *COUNTERS, "running", "waiting")}
                kv, bad = row.get("kv_usage"), row.get("violated")
                out.add(
                    Sample(
                        **kw,
                        kv_usage=None if kv is None else float(kv),
                        violated=None if bad is None else float(bad),
                        ttft_s=tuple(row.get("ttft_s") or ()),
                        tpot_s=tuple(row.get("tpot_s") or ()),
                    )
                )
            except (KeyError, TypeError, ValueError) as e:
                raise BurstpilotError(f"metrics series: sample {k}: {e}") from None
        return out


@dataclass(frozen=True)
class PodCounts:
    """Pods of the target at one time, from the Kubernetes API (a recorded series carries them too)."""

    time_s: float
    current: int  # the scale subresource's spec.replicas
    ready: int
    starting: int


def replay(
    policy: Policy,
    spec: PoolSpec,
    series: MetricsSeries,
    pods: Sequence[PodCounts],
    until_s: float | None = None,
) -> list[tuple[float, Decision]]:
    """Run ``policy`` on a recorded series, tick by tick at its period, with the recorded pod counts (the last
    at or before each tick): the decisions it would have taken. It does not act on them, so the pod counts are
    the ones the recorded controller produced; compare its trajectory with theirs."""
    if not pods:
        raise BurstpilotError("replay: no pod counts recorded")
    times = [p.time_s for p in pods]
    period = float(policy.period_s(spec))
    end = until_s if until_s is not None else (series.samples[-1].time_s if series.samples else 0.0)
    state = policy.new_state(spec)
    out: list[tuple[float, Decision]] = []
    k = 1
    while k * period <= end + 1e-9:
        t = k * period
        i = max(0, bisect.bisect_right(times, t + 1e-9) - 1)
        pc = pods[i]
        obs = series.observation(t, period, pc.current, pc.ready, pc.starting)
        decision, state = policy.decide(spec, obs, state)
        out.append((t, decision))
        k += 1
    return out
