"""The operator's probes: ``/healthz`` (liveness) and ``/readyz`` (readiness), one small aiohttp server.

- ``/healthz`` answers 200 while the event loop runs and every pool's loop makes progress: a tick that has been
  running for longer than its bound (the pool's interval plus the tick timeout, plus a margin) means the loop
  is stuck — a defect, since every tick is cancelled at that bound — and the probe answers 503 so the kubelet
  restarts the operator. A blocked event loop cannot answer at all, which the probe's timeout catches.
- ``/readyz`` answers 200 once the replica does its part: the leader once its operator runs, a standby while
  it follows the Lease (it is ready to take over), a replica without leader election once its operator runs.

Both answer JSON with what they checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

STUCK_MARGIN_S = 10.0


@dataclass
class TickWatch:
    """When each pool's current tick started and how long it may take."""

    clock: Callable[[], float] = time.monotonic
    running: dict[str, tuple[float, float]] = field(default_factory=dict)  # pool -> (started, bound seconds)
    pools: set[str] = field(default_factory=set)
    ticks: int = 0

    def add(self, pool: str) -> None:
        self.pools.add(pool)

    def remove(self, pool: str) -> None:
        self.pools.discard(pool)
        self.running.pop(pool, None)

    def started(self, pool: str, bound_s: float) -> None:
        self.running[pool] = (self.clock(), bound_s)

    def finished(self, pool: str) -> None:
        self.running.pop(pool, None)
        self.ticks += 1

    def stuck(self) -> list[str]:
        now = self.clock()
        return sorted(p for p, (t0, bound) in self.running.items() if now - t0 > bound + STUCK_MARGIN_S)


class HealthServer:
    def __init__(self, host: str, port: int, watch: TickWatch, ready: Callable[[], tuple[bool, str]]) -> None:
        self.host, self.port, self.watch, self.ready = host, port, watch, ready
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        stuck = self.watch.stuck()
        body = {"pools": len(self.watch.pools), "ticks": self.watch.ticks, "stuck": stuck}
        return web.json_response(body, status=503 if stuck else 200)

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, role = self.ready()
        return web.json_response({"ready": ok, "role": role}, status=200 if ok else 503)
