"""kopf handlers: one periodic loop (a kopf daemon) per ServingPool, and the liveness probe.

A daemon rather than a fixed-interval timer, so each pool ticks at its own ``spec.scaling.intervalSeconds``
(read afresh every tick). A failing tick (target missing, Prometheus down) becomes a condition and an Event
inside the tick; an unexpected exception is logged, counted and retried at the next interval, never a crash.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf

from burstpilot.operator import metrics as opmetrics
from burstpilot.operator.kube import GROUP, PLURAL, VERSION, Kube
from burstpilot.operator.prom import PrometheusSource
from burstpilot.operator.reconcile import BudgetBook, PoolReconciler

log = logging.getLogger(__name__)

# Shared by every pool's daemon (one event loop): batched Prometheus queries and the budget book.
RUNTIME: dict[str, Any] = {}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's own bookkeeping goes to annotations: the status belongs to burstpilot and is schema-checked.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.burstpilot.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kopf.burstpilot.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # Events come from burstpilot itself, not kopf's log lines
    settings.scanning.disabled = True  # no cluster-wide CRD/namespace listing: least privilege
    settings.networking.request_timeout = 30
    RUNTIME.setdefault("kube", Kube())
    RUNTIME.setdefault("prom", PrometheusSource())
    RUNTIME.setdefault("budgets", BudgetBook())
    RUNTIME.setdefault("pools", set())


@kopf.daemon(GROUP, VERSION, PLURAL, id="tick", cancellation_timeout=10.0)
async def pool_loop(
    body: kopf.Body, name: str, namespace: str, stopped: kopf.DaemonStopped, logger: logging.Logger, **_: Any
) -> None:
    def emit(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message[:1024])

    rec = PoolReconciler(RUNTIME["kube"], RUNTIME["prom"], RUNTIME["budgets"], namespace, name, emit)
    RUNTIME["pools"].add((namespace, name))
    while not stopped:
        t0 = time.monotonic()
        interval = 10.0
        try:
            interval = await rec.tick(dict(body), time.time())
        except Exception as exc:  # keep ticking; the next interval retries
            opmetrics.ERRORS.labels(namespace, name, "internal").inc()
            logger.exception("tick failed: %s", exc)
        opmetrics.TICK_SECONDS.observe(time.monotonic() - t0)
        await stopped.wait(max(interval - (time.monotonic() - t0), 0.5))
    RUNTIME["pools"].discard((namespace, name))
    if stopped.reason and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
        RUNTIME["budgets"].forget(f"{namespace}/{name}")
        opmetrics.forget(namespace, name)


@kopf.on.probe(id="pools")
def probe_pools(**_: Any) -> int:
    """Liveness (kopf answers only while its event loop runs); reports the pools being ticked."""
    return len(RUNTIME.get("pools", ()))
