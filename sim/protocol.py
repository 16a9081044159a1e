"""The OpenAI-compatible request protocol of the simulated replica: body decoding, validation, response text.

Pure functions, no HTTP: :func:`decode_body` turns the raw body into a JSON object and :func:`parse_request`
validates it into a :class:`CompletionRequest`; both raise :class:`RequestError` (an HTTP status and an
OpenAI-shaped error body) for anything a client may send, never another exception.

Prompt length rule: the extension field ``burstpilot_prompt_tokens`` (a positive int) wins; otherwise a text
prompt counts ``ceil(utf8_bytes / 4)`` tokens, a list of token ids counts its length, and a chat counts its
messages' contents that way plus 3 tokens per message and 3 for the reply's priming.

Generated text: token ``i`` of a reply is ``" " + WORDS[i % len(WORDS)]``. Each word with its leading space is
one token in the BPE vocabularies clients count with (OpenAI's cl100k_base and o200k_base, which Llama 3's
vocabulary extends), so a client that tokenizes the streamed text counts what ``usage`` reports.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

# Common English words: one token each, with their leading space, in GPT-2's, cl100k's and o200k's vocabularies
# (tests/sim/test_tokenizers.py checks the last two with tiktoken on the real vocabulary files).
WORDS = (
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "with",
    "as",
    "on",
    "was",
    "be",
    "at",
    "by",
)
TOKEN_TEXT = tuple(" " + w for w in WORDS)


class RequestError(Exception):
    """A request the replica refuses: an HTTP status and an OpenAI error body."""

    def __init__(self, status: int, message: str, param: str | None = None, etype: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.message, self.param, self.etype = status, message, param, etype

    def body(self) -> dict:
        return {
            "error": {"message": self.message, "type": self.etype, "param": self.param, "code": self.status}
        }


@dataclass(frozen=True)
class CompletionRequest:
    """A validated completion or chat request, as far as the simulated model needs it."""

    chat: bool
    prompt_tokens: int
    max_tokens: int
    stream: bool
    include_usage: bool
    ignore_eos: bool


def decode_body(raw: bytes) -> dict:
    """The request body as a JSON object, or RequestError(400) saying why not."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"request body is not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise RequestError(400, "request body is nested too deeply to be a request") from exc
    if not isinstance(body, dict):
        raise RequestError(400, f"request body must be a JSON object, not {_kind(body)}")
    return body


def text_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / 4)


def reply_text(n: int) -> str:
    """The text of a reply of ``n`` tokens."""
    k = len(TOKEN_TEXT)
    return "".join(TOKEN_TEXT[i % k] for i in range(n))


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def parse_request(
    body: dict, chat: bool, model_name: str, max_model_len: int, default_max_tokens: int
) -> CompletionRequest:
    """Validate a decoded body; RequestError (400, or 404 for another model) names the field at fault."""
    model = body.get("model")
    if model is None:
        raise RequestError(400, "'model' is required", "model")
    if not isinstance(model, str):
        raise RequestError(400, f"'model' must be a string, not {_kind(model)}", "model")
    if model != model_name:
        raise RequestError(404, f"The model `{model}` does not exist.", "model", "NotFoundError")
    explicit = body.get("burstpilot_prompt_tokens")
    if explicit is not None and not _positive_int(explicit):
        raise RequestError(
            400, "'burstpilot_prompt_tokens' must be a positive integer", "burstpilot_prompt_tokens"
        )
    counted = _chat_tokens(body.get("messages")) if chat else _prompt_tokens(body.get("prompt"))
    prompt_tokens = explicit if explicit is not None else max(1, counted)
    mt = body.get("max_tokens")
    if mt is None:
        mt = body.get("max_completion_tokens")
    if mt is None:
        mt = default_max_tokens
    if not _positive_int(mt):
        raise RequestError(400, "'max_tokens' must be a positive integer", "max_tokens")
    if prompt_tokens + mt > max_model_len:
        raise RequestError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + mt} tokens ({prompt_tokens} in the messages, {mt} in the completion).",
            "max_tokens",
        )
    n = body.get("n", 1)
    if isinstance(n, bool) or n != 1:
        raise RequestError(400, "only n=1 is supported", "n")
    stream = _flag(body, "stream")
    opts = body.get("stream_options")
    if opts is None:
        opts = {}
    if not isinstance(opts, dict):
        raise RequestError(400, "'stream_options' must be an object", "stream_options")
    if opts and not stream:
        raise RequestError(400, "'stream_options' is only allowed with stream=true", "stream_options")
    include_usage = opts.get("include_usage", False)
    if include_usage is None:
        include_usage = False
    if not isinstance(include_usage, bool):
        raise RequestError(400, "'stream_options.include_usage' must be a boolean", "stream_options")
    return CompletionRequest(chat, prompt_tokens, mt, stream, include_usage, _flag(body, "ignore_eos"))


def _prompt_tokens(prompt) -> int:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return text_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(_token_id(x) for x in prompt):
        return len(prompt)
    raise RequestError(
        400, "'prompt' must be a string, a list of token ids, or a list of one of those", "prompt"
    )


def _chat_tokens(msgs) -> int:
    if not isinstance(msgs, list) or not msgs:
        raise RequestError(400, "'messages' must be a non-empty list", "messages")
    counted = 3
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(400, f"messages[{i}] must be an object with a 'role'", "messages")
        content = m.get("content")
        if content is None:  # an assistant turn that only called tools
            content = ""
        elif isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                text = part.get("text", "") if isinstance(part, dict) else None
                if not isinstance(text, str):
                    raise RequestError(
                        400, f"messages[{i}].content[{j}] must be an object with a string 'text'", "messages"
                    )
                texts.append(text)
            content = " ".join(texts)
        elif not isinstance(content, str):
            raise RequestError(400, f"messages[{i}].content must be a string or a list of parts", "messages")
        counted += 3 + text_tokens(content)
    return counted


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(400, f"'{name}' must be a boolean", name)
    return value


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def _token_id(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _kind(x) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(x), "a number"
    )
