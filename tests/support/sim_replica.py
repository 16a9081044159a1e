"""A real simulated replica on a free port for the simulator's HTTP tests, and a streaming client for it."""

from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager

import aiohttp

from burstpilot.sim import load_profile
from burstpilot.sim.fleet import free_port_block
from burstpilot.sim.replica import Replica
from burstpilot.sim.server import ReplicaServer, start_site

PROFILE = load_profile("h100-llama3-8b")
MODEL = PROFILE.model


@asynccontextmanager
async def running_replica(max_body_bytes: int = 1 << 20, profile=PROFILE, **kw):
    """A replica (no cold start unless given) serving on 127.0.0.1; yields (base URL, replica)."""
    rep = Replica(profile, **({"cold_start_s": 0.0} | kw))
    rep.start()
    port = free_port_block(1)
    runner = await start_site(ReplicaServer(rep, max_body_bytes).app(), "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}", rep
    finally:
        await rep.stop()
        await runner.cleanup()


async def stream_tokens(session: aiohttp.ClientSession, url: str, body: dict, path: str = "/v1/completions"):
    """POST a streaming request; returns (seconds to the first token, the parsed chunks)."""
    t0 = time.perf_counter()
    ttft, chunks = None, []
    async with session.post(url + path, json=body | {"stream": True}) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            if chunk["choices"] and ttft is None:
                ttft = time.perf_counter() - t0
            chunks.append(chunk)
    return ttft, chunks
