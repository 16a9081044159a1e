"""One simulated replica in real time: the batching engine driven on an absolute step clock.

The step loop keeps an absolute step clock: a step planned at ``t`` ends at ``t + step_ms`` on the event loop's
clock whatever the delivery of the previous step's tokens cost; lateness is recorded, never accumulated. From
idle, a step starts when the first waiting request arrived, and a step admits only requests that arrived by its
start, so a stalled process changes when tokens are delivered, never the schedule. Tokens of a step are
delivered at its end, to the request's :class:`Stream`. After each step the loop hands a
:class:`~burstpilot.sim.stats.SchedulerStats` and an :class:`~burstpilot.sim.stats.IterationStats` to its stat
loggers (Prometheus, and :class:`~burstpilot.sim.stats.RecentStats`).

Without ``ignore_eos`` the simulated model stops at a natural length drawn from a lognormal (median
``default_max_tokens / 2`` of the profile), or at ``max_tokens``, whichever comes first. HTTP is
:mod:`burstpilot.sim.server`'s.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np

from burstpilot.sim.engine import Engine, Seq
from burstpilot.sim.profile import Profile
from burstpilot.sim.protocol import RequestError
from burstpilot.sim.stats import (
    FinishedRequestStats,
    IterationStats,
    PrometheusStatLogger,
    RecentStats,
    SchedulerStats,
)


class Stream:
    """One request's token delivery between the step loop and its HTTP handler."""

    __slots__ = ("seq", "avail", "done", "event", "last_t", "reason")

    def __init__(self, reason: str):
        self.seq: Seq | None = None
        self.avail = 0  # tokens delivered so far
        self.done = False
        self.event = asyncio.Event()
        self.last_t = 0.0
        self.reason = reason  # finish_reason once done


class Replica:
    """Engine, step loop and stat loggers of one simulated GPU replica."""

    def __init__(
        self,
        profile: Profile,
        model_name: str | None = None,
        cold_start_s: float | None = None,
        max_waiting: int | None = None,
        seed: int = 0,
    ):
        self.profile = profile
        self.model_name = model_name or profile.model
        self.rng = np.random.default_rng(seed)
        self.cold_start_s = (
            profile.sample_cold_start(self.rng) if cold_start_s is None else float(cold_start_s)
        )
        self.max_waiting = max_waiting
        self.engine = Engine(profile)
        self.prometheus = PrometheusStatLogger(self.model_name)
        self.recent = RecentStats()
        self.loggers = [self.prometheus, self.recent]
        self.streams: dict[int, Stream] = {}
        self.aborts: list[Stream] = []
        self.wake = asyncio.Event()
        self.ready_at = 0.0
        self.task: asyncio.Task | None = None
        self.outstanding = 0
        self.created = int(time.time())

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.ready_at = loop.time() + self.cold_start_s
        self.task = loop.create_task(self._loop())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    @property
    def ready(self) -> bool:
        return asyncio.get_running_loop().time() >= self.ready_at

    def scheduler_stats(self) -> SchedulerStats:
        e = self.engine
        return SchedulerStats(e.num_running, e.num_waiting, e.kv_usage)

    def record(self, it: IterationStats | None) -> None:
        s = self.scheduler_stats()
        for logger in self.loggers:
            logger.record(s, it)

    # ------------------------------------------------------------------ the step loop
    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        eng = self.engine
        last_end = -math.inf
        while True:
            for st in self.aborts:
                if st.seq is not None:
                    eng.abort(st.seq)
                    self.streams.pop(id(st.seq), None)
            self.aborts.clear()
            # steps run back to back on the step clock; from idle, the next one starts when the first waiting
            # request arrived (not when this loop got to run), as in the discrete-event mode
            start = last_end
            if not eng.running and eng.waiting:
                start = max(last_end, min(loop.time(), eng.waiting[0].arrival))
            plan = eng.plan(start) if eng.has_work() else None
            if plan is None:
                self.record(None)
                self.wake.clear()
                await self.wake.wait()
                continue
            decoding = eng.decoding() if plan.batch else ()
            out = eng.commit(plan, 1)
            delay = out.end - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            it = IterationStats(out.end, out.steps > 0, max(0.0, loop.time() - out.end))
            it.num_generation_tokens = out.tokens
            it.num_preempted_reqs = len(out.preempted)
            for seq in decoding:
                self._token(seq, out.end, it)
            for seq in out.first:
                st = self.streams.get(id(seq))
                if st is None:
                    continue
                if seq.generated == 1:  # its first token (not a resumption after preemption)
                    it.num_prompt_tokens += seq.prompt
                    it.time_to_first_tokens_iter.append(out.end - seq.arrival)
                    it.queue_times_iter.append((seq.scheduled_time or seq.arrival) - seq.arrival)
                self._token(seq, out.end, it)
            for seq in out.finished:
                st = self.streams.pop(id(seq), None)
                if st is None:
                    continue
                st.done = True
                st.event.set()
                it.finished_requests.append(
                    FinishedRequestStats(
                        st.reason,
                        seq.arrival,
                        seq.first_token_time,
                        seq.finish_time,
                        seq.prompt,
                        seq.max_tokens,
                    )
                )
            self.record(it)
            last_end = out.end

    def _token(self, seq: Seq, t: float, it: IterationStats) -> None:
        st = self.streams.get(id(seq))
        if st is None:
            return
        if st.avail:
            it.inter_token_latencies_iter.append(t - st.last_t)
        st.avail += 1
        st.last_t = t
        st.event.set()

    # ------------------------------------------------------------------ requests
    def submit(self, prompt_tokens: int, max_tokens: int, ignore_eos: bool) -> Stream:
        if not self.ready:
            raise RequestError(
                503, "the model is still loading (cold start)", etype="ServiceUnavailableError"
            )
        if self.max_waiting is not None and self.engine.num_waiting >= self.max_waiting:
            raise RequestError(
                503,
                f"the server's queue is full ({self.max_waiting} requests waiting); retry later",
                etype="ServiceUnavailableError",
            )
        if not self.engine.fits(prompt_tokens, max_tokens):  # it could never be scheduled: refuse, never hang
            raise RequestError(
                400,
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} in the completion) "
                f"do not fit this replica's KV cache of {self.profile.kv_capacity_tokens} tokens",
                "max_tokens",
            )
        limit = max_tokens
        reason = "length"
        if not ignore_eos:
            natural = max(
                1,
                int(round(self.profile.default_max_tokens / 2 * math.exp(0.8 * self.rng.standard_normal()))),
            )
            if natural < max_tokens:
                limit, reason = natural, "stop"
        st = Stream(reason)
        seq = self.engine.add(prompt_tokens, limit, asyncio.get_running_loop().time())
        st.seq = seq
        self.streams[id(seq)] = st
        self.outstanding += 1
        self.wake.set()
        return st

    def release(self, st: Stream) -> None:
        """The handler is done with a stream; a stream that did not finish is aborted (client gone)."""
        self.outstanding -= 1
        if not st.done:
            self.aborts.append(st)
            self.wake.set()
