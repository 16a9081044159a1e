"""Real-time mode: the engine behind a vLLM-compatible HTTP API (aiohttp) with vLLM v1 metrics.

The step loop keeps an absolute step clock: a step planned at ``t`` ends at ``t + step_ms`` on the event loop's
clock whatever the delivery of the previous step's tokens cost; how late each step end is observed goes to
``burstpilot_sim_step_lateness_seconds``. Tokens of a step are delivered at its end.

Prompt length rule: the extension field ``burstpilot_prompt_tokens`` (an int) wins; otherwise a text prompt
counts ``ceil(utf8_bytes / 4)`` tokens, a list of token ids counts its length, and a chat counts its messages'
contents that way plus 3 tokens per message and 3 for the reply's priming. Without ``ignore_eos`` the simulated
model stops at a natural length drawn from a lognormal (median ``default_max_tokens / 2``), or at
``max_tokens`` (default ``default_max_tokens`` of the profile), whichever comes first.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time
import uuid
from collections import deque

import numpy as np
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from burstpilot.sim.engine import Engine, Seq
from burstpilot.sim.profile import Profile

WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do")

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)  # fmt: skip
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)  # fmt: skip


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, etype: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.message, self.param, self.etype = status, message, param, etype


def error_response(exc: RequestError) -> web.Response:
    body = {"error": {"message": exc.message, "type": exc.etype, "param": exc.param, "code": exc.status}}
    return web.json_response(body, status=exc.status)


class Metrics:
    def __init__(self, model_name: str):
        self.registry = r = CollectorRegistry()
        lab = ["model_name"]
        self.running = Gauge(
            "vllm:num_requests_running", "Requests in model execution batches.", lab, registry=r
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting to be processed.", lab, registry=r
        )
        self.kv = Gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", lab, registry=r
        )
        self.preempt = Counter("vllm:num_preemptions", "Cumulative number of preemptions.", lab, registry=r)
        self.prompt = Counter("vllm:prompt_tokens", "Prefill tokens processed.", lab, registry=r)
        self.gen = Counter("vllm:generation_tokens", "Generation tokens processed.", lab, registry=r)
        self.success = Counter(
            "vllm:request_success", "Successfully processed requests.", lab + ["finished_reason"], registry=r
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", lab, buckets=TTFT_BUCKETS, registry=r
        )
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds", "Inter-token latency.", lab, buckets=ITL_BUCKETS, registry=r
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency.",
            lab,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "vllm:request_queue_time_seconds", "Time spent waiting.", lab, buckets=E2E_BUCKETS, registry=r
        )
        self.late = Histogram(
            "burstpilot_sim_step_lateness_seconds",
            "How late step ends were delivered against the simulated step clock.",
            lab,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
            registry=r,
        )
        m = model_name
        self.c = {
            name: getattr(self, name).labels(m)
            for name in (
                "running",
                "waiting",
                "kv",
                "preempt",
                "prompt",
                "gen",
                "ttft",
                "itl",
                "e2e",
                "queue",
                "late",
            )
        }


class Stream:
    """One request's token delivery between the step loop and its HTTP handler."""

    __slots__ = ("seq", "avail", "done", "event", "last_t", "reason")

    def __init__(self, reason: str):
        self.seq: Seq | None = None
        self.avail = 0  # tokens delivered so far
        self.done = False
        self.event = asyncio.Event()
        self.last_t = 0.0
        self.reason = reason  # finish_reason once done


