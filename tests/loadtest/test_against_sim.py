"""Acceptance: a generated BurstGPT-shaped workload replayed against `burstpilot sim fleet`."""

import asyncio
import json

import pyarrow.parquet as pq

from burstpilot.loadtest import ReplayOptions, replay
from burstpilot.sim.fleet import Fleet
from burstpilot.sim.profile import load_profile
from burstpilot.slo import SLO
from burstpilot.traces.generate import generate_preset
from tests.support.fake_openai import free_port


def test_burstgpt_workload_against_sim_fleet(tmp_path):
    trace = generate_preset("burstgpt", duration_s=4.0, rps=3.0, seed=3, start_s=10 * 3600)
    trace.response_tokens[:] = [min(int(x), 24) for x in trace.response_tokens]  # keep the test short
    trace.request_tokens[:] = [min(int(x), 2000) for x in trace.request_tokens]
    wanted = int((~trace.failed).sum())
    assert wanted >= 3

    async def go():
        port = free_port()
        fleet = Fleet(load_profile("h100-llama3-8b"), port, cold_start_s=0.0)
        await fleet.start(2)
        try:
            opts = ReplayOptions(slo=SLO(ttft_s=2.0, tpot_s=0.1))
            return await replay(trace, [f"http://127.0.0.1:{port}"], tmp_path, opts)
        finally:
            await fleet.close()

    summary = asyncio.run(go())
    assert summary["requests"]["completed"] == wanted, summary["requests"]
    table = pq.read_table(tmp_path / "requests.parquet").to_pylist()
    assert len(table) == wanted
    for row, expected in zip(table, trace.response_tokens[~trace.failed], strict=True):
        assert row["usage_reported"] and row["output_tokens"] == max(1, int(expected))  # ignore_eos honoured
        assert row["prompt_tokens"] == row["expected_prompt_tokens"]  # the token-count extension is honoured
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["slo"]["attainment"] is not None and 0 <= on_disk["slo"]["attainment"] <= 1
    assert on_disk["ttft_s"]["count"] == wanted
    assert (tmp_path / "latency.png").stat().st_size > 10_000
