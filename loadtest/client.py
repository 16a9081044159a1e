"""One streamed request against an OpenAI-compatible endpoint, recorded with its timings or its failure."""

from __future__ import annotations

import asyncio
import errno
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from burstpilot.errors import BurstpilotError

from .protocol import MAX_SSE_LINE, AnswerError, StreamState, parse_answer

# A filler word that common BPE tokenizers encode as one token; n words ~ n prompt tokens.
FILLER_WORD = " the"
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 10.0
    first_token_s: float = 60.0
    total_s: float = 600.0


class PromptBuilder:
    """Prompt text of a requested token length.

    Without a tokenizer the prompt is filler text of ~n tokens and the exact count travels in the
    ``burstpilot_prompt_tokens`` extension field (the simulator uses it). With a local Hugging
    Face tokenizer directory the prompt is decoded from n token ids, so it encodes to n tokens.
    """

    def __init__(self, tokenizer_dir: str | Path | None = None):
        self._tok = None
        self._cache: dict[int, str] = {}
        if tokenizer_dir is not None:
            path = Path(tokenizer_dir) / "tokenizer.json"
            try:
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise BurstpilotError(
                    "--tokenizer needs the 'tokenizers' package (pip install tokenizers)"
                ) from exc
            if not path.is_file():
                raise BurstpilotError(
                    f"--tokenizer: {path} does not exist (need a Hugging Face tokenizer directory)"
                )
            self._tok = Tokenizer.from_file(str(path))
            ids = self._tok.encode(FILLER_WORD * 64, add_special_tokens=False).ids
            self._ids = ids[1:-1] or ids  # inner ids: one filler word per token away from the edges

    def prompt(self, n: int) -> str:
        n = max(1, int(n))
        text = self._cache.get(n)
        if text is None:
            text = self._cache[n] = self._build(n)
        return text

    def _build(self, n: int) -> str:
        if self._tok is None:
            return (FILLER_WORD * n).lstrip()
        unit = self._ids[0]
        ids = [unit] * n
        text = self._tok.decode(ids)
        # Adjust once: decode/encode round trips of repeated units are stable for BPE vocabularies.
        got = len(self._tok.encode(text, add_special_tokens=False).ids)
        if got != n and got > 0:
            ids = [unit] * max(1, round(n * n / got))
            text = self._tok.decode(ids)
        return text


