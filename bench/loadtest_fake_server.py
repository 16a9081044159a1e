"""The judge of the send-accuracy benchmark: a fast fake OpenAI streaming server that logs arrivals.

Every POST to /v1/completions or /v1/chat/completions gets its arrival time (CLOCK_MONOTONIC, taken
when the handler starts) appended to a log, then a complete SSE stream of ``max_tokens`` chunks
(at most 16), a usage chunk and [DONE] in one write, so the server spends as little CPU as possible.
GET /_arrivals returns the log (and clears it with ?clear=1). Binds 127.0.0.1 only.

    python bench/loadtest_fake_server.py --port P
"""

from __future__ import annotations

import argparse
import json
import time

from aiohttp import web

ARRIVALS: list[float] = []
_CHUNK_C = b'data: {"id":"x","object":"text_completion","model":"tiny","choices":[{"index":0,"text":" tok","finish_reason":null}]}\n\n'
_CHUNK_CHAT = b'data: {"id":"x","object":"chat.completion.chunk","model":"tiny","choices":[{"index":0,"delta":{"content":" tok"},"finish_reason":null}]}\n\n'


async def complete(request: web.Request) -> web.Response:
    ARRIVALS.append(time.monotonic())
    body = await request.json()
    n = max(1, min(int(body.get("max_tokens") or body.get("max_completion_tokens") or 2), 16))
    chunk = _CHUNK_CHAT if request.path.endswith("chat/completions") else _CHUNK_C
    usage = {
        "prompt_tokens": int(body.get("burstpilot_prompt_tokens") or 32),
        "completion_tokens": n,
        "total_tokens": n + 32,
    }
    if not body.get("stream"):
        text = " tok" * n
        choice = {"index": 0, "finish_reason": "length"}
        choice.update(
            {"message": {"role": "assistant", "content": text}} if chunk is _CHUNK_CHAT else {"text": text}
        )
        return web.json_response(
            {"id": "x", "object": "text_completion", "model": "tiny", "choices": [choice], "usage": usage}
        )
    tail = b'data: {"id":"x","choices":[],"usage":' + json.dumps(usage).encode() + b"}\n\ndata: [DONE]\n\n"
    return web.Response(body=chunk * n + tail, content_type="text/event-stream")


async def models(request: web.Request) -> web.Response:
    return web.json_response(
        {"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "bench"}]}
    )


async def arrivals(request: web.Request) -> web.Response:
    data = list(ARRIVALS)
    if request.query.get("clear"):
        ARRIVALS.clear()
    return web.json_response({"arrivals": data})


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = web.Application(client_max_size=1 << 22)
    app.router.add_post("/v1/completions", complete)
    app.router.add_post("/v1/chat/completions", complete)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/_arrivals", arrivals)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, backlog=4096)


if __name__ == "__main__":
    main()
