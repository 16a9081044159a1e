"""The continuous-batching engine: one implementation for real time and for the virtual clock.

The engine never reads a clock. Its driver calls :meth:`Engine.plan` at the start of a step with the time it
chooses, and :meth:`Engine.commit` when the step (or several identical decode steps) has run. Scheduling follows
vLLM's v1 scheduler in the points that shape latency under load:

* an FCFS waiting queue; preempted requests go back to its front;
* at most ``max_num_seqs`` running sequences and ``max_num_batched_tokens`` tokens per step: every decoding
  sequence takes one token, partly prefilled prompts continue in chunks, then waiting requests are admitted in
  order while their chunk's KV blocks fit (chunked prefill);
* a paged KV cache of ``block_size``-token blocks; a decoding sequence needs a new block whenever its tokens fill
  the last one; when a step's blocks do not fit, the newest running sequence is preempted (recompute: its
  blocks are freed and it waits to prefill its prompt and the tokens generated so far again).

Between two events the decoding batch does not change, so :meth:`plan` tells how many decode steps can run
unchanged (until a sequence finishes or the cache would run out); the discrete-event driver commits them at
once. Step durations come from the profile's step-time model.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from burstpilot.sim.profile import Profile

WAITING, PREFILL, DECODE, FINISHED, ABORTED = range(5)


class Seq:
    """One request inside the engine."""

    __slots__ = (
        "prompt",
        "max_tokens",
        "arrival",
        "generated",
        "computed",
        "target",
        "blocks",
        "state",
        "join_step",
        "join_gen",
        "join_k",
        "resid",
        "first_token_time",
        "finish_time",
        "scheduled_time",
        "preemptions",
        "join_time",
        "last_end",
        "gap_parts",
        "tag",
    )

    def __init__(self, prompt: int, max_tokens: int, arrival: float, tag=None):
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.arrival = arrival
        self.generated = 0
        self.computed = 0
        self.target = prompt
        self.blocks = 0
        self.state = WAITING
        self.join_step = 0
        self.join_gen = 0
        self.join_k = 0
        self.resid = 0
        self.first_token_time = None
        self.finish_time = None
        self.scheduled_time = None
        self.preemptions = 0
        # inter-token gaps of the decode runs closed so far (a gap across a preemption included)
        self.join_time = 0.0
        self.last_end: float | None = None
        self.gap_parts: list[np.ndarray] = []
        self.tag = tag


@dataclass(slots=True)
class Plan:
    start: float
    batch: int  # decoding sequences
    context: int  # their KV tokens at the start
    chunks: list  # (seq, tokens) prefill chunks of this step
    first_ms: float  # duration of the first step
    inc_ms: float  # each further decode step is this much longer (contexts grow)
    max_steps: int  # identical decode steps that may run (1 when the step has prefill)
    preempted: list = field(default_factory=list)

    def end_after(self, k: int) -> float:
        return self.start + (k * self.first_ms + self.inc_ms * k * (k - 1) / 2.0) / 1000.0

    def steps_to_reach(self, t: float) -> int:
        """The number of steps until the first step end at or after time ``t`` (at most max_steps)."""
        if self.max_steps <= 1 or t <= self.start:
            return 1
        ms = (t - self.start) * 1000.0
        a, b = self.inc_ms / 2.0, self.first_ms - self.inc_ms / 2.0
        if a > 1e-12:
            k = (-b + (b * b + 4 * a * ms) ** 0.5) / (2 * a)
        else:
            k = ms / self.first_ms
        k = max(1, int(np.ceil(k - 1e-9)))
        while k > 1 and self.end_after(k - 1) >= t:
            k -= 1
        while k < self.max_steps and self.end_after(k) < t:
            k += 1
        return min(k, self.max_steps)


@dataclass(slots=True)
class Outcome:
    end: float
    steps: int
    batch: int
    tokens: int  # tokens generated in these steps
    first: list  # sequences whose prefill completed (they emitted a token)
    finished: list
    preempted: list


_STEPS = np.arange(4096, dtype=np.float64)  # 0, 1, 2, ...: the step index within a run of decode steps


def _grow_steps(k: int) -> None:
    global _STEPS
    _STEPS = np.arange(max(k, 2 * len(_STEPS)), dtype=np.float64)


class StepLog:
    """Durations (seconds) of the engine's recent steps, for per-request inter-token gaps.

    ``buf[i]`` is the duration of step ``base + i + 1``; steps older than every open decode run are dropped.
    """

    TRIM_AT = 1 << 18

    def __init__(self):
        self.buf = np.empty(4096)
        self.n = 0
        self.base = 0

    def add(self, first_ms: float, inc_ms: float, k: int):
        n = self.n
        if n + k > len(self.buf):
            new = np.empty(max(2 * len(self.buf), n + k))
            new[:n] = self.buf[:n]
            self.buf = new
        if k == 1:
            self.buf[n] = first_ms / 1000.0
        else:  # (first_ms + inc_ms * j) / 1000 for j < k, in place
            if k > len(_STEPS):
                _grow_steps(k)
            out = self.buf[n : n + k]
            np.multiply(_STEPS[:k], inc_ms, out=out)
            out += first_ms
            out /= 1000.0
        self.n = n + k

    def durations(self, first_step: int, end_step: int) -> np.ndarray:
        """Durations of steps first_step + 1 .. end_step (a copy)."""
        return self.buf[first_step - self.base : end_step - self.base].copy()

    def trim(self, keep_from: int) -> None:
        drop = keep_from - self.base
        if drop > 0:
            self.buf[: self.n - drop] = self.buf[drop : self.n]
            self.n -= drop
            self.base = keep_from


class Engine:
    def __init__(self, profile: Profile, record_steps: bool = False):
        self.p = profile
        self.sm = profile.step
        self.bs = profile.block_size
        self.total_blocks = profile.num_kv_blocks
        self.used_blocks = 0
        self.waiting: deque[Seq] = deque()
        self.running: dict[int, Seq] = {}  # admission order; id(seq) -> seq
        self.prefilling: dict[int, Seq] = {}  # the running sequences still in prefill
        self.counts = [0] * self.bs  # decoding sequences by block residue
        self.batch = 0
        self.context = 0
        self.finish_heap: list = []
        self.step = 0
        self.order = 0
        self.log = StepLog() if record_steps else None
        # counters
        self.preemptions = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished = 0

    # ------------------------------------------------------------------ queries
    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def kv_usage(self) -> float:
        return self.used_blocks / self.total_blocks

    def fits(self, prompt_tokens: int, max_tokens: int) -> bool:
        """Whether a request can ever run here (model length and the whole KV cache)."""
        total = prompt_tokens + max_tokens
        return total <= self.p.max_model_len and -(-total // self.bs) <= self.total_blocks

    def has_work(self) -> bool:
        return bool(self.running) or bool(self.waiting)

    def decoding(self):
        """The sequences that emit a token in every decode step."""
        return [s for s in self.running.values() if s.state == DECODE]

    # ------------------------------------------------------------------ requests
    def add(self, prompt_tokens: int, max_tokens: int, now: float, tag=None) -> Seq:
        """Queue a request that arrived at ``now``; ``tag`` is the caller's handle on it."""
        seq = Seq(max(1, int(prompt_tokens)), max(1, int(max_tokens)), now, tag)
        self.waiting.append(seq)
        return seq

    def abort(self, seq: Seq) -> None:
        """Drop a request (client gone); call between steps only."""
        if seq.state == WAITING:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        elif seq.state in (PREFILL, DECODE):
            self._release(seq)
            del self.running[id(seq)]
        seq.state = ABORTED
        self.prefilling.pop(id(seq), None)

    # ------------------------------------------------------------------ internals
    def _cur_k(self, seq: Seq) -> int:
        return seq.join_k + (self.step - seq.join_step)

    def _release(self, seq: Seq) -> int:
        """Free a running sequence's blocks; returns its KV tokens."""
        if seq.state == DECODE:
            k = self._cur_k(seq)
            self.counts[seq.resid] -= 1
            self.batch -= 1
            self.context -= k
            self.used_blocks -= -(-k // self.bs)
            seq.generated = seq.join_gen + (self.step - seq.join_step)
            return k
        self.used_blocks -= seq.blocks
        seq.blocks = 0
        self.prefilling.pop(id(seq), None)
        return seq.computed

    def _open_run(self, seq: Seq, t: float) -> None:
        seq.join_step = self.step
        seq.join_time = t
        if self.log is not None and seq.last_end is not None:
            seq.gap_parts.append(np.array([t - seq.last_end]))

    def _close_run(self, seq: Seq, t: float) -> None:
        if self.log is not None and self.step > seq.join_step:
            seq.gap_parts.append(self.log.durations(seq.join_step, self.step))
        seq.last_end = t

    def gaps(self, seq: Seq) -> np.ndarray:
        """A finished request's inter-token gaps (recorded when the engine keeps a step log)."""
        parts = seq.gap_parts
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.empty(0)

    def _preempt(self, seq: Seq, now: float) -> None:
        if seq.state == DECODE:
            self._close_run(seq, now)
        self._release(seq)
        del self.running[id(seq)]
        seq.state = WAITING
        seq.computed = 0
        seq.target = seq.prompt + seq.generated
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)

    def _decode_blocks(self, k: int) -> int:
        """New blocks the decoding batch needs over the next k steps."""
        bs, c = self.bs, self.counts
        full, rest = divmod(k, bs)
        n = full * self.batch
        if rest:
            # step s + j needs the sequences of residue (r0 - j) mod bs: a descending, circular run of residues
            r0 = (-self.step) % bs
            if rest <= r0 + 1:
                n += sum(c[r0 - rest + 1 : r0 + 1])
            else:
                n += sum(c[: r0 + 1]) + sum(c[bs - (rest - r0 - 1) :])
        return n

    def _max_decode_steps(self, free: int, cap: int) -> int:
        """The most steps (<= cap) whose new blocks fit in ``free``."""
        bs, s, c = self.bs, self.step, self.counts
        per_cycle = self.batch
        k = 0
        if per_cycle > 0 and cap > bs:
            cycles = min(free // per_cycle, (cap - bs) // bs)
            k = cycles * bs
            free -= cycles * per_cycle
            # fewer than 2 * bs steps remain, which need at most 2 * batch blocks: they all fit
            if cap - k < 2 * bs and free >= 2 * per_cycle:
                return cap
        while k < cap:
            need = c[(-(s + k)) % bs]
            if need > free:
                break
            free -= need
            k += 1
        return k

    # ------------------------------------------------------------------ stepping
    def plan(self, now: float) -> Plan | None:
        """Schedule the next step starting at ``now``; None when there is nothing to run.

        Admissions and preemptions take effect here. The returned plan allows ``max_steps`` identical decode
        steps (1 when the step carries prefill); the driver commits between 1 and that many.
        """
        if not self.running and not self.waiting:
            return None
        bs = self.bs
        if not self.waiting and not self.prefilling:
            # only decoding sequences (the common case between arrivals): the general path below, shortened
            batch = self.batch
            if self.used_blocks + self.counts[(-self.step) % bs] <= self.total_blocks:
                sm = self.sm
                cap = max(1, self.finish_heap[0][0] - self.step) if self.finish_heap else 1 << 30
                max_steps = max(1, self._max_decode_steps(self.total_blocks - self.used_blocks, cap))
                return Plan(
                    now, batch, self.context, [], sm.step_ms(batch, self.context, 0, 0.0),
                    sm.ctx_ms(batch) * batch, max_steps, [],
                )  # fmt: skip
        budget = self.p.max_num_batched_tokens
        preempted: list[Seq] = []
        # decoding sequences first: one token each; preempt the newest until their blocks fit
        while self.batch > 0 and self.used_blocks + self.counts[(-self.step) % bs] > self.total_blocks:
            victim = self.running[next(reversed(self.running))]
            self._preempt(victim, now)
            preempted.append(victim)
        budget -= self.batch
        chunks: list = []
        attn = 0.0
        prefill_tokens = 0
        reserved = self.counts[(-self.step) % bs] if self.batch else 0
        # continuing prefills (admission order)
        for seq in list(self.prefilling.values()) if self.prefilling else ():
            if budget <= 0:
                break
            chunk = min(seq.target - seq.computed, budget)
            need = -(-(seq.computed + chunk) // bs) - seq.blocks
            free = self.total_blocks - self.used_blocks - reserved
            if need > free:
                chunk = min(chunk, (seq.blocks + max(0, free)) * bs - seq.computed)
                if chunk <= 0:
                    continue
                need = -(-(seq.computed + chunk) // bs) - seq.blocks
            self.used_blocks += need
            seq.blocks += need
            chunks.append((seq, chunk))
            attn += chunk * seq.computed
            prefill_tokens += chunk
            budget -= chunk
        # admit waiting requests in order while their chunk fits
        admitted_all = True
        while self.waiting and budget > 0:
            if len(self.running) >= self.p.max_num_seqs:
                admitted_all = False
                break
            seq = self.waiting[0]
            if seq.arrival > now:  # real time: it came in after this step began (the process was late)
                admitted_all = False
                break
            chunk = min(seq.target, budget)
            need = -(-chunk // bs)
            if self.used_blocks + reserved + need > self.total_blocks:
                admitted_all = False
                break
            self.waiting.popleft()
            self.order += 1
            seq.state = PREFILL
            seq.computed = 0
            seq.blocks = need
            self.used_blocks += need
            if seq.scheduled_time is None:
                seq.scheduled_time = now
            self.running[id(seq)] = seq
            self.prefilling[id(seq)] = seq
            chunks.append((seq, chunk))
            prefill_tokens += chunk
            budget -= chunk
        if self.waiting and budget <= 0:
            admitted_all = False
        if not chunks and self.batch == 0:
            # nothing fits (a prompt larger than the free cache): drop the newest partial prefill's progress
            if self.running:
                victim = self.running[next(reversed(self.running))]
                self._preempt(victim, now)
                preempted.append(victim)
            return Plan(now, 0, 0, [], 0.0, 0.0, 0, preempted) if preempted else None
        first_ms = self.sm.step_ms(self.batch, self.context, prefill_tokens, attn)
        inc_ms = self.sm.ctx_ms(self.batch) * self.batch
        max_steps = 1
        if not chunks and (admitted_all or not self.waiting):
            cap = 1 << 30
            if self.finish_heap:
                cap = max(1, self.finish_heap[0][0] - self.step)
            free = self.total_blocks - self.used_blocks
            max_steps = max(1, self._max_decode_steps(free, cap))
        return Plan(now, self.batch, self.context, chunks, first_ms, inc_ms, max_steps, preempted)

    def commit(self, plan: Plan, k: int = 1) -> Outcome:
        """Apply ``k`` steps of ``plan`` (1 <= k <= plan.max_steps)."""
        if plan.max_steps == 0:
            return Outcome(plan.start, 0, 0, 0, [], [], plan.preempted)
        k = max(1, min(k, plan.max_steps))
        end = plan.end_after(k)
        log = self.log
        if log is not None:
            log.add(plan.first_ms, plan.inc_ms, k)
            if log.n > log.TRIM_AT:
                open_runs = [q.join_step for q in self.running.values() if q.state == DECODE]
                log.trim(min(open_runs, default=self.step))
        b = self.batch
        if b:
            self.used_blocks += self._decode_blocks(k)
            self.context += b * k
        self.step += k
        tokens = b * k
        first: list[Seq] = []
        finished: list[Seq] = []
        for seq, chunk in plan.chunks:
            if seq.state != PREFILL:
                continue
            seq.computed += chunk
            if seq.computed < seq.target:
                continue
            seq.generated += 1
            tokens += 1
            first.append(seq)
            if seq.first_token_time is None:
                seq.first_token_time = end
                self.prompt_tokens += seq.prompt
            if seq.generated >= seq.max_tokens:
                self._open_run(seq, end)
                self._close_run(seq, end)
                self._finish(seq, end)
                finished.append(seq)
                continue
            seq.state = DECODE
            del self.prefilling[id(seq)]
            self._open_run(seq, end)
            seq.join_gen = seq.generated
            seq.join_k = seq.computed
            seq.resid = (seq.join_k - self.step) % self.bs
            self.counts[seq.resid] += 1
            self.batch += 1
            self.context += seq.join_k
            # blocks: the prefill chunks hold ceil(join_k / bs) already
            heapq.heappush(
                self.finish_heap, (self.step + seq.max_tokens - seq.generated, self.order, id(seq), seq)
            )
            self.order += 1
        heap = self.finish_heap
        while heap and heap[0][0] <= self.step:
            fstep, _, _, seq = heapq.heappop(heap)
            if seq.state != DECODE or seq.join_step + seq.max_tokens - seq.join_gen != fstep:
                continue
            self._close_run(seq, end)
            self._release(seq)
            del self.running[id(seq)]
            self._finish(seq, end)
            finished.append(seq)
        self.generation_tokens += tokens
        return Outcome(end, k, b, tokens, first, finished, plan.preempted)

    def _finish(self, seq: Seq, end: float) -> None:
        if seq.state == PREFILL:
            self.used_blocks -= seq.blocks
            seq.blocks = 0
            del self.running[id(seq)]
            del self.prefilling[id(seq)]
        seq.state = FINISHED
        seq.finish_time = end
        self.finished += 1
