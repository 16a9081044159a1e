"""What a kubelet would run for a serving Deployment under kwok: one simulated vLLM replica per Ready pod.

- ``ReplicaKeeper`` follows a Deployment's pods (the Kubernetes client, every ``interval`` s): it starts one
  ``burstpilot sim serve`` per Running pod and stops it when the pod goes (the front routes to a replica once
  its /health answers, as a Service to a pod past its readiness probe). A pod annotated
  ``burstpilot.io/readiness: replica`` is Running but not Ready until then: the keeper marks it Ready when its
  replica's /health answers and, if the pod says ``burstpilot.io/cold-start-seconds``, no sooner than that after
  its creation (the kubelet's part), and the front routes to it only then. A replica that exits is taken out
  of the Service at once, logged (exit code, its log's last lines) and started again after a back-off that
  doubles with each exit of the same pod, from 1 s up to 30 s (the kubelet's CrashLoopBackOff, shortened);
  ``restarts`` counts them per pod.
  It keeps the Prometheus target file of those replicas (labelled namespace, pod, servingpool), and records
  every pod's lifetime (created, Ready, deleted: what GPU-hours are counted from).
- ``ServiceFront`` is the Service in front of them: it forwards each request (streaming) to the replica with the
  fewest requests in flight.

In the e2e tier both run in threads of the test process; ``burstpilot cluster serve`` runs them as one process
for ``burstpilot cluster up``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import urllib3
from aiohttp import ClientSession, ClientTimeout, web
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from burstpilot.operator.cluster.controlplane import (
    COLD_START_ANNOTATION,
    READINESS_ANNOTATION,
    READINESS_BY_REPLICA,
)
from burstpilot.operator.cluster.procs import Procs, free_port
from burstpilot.operator.cluster.prometheus import Prometheus
from burstpilot.sim.relay import UpstreamFailed, relay

log = logging.getLogger(__name__)
BIN = Path(sys.executable).parent
RESTART_BACKOFF_S = (1.0, 30.0)  # a replica that exits starts again after 1 s, doubling per exit up to 30 s


def _ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def _ready_by_replica(pod) -> bool:
    return (pod.metadata.annotations or {}).get(READINESS_ANNOTATION) == READINESS_BY_REPLICA


def _ready_at(pod) -> float:
    """The earliest Unix time the pod may be Ready: its creation plus its declared cold start (0 if none)."""
    try:
        delay = float((pod.metadata.annotations or {}).get(COLD_START_ANNOTATION, 0))
    except ValueError:
        delay = 0.0
    return pod.metadata.creation_timestamp.timestamp() + max(0.0, delay)


class ReplicaKeeper:
    def __init__(
        self,
        kubeconfig: Path,
        prom: Prometheus,
        procs: Procs,
        namespace: str,
        selector: str,
        pool: str,
        profile: str,
        cold_start_s: float = 2.0,
        interval: float = 0.5,
        lifetimes_file: Path | None = None,
    ) -> None:
        self.prom, self.procs = prom, procs
        self.namespace, self.selector, self.pool, self.profile = namespace, selector, pool, profile
        self.cold_start_s, self.interval = cold_start_s, interval
        self.lifetimes_file = lifetimes_file
        self.api = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(kubeconfig)))
        self.replicas: dict[str, tuple[subprocess.Popen, int]] = {}
        self.serving: set[str] = set()  # replicas whose /health answered 200 (their readiness probe)
        self.backends: list[str] = []
        self.pods: dict[str, dict] = {}  # uid -> lifetime record
        self.restarts: dict[str, int] = {}  # pod name -> times its replica exited and was started again
        self._backoff: dict[str, float] = {}  # pod name -> monotonic time before which it is not restarted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, daemon=True)

    @property
    def target_name(self) -> str:
        return f"{self.namespace}-{self.pool}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        self._thread.join(10)
        self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        for proc, _ in self.replicas.values():
            self.procs.stop(proc)
        self.replicas.clear()
        self.serving.clear()
        self.backends = []
        self.prom.set_targets([], self.target_name)
        self._write_lifetimes()

    def run(self) -> None:
        """Syncs every ``interval`` until ``stop()``; an API error skips one round (logged), never ends it."""
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as exc:  # the API server restarting, a pod changing under us
                log.warning("replica keeper %s/%s: %s", self.namespace, self.pool, exc)
            self._stop.wait(self.interval)

    def _observe(self, pods: list) -> None:
        now = time.time()
        seen = set()
        changed = False
        for pod in pods:
            uid = pod.metadata.uid
            seen.add(uid)
            rec = self.pods.get(uid)
            if rec is None:
                rec = self.pods[uid] = {
                    "name": pod.metadata.name,
                    "uid": uid,
                    "created": pod.metadata.creation_timestamp.timestamp(),
                    "node": None,
                    "ready": None,
                    "deleted": None,
                }
                changed = True
            if pod.spec.node_name and rec["node"] != pod.spec.node_name:
                rec["node"], changed = pod.spec.node_name, True
            if rec["ready"] is None and _ready(pod):
                cond = next(c for c in pod.status.conditions if c.type == "Ready")
                rec["ready"] = cond.last_transition_time.timestamp() if cond.last_transition_time else now
                changed = True
            if rec["deleted"] is None and pod.metadata.deletion_timestamp is not None:
                rec["deleted"], changed = now, True
        for uid, rec in self.pods.items():
            if uid not in seen and rec["deleted"] is None:
                rec["deleted"], changed = now, True
        if changed:
            self._write_lifetimes()

    def lifetimes(self) -> list[dict]:
        """Every pod seen: name, uid, node, created, ready, deleted (Unix seconds; None: not yet)."""
        return sorted(self.pods.values(), key=lambda r: r["created"])

    def _write_lifetimes(self) -> None:
        if self.lifetimes_file is not None:
            tmp = self.lifetimes_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.lifetimes(), indent=1))
            tmp.replace(self.lifetimes_file)

    def sync(self) -> None:
        listed = self.api.list_namespaced_pod(self.namespace, label_selector=self.selector).items
        self._observe(listed)
        running = {
            p.metadata.name: p
            for p in listed
            if p.metadata.deletion_timestamp is None
            and p.status.phase == "Running"
            and (_ready(p) or _ready_by_replica(p))
        }
        for name in list(self.replicas):
            if name not in running:
                self.serving.discard(name)
                self.procs.stop(self.replicas.pop(name)[0])
        for name in set(self.restarts) - set(running):
            self.restarts.pop(name)
            self._backoff.pop(name, None)
        for name in self._reap():  # its readiness probe fails: the pod is Running, not Ready
            if name in running and _ready_by_replica(running[name]) and _ready(running[name]):
                self._set_ready(running[name], ready=False)
        now = time.monotonic()
        for name in sorted(set(running) - set(self.replicas)):
            if self._backoff.get(name, 0.0) > now:
                continue
            port = free_port()
            proc = self.procs.start(
                self._proc_name(name),
                [
                    BIN / "burstpilot",
                    "sim",
                    "serve",
                    "--profile",
                    self.profile,
                    "--port",
                    str(port),
                    "--host",
                    "127.0.0.1",
                    "--cold-start",
                    str(self.cold_start_s),
                ],
            )
            self.replicas[name] = (proc, port)
        for name, (_, port) in self.replicas.items():
            if name not in self.serving and _healthy(port):
                self.serving.add(name)
        routed = set()
        for name in sorted(self.serving):
            pod = running[name]
            if _ready_by_replica(pod) and not _ready(pod):
                if time.time() < _ready_at(pod) or not self._set_ready(pod):
                    continue
            routed.add(name)
        # the Service routes only to Ready pods whose replica passed its readiness probe (model loaded)
        self.backends = [f"http://127.0.0.1:{port}" for n, (_, port) in self.replicas.items() if n in routed]
        self.prom.set_targets(
            [
                {
                    "targets": [f"127.0.0.1:{port}"],
                    "labels": {"namespace": self.namespace, "pod": name, "servingpool": self.pool},
                }
                for name, (_, port) in sorted(self.replicas.items())
            ],
            self.target_name,
        )

    def _proc_name(self, pod: str) -> str:
        """The name a pod's replica process and its log go by."""
        return f"replica-{self.namespace}-{pod}"

    def _reap(self) -> list[str]:
        """Takes every replica that exited out of the Service, logs why and schedules its restart; returns
        their pods' names."""
        gone = []
        for name, (proc, _) in list(self.replicas.items()):
            code = proc.poll()
            if code is None:
                continue
            self.serving.discard(name)
            del self.replicas[name]
            gone.append(name)
            n = self.restarts[name] = self.restarts.get(name, 0) + 1
            first, cap = RESTART_BACKOFF_S
            delay = min(first * 2 ** (n - 1), cap)
            self._backoff[name] = time.monotonic() + delay
            tail = self.procs.tail(self._proc_name(name), 5).strip().replace("\n", " | ")
            log.warning(
                "replica keeper %s/%s: the replica of pod %s exited with code %s (exit %d); starting it "
                "again in %.0f s; its log ends: %s",
                self.namespace, self.pool, name, code, n, delay, tail or "(empty)",
            )  # fmt: skip
        return gone

    def _set_ready(self, pod, ready: bool = True) -> bool:
        """What the kubelet does when a readiness probe first succeeds (``ready``) or starts failing: the pod's
        Ready and ContainersReady conditions and its containers' ``ready`` follow. False when the patch failed
        (the pod is going, or the API server did not answer): the next sync tries again."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        serialize = self.api.api_client.sanitize_for_serialization
        containers = [{**serialize(c), "ready": ready} for c in (pod.status.container_statuses or [])]
        body = {
            "status": {
                "conditions": [
                    {
                        "type": kind,
                        "status": "True" if ready else "False",
                        "lastTransitionTime": now,
                        "reason": None,
                        "message": None,
                    }
                    for kind in ("Ready", "ContainersReady")
                ],
                "containerStatuses": containers,
            }
        }
        try:
            self.api.patch_namespaced_pod_status(
                pod.metadata.name,
                self.namespace,
                body,
                _content_type="application/strategic-merge-patch+json",
            )
        except (k8s.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning(
                "replica keeper %s/%s: marking %s %s: %s",
                self.namespace,
                self.pool,
                pod.metadata.name,
                "Ready" if ready else "not Ready",
                exc,
            )
            return False
        rec = self.pods.get(pod.metadata.uid)
        if ready and rec is not None and rec["ready"] is None:
            rec["ready"] = time.time()
            self._write_lifetimes()
        return True


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5) as resp:
            return resp.status == 200
    except OSError:  # not listening yet, or 503 while the model loads
        return False


class ServiceFront:
    """The Service in front of the replicas: forwards each request (streaming) to the backend with the fewest
    requests in flight, among those the keeper runs at that moment; 503 while there is none."""

    def __init__(self, keeper: ReplicaKeeper, port: int | None = None) -> None:
        self.keeper = keeper
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.inflight: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        backends = list(self.keeper.backends)
        if not backends:
            return web.json_response({"error": "no ready replica"}, status=503)
        backend = min(backends, key=lambda b: self.inflight.get(b, 0))
        self.inflight[backend] = self.inflight.get(backend, 0) + 1
        try:
            return await relay(
                request, self._session, backend + request.rel_url.path_qs, ClientTimeout(total=600)
            )
        except UpstreamFailed as exc:  # the replica went away (its pod was deleted)
            return web.json_response({"error": f"replica unavailable: {exc}"}, status=502)
        finally:
            self.inflight[backend] -= 1

    def __enter__(self):
        async def setup():
            self._session = ClientSession()
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        self._thread.start()
        asyncio.run_coroutine_threadsafe(setup(), self._loop).result(10)
        return self

    def __exit__(self, *exc):
        async def teardown():
            await self._runner.cleanup()
            await self._session.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(teardown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
