"""The relay both fronts use: the answer streamed chunk by chunk, a backend that refuses before answering, and one
that dies mid-answer (the client must see the stream cut, not a shorter complete answer)."""

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from burstpilot.sim.relay import UpstreamFailed, relay


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


def backend() -> web.Application:
    async def stream(request: web.Request) -> web.StreamResponse:
        n = int((await request.json())["n"])
        resp = web.StreamResponse(status=201, headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(n):
            await resp.write(f"data: {i}\n\n".encode())
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    async def dies(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: 0\n\n")
        await asyncio.sleep(0.05)
        request.transport.abort()  # the replica's pod deleted mid-answer
        return resp

    app = web.Application()
    app.router.add_post("/stream", stream)
    app.router.add_post("/dies", dies)
    return app


def front(target: str, seen: list[str]) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        async with aiohttp.ClientSession() as s:
            try:
                return await relay(request, s, target + request.path)
            except UpstreamFailed as exc:
                seen.append(str(exc))
                return web.json_response({"error": str(exc)}, status=502)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("path", ["/stream", "/dies"])
def test_relay_streams_the_answer_and_cuts_the_client_off_when_the_backend_dies_mid_answer(path):
    async def go():
        b_runner, b_port = await serve(backend())
        f_runner, f_port = await serve(front(f"http://127.0.0.1:{b_port}", []))
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post(f"http://127.0.0.1:{f_port}{path}", json={"n": 5}) as r:
                    chunks = []
                    try:
                        async for chunk in r.content.iter_any():
                            chunks.append(chunk)
                        cut = False
                    except aiohttp.ClientPayloadError:
                        cut = True
                    return r.status, r.headers["Content-Type"], b"".join(chunks), cut
        finally:
            await f_runner.cleanup()
            await b_runner.cleanup()

    status, ctype, body, cut = asyncio.run(go())
    assert ctype == "text/event-stream"
    if path == "/stream":
        assert (status, cut) == (201, False)
        assert body == b"".join(f"data: {i}\n\n".encode() for i in range(5))
    else:
        assert status == 200 and body.startswith(b"data: 0\n\n")
        assert cut, "a backend dying mid-answer must cut the client's stream, not end it cleanly"


def test_a_backend_that_refuses_before_answering_is_the_callers_to_answer():
    seen: list[str] = []

    async def go():
        f_runner, f_port = await serve(front(f"http://127.0.0.1:{closed_port()}", seen))
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post(f"http://127.0.0.1:{f_port}/v1/completions", json={}) as r:
                    return r.status, await r.json()
        finally:
            await f_runner.cleanup()

    status, body = asyncio.run(go())
    assert status == 502 and len(seen) == 1
    assert body["error"] == seen[0] and "127.0.0.1" in seen[0]
