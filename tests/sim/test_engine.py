"""The continuous-batching engine on its own: admission, chunked prefill, preemption, block accounting.

The engines here are tiny (a handful of 16-token blocks, small step budgets) so that every number in a table
can be checked by hand; the step-time model is the shipped H100 profile's.
"""

from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from burstpilot.sim import load_profile
from burstpilot.sim.engine import DECODE, FINISHED, PREFILL, WAITING, Engine
from burstpilot.sim.profile import GIB

BASE = load_profile("h100-llama3-8b")


def tiny(blocks: int = 8, budget: int = 64, seqs: int = 4, max_len: int = 4096):
    """A profile whose KV cache holds exactly ``blocks`` blocks of 16 tokens."""
    p = replace(BASE, gpus_per_replica=1, gpu_memory_gib=float(blocks), gpu_memory_utilization=1.0,
                weights_gib=0.0, reserved_gib=0.0, kv_bytes_per_token=GIB // 16, block_size=16,
                max_num_seqs=seqs, max_num_batched_tokens=budget, max_model_len=max_len)  # fmt: skip
    assert p.num_kv_blocks == blocks
    return p


def held_blocks(e: Engine) -> int:
    """Blocks the running sequences hold, recounted from their own state."""
    n = 0
    for s in e.running.values():
        if s.state == DECODE:
            n += -(-(s.join_k + e.step - s.join_step) // e.bs)
        else:
            n += s.blocks
    return n


def check_accounting(e: Engine) -> None:
    assert e.used_blocks == held_blocks(e) <= e.total_blocks
    decoding = [s for s in e.running.values() if s.state == DECODE]
    assert e.batch == len(decoding)
    assert e.context == sum(s.join_k + e.step - s.join_step for s in decoding)
    assert sum(e.counts) == e.batch
    assert set(e.prefilling) == {k for k, s in e.running.items() if s.state == PREFILL}
    assert len(e.running) <= e.p.max_num_seqs


def run(e: Engine, requests, skip_ahead: bool, check: bool = True, t: float = 0.0, max_plans: int = 100_000):
    """Drive ``e`` through ``requests`` [(arrival, prompt, max_tokens)] as a driver would; returns the Seqs."""
    pending = sorted(requests)
    seqs, i = [], 0
    for _ in range(max_plans):
        if i == len(pending) and not e.has_work():
            return seqs
        if not e.has_work():
            t = max(t, pending[i][0])
        while i < len(pending) and pending[i][0] <= t:
            a, p, m = pending[i]
            seqs.append(e.add(p, m, a, tag=i))
            i += 1
        plan = e.plan(t)
        if plan is None:
            assert i < len(pending), "work left that the engine will never schedule"
            t = pending[i][0]
            continue
        k = plan.max_steps if skip_ahead else 1
        if skip_ahead and i < len(pending):  # an arrival joins at the first step boundary after it
            k = plan.steps_to_reach(pending[i][0])
        t = e.commit(plan, k).end
        if check:
            check_accounting(e)
    raise AssertionError("the engine did not finish its work")


# ---------------------------------------------------------------------------------------------- admission
@dataclass
class Admit:
    label: str
    profile: dict
    prompts: list  # (arrival, prompt tokens); all asked for 10 tokens
    now: float
    chunks: list  # (request index, chunk tokens) of the first step
    waiting: list  # request indices left waiting
    blocks: int  # blocks used after the plan


ADMISSION = [
    Admit("all fit", {}, [(0, 16), (0, 16), (0, 16)], 0.0, [(0, 16), (1, 16), (2, 16)], [], 3),
    Admit("the step budget chunks the last prompt", {"budget": 40}, [(0, 16), (0, 30)], 0.0,
          [(0, 16), (1, 24)], [], 3),
    Admit("the budget runs out: later requests wait", {"budget": 32}, [(0, 32), (0, 8)], 0.0, [(0, 32)], [1], 2),
    Admit("max_num_seqs caps the running set", {"seqs": 2}, [(0, 8), (0, 8), (0, 8)], 0.0,
          [(0, 8), (1, 8)], [2], 2),
    Admit("a chunk needs whole blocks: 17 tokens take 2", {}, [(0, 17)], 0.0, [(0, 17)], [], 2),
    Admit("first come first served: a head that does not fit holds the queue", {"blocks": 3, "budget": 128},
          [(0, 80), (0, 8)], 0.0, [], [0, 1], 0),
    Admit("cache full: admission stops at the first that does not fit", {"blocks": 3}, [(0, 32), (0, 32), (0, 8)],
          0.0, [(0, 32)], [1, 2], 2),
    Admit("a request that arrived after the step began waits for the next", {}, [(0, 8), (0.5, 8)], 0.1,
          [(0, 8)], [1], 1),
]  # fmt: skip


@pytest.mark.parametrize("case", ADMISSION, ids=lambda c: c.label)
def test_admission(case: Admit):
    e = Engine(tiny(**case.profile))
    seqs = [e.add(p, 10, a) for a, p in case.prompts]
    plan = e.plan(case.now)
    got = [(seqs.index(s), n) for s, n in plan.chunks] if plan else []
    assert got == case.chunks
    assert [seqs.index(s) for s in e.waiting] == case.waiting
    assert all(seqs[i].state == WAITING for i in case.waiting)
    assert e.used_blocks == case.blocks
    check_accounting(e)


# ---------------------------------------------------------------------------------------------- chunked prefill
@pytest.mark.parametrize(
    "prompt, budget, chunks",
    [
        (64, 64, [64]),
        (65, 64, [64, 1]),
        (100, 32, [32, 32, 32, 4]),
        (1, 64, [1]),
    ],
)
def test_a_long_prompt_is_prefilled_in_budget_sized_chunks(prompt, budget, chunks):
    e = Engine(tiny(blocks=64, budget=budget))
    s = e.add(prompt, 5, 0.0)
    seen, t = [], 0.0
    while s.first_token_time is None:
        plan = e.plan(t)
        seen += [n for q, n in plan.chunks if q is s]
        t = e.commit(plan).end
    assert seen == chunks and s.computed == prompt and s.generated == 1 and s.state == DECODE


def test_decoding_sequences_take_their_token_from_the_budget_first():
    e = Engine(tiny(blocks=64, budget=32))
    a = e.add(16, 50, 0.0)
    e.commit(e.plan(0.0))  # a's prefill: it decodes from now on
    b = e.add(100, 5, 0.0)
    plan = e.plan(0.0)
    assert plan.batch == 1 and [(q is b, n) for q, n in plan.chunks] == [(True, 31)]
    assert plan.max_steps == 1  # a step with prefill runs alone
    assert a.state == DECODE


# ---------------------------------------------------------------------------------------------- decode runs
@pytest.mark.parametrize(
    "blocks, max_tokens, steps",
    [
        (64, 10, 9),  # until the sequence finishes: 9 more tokens after the prefill's
        (
            2,
            100,
            16,
        ),  # until the cache runs out: tokens 17..32 fit in the second block, the 33rd needs a third
        (64, 2, 1),
    ],
)
def test_a_plan_allows_identical_decode_steps_until_the_next_event(blocks, max_tokens, steps):
    e = Engine(tiny(blocks=blocks))
    e.add(16, max_tokens, 0.0)
    t = e.commit(e.plan(0.0)).end
    plan = e.plan(t)
    assert plan.max_steps == steps
    out = e.commit(plan, steps)
    assert out.steps == steps and out.tokens == steps
    # the run's end is the sum of its steps, each longer by one more KV token than the last
    assert out.end == pytest.approx(
        t + sum(BASE.step.step_ms(1, 16 + j, 0) for j in range(steps)) / 1000, rel=1e-9
    )


# ---------------------------------------------------------------------------------------------- preemption
def test_when_the_cache_runs_out_the_newest_sequence_is_preempted_and_recomputed():
    # 4 blocks (64 tokens) for two sequences that each grow to 16 + 40 tokens
    e = Engine(tiny(blocks=4))
    a, b = e.add(16, 40, 0.0), e.add(16, 40, 0.0)
    t, preempted_at = 0.0, None
    while e.has_work():
        plan = e.plan(t)
        if b in plan.preempted:
            preempted_at = b.generated
            assert b.state == WAITING and e.waiting[0] is b and b.computed == 0
            assert b.target == 16 + b.generated  # the prompt and what it generated are prefilled again
            assert a.state == DECODE
        t = e.commit(plan, plan.max_steps).end
        check_accounting(e)
    # both held 32 tokens (2 blocks each) when the 33rd would need a fifth block: the newer one (b) went
    assert preempted_at == 17 and b.preemptions == 1 and a.preemptions == 0 and e.preemptions == 1
    assert a.state == b.state == FINISHED and a.finish_time < b.finish_time
    assert e.generation_tokens == 80  # recomputing b's 33 tokens generates nothing twice
    assert e.used_blocks == 0 and e.batch == 0 and e.context == 0 and e.finished == 2


def test_a_prefill_that_no_longer_fits_is_preempted_for_the_decoding_batch():
    # 6 blocks, a step budget of 96: a (64 tokens, 4 blocks) and b's first 32 tokens (2 blocks) fill the cache;
    # a's first decode token needs a fifth block, so b, the newest, gives its partial prefill back
    e = Engine(tiny(blocks=6, budget=96))
    a, b = e.add(64, 20, 0.0), e.add(64, 5, 0.0)
    plan = e.plan(0.0)
    assert [(q is a, n) for q, n in plan.chunks] == [(True, 64), (False, 32)] and e.used_blocks == 6
    t = e.commit(plan).end
    plan = e.plan(t)
    assert plan.preempted == [b] and b.state == WAITING and b.computed == 0 and a.state == DECODE
    check_accounting(e)
    run(e, [], skip_ahead=True, t=t)
    assert a.state == b.state == FINISHED and b.preemptions == 1 and e.used_blocks == 0


# ---------------------------------------------------------------------------------------------- properties
requests = st.lists(
    st.tuples(
        st.floats(0, 2, allow_nan=False).map(lambda x: round(x, 3)),
        st.integers(1, 90),  # prompt tokens
        st.integers(1, 60),  # max tokens
    ),
    min_size=1,
    max_size=12,
)
engines = st.fixed_dictionaries(
    {"blocks": st.integers(10, 24), "budget": st.sampled_from([16, 32, 48, 128]), "seqs": st.integers(1, 6)}
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(engines, requests)
def test_every_request_finishes_with_exact_blocks_whatever_the_load(cfg, reqs):
    e = Engine(tiny(**cfg))
    seqs = run(e, reqs, skip_ahead=True)
    assert [s.state for s in seqs] == [FINISHED] * len(reqs)
    assert sorted((s.arrival, s.prompt, s.max_tokens) for s in seqs) == sorted(reqs)
    assert all(s.first_token_time <= s.finish_time and s.first_token_time > s.arrival for s in seqs)
    assert e.used_blocks == 0 and e.batch == 0 and e.context == 0 and not e.running and not e.waiting
    assert e.generation_tokens >= sum(m for _, _, m in reqs)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(engines, requests)
def test_skipping_ahead_gives_the_schedule_of_single_steps(cfg, reqs):
    runs = [run(Engine(tiny(**cfg)), reqs, skip_ahead=skip, check=False) for skip in (False, True)]
    one, many = ({s.tag: s for s in r} for r in runs)
    for tag, s in one.items():
        assert many[tag].first_token_time == pytest.approx(s.first_token_time, abs=1e-9)
        assert many[tag].finish_time == pytest.approx(s.finish_time, abs=1e-9)
        assert many[tag].preemptions == s.preemptions
