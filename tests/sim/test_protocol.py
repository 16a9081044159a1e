"""Request decoding and validation (burstpilot.sim.protocol), fuzzed with hypothesis, and over HTTP."""

import asyncio
import json
import math

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from burstpilot.sim.protocol import CompletionRequest, RequestError, decode_body, parse_request, text_tokens
from tests.support.sim_replica import MODEL, PROFILE, running_replica

MAX_LEN, DEFAULT_MAX = PROFILE.max_model_len, PROFILE.default_max_tokens
FIELDS = ("model", "prompt", "messages", "max_tokens", "max_completion_tokens", "n", "stream", "stream_options",
          "ignore_eos", "burstpilot_prompt_tokens")  # fmt: skip
PARAMS = set(FIELDS) | {None}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(exclude_categories=()), max_size=12)  # lone surrogates too, as JSON can carry
)
json_values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=10,
)
# values that pass some checks, so the fuzz reaches the later ones
near_valid = st.sampled_from(
    [MODEL, "hello", [1, 2, 3], ["hi"], [[5, 6]], 1, 7, 40_000, True, False, {"include_usage": True},
     {"include_usage": None}, [{"role": "user", "content": "hi"}], [{"role": "user", "content": [{"text": "a"}]}],
     [{"role": "assistant", "content": None}], "\ud800"]
)  # fmt: skip
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), near_valid | json_values, max_size=9)
# a valid request with a few fields changed, so that the fuzz also gets through to the replica
VALID = {
    False: {"model": MODEL, "prompt": "hello"},
    True: {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
}
edited = st.builds(
    lambda chat, edits: (VALID[chat] | edits, chat),
    st.booleans(),
    st.dictionaries(st.sampled_from(FIELDS[1:]), near_valid | json_values, max_size=2),
)
cases = st.tuples(bodies, st.booleans()) | edited


def parse(body, chat):
    return parse_request(body, chat, MODEL, MAX_LEN, DEFAULT_MAX)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(cases)
def test_any_json_object_is_a_valid_request_or_a_named_refusal(case):
    body, chat = case
    try:
        req = parse(body, chat)
    except RequestError as exc:
        assert exc.status in (400, 404) and exc.message and exc.param in PARAMS
        json.dumps(exc.body())  # the answer can always be written
        return
    assert isinstance(req, CompletionRequest) and req.chat == chat
    assert req.prompt_tokens >= 1 and req.max_tokens >= 1 and req.prompt_tokens + req.max_tokens <= MAX_LEN
    assert isinstance(req.stream, bool) and isinstance(req.ignore_eos, bool)
    assert not req.include_usage or req.stream


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_body_decodes_to_an_object_or_a_400(raw):
    try:
        assert isinstance(decode_body(raw), dict)
    except RequestError as exc:
        assert exc.status == 400 and exc.message


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(990, 200_000), st.sampled_from(["[", '{"a":']))
def test_nesting_of_any_depth_is_a_400_or_an_object(depth, opener):
    closer = "]" if opener == "[" else "}"
    raw = (opener * depth + "1" + closer * depth).encode()
    try:
        decode_body(raw)
    except RequestError as exc:
        assert exc.status == 400


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    prompt=st.text(max_size=300) | st.lists(st.integers(0, 200_000), min_size=1, max_size=50),
    max_tokens=st.none() | st.integers(1, 2000),
    stream=st.booleans(),
    usage=st.booleans(),
    ignore_eos=st.booleans(),
)
def test_a_valid_completion_parses_to_what_it_says(prompt, max_tokens, stream, usage, ignore_eos):
    body = {"model": MODEL, "prompt": prompt, "stream": stream, "ignore_eos": ignore_eos}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream:
        body["stream_options"] = {"include_usage": usage}
    req = parse(json.loads(json.dumps(body)), chat=False)
    counted = len(prompt) if isinstance(prompt, list) else max(1, math.ceil(len(prompt.encode("utf-8")) / 4))
    assert req == CompletionRequest(
        False, counted, max_tokens or DEFAULT_MAX, stream, stream and usage, ignore_eos
    )


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(st.sampled_from(["system", "user", "assistant"]), st.text(max_size=80)),
        min_size=1,
        max_size=6,
    )
)
def test_a_chat_counts_its_contents_and_three_tokens_per_message(messages):
    body = {"model": MODEL, "messages": [{"role": r, "content": c} for r, c in messages], "max_tokens": 3}
    req = parse(body, chat=True)
    assert req.prompt_tokens == 3 + sum(3 + text_tokens(c) for _, c in messages)
    # the same contents as a list of text parts count the same
    parts = {"model": MODEL, "messages": [{"role": r, "content": [{"type": "text", "text": c}]} for r, c in messages],
             "max_tokens": 3}  # fmt: skip
    assert parse(parts, chat=True).prompt_tokens == req.prompt_tokens


def test_fuzzed_bodies_over_http_never_get_a_server_error():
    """The same fuzz through a live replica: every answer is 200 or an OpenAI error body, never a 5xx."""
    answers = []

    async def go():
        async with running_replica() as (url, rep), aiohttp.ClientSession() as s:
            loop = asyncio.get_running_loop()

            @settings(max_examples=60, deadline=None, derandomize=True)
            @given(cases)
            def post(case):
                body, chat = case
                # an ignore_eos request without max_tokens asks for 256 tokens: keep the run short
                if not isinstance(body.get("max_tokens"), int) or body.get("max_tokens", 0) > 8:
                    body = body | {"max_tokens": 4}
                answers.append(asyncio.run_coroutine_threadsafe(one(body, chat), loop).result(30))

            async def one(body, chat):
                path = "/v1/chat/completions" if chat else "/v1/completions"
                async with s.post(url + path, data=json.dumps(body, allow_nan=True)) as r:
                    text = await r.text()
                    if r.status != 200:
                        assert json.loads(text)["error"]["code"] == r.status
                    return r.status

            await loop.run_in_executor(None, post)
            assert rep.outstanding == 0

    asyncio.run(go())
    assert answers and all(a in (200, 400, 404) for a in answers), sorted(set(answers))
    assert 200 in answers and 400 in answers
