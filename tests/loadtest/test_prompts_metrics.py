"""Exact-length prompts with a local tokenizer; live Prometheus metrics while replaying."""

import asyncio
import json
import socket

import aiohttp
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from burstpilot.errors import BurstpilotError
from burstpilot.loadtest import ReplayOptions, replay
from burstpilot.loadtest.client import PromptBuilder
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
                    if line.startswith("burstpilot_replay_sent "):
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
