"""The HTTP side of a simulated replica: the vLLM/OpenAI API (aiohttp) in front of a :class:`Replica`.

``POST /v1/completions`` and ``/v1/chat/completions`` (streaming and not), ``GET /health`` (503 during the cold
start), ``GET /v1/models`` and ``GET /metrics``. Requests are decoded and validated by
:mod:`burstpilot.sim.protocol`; every refusal is an OpenAI error body, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
import uuid
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from burstpilot.sim.profile import Profile
from burstpilot.sim.protocol import (
    TOKEN_TEXT,
    CompletionRequest,
    RequestError,
    decode_body,
    parse_request,
    reply_text,
    usage,
)
from burstpilot.sim.replica import Replica, Stream

log = logging.getLogger(__name__)


def error_response(exc: RequestError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status)


async def read_json(request: web.Request) -> dict:
    """The body of a request as a JSON object; RequestError 413 or 400 otherwise."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise RequestError(413, f"request body larger than {request.app._client_max_size} bytes", None,
                           "RequestTooLargeError") from exc  # fmt: skip
    return decode_body(raw)


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except RequestError as exc:
        return error_response(exc)
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:  # a defect of ours: an error body, the traceback in the log, never in the answer
        log.exception("error serving %s %s", request.method, request.path)
        return error_response(
            RequestError(500, f"internal error ({type(exc).__name__})", None, "InternalServerError")
        )


class ReplicaServer:
    """The aiohttp application of one replica."""

    def __init__(self, replica: Replica, max_body_bytes: int = 1 << 20):
        self.replica = replica
        self.max_body_bytes = max_body_bytes

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[errors_middleware])
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        if not self.replica.ready:
            return web.Response(status=503, text="loading")
        return web.Response(status=200)

    async def _metrics(self, request: web.Request) -> web.Response:
        self.replica.record(None)
        return web.Response(
            body=generate_latest(self.replica.prometheus.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def _models(self, request: web.Request) -> web.Response:
        rep = self.replica
        model = {"id": rep.model_name, "object": "model", "created": rep.created, "owned_by": "burstpilot",
                 "root": rep.model_name, "max_model_len": rep.profile.max_model_len}  # fmt: skip
        return web.json_response({"object": "list", "data": [model]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        rep = self.replica
        body = await read_json(request)
        req = parse_request(
            body, chat, rep.model_name, rep.profile.max_model_len, rep.profile.default_max_tokens
        )
        st = rep.submit(req.prompt_tokens, req.max_tokens, req.ignore_eos)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        try:
            if req.stream:
                return await self._stream(request, st, req, rid, created)
            while not st.done:
                await st.event.wait()
                st.event.clear()
            text = reply_text(st.avail)
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                          "finish_reason": st.reason}  # fmt: skip
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": st.reason}
            return web.json_response(
                {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                 "model": rep.model_name, "choices": [choice], "usage": usage(req.prompt_tokens, st.avail)}
            )  # fmt: skip
        finally:
            rep.release(st)

    async def _stream(self, request, st: Stream, req: CompletionRequest, rid: str, created: int):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        chat = req.chat
        words = TOKEN_TEXT
        try:
            await resp.prepare(request)
            obj = "chat.completion.chunk" if chat else "text_completion"
            model = json.dumps(self.replica.model_name)
            head = f'{{"id":"{rid}","object":"{obj}","created":{created},"model":{model},"choices":['
            if chat:
                first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                         "finish_reason": None}  # fmt: skip
                await resp.write(f"data: {head}{json.dumps(first)}]}}\n\n".encode())
            sent = 0
            while True:
                await st.event.wait()
                st.event.clear()
                parts = []
                while sent < st.avail:
                    word = words[sent % len(words)]
                    sent += 1
                    fin = json.dumps(st.reason) if (st.done and sent == st.avail) else "null"
                    if chat:
                        choice = f'{{"index":0,"delta":{{"content":"{word}"}},"logprobs":null,"finish_reason":{fin}}}'
                    else:
                        choice = f'{{"index":0,"text":"{word}","logprobs":null,"finish_reason":{fin}}}'
                    parts.append(f"data: {head}{choice}]}}\n\n")
                if parts:
                    await resp.write("".join(parts).encode())
                if st.done and sent >= st.avail:
                    break
            if req.include_usage:
                await resp.write(
                    f'data: {head}],"usage":{json.dumps(usage(req.prompt_tokens, sent))}}}\n\n'.encode()
                )
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionResetError:  # the client went away: release() aborts its sequence
            pass
        return resp


async def start_site(app: web.Application, host: str, port: int | None = None, sock=None) -> web.AppRunner:
    """Serve ``app`` on host:port, or on an already bound socket; the runner is cleaned up on failure."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        site = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def report_readiness(
    ready: Callable[[], tuple[int, int, float | None]],
    notify: Callable[[str], None],
    interval_s: float = 10.0,
) -> None:
    """Say what is loading every ``interval_s`` and when everything is ready; returns when it is.

    ``ready()`` gives (ready, wanted, seconds until the next one is ready or None).
    """
    t0 = time.monotonic()
    last = None
    while True:
        n, want, eta = ready()
        if n >= want:
            if last is not None or want:
                notify(f"ready: {n} of {want} after {time.monotonic() - t0:.1f} s")
            return
        if last is None or time.monotonic() - last >= interval_s:
            nxt = f", next in {eta:.0f} s" if eta is not None else ""
            notify(f"waiting for the cold start: {n} of {want} ready{nxt}")
            last = time.monotonic()
        await asyncio.sleep(min(0.1, interval_s))


async def serve(
    profile: Profile,
    host: str,
    port: int,
    max_body_bytes: int = 1 << 20,
    notify: Callable[[str], None] | None = None,
    **kw,
) -> None:
    """Run one replica until SIGTERM or SIGINT; ``notify`` hears when it is ready and while it loads."""
    rep = Replica(profile, **kw)
    rep.start()
    try:
        runner = await start_site(ReplicaServer(rep, max_body_bytes).app(), host, port)
    except BaseException:
        await rep.stop()
        raise
    reporter = None
    if notify is not None:
        loop = asyncio.get_running_loop()

        def state():
            left = rep.ready_at - loop.time()
            return (1, 1, None) if left <= 0 else (0, 1, left)

        reporter = loop.create_task(report_readiness(state, notify))
    try:
        await wait_for_termination()
    finally:
        if reporter:
            reporter.cancel()
        await rep.stop()
        await runner.cleanup()


async def wait_for_termination() -> None:
    """Return on SIGTERM (or SIGINT), so that servers close their ports and files cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
