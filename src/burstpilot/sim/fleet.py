"""A fleet of real-time replicas behind a least-outstanding-requests router, rescalable while it runs.

The router listens on ``port``; replica i listens on ``port + 1 + i`` (slots are reused after a replica leaves).
All replicas share one process and event loop. ``POST /admin/replicas {"replicas": N}`` changes the count: new
replicas go through their cold start (their /health answers 503 until then, and the router sends them nothing);
removed replicas stop taking requests, finish what they hold and then close their port. The Prometheus file-SD
targets file lists every replica whose port is open, rewritten (atomically) on each change.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiohttp
from aiohttp import web

from burstpilot.sim.profile import Profile
from burstpilot.sim.server import Replica, RequestError, error_response, start_site


class _Member:
    def __init__(self, slot: int, port: int, replica: Replica, runner: web.AppRunner):
        self.slot, self.port, self.replica, self.runner = slot, port, replica, runner
        self.outstanding = 0
        self.draining = False


class Fleet:
    def __init__(
        self,
        profile: Profile,
        port: int,
        host: str = "127.0.0.1",
        sd_file: str | Path | None = None,
        cold_start_s: float | None = None,
        max_waiting: int | None = None,
        seed: int = 0,
    ):
        self.profile, self.port, self.host = profile, port, host
        self.sd_file = Path(sd_file) if sd_file else None
        self.cold_start_s, self.max_waiting, self.seed = cold_start_s, max_waiting, seed
        self.members: list[_Member] = []
        self.desired = 0
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self._spawned = 0
        self._lock = asyncio.Lock()

    async def start(self, replicas: int, initial_cold_start_s: float | None = None) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        await self.scale(replicas, cold_start_s=initial_cold_start_s)
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/admin/replicas", self._admin_post)
        app.router.add_get("/admin/replicas", self._admin_get)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._proxy)
        app.router.add_post("/v1/chat/completions", self._proxy)
        self.runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()

    async def close(self) -> None:
        if self.runner:
            await self.runner.cleanup()
        for m in list(self.members):
            await self._remove(m)
        if self.session:
            await self.session.close()

    # ------------------------------------------------------------------ scaling
    def state(self) -> dict:
        live = [m for m in self.members if not m.draining]
        return {
            "desired": self.desired,
            "ready": sum(1 for m in live if m.replica.ready),
            "starting": sum(1 for m in live if not m.replica.ready),
            "draining": sum(1 for m in self.members if m.draining),
            "replicas": [
                {
                    "port": m.port,
                    "ready": m.replica.ready,
                    "draining": m.draining,
                    "outstanding": m.outstanding,
                }
                for m in self.members
            ],
        }

    async def scale(self, n: int, cold_start_s: float | None = None) -> None:
        async with self._lock:
            self.desired = n
            live = [m for m in self.members if not m.draining]
            used = {m.slot for m in self.members}
            for _ in range(n - len(live)):
                slot = next(i for i in range(len(used) + 1) if i not in used)
                used.add(slot)
                cs = self.cold_start_s if cold_start_s is None else cold_start_s
                rep = Replica(
                    self.profile,
                    cold_start_s=cs,
                    max_waiting=self.max_waiting,
                    seed=self.seed + self._spawned,
                )
                self._spawned += 1
                rep.start()
                port = self.port + 1 + slot
                runner = await start_site(rep.app(), self.host, port)
                self.members.append(_Member(slot, port, rep, runner))
            if n < len(live):
                # starting replicas go first, then the least busy
                order = sorted(live, key=lambda m: (m.replica.ready, m.outstanding, -m.slot))
                for m in order[: len(live) - n]:
                    m.draining = True
                    asyncio.get_running_loop().create_task(self._drain(m))
            self._write_sd()

    async def _drain(self, m: _Member) -> None:
        while m.outstanding > 0 or m.replica.engine.has_work():
            await asyncio.sleep(0.05)
        await self._remove(m)
        self._write_sd()

    async def _remove(self, m: _Member) -> None:
        if m in self.members:
            self.members.remove(m)
            await m.replica.stop()
            await m.runner.cleanup()

    def _write_sd(self) -> None:
        if not self.sd_file:
            return
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        targets = [f"{host}:{m.port}" for m in self.members]
        doc = [{"targets": targets, "labels": {"job": "burstpilot-sim", "model_name": self.profile.model}}]
        tmp = self.sd_file.with_name(self.sd_file.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, self.sd_file)

    # ------------------------------------------------------------------ HTTP
    async def _admin_post(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            n = body["replicas"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return error_response(RequestError(400, 'body must be {"replicas": N} with N >= 0', "replicas"))
        await self.scale(n)
        return web.json_response(self.state())

    async def _admin_get(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _health(self, request: web.Request) -> web.Response:
        ok = any(m.replica.ready and not m.draining for m in self.members)
        return web.Response(status=200 if ok else 503, text="" if ok else "no replica ready")

    async def _models(self, request: web.Request) -> web.Response:
        return (
            await self.members[0].replica._models(request)
            if self.members
            else web.json_response({"object": "list", "data": []})
        )

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        cands = [m for m in self.members if not m.draining and m.replica.ready]
        if not cands:
            return error_response(RequestError(503, "no replica is ready", etype="ServiceUnavailableError"))
        m = min(cands, key=lambda c: c.outstanding)
        body = await request.read()
        m.outstanding += 1
        resp = None
        try:
            async with self.session.post(
                f"http://127.0.0.1:{m.port}{request.path}",
                data=body,
                headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
            ) as up:
                resp = web.StreamResponse(
                    status=up.status, headers={"Content-Type": up.headers.get("Content-Type", "")}
                )
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        except aiohttp.ClientError as exc:
            if resp is not None:  # the answer had started: the client sees the stream end early
                raise
            return error_response(
                RequestError(502, f"replica on port {m.port} failed: {exc}", etype="BadGatewayError")
            )
        finally:
            m.outstanding -= 1


async def run_fleet(profile: Profile, replicas: int, port: int, **kw) -> None:
    fleet = Fleet(profile, port, **kw)
    await fleet.start(replicas)
    try:
        await asyncio.Event().wait()
    finally:
        await fleet.close()
