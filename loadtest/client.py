"""One streamed request against an OpenAI-compatible endpoint, recorded with its timings or its failure."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from burstpilot.errors import BurstpilotError

# A filler word that common BPE tokenizers encode as one token; n words ~ n prompt tokens.
FILLER_WORD = " the"


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
    api: str, model: str, prompt: str, prompt_tokens: int, max_tokens: int, stream: bool
) -> bytes:
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
    return json.dumps(body, separators=(",", ":")).encode()


def endpoint_url(target: str, api: str) -> str:
    base = target.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base + ("/v1/chat/completions" if api == "chat" else "/v1/completions")


class _SSEError(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


def _chunk_text(data: dict) -> str | None:
    choices = data.get("choices")
    if not choices:
        return None
    c = choices[0]
    if "delta" in c:
        return (c.get("delta") or {}).get("content") or None
    return c.get("text") or None


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


async def send(
    session: aiohttp.ClientSession, url: str, body: bytes, rec: dict, timeouts: Timeouts, t0: float
) -> None:
    """Send one request and fill ``rec`` (timings relative to ``t0``; error kind on failure).

    Never raises for a failed request: every failure becomes ``rec['error']``. Cancellation
    (an interrupted run past its grace period) is recorded as 'cancelled' and re-raised.
    """
    times: list[float] = []
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
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                rec["status"] = resp.status
                if resp.status >= 400:
                    text = (await resp.content.read(512)).decode("utf-8", "replace")
                    kind = "http_5xx" if resp.status >= 500 else "http_4xx"
                    raise _SSEError(kind, f"HTTP {resp.status}: {text.strip()[:200]}")
                if resp.content_type == "application/json":  # a non-streaming answer
                    try:
                        data = await resp.json()
                    except ValueError as exc:
                        raise _SSEError("malformed_sse", f"body is not JSON: {exc}") from exc
                    if not isinstance(data, dict) or not data.get("choices"):
                        raise _SSEError("malformed_sse", "JSON body without choices")
                    choice = data["choices"][0]
                    text = choice.get("text") or (choice.get("message") or {}).get("content") or ""
                    if text:
                        times.append(time.perf_counter())  # TTFT = E2E without streaming, as in vLLM
                    usage = data.get("usage") or {}
                    usage_tokens = usage.get("completion_tokens")
                    prompt_tokens = usage.get("prompt_tokens")
                else:
                    done = False
                    async for raw in resp.content:
                        line = raw.strip()
                        if not line or line.startswith(b":"):
                            continue
                        if not line.startswith(b"data:"):
                            if line.split(b":", 1)[0] in (b"event", b"id", b"retry"):
                                continue
                            raise _SSEError("malformed_sse", f"not an SSE line: {line[:80]!r}")
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            done = True
                            break
                        now = time.perf_counter()
                        try:
                            data = json.loads(payload)
                        except ValueError as exc:
                            raise _SSEError("malformed_sse", f"data is not JSON: {payload[:80]!r}") from exc
                        if not isinstance(data, dict):
                            raise _SSEError("malformed_sse", f"data is not a JSON object: {payload[:80]!r}")
                        if "error" in data and not data.get("choices"):
                            raise _SSEError("http_5xx", f"error event: {str(data['error'])[:200]}")
                        if _chunk_text(data) is not None:
                            if not times:
                                cm.reschedule(total_deadline)
                            times.append(now)
                        usage = data.get("usage")
                        if usage:
                            usage_tokens = usage.get("completion_tokens", usage_tokens)
                            prompt_tokens = usage.get("prompt_tokens", prompt_tokens)
                    if not done:
                        raise _SSEError("truncated", f"stream ended without [DONE] after {len(times)} chunks")
        t_end = time.perf_counter()
        rec["usage_reported"] = usage_tokens is not None
        if prompt_tokens is not None:
            rec["prompt_tokens"] = int(prompt_tokens)
        _finish(rec, times, t_send, t_end, usage_tokens)
        rec["error"] = ""
        return
    except _SSEError as exc:
        rec["error"], rec["error_detail"] = exc.kind, str(exc)
    except aiohttp.ServerTimeoutError as exc:  # the session's connect timeout (before the asyncio one)
        rec["error"], rec["error_detail"] = "connect_timeout", f"{type(exc).__name__}: {exc}"[:200]
    except TimeoutError:
        first = not times and timeouts.first_token_s < timeouts.total_s
        rec["error"] = "first_token_timeout" if first else "total_timeout"
        rec["error_detail"] = f"no {'first token' if first else 'end of stream'} in time"
    except aiohttp.ClientConnectorError as exc:
        rec["error"], rec["error_detail"] = "connect", str(exc)[:200]
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionResetError) as exc:
        # A payload error at the end of a chunked body is how a cut stream shows up.
        kind = "truncated" if times and isinstance(exc, aiohttp.ClientPayloadError) else "reset"
        rec["error"], rec["error_detail"] = kind, f"{type(exc).__name__}: {exc}"[:200]
    except aiohttp.ClientError as exc:
        rec["error"], rec["error_detail"] = "client", f"{type(exc).__name__}: {exc}"[:200]
    except asyncio.CancelledError:
        rec["error"], rec["error_detail"] = "cancelled", "still in flight when the grace period ended"
        _finish(rec, times, t_send, time.perf_counter(), None)
        rec["output_tokens"] = len(times)
        raise
    _finish(rec, times, t_send, time.perf_counter(), None)
