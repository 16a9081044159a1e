import numpy as np
import pytest

from burstpilot.sim import load_profile
from burstpilot.sim.des import SimCluster, simulate
from burstpilot.sim.engine import DECODE, Engine
from burstpilot.sim.workload import Workload, synthetic

PROFILE = load_profile("h100-llama3-8b")


def step_by_step(w):
    """The engine driven one step at a time, as the real-time server drives it; token times recorded."""
    e, i, n, t, seqs = Engine(PROFILE), 0, len(w), 0.0, []
    times: dict[int, list] = {}
    while i < n or e.has_work():
        if not e.has_work():
            t = max(t, w.arrival_s[i])
        while i < n and w.arrival_s[i] <= t:
            seqs.append(e.add(w.request_tokens[i], w.response_tokens[i], w.arrival_s[i], tag=i))
            i += 1
        plan = e.plan(t)
        if plan is not None:
            decoding = e.decoding() if plan.batch else []
            out = e.commit(plan, 1)
            for s in list(decoding) + out.first:
                times.setdefault(s.tag, []).append(out.end)
            t = out.end
    return seqs, e, times


def test_skipping_ahead_matches_single_steps_under_preemption(monkeypatch):
    from burstpilot.sim.engine import StepLog

    monkeypatch.setattr(StepLog, "TRIM_AT", 512)  # exercise dropping old steps from the log
    w = synthetic(30, 60, shape=0.3, seed=2, prompt_median=2000, output_median=400)
    res = simulate(w, PROFILE, replicas=1)
    seqs, eng, times = step_by_step(w)
    assert eng.preemptions > 0 and res.preemptions == eng.preemptions
    np.testing.assert_allclose(res.ttft_s, [s.first_token_time - s.arrival for s in seqs], atol=1e-9)
    np.testing.assert_allclose(res.e2e_s, [s.finish_time - s.arrival for s in seqs], atol=1e-9)
    itl = []
    for s in seqs:
        gaps = np.sort(np.diff(times[s.tag]))
        itl.append(gaps[int(np.ceil(0.99 * len(gaps))) - 1] if len(gaps) else np.nan)
    np.testing.assert_allclose(res.itl_p99_s, itl, atol=1e-9)


def test_burst_vs_poisson_same_mean_rate():
    # the BurstGPT finding: same mean load, Gamma(0.5) arrivals fill the KV cache in bursts and preempt
    out = {}
    for shape in (1.0, 0.5):
        w = synthetic(3.8, 3600, shape=shape, seed=1, prompt_median=3000, output_median=600, sigma=0.6)
        out[shape] = simulate(w, PROFILE, replicas=1).summary()
        s = out[shape]
        print(f"shape {shape}: {s['requests']} requests, p99 TTFT {s['ttft_p99_s']:.3f} s, "
              f"p50 TTFT {s['ttft_p50_s']:.3f} s, preemptions {s['preemptions']}")  # fmt: skip
    assert out[1.0]["preemptions"] == 0
    assert out[0.5]["preemptions"] > 10
    assert out[0.5]["ttft_p99_s"] > 2 * out[1.0]["ttft_p99_s"]


def test_scaling_cold_start_drain_and_observe():
    w = synthetic(4, 300, seed=0)
    c = SimCluster(PROFILE, w, initial_replicas=1, cold_start_s=60.0, scrape_interval_s=5.0)
    c.run_until(50)
    c.set_replicas(3)
    obs = c.observe()
    assert (obs.ready, obs.starting, obs.desired) == (1, 2, 3)
    assert obs.requests_arrived > 150 and len(obs.ttft_recent_s) > 0
    c.run_until(111)
    obs = c.observe()
    assert (obs.ready, obs.starting) == (3, 0)
    c.set_replicas(1)
    c.run_until(200)
    assert c.observe().ready == 1
    res = c.finish()
    assert not res.rejected.any() and not np.isnan(res.e2e_s).any()
    assert set(np.unique(res.replica)) == {0, 1, 2}
    assert res.scale_events == [(50.0, 1, 3), (111.0, 3, 1)]
    # replica 0 all the time, two more from 50 s until they drained after 111 s
    assert res.gpu_seconds == pytest.approx(res.end_time_s + 2 * 61, abs=30)
    s0 = res.metric_series[0]
    assert np.all(np.diff(s0["generation_tokens_total"]) >= 0) and s0["request_success_total"][-1] > 0


def test_no_ready_replica_rejects():
    w = Workload(np.array([1.0, 2.0]), np.array([10, 10]), np.array([5, 5]))
    c = SimCluster(PROFILE, w, initial_replicas=0, cold_start_s=1.5)
    c.set_replicas(1)
    res = c.finish()
    assert list(res.rejected) == [True, False] and res.ttft_s[1] > 0


def test_block_accounting_stays_exact_through_preemptions():
    from dataclasses import replace

    small = replace(PROFILE, gpu_memory_gib=20.0, reserved_gib=0.0)  # ~18k KV tokens: constant pressure
    e = Engine(small)
    w = synthetic(40, 30, shape=0.3, seed=5, prompt_median=800, output_median=300)
    i, t, n = 0, 0.0, len(w)
    while i < n or e.has_work():
        if not e.has_work():
            t = max(t, w.arrival_s[i])
        while i < n and w.arrival_s[i] <= t:
            e.add(w.request_tokens[i], w.response_tokens[i], w.arrival_s[i])
            i += 1
        plan = e.plan(t)
        if plan is None:
            continue
        t = e.commit(plan, max(1, plan.max_steps // 2)).end
        held = ctx = 0
        for s in e.running.values():
            if s.state == DECODE:
                k = s.join_k + e.step - s.join_step
                held += -(-k // small.block_size)
                ctx += k
            else:
                held += s.blocks
        assert e.used_blocks == held <= e.total_blocks and e.context == ctx
        assert e.batch == sum(1 for s in e.running.values() if s.state == DECODE)
    assert e.preemptions > 0 and e.finished == n
    assert e.used_blocks == 0 and e.batch == 0 and e.context == 0
