"""What an OpenAI-compatible answer may look like, checked: SSE lines and the completions / chat JSON shapes.

Pure functions, no I/O, so that the stream and JSON parsing can be tested on their own (with hypothesis). An
answer that does not have the expected shape raises :class:`AnswerError` with an error kind of
``records.ERROR_KINDS``; nothing else escapes, whatever the bytes or the JSON values are:

- ``malformed_sse``: a line that is not SSE, or a ``data:`` payload that is not a JSON object;
- ``malformed_response``: valid JSON of the wrong shape (``choices`` not a list of objects, text that is not a
  string, ``usage`` that is not an object, token counts that are not non-negative integers), a JSON body that is
  not JSON, or an SSE line longer than ``MAX_SSE_LINE``;
- ``http_5xx``: an OpenAI error object inside a stream (the server failed after it had answered 200).
"""

from __future__ import annotations

from typing import Any

import orjson  # a measured hot path: every streamed event is parsed (4x json.loads)

READ_BUFSIZE = 1 << 16  # the client's read buffer; aiohttp refuses a line over twice that
MAX_SSE_LINE = 2 * READ_BUFSIZE  # 128 KiB: far above any streamed delta
_MAX_TOKENS = 1 << 53  # a token count above this is not a count
_SSE_FIELDS = (b"event", b"id", b"retry")
_TEXT_KEYS = ("content", "reasoning_content", "reasoning")  # chat deltas: the answer or the model's reasoning


class AnswerError(Exception):
    """The answer is not what an OpenAI-compatible server sends; ``kind`` is the record's error kind."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


def _show(value: Any, n: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= n else text[:n] + "..."


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def sse_payload(line: bytes) -> bytes | None:
    """The ``data:`` payload of one SSE line, stripped; None for a line that carries none (blank, a comment, an
    ``event:``/``id:``/``retry:`` field)."""
    line = line.strip()
    if not line or line.startswith(b":"):
        return None
    if line.startswith(b"data:"):
        return line[5:].strip()
    if line.split(b":", 1)[0].strip() in _SSE_FIELDS:
        return None
    raise AnswerError("malformed_sse", f"not an SSE line: {line[:80]!r}")


def decode_event(payload: bytes) -> dict:
    """The JSON object of a ``data:`` payload (not ``[DONE]``)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:  # also bad UTF-8, NaN, and nesting past 1024
        raise AnswerError("malformed_sse", f"data is not JSON: {payload[:80]!r}") from exc
    if not isinstance(data, dict):
        raise AnswerError("malformed_sse", f"data is not a JSON object: {payload[:80]!r}")
    return data


def _count(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_TOKENS:
        raise AnswerError(
            "malformed_response", f"{where} is {_show(value)} ({_type(value)}), not a token count"
        )
    return value


def usage_counts(usage: Any) -> tuple[int | None, int | None]:
    """(completion_tokens, prompt_tokens) of a ``usage`` object (None: not reported)."""
    if usage is None:
        return None, None
    if not isinstance(usage, dict):
        raise AnswerError("malformed_response", f"usage is a {_type(usage)}, not an object: {_show(usage)}")
    return (
        _count(usage.get("completion_tokens"), "usage.completion_tokens"),
        _count(usage.get("prompt_tokens"), "usage.prompt_tokens"),
    )


def _text(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise AnswerError("malformed_response", f"{where} is a {_type(value)}, not a string: {_show(value)}")


def choice_text(choice: Any, where: str = "choices[0]") -> str | None:
    """The text one choice carries: ``text`` (completions), ``delta`` (chat, streamed) or ``message`` (chat)."""
    if not isinstance(choice, dict):
        raise AnswerError(
            "malformed_response", f"{where} is a {_type(choice)}, not an object: {_show(choice)}"
        )
    for key in ("delta", "message"):
        if key in choice:
            part = choice[key]
            if part is None:
                return None
            if not isinstance(part, dict):
                raise AnswerError(
                    "malformed_response", f"{where}.{key} is a {_type(part)}, not an object: {_show(part)}"
                )
            texts = [_text(part.get(k), f"{where}.{key}.{k}") for k in _TEXT_KEYS]
            return next((t for t in texts if t), None)
    return _text(choice.get("text"), f"{where}.text")


def _choices(data: dict) -> list:
    choices = data.get("choices")
    if choices is None:
        return []
    if not isinstance(choices, list):
        raise AnswerError(
            "malformed_response", f"choices is a {_type(choices)}, not a list: {_show(choices)}"
        )
    return choices


def parse_chunk(data: dict) -> tuple[str | None, int | None, int | None]:
    """One streamed event: (its text or None, completion_tokens, prompt_tokens of its usage or None)."""
    choices = _choices(data)
    if "error" in data and not choices:
        raise AnswerError("http_5xx", f"error event: {_show(data['error'], 200)}")
    text = choice_text(choices[0]) if choices else None
    completion, prompt = usage_counts(data.get("usage"))
    return text, completion, prompt


def parse_answer(data: Any) -> tuple[str | None, int | None, int | None]:
    """A whole (non-streamed) answer: (text, completion_tokens, prompt_tokens)."""
    if not isinstance(data, dict):
        raise AnswerError("malformed_response", f"the body is a {_type(data)}, not a JSON object")
    choices = _choices(data)
    if not choices:
        if "error" in data:
            raise AnswerError("http_5xx", f"error object: {_show(data['error'], 200)}")
        raise AnswerError("malformed_response", "JSON body without choices")
    text = choice_text(choices[0])
    completion, prompt = usage_counts(data.get("usage"))
    return text, completion, prompt


class StreamState:
    """An SSE stream consumed line by line as it arrives: when each text-carrying event came, whether the
    stream ended with ``[DONE]``, and the last usage it reported."""

    def __init__(self) -> None:
        self.times: list[float] = []  # arrival of each event that carried text
        self.done = False
        self.completion_tokens: int | None = None
        self.prompt_tokens: int | None = None

    def feed(self, line: bytes, now: float) -> bool:
        """One line (``now``: when it was read); True once the stream has ended with ``[DONE]``."""
        if not line or line == b"\r":  # the blank line after each event: half of all lines
            return False
        if len(line) > MAX_SSE_LINE:
            raise AnswerError("malformed_response", f"an SSE line longer than {MAX_SSE_LINE // 1024} KiB")
        payload = sse_payload(line)
        if payload is None:
            return False
        if payload == b"[DONE]":
            self.done = True
            return True
        text, completion, prompt = parse_chunk(decode_event(payload))
        if text is not None:
            self.times.append(now)
        if completion is not None:
            self.completion_tokens = completion
        if prompt is not None:
            self.prompt_tokens = prompt
        return False
