"""The stream and JSON parsing of answers, on its own: known shapes, then hypothesis over arbitrary ones.

Whatever the bytes or JSON values, parsing either gives text and counts of the right types or raises
AnswerError with a documented error kind; nothing else escapes (issue 15 item 3).
"""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from burstpilot.loadtest.protocol import (
    MAX_SSE_LINE,
    AnswerError,
    StreamState,
    parse_answer,
    parse_chunk,
    sse_payload,
)
from burstpilot.loadtest.records import ERROR_KINDS


def kind_of(fn, *args):
    try:
        fn(*args)
    except AnswerError as exc:
        return exc.kind
    return None


def test_known_shapes():
    assert parse_chunk({"choices": [{"text": "a"}]}) == ("a", None, None)
    assert parse_chunk({"choices": [{"delta": {"content": "b"}}]}) == ("b", None, None)
    assert parse_chunk({"choices": [{"delta": {"reasoning_content": "r"}}]}) == ("r", None, None)
    assert parse_chunk({"choices": [], "usage": {"completion_tokens": 5, "prompt_tokens": 7}}) == (None, 5, 7)
    assert parse_chunk({"choices": [{"delta": {"role": "assistant"}}]}) == (None, None, None)
    assert parse_chunk({"choices": None, "usage": None}) == (None, None, None)
    assert parse_answer({"choices": [{"message": {"content": "hi"}}], "usage": {"completion_tokens": 1}}) == (
        "hi",
        1,
        None,
    )
    assert sse_payload(b"data: [DONE]\n") == b"[DONE]"
    assert sse_payload(b": keep-alive\n") is None and sse_payload(b"event: x\n") is None
    bad = {
        "choices is an object": {"choices": {"text": "x"}},
        "a choice is text": {"choices": ["x"]},
        "text is a number": {"choices": [{"text": 5}]},
        "delta is a list": {"choices": [{"delta": ["x"]}]},
        "content is an object": {"choices": [{"delta": {"content": {"a": 1}}}]},
        "usage is a list": {"choices": [], "usage": [1]},
        "completion_tokens is text": {"usage": {"completion_tokens": "many"}},
        "completion_tokens is a float": {"usage": {"completion_tokens": 2.5}},
        "completion_tokens is a boolean": {"usage": {"completion_tokens": True}},
        "completion_tokens is negative": {"usage": {"completion_tokens": -1}},
        "prompt_tokens is huge": {"usage": {"prompt_tokens": 10**30}},
    }
    for what, data in bad.items():
        assert kind_of(parse_chunk, data) == "malformed_response", what
    assert kind_of(parse_chunk, {"error": {"message": "died"}}) == "http_5xx"
    assert kind_of(parse_answer, [1, 2]) == "malformed_response"
    assert kind_of(parse_answer, {"choices": []}) == "malformed_response"
    assert kind_of(sse_payload, b"<html>") == "malformed_sse"


def test_stream_state_on_a_whole_stream():
    s = StreamState()
    lines = [b'data: {"choices":[{"text":"a"}]}\n', b"\n", b'data: {"choices":[{"text":""}]}\n',
             b'data: {"choices":[{"text":"b"}]}\n', b'data: {"choices":[],"usage":{"completion_tokens":2}}\n',
             b"data: [DONE]\n", b'data: {"choices":[{"text":"after"}]}\n']  # fmt: skip
    done_at = next(i for i, line in enumerate(lines) if s.feed(line, float(i)))
    assert done_at == 5 and s.done and s.times == [0.0, 3.0] and s.completion_tokens == 2
    with pytest.raises(AnswerError, match="longer than 128 KiB") as e:
        StreamState().feed(b"data: " + b"x" * MAX_SSE_LINE + b"\n", 0.0)
    assert e.value.kind == "malformed_response"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(["choices", "usage", "error", "text", "delta", "message", "content", "completion_tokens",
                        "prompt_tokens", "reasoning_content", "role", "index"])  # fmt: skip
# objects built from the names an answer uses, so that the shapes come near the real ones
SHAPED = st.recursive(
    JSON,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=16,
)


def _check_result(result):
    text, completion, prompt = result
    assert text is None or (isinstance(text, str) and text)
    for n in (completion, prompt):
        assert n is None or (type(n) is int and 0 <= n)


# Budget (derandomized, no deadline): 200 + 200 + 150 examples.
@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(KEYS, SHAPED, max_size=4))
def test_parse_chunk_never_raises_anything_but_answer_error(data):
    try:
        _check_result(parse_chunk(data))
    except AnswerError as exc:
        assert exc.kind in ERROR_KINDS


@settings(max_examples=200, deadline=None, derandomize=True)
@given(SHAPED)
def test_parse_answer_never_raises_anything_but_answer_error(data):
    try:
        _check_result(parse_answer(data))
    except AnswerError as exc:
        assert exc.kind in ERROR_KINDS


LINES = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda d: b"data: " + json.dumps(d, allow_nan=True).encode(),
        st.dictionaries(KEYS, SHAPED, max_size=3),
    ),
    st.sampled_from([b"data: [DONE]", b"", b": ping", b"event: message", b"data: {", b"data: \xff\xfe"]),
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(LINES, max_size=8))
def test_a_stream_of_any_lines_parses_or_fails_with_a_kind(lines):
    s = StreamState()
    try:
        for i, line in enumerate(lines):
            if s.feed(line + b"\n", float(i)):
                break
    except AnswerError as exc:
        assert exc.kind in ERROR_KINDS
        return
    assert s.times == sorted(s.times) and all(math.isfinite(t) for t in s.times)
    for n in (s.completion_tokens, s.prompt_tokens):
        assert n is None or (type(n) is int and n >= 0)
