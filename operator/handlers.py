"""kopf handlers: one periodic loop (a kopf daemon) per ServingPool.

A daemon rather than a fixed-interval timer, so each pool ticks at its own ``spec.scaling.intervalSeconds``
(read afresh every tick). A failing tick (target missing, Prometheus down) becomes a condition and an Event
inside the tick; a tick that runs past its interval plus the tick timeout is cancelled and reported; an
unexpected exception is logged, counted and retried at the next interval, never a crash. What the pools share
(the adapters, the budget book, the tick watch the liveness probe reads) is the ``Runtime`` in kopf's memo.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from burstpilot.operator import metrics as opmetrics
from burstpilot.operator.kube import GROUP, PLURAL, VERSION
from burstpilot.operator.reconcile import PoolReconciler, Runtime, interval_of

log = logging.getLogger(__name__)


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
    settings.networking.connect_timeout = 10


@kopf.daemon(GROUP, VERSION, PLURAL, id="tick", cancellation_timeout=10.0)
async def pool_loop(
    body: kopf.Body, name: str, namespace: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any
) -> None:
    def emit(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message[:1024])

    rt: Runtime = memo.runtime
    rec = PoolReconciler(rt, namespace, name, emit)
    key = f"{namespace}/{name}"
    rt.watch.add(key)
    try:
        while not stopped:
            t0 = time.monotonic()
            interval = await bounded_tick(rec, rt, key, body)
            await stopped.wait(max(interval - (time.monotonic() - t0), 0.5))
    finally:
        rt.watch.remove(key)
        opmetrics.forget(namespace, name)  # deleted, or this replica stopped acting: export nothing for it
        if stopped.reason and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
            rt.budgets.forget(key)


async def bounded_tick(rec: PoolReconciler, rt: Runtime, key: str, body: Any) -> float:
    """One tick, cancelled (and reported) once it runs ``tick_timeout_s`` past the pool's interval. Returns the
    seconds until the next tick. Never raises: an unexpected error is logged and counted."""
    t0 = time.monotonic()
    interval = interval_of(dict(body))
    bound = interval + rt.tick_timeout_s
    rt.watch.started(key, bound)
    try:
        interval = await asyncio.wait_for(rec.tick(dict(body), time.time()), bound)
    except TimeoutError:
        log.error("%s: tick cancelled after %.0fs", key, bound)
        try:
            await asyncio.wait_for(rec.timed_out(time.time(), bound), rt.tick_timeout_s)
        except Exception:  # reporting the timeout failed too; the next tick tries again
            log.exception("%s: reporting the tick timeout failed", key)
    except Exception as exc:  # keep ticking; the next interval retries
        opmetrics.ERRORS.labels(rec.namespace, rec.name, "internal").inc()
        log.exception("%s: tick failed: %s", key, exc)
    finally:
        rt.watch.finished(key)
        opmetrics.TICKS.labels(rec.namespace, rec.name).inc()
        opmetrics.TICK_SECONDS.observe(time.monotonic() - t0)
    return interval
