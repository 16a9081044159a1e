"""The operator process: probes, metrics, leader election, and kopf.

Without leader election the process runs kopf at once. With it (``--leader-elect``, the chart's default), it
stands by until it holds the Lease, then runs kopf until the Lease is lost (back to standby: kopf is stopped,
the pools' daemons end, their gauges go) or the process is told to stop (kopf stops, then the Lease is
released so a standby takes over at once).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import kopf
from kubernetes import client

from burstpilot.operator import handlers  # noqa: F401 - registers the handlers with kopf
from burstpilot.operator import metrics as opmetrics
from burstpilot.operator.health import HealthServer
from burstpilot.operator.leader import LeaderElector, LeaseConfig
from burstpilot.operator.reconcile import Runtime

log = logging.getLogger(__name__)
KOPF_STOP_S = 30.0
THREADS = 64


@dataclass
class Options:
    namespaces: list[str]
    health: tuple[str, int]
    lease: LeaseConfig | None = None  # None: no leader election


class Process:
    def __init__(self, opts: Options, runtime: Runtime) -> None:
        self.opts, self.rt = opts, runtime
        self.role = "starting"
        self.shutdown = asyncio.Event()
        self.elector: LeaderElector | None = None
        self.health = HealthServer(*opts.health, runtime.watch, self._ready)

    def _ready(self) -> tuple[bool, str]:
        return self.role in ("leader", "standby", "operator"), self.role

    def _signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.shutdown.set)

    async def _kopf(self, stop: asyncio.Event, role: str) -> None:
        ready = asyncio.Event()

        async def mark_ready() -> None:
            await ready.wait()
            self.role = role

        marker = asyncio.create_task(mark_ready())
        try:
            await kopf.operator(
                standalone=True,
                clusterwide=not self.opts.namespaces,
                namespaces=self.opts.namespaces,
                stop_flag=stop,
                ready_flag=ready,
                memo=kopf.Memo(runtime=self.rt),
            )
        finally:
            marker.cancel()

    async def run(self) -> None:
        # The Kubernetes client blocks; every pool's calls run in threads. The default pool (cores + 4) would
        # queue 500 pools' calls behind a handful of threads: waiting on the API server needs no core.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="burstpilot-io")
        )
        await self.health.start()
        self._signals()
        try:
            if self.opts.lease is None:
                opmetrics.LEADER.set(1)
                await self._kopf(self.shutdown, "operator")
            else:
                await self._elected(self.opts.lease)
        finally:
            opmetrics.LEADER.set(0)
            await self.health.stop()

    async def _elected(self, cfg: LeaseConfig) -> None:
        api = client.CoordinationV1Api(client.ApiClient(client.Configuration.get_default_copy()))
        self.elector = elector = LeaderElector(api, cfg)
        self.rt.may_act = elector.valid
        try:
            while not self.shutdown.is_set():
                self.role = "standby"
                log.info("standing by for Lease %s/%s as %s", cfg.namespace, cfg.name, cfg.identity)
                if not await elector.acquire(self.shutdown):
                    break
                opmetrics.LEADER.set(1)
                self.role = "leader-starting"
                stop = asyncio.Event()
                operator = asyncio.create_task(self._kopf(stop, "leader"))
                lost = asyncio.create_task(elector.hold())
                asked = asyncio.create_task(self.shutdown.wait())
                done, _ = await asyncio.wait({operator, lost, asked}, return_when=asyncio.FIRST_COMPLETED)
                stop.set()
                for task in (lost, asked):
                    task.cancel()
                try:
                    await asyncio.wait_for(operator, KOPF_STOP_S)
                except Exception:
                    log.exception("the operator did not stop cleanly")
                opmetrics.LEADER.set(0)
                self._signals()  # kopf installed its own handlers while it ran
                if operator in done:  # kopf ended by itself: a signal it caught, or a fatal error
                    self.shutdown.set()
                elif lost in done:
                    log.warning("lost the leader Lease: standing by again")
        finally:
            await asyncio.to_thread(elector.release)


def run(opts: Options, runtime: Runtime) -> None:
    asyncio.run(Process(opts, runtime).run())
