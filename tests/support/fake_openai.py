"""A small fake OpenAI-compatible streaming server for the load generator's tests.

It streams ``max_tokens`` chunks after ``ttft_s`` with ``itl_s`` between them. The
``burstpilot_prompt_tokens`` of a request picks a failure mode from ``modes`` (prompt tokens -> mode),
so a test workload says per row how the server misbehaves.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time

from aiohttp import web

MODES = (
    "ok",
    "http_400",
    "http_503",
    "reset",  # close the connection before any response
    "truncate",  # two chunks, then end the stream without [DONE]
    "cut",  # two chunks, then drop the connection mid-body
    "malformed",  # a data line that is not JSON
    "garbage",  # a line that is not SSE at all
    "stall_first",  # no first token for 5 s
    "slow",  # tokens every 0.2 s (for the total timeout)
    "error_event",  # an OpenAI-style error object inside the stream
    "rst",  # read the request, then reset the connection (TCP RST) before any response
    "bad_choices",  # a chunk whose choices is an object, not a list
    "bad_usage",  # a usage chunk whose completion_tokens is text
    "long_line",  # a data line of 200 KiB
    "empty",  # a stream with no text at all, then [DONE]
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeServer:
    def __init__(
        self,
        ttft_s=0.0,
        itl_s=0.0,
        modes=None,
        usage=True,
        model="fake-model",
        stop_after_models=False,
        ready_after_s=0.0,
        metrics=True,
        api_key=None,
    ):
        self.ttft_s, self.itl_s = ttft_s, itl_s
        self.ready_after_s = ready_after_s  # /health and completions answer 503 until this long after start
        self.metrics = metrics  # serve a vLLM-like /metrics
        self.api_key = api_key  # when set, every endpoint answers 401 without "Authorization: Bearer KEY"
        self.in_flight = 0
        self.max_in_flight = 0
        self.started_at: float | None = None  # perf_counter at start()
        self.headers: list[dict] = []  # the headers of each completion request
        self.modes = modes or {}
        self.usage = usage
        self.model = model
        self.stop_after_models = stop_after_models
        self.arrivals: list[float] = []  # perf_counter at each completion request's arrival
        self.finished: list[float] = []  # time.time() when each successful stream ended
        self.bodies: list[dict] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        return await handler(request)

    async def start(self) -> FakeServer:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        if self.metrics:
            app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/completions", self._complete)
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.started_at = time.perf_counter()
        return self

    def ready(self) -> bool:
        return time.perf_counter() - self.started_at >= self.ready_after_s

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.ready() else 503, text="" if self.ready() else "loading")

    async def _metrics(self, request: web.Request) -> web.Response:
        running = len(self.arrivals) - len(self.finished)
        text = (
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="{self.model}"}} {running}\n'
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{model_name="{self.model}"}} 0\n'
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f'vllm:kv_cache_usage_perc{{model_name="{self.model}"}} {min(1.0, 0.01 * running)}\n'
            "# TYPE vllm:e2e_request_latency_seconds histogram\n"
            'vllm:e2e_request_latency_seconds_bucket{le="+Inf"} 1\n'
        )
        return web.Response(text=text, content_type="text/plain")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _models(self, request: web.Request) -> web.Response:
        if self.stop_after_models:
            asyncio.get_running_loop().call_later(0.01, lambda: asyncio.ensure_future(self.stop()))
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.perf_counter())
        self.headers.append(dict(request.headers))
        body = await request.json()
        self.bodies.append(body)
        if not self.ready():
            return web.json_response({"error": {"message": "loading"}}, status=503)
        mode = self.modes.get(body.get("burstpilot_prompt_tokens"), "ok")
        if mode == "rst":
            sock = request.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.transport.abort()
            await asyncio.sleep(0.05)
            return web.Response(status=500)
        if mode == "http_400":
            return web.json_response({"error": {"message": "bad request"}}, status=400)
        if mode == "http_503":
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        if mode == "reset":
            request.transport.close()
            await asyncio.sleep(0.05)
            return web.Response(status=500)
        chat = "messages" in body
        n = int(body.get("max_tokens", 1))
        if not body.get("stream"):
            await asyncio.sleep(self.ttft_s + (n - 1) * self.itl_s)
            text = "".join(f"t{i} " for i in range(n))
            choice = (
                {"index": 0, "message": {"role": "assistant", "content": text}}
                if chat
                else {"index": 0, "text": text}
            )
            usage = {"prompt_tokens": body.get("burstpilot_prompt_tokens", 1), "completion_tokens": n}
            if mode == "bad_choices":
                return web.json_response({"choices": choice, "usage": usage})
            if mode == "bad_usage":
                return web.json_response(
                    {"choices": [choice], "usage": {**usage, "completion_tokens": "many"}}
                )
            return web.json_response({"choices": [choice], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def chunk(i: int) -> bytes:
            if chat:
                choice = {"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}
            else:
                choice = {"index": 0, "text": f"t{i} ", "finish_reason": None}
            return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"

        await asyncio.sleep(5 if mode == "stall_first" else self.ttft_s)
        if mode == "empty":
            await resp.write(b'data: {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}\n\n')
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        for i in range(n):
            if i:
                await asyncio.sleep(0.2 if mode == "slow" else self.itl_s)
            await resp.write(chunk(i))
            if i == 1 and mode in (
                "truncate", "cut", "malformed", "garbage", "error_event", "bad_choices", "bad_usage", "long_line"
            ):  # fmt: skip
                if mode == "truncate":
                    await resp.write_eof()
                    return resp
                if mode == "cut":
                    request.transport.close()
                    return resp
                if mode == "malformed":
                    await resp.write(b"data: {not json\n\n")
                elif mode == "garbage":
                    await resp.write(b"<html>oops</html>\n\n")
                elif mode == "bad_choices":
                    await resp.write(b'data: {"choices": {"text": "x"}}\n\n')
                elif mode == "bad_usage":
                    await resp.write(b'data: {"choices": [], "usage": {"completion_tokens": "many"}}\n\n')
                elif mode == "long_line":
                    await resp.write(b'data: {"choices": [{"text": "' + b"x" * (200 << 10) + b'"}]}\n\n')
                else:
                    await resp.write(b'data: {"error": {"message": "engine died"}}\n\n')
        if self.usage:
            usage = {"prompt_tokens": body.get("burstpilot_prompt_tokens", 1), "completion_tokens": n}
            await resp.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self.finished.append(time.time())
        return resp


def with_server(server: FakeServer, fn):
    """Runs ``await fn(server)`` on a fresh event loop with the server up, and stops the server after."""

    async def go():
        await server.start()
        try:
            return await fn(server)
        finally:
            await server.stop()

    return asyncio.run(go())
