"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does it.

Several operator replicas run; the one holding the Lease acts, the others stand by. Why a Lease and not kopf's
peering: kopf's peering is a presence protocol, not an election (operators of the same priority "will continue
to function" side by side, each with a warning), and it needs its own cluster-wide CRDs; a Lease is the
Kubernetes mechanism for exactly this (kube-controller-manager, the scheduler and most operators use it),
needs RBAC on one named object in the operator's own namespace, and is visible with ``kubectl get lease``.
Why not the kubernetes client's ``leaderelection`` module: it blocks a thread for ever, cannot be stopped or
release the Lease on shutdown, and offers no "am I still the leader" check to guard each action with.

Timing (client-go's defaults): a replica takes over a Lease whose record it has seen unchanged for
``lease_duration_s`` (15 s; measured on its own monotonic clock, so clock skew does not matter); the leader
renews every ``retry_period_s`` (2 s) and stops acting once it has not renewed for ``renew_deadline_s`` (10 s),
before anyone else may take over. ``valid()`` is that check; every scale and every write calls it first. On
shutdown the leader releases the Lease (holder cleared), so a standby takes over within one retry period.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError("leader election needs retry period < renew deadline < lease duration")


class LeaderElector:
    def __init__(
        self, api: client.CoordinationV1Api, cfg: LeaseConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.api, self.cfg, self.clock = api, cfg, clock
        self.observed: tuple | None = None  # the Lease record last seen
        self.observed_at = -1e18  # when it last changed, on our clock
        self.renewed_at: float | None = None  # when our last successful acquire or renew was sent
        self.leader: str | None = None  # the holder last seen
        self.transitions = 0

    def valid(self) -> bool:
        """Whether this replica holds the Lease now (it renewed within the renew deadline)."""
        return self.renewed_at is not None and self.clock() - self.renewed_at < self.cfg.renew_deadline_s

    def _timeout(self) -> float:
        return max(1.0, self.cfg.retry_period_s)

    def _try(self) -> bool:
        """One acquire-or-renew attempt (blocking; run in a thread). True when we hold the Lease after it."""
        sent = self.clock()
        cfg = self.cfg
        try:
            lease = self.api.read_namespaced_lease(cfg.name, cfg.namespace, _request_timeout=self._timeout())
        except client.ApiException as exc:
            if exc.status != 404:
                log.warning("reading Lease %s/%s: %s %s", cfg.namespace, cfg.name, exc.status, exc.reason)
                return False
            return self._create(sent)
        except Exception as exc:  # the API server does not answer
            log.warning("reading Lease %s/%s: %s", cfg.namespace, cfg.name, type(exc).__name__)
            return False
        spec = lease.spec or client.V1LeaseSpec()
        record = (spec.holder_identity, spec.renew_time, spec.lease_duration_seconds, spec.lease_transitions)
        if record != self.observed:
            self.observed, self.observed_at = record, self.clock()
        holder = spec.holder_identity or None
        if holder != self.leader:
            log.info("Lease %s/%s is held by %s", cfg.namespace, cfg.name, holder or "nobody")
            self.leader = holder
        duration = float(spec.lease_duration_seconds or cfg.lease_duration_s)
        if holder and holder != cfg.identity and self.clock() - self.observed_at < duration:
            return False  # held by another, and not expired as far as we have seen
        now = dt.datetime.now(dt.UTC)
        if holder != cfg.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + (1 if holder else 0)
        spec.holder_identity = cfg.identity
        spec.lease_duration_seconds = int(cfg.lease_duration_s)
        spec.renew_time = now
        lease.spec = spec
        try:  # an update carries the resourceVersion read: a concurrent taker gets 409 and loses
            new = self.api.replace_namespaced_lease(
                cfg.name, cfg.namespace, lease, _request_timeout=self._timeout()
            )
        except Exception as exc:
            log.info("Lease %s/%s not taken or renewed: %s", cfg.namespace, cfg.name, _why(exc))
            return False
        self._held(new, sent)
        return True

    def _create(self, sent: float) -> bool:
        cfg = self.cfg
        now = dt.datetime.now(dt.UTC)
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=cfg.name, namespace=cfg.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=cfg.identity,
                lease_duration_seconds=int(cfg.lease_duration_s),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            new = self.api.create_namespaced_lease(cfg.namespace, body, _request_timeout=self._timeout())
        except Exception as exc:
            log.info("Lease %s/%s not created: %s", cfg.namespace, cfg.name, _why(exc))
            return False
        self._held(new, sent)
        return True

    def _held(self, lease: client.V1Lease, sent: float) -> None:
        spec = lease.spec
        self.observed = (
            spec.holder_identity,
            spec.renew_time,
            spec.lease_duration_seconds,
            spec.lease_transitions,
        )
        self.observed_at = self.clock()
        if self.renewed_at is None:
            log.info("acquired Lease %s/%s as %s", self.cfg.namespace, self.cfg.name, self.cfg.identity)
        self.renewed_at = sent
        self.leader = self.cfg.identity
        self.transitions = int(spec.lease_transitions or 0)

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this replica holds the Lease (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            if await asyncio.to_thread(self._try):
                return True
            jitter = self.cfg.retry_period_s * random.uniform(0, 0.2)  # noqa: S311 - spreading retries only
            try:
                await asyncio.wait_for(stop.wait(), self.cfg.retry_period_s + jitter)
            except TimeoutError:
                pass
        return False

    async def hold(self) -> None:
        """Renew every retry period; returns once the Lease is lost (not renewed within the renew deadline)."""
        while True:
            await asyncio.sleep(self.cfg.retry_period_s)
            while self.valid():
                if await asyncio.to_thread(self._try):
                    break
                await asyncio.sleep(self.cfg.retry_period_s / 2)
            if not self.valid():
                log.warning(
                    "lost Lease %s/%s: not renewed within %.0fs",
                    self.cfg.namespace,
                    self.cfg.name,
                    self.cfg.renew_deadline_s,
                )
                self.renewed_at = None
                return

    def release(self) -> None:
        """Give the Lease up (blocking), so a standby takes over at once instead of after the lease duration."""
        if self.renewed_at is None:
            return
        self.renewed_at = None
        cfg = self.cfg
        try:
            lease = self.api.read_namespaced_lease(cfg.name, cfg.namespace, _request_timeout=self._timeout())
            if lease.spec is None or lease.spec.holder_identity != cfg.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = dt.datetime.now(dt.UTC)
            self.api.replace_namespaced_lease(
                cfg.name, cfg.namespace, lease, _request_timeout=self._timeout()
            )
            log.info("released Lease %s/%s", cfg.namespace, cfg.name)
        except Exception as exc:
            log.warning("releasing Lease %s/%s: %s", cfg.namespace, cfg.name, _why(exc))


def _why(exc: Exception) -> str:
    if isinstance(exc, client.ApiException):
        return f"{exc.status} {exc.reason}"
    return type(exc).__name__
