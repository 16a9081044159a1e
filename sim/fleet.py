"""A fleet of real-time replicas behind a least-outstanding-requests router, rescalable while it runs.

The router listens on ``port``; replica i listens on ``port + 1 + i`` (slots are reused after a replica leaves).
By default the replicas share the router's process and event loop (one replica streaming 16,500 tokens/s used
a fifth of a core); ``replica_processes=K`` spreads them over K worker processes instead, for loads that
one core cannot keep on its step clock. ``POST /admin/replicas {"replicas": N}`` changes the count: new replicas
go through their cold start (their /health answers 503 until then, and the router sends them nothing); removed
replicas, starting ones first, stop taking requests, finish what they hold and then close their port. The
Prometheus file-SD targets file lists every replica whose port is open, rewritten atomically on each change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
from aiohttp import web

from burstpilot.errors import BurstpilotError
from burstpilot.sim.profile import Profile, load_profile
from burstpilot.sim.protocol import RequestError
from burstpilot.sim.replica import Replica
from burstpilot.sim.server import ReplicaServer, error_response, start_site, wait_for_termination


def free_port_block(n: int, tries: int = 200) -> int:
    """A port P such that P .. P+n-1 are free on 127.0.0.1 now: the fleet's layout (router on P, replicas on
    P+1..). The kernel picks P, so parallel callers rarely collide; the rest of the block is checked by binding."""
    for _ in range(tries):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + n > 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + n):
                socks.append(socket.socket())
                socks[-1].bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise BurstpilotError(f"no block of {n} free ports on 127.0.0.1")


class _LocalHost:
    """Replicas inside this process."""

    def __init__(self, profile: Profile, max_waiting: int | None):
        self.profile, self.max_waiting = profile, max_waiting
        self.replicas: dict[int, tuple[Replica, web.AppRunner]] = {}

    async def spawn(self, host: str, port: int, cold_start_s: float, seed: int) -> None:
        rep = Replica(self.profile, cold_start_s=cold_start_s, max_waiting=self.max_waiting, seed=seed)
        rep.start()
        self.replicas[port] = (rep, await start_site(ReplicaServer(rep).app(), host, port))

    async def remove(self, port: int) -> None:
        rep, runner = self.replicas.pop(port)
        while rep.engine.has_work():
            await asyncio.sleep(0.05)
        await rep.stop()
        await runner.cleanup()

    async def close(self) -> None:
        for port in list(self.replicas):
            rep, runner = self.replicas.pop(port)
            await rep.stop()
            await runner.cleanup()


class _WorkerHost:
    """Replicas in a child process, driven through its small control API."""

    def __init__(self, proc: asyncio.subprocess.Process, control: str, session: aiohttp.ClientSession):
        self.proc, self.control, self.session = proc, control, session
        self.count = 0

    @classmethod
    async def launch(cls, profile_ref: str, max_waiting: int | None, session: aiohttp.ClientSession):
        args = [sys.executable, "-m", "burstpilot.sim.fleet", "--worker", profile_ref]
        if max_waiting is not None:
            args += ["--max-waiting", str(max_waiting)]
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line.strip().isdigit():
            proc.kill()
            raise RuntimeError(f"fleet worker did not start (said {line!r})")
        return cls(proc, f"http://127.0.0.1:{int(line)}", session)

    async def _call(self, path: str, body: dict) -> None:
        async with self.session.post(self.control + path, json=body) as r:
            if r.status != 200:
                raise RuntimeError(f"fleet worker {path}: {r.status} {await r.text()}")

    async def spawn(self, host: str, port: int, cold_start_s: float, seed: int) -> None:
        await self._call("/spawn", {"host": host, "port": port, "cold_start_s": cold_start_s, "seed": seed})
        self.count += 1

    async def remove(self, port: int) -> None:
        await self._call("/remove", {"port": port})
        self.count -= 1

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class _Member:
    def __init__(self, slot: int, port: int, host, ready_at: float):
        self.slot, self.port, self.host, self.ready_at = slot, port, host, ready_at
        self.outstanding = 0
        self.draining = False

    @property
    def ready(self) -> bool:
        return time.monotonic() >= self.ready_at


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
        replica_processes: int = 0,
        profile_ref: str | None = None,
    ):
        self.profile, self.port, self.host = profile, port, host
        self.sd_file = Path(sd_file) if sd_file else None
        self.cold_start_s, self.max_waiting, self.seed = cold_start_s, max_waiting, seed
        self.replica_processes = replica_processes
        self.profile_ref = profile_ref or profile.name
        self.rng = np.random.default_rng(seed)
        self.members: list[_Member] = []
        self.hosts: list = []
        self.desired = 0
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self._spawned = 0
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    async def start(self, replicas: int) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        if self.replica_processes > 0:
            self.hosts = list(
                await asyncio.gather(
                    *(
                        _WorkerHost.launch(self.profile_ref, self.max_waiting, self.session)
                        for _ in range(self.replica_processes)
                    )
                )
            )
        else:
            self.hosts = [_LocalHost(self.profile, self.max_waiting)]
        await self.scale(replicas)
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
        for t in list(self._tasks):
            t.cancel()
        for h in self.hosts:
            await h.close()
        self.members.clear()
        self._write_sd()
        if self.session:
            await self.session.close()

    # ------------------------------------------------------------------ scaling
    def state(self) -> dict:
        live = [m for m in self.members if not m.draining]
        return {
            "desired": self.desired,
            "ready": sum(1 for m in live if m.ready),
            "starting": sum(1 for m in live if not m.ready),
            "draining": sum(1 for m in self.members if m.draining),
            "replicas": [
                {"port": m.port, "ready": m.ready, "draining": m.draining, "outstanding": m.outstanding}
                for m in self.members
            ],
        }

    async def scale(self, n: int) -> None:
        async with self._lock:
            self.desired = n
            live = [m for m in self.members if not m.draining]
            used = {m.slot for m in self.members}
            for _ in range(n - len(live)):
                slot = next(i for i in range(len(used) + 1) if i not in used)
                used.add(slot)
                cs = (
                    self.cold_start_s
                    if self.cold_start_s is not None
                    else self.profile.sample_cold_start(self.rng)
                )
                host = min(self.hosts, key=lambda h: sum(1 for m in self.members if m.host is h))
                port = self.port + 1 + slot
                await host.spawn(self.host, port, cs, self.seed + self._spawned)
                self._spawned += 1
                # the replica's own cold start began before this point, so it is ready by then
                self.members.append(_Member(slot, port, host, time.monotonic() + cs))
            if n < len(live):
                order = sorted(live, key=lambda m: (m.ready, m.outstanding, -m.slot))
                for m in order[: len(live) - n]:
                    m.draining = True
                    task = asyncio.get_running_loop().create_task(self._drain(m))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            self._write_sd()

    async def _drain(self, m: _Member) -> None:
        while m.outstanding > 0:
            await asyncio.sleep(0.05)
        await m.host.remove(m.port)
        self.members.remove(m)
        self._write_sd()

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
        ok = any(m.ready and not m.draining for m in self.members)
        return web.Response(status=200 if ok else 503, text="" if ok else "no replica ready")

    async def _models(self, request: web.Request) -> web.Response:
        p = self.profile
        model = {"id": p.model, "object": "model", "owned_by": "burstpilot", "root": p.model,
                 "max_model_len": p.max_model_len}  # fmt: skip
        return web.json_response({"object": "list", "data": [model]})

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        cands = [m for m in self.members if not m.draining and m.ready]
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
        await wait_for_termination()
    finally:
        await fleet.close()


async def _worker(profile_ref: str, max_waiting: int | None) -> None:
    """A replica host process: spawns and removes replicas on request; exits when its stdin closes."""
    host = _LocalHost(load_profile(profile_ref), max_waiting)

    async def spawn(request: web.Request) -> web.Response:
        b = await request.json()
        await host.spawn(b["host"], int(b["port"]), float(b["cold_start_s"]), int(b["seed"]))
        return web.json_response({})

    async def remove(request: web.Request) -> web.Response:
        await host.remove(int((await request.json())["port"]))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/spawn", spawn)
    app.router.add_post("/remove", remove)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    print(sock.getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)  # returns when the router closes the pipe
    await host.close()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="burstpilot sim fleet worker (started by the fleet's router)")
    ap.add_argument("--worker", required=True, metavar="PROFILE")
    ap.add_argument("--max-waiting", type=int)
    args = ap.parse_args(argv)
    asyncio.run(_worker(args.worker, args.max_waiting))


if __name__ == "__main__":
    main()