def request_body(
    api: str,
    model: str,
    prompt: str,
    prompt_tokens: int,
    max_tokens: int,
    stream: bool,
    extra: dict | None = None,
) -> bytes:
    """The JSON body of one request; ``extra`` (``--extra-body``) is merged in last, so it wins."""
    body: dict = {
        "model": model,
        "max_tokens": int(max_tokens),
        "ignore_eos": True,
        "stream": stream,
        "temperature": 0.0,
        "burstpilot_prompt_tokens": int(prompt_tokens),
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if extra:
        body.update(extra)
    return orjson.dumps(body)


def endpoint_url(target: str, api: str) -> str:
    return base_url(target) + ("/v1/chat/completions" if api == "chat" else "/v1/completions")


def base_url(target: str) -> str:
    """The server's root: ``http://host:8000/v1/`` and ``http://host:8000`` both give ``http://host:8000``."""
    base = target.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of a sorted list; cheap for short lists."""
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _finish(rec: dict, times: list[float], t_send: float, t_end: float, out_tokens: int | None) -> None:
    rec["e2e_s"] = t_end - t_send
    chunks = len(times)
    rec["chunks"] = chunks
    if chunks:
        rec["ttft_s"] = times[0] - t_send
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        rec["itl_s"] = [round(g, 7) for g in gaps]
        if gaps:
            ordered = sorted(gaps)
            rec["itl_mean_s"] = sum(gaps) / len(gaps)
            rec["itl_p50_s"] = _quantile(ordered, 0.5)
            rec["itl_p99_s"] = _quantile(ordered, 0.99)
            rec["itl_max_s"] = ordered[-1]
    n = out_tokens if out_tokens is not None else chunks
    rec["output_tokens"] = n
    if n > 1 and chunks:
        rec["tpot_s"] = (rec["e2e_s"] - rec["ttft_s"]) / (n - 1)


_RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}


def _detail(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


async def _read_json(resp: aiohttp.ClientResponse, times: list[float]) -> tuple[int | None, int | None]:
    """A whole JSON answer (no streaming): TTFT = E2E, as in vLLM's benchmark."""
    raw = await resp.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise AnswerError("malformed_response", f"the body is not JSON: {raw[:80]!r}") from exc
    text, completion, prompt = parse_answer(data)
    if text:
        times.append(time.perf_counter())
    return completion, prompt


async def send(
    session: aiohttp.ClientSession, url: str, body: bytes, rec: dict, timeouts: Timeouts, t0: float
) -> None:
    """Send one request and fill ``rec`` (timings relative to ``t0``; error kind on failure).

    Never raises for a failed request: every failure becomes ``rec['error']``, and a request only counts as a
    success when its answer had the expected shape. Cancellation (an interrupted run past its grace period) is
    recorded as 'cancelled' and re-raised.
    """
    stream = StreamState()
    times = stream.times
    t_send = time.perf_counter()
    rec["sent_s"] = t_send - t0
    rec["dispatch_lag_s"] = rec["sent_s"] - rec["scheduled_s"]
    loop = asyncio.get_running_loop()
    # perf_counter and the loop clock (monotonic) share no origin; convert deadlines.
    first_deadline = loop.time() + min(timeouts.first_token_s, timeouts.total_s)
    total_deadline = loop.time() + timeouts.total_s
    usage_tokens: int | None = None
    prompt_tokens: int | None = None
    try:
        async with asyncio.timeout_at(first_deadline) as cm:
            async with session.post(url, data=body, headers=_JSON) as resp:
                rec["status"] = resp.status
                if resp.status >= 400:
                    text = (await resp.content.read(512)).decode("utf-8", "replace")
                    kind = "http_5xx" if resp.status >= 500 else "http_4xx"
                    raise AnswerError(kind, f"HTTP {resp.status}: {text.strip()[:200]}")
                if resp.content_type == "application/json":  # a non-streaming answer
                    usage_tokens, prompt_tokens = await _read_json(resp, times)
                else:
                    # Whole reads, split into lines here: every event of one read arrived at once, and a
                    # starved loop catches up in one step instead of one await per line.
                    pending = b""
                    async for data in resp.content.iter_any():
                        now = time.perf_counter()
                        lines = (pending + data).split(b"\n") if pending else data.split(b"\n")
                        pending = lines.pop()
                        if len(pending) > MAX_SSE_LINE:
                            raise AnswerError(
                                "malformed_response", f"an SSE line longer than {MAX_SSE_LINE // 1024} KiB"
                            )
                        had_text = bool(times)
                        if any(stream.feed(line, now) for line in lines):
                            break
                        if times and not had_text:
                            cm.reschedule(total_deadline)
                    else:
                        if pending.strip():
                            stream.feed(pending, time.perf_counter())
                    if not stream.done:
                        raise AnswerError(
                            "truncated", f"stream ended without [DONE] after {len(times)} chunks"
                        )
                    usage_tokens, prompt_tokens = stream.completion_tokens, stream.prompt_tokens
        t_end = time.perf_counter()
        rec["usage_reported"] = usage_tokens is not None
        if prompt_tokens is not None:
            rec["prompt_tokens"] = prompt_tokens
        _finish(rec, times, t_send, t_end, usage_tokens)
        if not times:
            rec["error"], rec["error_detail"] = "empty_response", "the answer carried no text"
        else:
            rec["error"] = ""
        return
    except AnswerError as exc:
        rec["error"], rec["error_detail"] = exc.kind, str(exc)
    except aiohttp.ServerTimeoutError as exc:  # the session's connect timeout (before the asyncio one)
        rec["error"], rec["error_detail"] = "connect_timeout", _detail(exc)
    except TimeoutError:
        first = not times and timeouts.first_token_s < timeouts.total_s
        rec["error"] = "first_token_timeout" if first else "total_timeout"
        rec["error_detail"] = f"no {'first token' if first else 'end of stream'} in time"
    except aiohttp.ClientConnectorError as exc:
        rec["error"], rec["error_detail"] = "connect", str(exc)[:200]
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionResetError) as exc:
        # A payload error at the end of a chunked body is how a cut stream shows up.
        rec["error"], rec["error_detail"] = ("truncated" if times else "reset"), _detail(exc)
    except aiohttp.ClientOSError as exc:  # a reset while the request was written or the answer awaited
        kind = ("truncated" if times else "reset") if exc.errno in _RESET_ERRNOS else "client"
        rec["error"], rec["error_detail"] = kind, _detail(exc)
    except aiohttp.ClientResponseError as exc:  # not an HTTP answer at all
        rec["error"], rec["error_detail"] = "malformed_response", _detail(exc)
    except aiohttp.ClientError as exc:
        rec["error"], rec["error_detail"] = "client", _detail(exc)
    except asyncio.CancelledError:
        rec["error"], rec["error_detail"] = "cancelled", "still in flight when the grace period ended"
        _finish(rec, times, t_send, time.perf_counter(), None)
        rec["output_tokens"] = len(times)
        raise
    except Exception as exc:  # noqa: BLE001 - whatever it was, this request failed and the replay goes on
        rec["error"], rec["error_detail"] = "client", _detail(exc)
    _finish(rec, times, t_send, time.perf_counter(), None)