class Replica:
    """One simulated GPU replica in real time: engine, step loop, metrics and the HTTP app."""

    def __init__(
        self,
        profile: Profile,
        model_name: str | None = None,
        cold_start_s: float | None = None,
        max_waiting: int | None = None,
        max_body_bytes: int = 1 << 20,
        seed: int = 0,
    ):
        self.profile = profile
        self.model_name = model_name or profile.model
        self.rng = np.random.default_rng(seed)
        self.cold_start_s = (
            profile.sample_cold_start(self.rng) if cold_start_s is None else float(cold_start_s)
        )
        self.max_waiting = max_waiting
        self.max_body_bytes = max_body_bytes
        self.engine = Engine(profile)
        self.metrics = Metrics(self.model_name)
        self.streams: dict[int, Stream] = {}
        self.aborts: list[Stream] = []
        self.wake = asyncio.Event()
        self.ready_at = 0.0
        self.task: asyncio.Task | None = None
        self.lateness: deque[float] = deque(maxlen=1 << 17)  # the most recent steps'
        # (arrival, first token, finish, prompt tokens, output tokens) of recent requests, on the step clock
        self.finished_log: deque[tuple] = deque(maxlen=1 << 14)
        self.steps = 0
        self.tokens = 0
        self.outstanding = 0
        self.created = int(time.time())

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.ready_at = loop.time() + self.cold_start_s
        self.task = loop.create_task(self._loop())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    @property
    def ready(self) -> bool:
        return asyncio.get_running_loop().time() >= self.ready_at

    # ------------------------------------------------------------------ the step loop
    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        eng = self.engine
        mc = self.metrics.c
        last_end = -math.inf
        while True:
            for st in self.aborts:
                if st.seq is not None:
                    eng.abort(st.seq)
                    self.streams.pop(id(st.seq), None)
            self.aborts.clear()
            # steps run back to back on the step clock; from idle, the next one starts when the first waiting
            # request arrived (not when this loop got to run), as in the discrete-event mode
            start = last_end
            if not eng.running and eng.waiting:
                start = max(last_end, min(loop.time(), eng.waiting[0].arrival))
            plan = eng.plan(start) if eng.has_work() else None
            if plan is None:
                self._gauges()
                self.wake.clear()
                await self.wake.wait()
                continue
            decoding = eng.decoding() if plan.batch else ()
            out = eng.commit(plan, 1)
            delay = out.end - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if out.steps:  # (a plan that only preempted ran no step)
                late = max(0.0, loop.time() - out.end)
                self.lateness.append(late)
                mc["late"].observe(late)
                self.steps += 1
            self.tokens += out.tokens
            if out.preempted:
                mc["preempt"].inc(len(out.preempted))
            mc["gen"].inc(out.tokens)
            for seq in decoding:
                self._token(seq, out.end)
            for seq in out.first:
                st = self.streams.get(id(seq))
                if st is None:
                    continue
                if seq.generated == 1:  # its first token (not a resumption after preemption)
                    mc["prompt"].inc(seq.prompt)
                    mc["ttft"].observe(out.end - seq.arrival)
                    mc["queue"].observe((seq.scheduled_time or seq.arrival) - seq.arrival)
                self._token(seq, out.end)
            for seq in out.finished:
                st = self.streams.pop(id(seq), None)
                if st is None:
                    continue
                st.done = True
                st.event.set()
                mc["e2e"].observe(out.end - seq.arrival)
                self.metrics.success.labels(self.model_name, st.reason).inc()
            for seq in out.finished:
                self.finished_log.append(
                    (seq.arrival, seq.first_token_time, seq.finish_time, seq.prompt, seq.max_tokens)
                )
            self._gauges()
            last_end = out.end

    def _token(self, seq: Seq, t: float) -> None:
        st = self.streams.get(id(seq))
        if st is None:
            return
        if st.avail:
            self.metrics.c["itl"].observe(t - st.last_t)
        st.avail += 1
        st.last_t = t
        st.event.set()

    def _gauges(self) -> None:
        mc, e = self.metrics.c, self.engine
        mc["running"].set(e.num_running)
        mc["waiting"].set(e.num_waiting)
        mc["kv"].set(e.kv_usage)

    # ------------------------------------------------------------------ requests
    def submit(self, prompt_tokens: int, max_tokens: int, ignore_eos: bool) -> Stream:
        if not self.ready:
            raise RequestError(
                503, "the model is still loading (cold start)", etype="ServiceUnavailableError"
            )
        if self.max_waiting is not None and self.engine.num_waiting >= self.max_waiting:
            raise RequestError(
                503,
                f"the server's queue is full ({self.max_waiting} requests waiting); retry later",
                etype="ServiceUnavailableError",
            )
        limit = max_tokens
        reason = "length"
        if not ignore_eos:
            natural = max(
                1,
                int(round(self.profile.default_max_tokens / 2 * math.exp(0.8 * self.rng.standard_normal()))),
            )
            if natural < max_tokens:
                limit, reason = natural, "stop"
        st = Stream(reason)
        seq = self.engine.add(prompt_tokens, limit, asyncio.get_running_loop().time())
        st.seq = seq
        self.streams[id(seq)] = st
        self.outstanding += 1
        self.wake.set()
        return st

    def release(self, st: Stream) -> None:
        """The handler is done with a stream; a stream that did not finish is aborted (client gone)."""
        self.outstanding -= 1
        if not st.done:
            self.aborts.append(st)
            self.wake.set()

    # ------------------------------------------------------------------ HTTP
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[_errors_middleware])
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(status=503, text="loading")
        return web.Response(status=200)

    async def _metrics(self, request: web.Request) -> web.Response:
        self._gauges()
        return web.Response(
            body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model_name,
                        "object": "model",
                        "created": self.created,
                        "owned_by": "burstpilot",
                        "root": self.model_name,
                        "max_model_len": self.profile.max_model_len,
                    }
                ],
            }
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body = await _json_body(request)
        prompt_tokens, max_tokens, stream, include_usage, ignore_eos = self._parse(body, chat)
        st = self.submit(prompt_tokens, max_tokens, ignore_eos)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        try:
            if stream:
                return await self._stream(request, st, rid, created, chat, prompt_tokens, include_usage)
            while not st.done:
                await st.event.wait()
                st.event.clear()
            text = "".join(" " + WORDS[i % len(WORDS)] for i in range(st.avail))
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": st.avail,
                "total_tokens": prompt_tokens + st.avail,
            }
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                          "finish_reason": st.reason}  # fmt: skip
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": st.reason}
                obj = "text_completion"
            return web.json_response(
                {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": self.model_name,
                    "choices": [choice],
                    "usage": usage,
                }  # fmt: skip
            )
        finally:
            self.release(st)

    async def _stream(self, request, st: Stream, rid, created, chat, prompt_tokens, include_usage):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await resp.prepare(request)
            obj = "chat.completion.chunk" if chat else "text_completion"
            head = f'{{"id":"{rid}","object":"{obj}","created":{created},"model":{json.dumps(self.model_name)},"choices":['
            if chat:
                first = {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
                await resp.write(f"data: {head}{json.dumps(first)}]}}\n\n".encode())
            sent = 0
            while True:
                await st.event.wait()
                st.event.clear()
                parts = []
                while sent < st.avail:
                    word = " " + WORDS[sent % len(WORDS)]
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
            if include_usage:
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": sent,
                    "total_tokens": prompt_tokens + sent,
                }
                await resp.write(f'data: {head}],"usage":{json.dumps(usage)}}}\n\n'.encode())
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionResetError:  # the client went away: release() aborts its sequence
            pass
        return resp

    def _parse(self, body: dict, chat: bool):
        model = body.get("model")
        if model is None:
            raise RequestError(400, "'model' is required", "model")
        if model != self.model_name:
            raise RequestError(404, f"The model `{model}` does not exist.", "model", "NotFoundError")
        explicit = body.get("burstpilot_prompt_tokens")
        if explicit is not None and (
            not isinstance(explicit, int) or isinstance(explicit, bool) or explicit < 1
        ):
            raise RequestError(
                400, "'burstpilot_prompt_tokens' must be a positive integer", "burstpilot_prompt_tokens"
            )
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise RequestError(400, "'messages' must be a non-empty list", "messages")
            counted = 3
            for i, m in enumerate(msgs):
                if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                    raise RequestError(400, f"messages[{i}] must be an object with a 'role'", "messages")
                content = m.get("content", "")
                if isinstance(content, list):
                    content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
                if not isinstance(content, str):
                    raise RequestError(
                        400, f"messages[{i}].content must be a string or a list of parts", "messages"
                    )
                counted += 3 + _text_tokens(content)
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
                prompt = prompt[0]
            if isinstance(prompt, str):
                counted = _text_tokens(prompt)
            elif isinstance(prompt, list) and prompt and all(isinstance(x, int) for x in prompt):
                counted = len(prompt)
            else:
                raise RequestError(
                    400, "'prompt' must be a string, a list of token ids, or a list of one of those", "prompt"
                )
        prompt_tokens = explicit if explicit is not None else max(1, counted)
        mt = body.get("max_tokens", body.get("max_completion_tokens"))
        if mt is None:
            mt = self.profile.default_max_tokens
        if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
            raise RequestError(400, "'max_tokens' must be a positive integer", "max_tokens")
        if prompt_tokens + mt > self.profile.max_model_len:
            raise RequestError(
                400,
                f"This model's maximum context length is {self.profile.max_model_len} tokens. However, you requested "
                f"{prompt_tokens + mt} tokens ({prompt_tokens} in the messages, {mt} in the completion).",
                "max_tokens",
            )
        n = body.get("n", 1)
        if n != 1:
            raise RequestError(400, "only n=1 is supported", "n")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise RequestError(400, "'stream' must be a boolean", "stream")
        opts = body.get("stream_options") or {}
        if not isinstance(opts, dict):
            raise RequestError(400, "'stream_options' must be an object", "stream_options")
        if opts and not stream:
            raise RequestError(400, "'stream_options' is only allowed with stream=true", "stream_options")
        ignore_eos = body.get("ignore_eos", False)
        if not isinstance(ignore_eos, bool):
            raise RequestError(400, "'ignore_eos' must be a boolean", "ignore_eos")
        return prompt_tokens, mt, stream, bool(opts.get("include_usage", False)), ignore_eos


def _text_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 4)


async def _json_body(request: web.Request) -> dict:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise RequestError(413, f"request body larger than {request.app._client_max_size} bytes", None,
                           "RequestTooLargeError") from exc  # fmt: skip
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"request body is not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    return body


@web.middleware
async def _errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except RequestError as exc:
        return error_response(exc)


async def start_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


async def serve(profile: Profile, host: str, port: int, **kw) -> None:
    """Run one replica until cancelled."""
    rep = Replica(profile, **kw)
    rep.start()
    runner = await start_site(rep.app(), host, port)
    try:
        await wait_for_termination()
    finally:
        await rep.stop()
        await runner.cleanup()


async def wait_for_termination() -> None:
    """Return on SIGTERM (or SIGINT), so that servers close their ports and files cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
