"""Exact-length prompts with a local tokenizer; live Prometheus metrics while replaying."""

import asyncio
import json
import socket
import urllib.request

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from burstpilot.errors import BurstpilotError
from burstpilot.loadtest import ReplayOptions, replay
from burstpilot.loadtest.client import PromptBuilder
from burstpilot.loadtest.runner import _Exporter
from burstpilot.slo import SLO
from tests.support.fake_openai import FakeServer, free_port
from tests.support.workloads import make_workload


def _tiny_tokenizer(path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [
        "the quick brown fox jumps over the lazy dog " * 4,
        "serving tokens in bursts the model " * 4,
    ] * 50
    tok.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    path.mkdir()
    tok.save(str(path / "tokenizer.json"))
    return tok


def test_tokenizer_prompts_have_the_exact_length(tmp_path):
    tok = _tiny_tokenizer(tmp_path / "tok")
    builder = PromptBuilder(tmp_path / "tok")
    for n in (1, 7, 128, 1000):
        assert len(tok.encode(builder.prompt(n), add_special_tokens=False).ids) == n
    with pytest.raises(BurstpilotError, match=r"--tokenizer: .*tokenizer\.json does not exist"):
        PromptBuilder(tmp_path)


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        s.name + json.dumps(s.labels, sort_keys=True): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_exporter_counts_and_histograms_add_up_over_shards():
    """Counters and histograms, not gauges of a precomputed p99: two shards' series sum to the whole run's."""
    slo = SLO(ttft_s=0.5, tpot_s=0.1)
    # (error, ttft, tpot, e2e, itl_max, dispatch lag, output tokens)
    shard_a = [("", 0.1, 0.02, 0.3, 0.03, 0.001, 10), ("", 0.9, 0.02, 1.2, 0.03, 0.002, 10)]
    shard_b = [("http_5xx", None, None, 0.05, None, 0.001, 0), ("", 0.2, 0.2, 2.0, 0.3, 0.004, 5)]
    ports = [free_port(), free_port()]
    values = []
    for port, finished in zip(ports, (shard_a, shard_b), strict=True):
        ex = _Exporter(ReplayOptions(metrics_port=port, slo=slo), total=2)
        try:
            ex.observe(2, 0, finished)
            values.append(_scrape(port))
        finally:
            ex.close()

    def total(key):
        return sum(v.get(key, 0.0) for v in values)

    assert total("burstpilot_replay_requests_sent_total{}") == 4
    assert total("burstpilot_replay_requests_scheduled{}") == 4
    assert total('burstpilot_replay_requests_finished_total{"result": "ok"}') == 3
    assert total('burstpilot_replay_requests_finished_total{"result": "http_5xx"}') == 1
    assert total("burstpilot_replay_slo_met_total{}") == 1  # only the first request of shard a meets both
    assert total("burstpilot_replay_output_tokens_total{}") == 25
    assert total("burstpilot_replay_ttft_seconds_count{}") == 3
    assert total('burstpilot_replay_ttft_seconds_bucket{"le": "0.5"}') == 2
    assert total("burstpilot_replay_dispatch_lag_seconds_count{}") == 4
    assert not any("p99" in k for v in values for k in v)  # quantiles come from the histograms, in Prometheus


def test_metrics_port_serves_live_counters(tmp_path):
    w = make_workload([0.02 * i for i in range(60)], response_tokens=2)
    port = free_port()
    seen = []

    async def scrape():
        async with aiohttp.ClientSession() as session:
            for _ in range(100):  # bounded: at most ~5 s
                await asyncio.sleep(0.05)
                try:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        text = await resp.text()
                except aiohttp.ClientError:
                    continue
                for line in text.splitlines():
                    if line.startswith('burstpilot_replay_requests_finished_total{result="ok"} '):
                        seen.append(float(line.split()[1]))
                if seen and seen[-1] > 0:
                    return

    async def go():
        s = await FakeServer().start()
        try:
            opts = ReplayOptions(metrics_port=port, progress=True, plot=False)
            results = await asyncio.gather(replay(w, [s.url], tmp_path, opts), scrape())
            return results[0]
        finally:
            await s.stop()

    summary = asyncio.run(go())
    assert summary["requests"]["completed"] == 60
    assert seen and max(seen) > 0
    assert json.loads((tmp_path / "summary.json").read_text())["requests"]["completed"] == 60
    with socket.socket() as sock:  # the exporter is gone with the run (only TIME_WAIT may remain)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
