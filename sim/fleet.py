"""A fleet of real-time replicas behind a least-outstanding-requests router, rescalable while it runs.

The router listens on ``port``; a new replica takes the lowest free slot i and listens on ``port + 1 + i``. A
slot whose port another process holds is skipped (and tried again on a later scale-up); a replica that fails
to start is rolled back (its step loop stopped, its socket closed), so a failed scale-up leaves the fleet as
it was with ``desired`` equal to the replicas it has, and says why. ``max_replicas`` caps the count.

By default the replicas share the router's process and event loop (one replica streaming 16,500 tokens/s used
a fifth of a core); ``replica_processes=K`` spreads them over K worker processes instead, for loads that one
core cannot keep on its step clock. ``POST /admin/replicas {"replicas": N}`` changes the count: new replicas
go through their cold start (their /health answers 503 until then, and the router sends them nothing); removed
replicas, starting ones first, stop taking requests, finish what they hold and then close their port. The
Prometheus file-SD targets file lists exactly the ready replicas (cold start over, not draining), rewritten
atomically on each change.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
from aiohttp import web

from burstpilot.errors import BurstpilotError
from burstpilot.sim.profile import Profile, load_profile
from burstpilot.sim.protocol import RequestError
from burstpilot.sim.relay import UpstreamFailed, relay
from burstpilot.sim.replica import Replica
from burstpilot.sim.server import (
    ReplicaServer,
    error_response,
    errors_middleware,
    read_json,
    report_readiness,
    start_site,
    wait_for_termination,
)

log = logging.getLogger(__name__)
MAX_PORT = 65535
DEFAULT_MAX_REPLICAS = 64


def free_port_block(n: int, tries: int = 200) -> int:
    """A port P such that P .. P+n-1 are free on 127.0.0.1 now: the fleet's layout (router on P, replicas on
    P+1..). The kernel picks P, so parallel callers rarely collide; the rest of the block is checked by binding."""
    for _ in range(tries):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + n > MAX_PORT + 1:
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


class PortInUse(Exception):
    """The port is held by another process: try another slot."""


class ScaleError(BurstpilotError):
    """A scale-up that could not be carried out in full; the fleet holds what it had plus what did start."""


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or PortInUse."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp's TCPSite does
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise PortInUse(f"{host}:{port}: {exc.strerror}") from exc
        raise
    return sock


class _LocalHost:
    """Replicas inside this process."""

    def __init__(self, profile: Profile, max_waiting: int | None):
        self.profile, self.max_waiting = profile, max_waiting
        self.replicas: dict[int, tuple[Replica, web.AppRunner]] = {}

    async def spawn(self, host: str, port: int, cold_start_s: float, seed: int) -> None:
        sock = bind_listener(host, port)
        rep = Replica(self.profile, cold_start_s=cold_start_s, max_waiting=self.max_waiting, seed=seed)
        rep.start()
        try:
            runner = await start_site(ReplicaServer(rep).app(), host, sock=sock)
        except BaseException:
            await rep.stop()
            sock.close()
            raise
        self.replicas[port] = (rep, runner)

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

    @classmethod
    async def launch(cls, profile_ref: str, max_waiting: int | None, session: aiohttp.ClientSession):
        # -P: the working directory (a checkout's root holds an operator/ folder) stays off sys.path
        args = [sys.executable, "-P", "-m", "burstpilot.sim.fleet", "--worker", profile_ref]
        if max_waiting is not None:
            args += ["--max-waiting", str(max_waiting)]
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line.strip().isdigit():
            proc.kill()
            await proc.wait()
            raise BurstpilotError(f"fleet worker did not start (said {line!r})")
        return cls(proc, f"http://127.0.0.1:{int(line)}", session)

    async def _call(self, path: str, body: dict) -> None:
        try:
            async with self.session.post(self.control + path, json=body) as r:
                if r.status == 409:
                    raise PortInUse((await r.json())["error"])
                if r.status != 200:
                    raise RuntimeError(f"fleet worker {path}: {r.status} {await r.text()}")
        except aiohttp.ClientError as exc:
            raise RuntimeError(f"fleet worker {path}: {exc}") from exc

    async def spawn(self, host: str, port: int, cold_start_s: float, seed: int) -> None:
        await self._call("/spawn", {"host": host, "port": port, "cold_start_s": cold_start_s, "seed": seed})

    async def remove(self, port: int) -> None:
        await self._call("/remove", {"port": port})

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
        max_replicas: int = DEFAULT_MAX_REPLICAS,
        notify: Callable[[str], None] | None = None,
    ):
        if not 1 <= port <= MAX_PORT - 1:
            raise BurstpilotError(
                f"router port {port} leaves no port for a replica (ports run to {MAX_PORT})"
            )
        if max_replicas < 0:
            raise BurstpilotError("max_replicas must be >= 0")
        if port + max_replicas > MAX_PORT:
            raise BurstpilotError(
                f"router port {port} leaves room for {MAX_PORT - port} replicas below {MAX_PORT + 1}, "
                f"not the {max_replicas} allowed: lower the port or the maximum"
            )
        self.profile, self.port, self.host = profile, port, host
        self.sd_file = Path(sd_file) if sd_file else None
        self.cold_start_s, self.max_waiting, self.seed = cold_start_s, max_waiting, seed
        self.replica_processes = replica_processes
        self.profile_ref = profile_ref or profile.name
        self.max_replicas = max_replicas
        self.notify = notify
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
        if not 0 <= replicas <= self.max_replicas:
            raise BurstpilotError(
                f"{replicas} replicas: must be between 0 and the maximum, {self.max_replicas}"
            )
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        try:
            if self.replica_processes > 0:
                launches = [
                    _WorkerHost.launch(self.profile_ref, self.max_waiting, self.session)
                    for _ in range(self.replica_processes)
                ]
                results = await asyncio.gather(*launches, return_exceptions=True)
                self.hosts = [h for h in results if isinstance(h, _WorkerHost)]
                failed = [e for e in results if isinstance(e, BaseException)]
                if failed:
                    raise failed[0]
            else:
                self.hosts = [_LocalHost(self.profile, self.max_waiting)]
            await self.scale(replicas)
            app = web.Application(client_max_size=1 << 20, middlewares=[errors_middleware])
            app.router.add_post("/admin/replicas", self._admin_post)
            app.router.add_get("/admin/replicas", self._admin_get)
            app.router.add_get("/health", self._health)
            app.router.add_get("/v1/models", self._models)
            app.router.add_post("/v1/completions", self._proxy)
            app.router.add_post("/v1/chat/completions", self._proxy)
            try:
                self.runner = await start_site(app, self.host, self.port)
            except OSError as exc:
                raise BurstpilotError(
                    f"router cannot listen on {self.host}:{self.port}: {exc.strerror}"
                ) from exc
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self.runner:
            await self.runner.cleanup()
            self.runner = None
        for t in list(self._tasks):
            t.cancel()
        for h in self.hosts:
            await h.close()
        self.hosts = []
        self.members.clear()
        self._write_sd()
        if self.session:
            await self.session.close()

    # ------------------------------------------------------------------ scaling
    def state(self) -> dict:
        live = [m for m in self.members if not m.draining]
        return {
            "desired": self.desired,
            "max_replicas": self.max_replicas,
            "ready": sum(1 for m in live if m.ready),
            "starting": sum(1 for m in live if not m.ready),
            "draining": sum(1 for m in self.members if m.draining),
            "replicas": [
                {"port": m.port, "ready": m.ready, "draining": m.draining, "outstanding": m.outstanding}
                for m in self.members
            ],
        }

    def readiness(self) -> tuple[int, int, float | None]:
        """(ready, desired, seconds until the next starting replica is ready or None)."""
        live = [m for m in self.members if not m.draining]
        now = time.monotonic()
        waits = [m.ready_at - now for m in live if m.ready_at > now]
        return len(live) - len(waits), self.desired, (min(waits) if waits else None)

    async def scale(self, n: int) -> None:
        """Set the replica count. Raises ScaleError when a scale-up cannot be completed: the replicas that did
        start stay, and ``desired`` is what the fleet has."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= self.max_replicas:
            raise ScaleError(
                f"replicas must be an integer from 0 to {self.max_replicas} (the fleet's maximum), not {n!r}"
            )
        async with self._lock:
            live = [m for m in self.members if not m.draining]
            try:
                for _ in range(n - len(live)):
                    self._add(await self._start_one())
            except ScaleError:
                self.desired = sum(1 for m in self.members if not m.draining)
                self._write_sd()
                raise
            if self.notify and self.runner is not None and n != self.desired:
                self.notify(f"replicas {self.desired} -> {n}")
            self.desired = n
            if n < len(live):
                order = sorted(live, key=lambda m: (m.ready, m.outstanding, -m.slot))
                for m in order[: len(live) - n]:
                    m.draining = True
                    self._spawn_task(self._drain(m))
            self._write_sd()

    async def _start_one(self) -> _Member:
        """Start a replica in the lowest slot whose port can be bound; a failed start is rolled back."""
        used = {m.slot for m in self.members}
        cs = self.cold_start_s if self.cold_start_s is not None else self.profile.sample_cold_start(self.rng)
        host = min(self.hosts, key=lambda h: sum(1 for m in self.members if m.host is h))
        busy = []
        slot = -1
        while True:
            slot += 1
            if slot in used:
                continue
            port = self.port + 1 + slot
            if port > MAX_PORT:
                taken = f" ({', '.join(map(str, busy[:5]))}{' …' if len(busy) > 5 else ''} held by other processes)"
                raise ScaleError(
                    f"no free port for another replica: the fleet's ports {self.port + 1}..{MAX_PORT} are all in "
                    f"use{taken if busy else ''}"
                )
            try:
                await host.spawn(self.host, port, cs, self.seed + self._spawned)
            except PortInUse:
                busy.append(port)
                continue
            except Exception as exc:
                log.warning("replica on port %d did not start", port, exc_info=True)
                raise ScaleError(f"a replica did not start on port {port}: {exc}") from exc
            self._spawned += 1
            # the replica's own cold start began before this point, so it is ready by then
            return _Member(slot, port, host, time.monotonic() + cs)

    def _add(self, m: _Member) -> None:
        self.members.append(m)
        self._spawn_task(self._announce_ready(m))

    def _spawn_task(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce_ready(self, m: _Member) -> None:
        while not m.ready:
            await asyncio.sleep(max(0.001, m.ready_at - time.monotonic()))
        if m in self.members and not m.draining:
            self._write_sd()
            if self.notify:
                ready, want, _ = self.readiness()
                self.notify(f"replica {self._target(m)} ready ({ready} of {want} ready)")

    async def _drain(self, m: _Member) -> None:
        while m.outstanding > 0:
            await asyncio.sleep(0.05)
        try:
            await m.host.remove(m.port)
        except Exception:
            log.warning("removing the replica on port %d failed", m.port, exc_info=True)
        self.members.remove(m)
        self._write_sd()

    def _target(self, m: _Member) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"{host}:{m.port}"

    def _write_sd(self) -> None:
        if not self.sd_file:
            return
        targets = [self._target(m) for m in self.members if m.ready and not m.draining]
        doc = [{"targets": targets, "labels": {"job": "burstpilot-sim", "model_name": self.profile.model}}]
        tmp = self.sd_file.with_name(self.sd_file.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, self.sd_file)

    # ------------------------------------------------------------------ HTTP
    async def _admin_post(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        n = body.get("replicas")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise RequestError(400, 'body must be {"replicas": N} with an integer N >= 0', "replicas")
        if n > self.max_replicas:
            raise RequestError(
                400,
                f"{n} replicas is above this fleet's maximum of {self.max_replicas} (--max-replicas)",
                "replicas",
            )
        try:
            await self.scale(n)
        except ScaleError as exc:
            err = RequestError(503, str(exc), "replicas", "ServiceUnavailableError")
            return web.json_response(err.body() | {"state": self.state()}, status=503)
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
        m.outstanding += 1
        try:
            return await relay(request, self.session, f"http://127.0.0.1:{m.port}{request.path}")
        except UpstreamFailed as exc:
            return error_response(
                RequestError(502, f"replica on port {m.port} failed: {exc}", etype="BadGatewayError")
            )
        finally:
            m.outstanding -= 1


async def run_fleet(
    profile: Profile, replicas: int, port: int, notify: Callable[[str], None] | None = None, **kw
) -> None:
    """Run a fleet until SIGTERM or SIGINT; ``notify`` hears the cold start's progress and each ready replica."""
    fleet = Fleet(profile, port, notify=notify, **kw)
    await fleet.start(replicas)
    reporter = None
    if notify is not None:
        reporter = asyncio.get_running_loop().create_task(report_readiness(fleet.readiness, notify))
    try:
        await wait_for_termination()
    finally:
        if reporter:
            reporter.cancel()
        await fleet.close()


async def _worker(profile_ref: str, max_waiting: int | None) -> None:
    """A replica host process: spawns and removes replicas on request; exits when its stdin closes."""
    host = _LocalHost(load_profile(profile_ref), max_waiting)

    async def spawn(request: web.Request) -> web.Response:
        b = await request.json()
        try:
            await host.spawn(b["host"], int(b["port"]), float(b["cold_start_s"]), int(b["seed"]))
        except PortInUse as exc:
            return web.json_response({"error": str(exc)}, status=409)
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
