"""Forwarding one HTTP request to a backend and streaming its answer back: the relay of the simulated fleet's
front (``burstpilot.sim.fleet``) and of the test cluster's Service (``burstpilot.operator.cluster.replicas``).

A backend that fails before its answer starts raises ``UpstreamFailed`` (nothing has reached the client yet, so
the caller answers with its own error). One that fails mid-answer cuts the client's connection, as a proxy
must: a stream closed cleanly would read as a complete, shorter answer.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web


class UpstreamFailed(Exception):
    """The backend failed (refused, reset, timed out) before its answer started."""


async def relay(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: str,
    timeout: aiohttp.ClientTimeout | None = None,
) -> web.StreamResponse:
    """``request`` (method, body, Content-Type) sent to ``url``; the backend's status, Content-Type and body
    streamed back chunk by chunk as they come."""
    body = await request.read()
    resp: web.StreamResponse | None = None
    kw = {} if timeout is None else {"timeout": timeout}
    try:
        async with session.request(
            request.method,
            url,
            data=body,
            headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
            **kw,
        ) as up:
            resp = web.StreamResponse(
                status=up.status, headers={"Content-Type": up.headers.get("Content-Type", "")}
            )
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    except (aiohttp.ClientError, TimeoutError) as exc:
        if resp is None:
            raise UpstreamFailed(str(exc) or type(exc).__name__) from exc
        if request.transport is not None:  # mid-answer: the client must see the stream cut, not ended
            request.transport.abort()
        return resp
