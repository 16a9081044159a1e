"""Failure-drill machinery for the end-to-end tier, self-contained beside the harness (e2e_harness.py):

- ``ApiProxy``: an HTTP reverse proxy in front of kube-apiserver for one operator process, which logs every
  call (method, path, status, body bytes) and injects faults: answer N calls matching a rule with 409, 429 or
  500 (with ``Retry-After``), or hold them until released (to kill the operator in the middle of a tick);
- ``restart``: stop a control-plane process (kube-apiserver, etcd, Prometheus) and start it again with the same
  command line, data and port;
- ``DrillOperator``: an operator process as the chart's ServiceAccount through its own ``ApiProxy``, with any
  flags (``--leader-elect``), that can be killed (SIGKILL), stopped and started;
- ``VllmExporter``: one ``/metrics`` endpoint with vLLM's metric names for any number of pools, request rates
  set by the test, scraped by the real Prometheus (a burst without running replicas and a load generator).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from e2e_harness import BIN, RELEASE_NS, Prometheus, wait_for

from burstpilot.operator.cluster.controlplane import ControlPlane
from burstpilot.operator.cluster.procs import Procs, free_port


@dataclass
class Fault:
    method: str
    path: re.Pattern
    status: int = 0  # the answer; 0 = hold until released
    times: int = 1_000_000
    retry_after: int | None = None
    released: threading.Event = field(default_factory=threading.Event)
    hits: int = 0


@dataclass
class Call:
    t: float
    method: str
    path: str
    status: int
    sent_bytes: int
    injected: bool = False
    body: bytes = b""  # the first 512 bytes of the request body


class ApiProxy:
    """Plain HTTP on 127.0.0.1 in front of the API server (TLS to it, the client's own bearer token passed on)."""

    def __init__(self, cluster: ControlPlane) -> None:
        self.upstream = cluster.server
        self.ca = cluster.ca
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def fail(
        self, method: str, path: str, status: int, times: int = 1_000_000, retry_after: int | None = None
    ) -> Fault:
        fault = Fault(method, re.compile(path), status, times, retry_after)
        with self._lock:
            self.faults.append(fault)
        return fault

    def hold(self, method: str, path: str, times: int = 1_000_000) -> Fault:
        return self.fail(method, path, 0, times)

    def clear(self) -> None:
        with self._lock:
            for f in self.faults:
                f.released.set()
            self.faults = []

    def calls_to(self, method: str, path: str, since: float = 0.0) -> list[Call]:
        rx = re.compile(path)
        return [c for c in list(self.calls) if c.method == method and rx.search(c.path) and c.t >= since]

    def _match(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.method == method and f.path.search(path) and f.hits < f.times:
                    f.hits += 1
                    return f
        return None

    async def _handle(self, request):
        from aiohttp import ClientTimeout, web

        body = await request.read()
        path = request.rel_url.path_qs
        fault = self._match(request.method, request.rel_url.path)
        if fault is not None:
            if fault.status == 0:  # held: the client waits (and may be killed meanwhile); then refused
                await asyncio.get_running_loop().run_in_executor(None, fault.released.wait)
                status = 503
            else:
                status = fault.status
            self.calls.append(Call(time.time(), request.method, path, status, len(body), True, body[:512]))
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            reason = {
                409: "Conflict",
                429: "TooManyRequests",
                500: "InternalError",
                503: "ServiceUnavailable",
            }
            status_obj = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": f"injected by the drill: {status}",
                "reason": reason.get(status, "InternalError"),
                "code": status,
            }
            return web.json_response(status_obj, status=status, headers=headers)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type", "accept")
        }
        try:
            up = await self._session.request(
                request.method,
                self.upstream + path,
                data=body or None,
                headers=headers,
                ssl=self._ssl,
                timeout=ClientTimeout(total=None, sock_connect=5),
                skip_auto_headers=("Content-Type",),  # the client may send none (JSON); never invent one
            )
        except Exception:
            self.calls.append(Call(time.time(), request.method, path, 502, len(body)))
            return web.json_response(
                {"kind": "Status", "code": 502, "message": "API server unreachable"}, status=502
            )
        self.calls.append(Call(time.time(), request.method, path, up.status, len(body), False, body[:512]))
        resp = web.StreamResponse(
            status=up.status, headers={"Content-Type": up.headers.get("Content-Type", "")}
        )
        await resp.prepare(request)
        try:
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            up.release()
        return resp

    def __enter__(self) -> ApiProxy:
        from aiohttp import ClientSession, TCPConnector, web

        async def setup():
            self._ssl = ssl.create_default_context(cafile=str(self.ca))
            self._session = ClientSession(connector=TCPConnector(limit=0))
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        self._thread.start()
        asyncio.run_coroutine_threadsafe(setup(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        self.clear()

        async def teardown():
            await self._runner.cleanup()
            await self._session.close()

        try:  # open watches end with the proxy
            asyncio.run_coroutine_threadsafe(teardown(), self._loop).result(30)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def restart(procs: Procs, name: str, ready, timeout: float = 180.0) -> subprocess.Popen:
    """Stop the newest process called ``name`` and start it again with the same command line; waits for
    ``ready()``. Returns the new process."""
    old = next(p for n, p in reversed(procs.procs) if n == name)
    procs.stop(old)
    new = procs.start(name, list(old.args))
    wait_for(f"{name} back after its restart", lambda: procs.check(name, new) or ready(), timeout=timeout)
    return new


def restart_prometheus(procs: Procs, prom: Prometheus) -> None:
    prom.proc = restart(
        procs, "prometheus", lambda: urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2).status == 200
    )


def stop_prometheus(procs: Procs, prom: Prometheus) -> None:
    procs.stop(prom.proc)


def start_prometheus(procs: Procs, prom: Prometheus) -> None:
    prom.proc = procs.start("prometheus", list(prom.proc.args))
    wait_for(
        "Prometheus back",
        lambda: (
            procs.check("prometheus", prom.proc)
            or urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2).status == 200
        ),
        timeout=60,
    )


class DrillOperator:
    """An operator process as the chart's ServiceAccount, through its own ApiProxy."""

    def __init__(
        self, cluster: ControlPlane, procs: Procs, workdir: Path, name: str, proxy: ApiProxy, *flags: str
    ) -> None:
        sa = cluster.get_json(
            "serviceaccount", "-n", RELEASE_NS, "-l", "app.kubernetes.io/instance=burstpilot"
        )["items"]
        self.service_account = sa[0]["metadata"]["name"]
        token = cluster.kubectl(
            "create", "token", self.service_account, "-n", RELEASE_NS, "--duration=2h"
        ).stdout.strip()
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "drill", "cluster": {"server": proxy.url}}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "drill", "context": {"cluster": "drill", "user": "sa"}}],
            "current-context": "drill",
        }
        self.kubeconfig = workdir / f"{name}.kubeconfig"
        self.kubeconfig.write_text(json.dumps(cfg))
        self.kubeconfig.chmod(0o600)
        self.name, self.procs, self.proxy = name, procs, proxy
        self.metrics_port, self.health_port = free_port(), free_port()
        self.argv = [
            str(BIN / "burstpilot"),
            "operator",
            "run",
            f"--metrics-address=127.0.0.1:{self.metrics_port}",
            f"--health-address=127.0.0.1:{self.health_port}",
            "--log-format=json",
            *flags,
        ]
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "POD_NAME": self.name}
        self.proc = self.procs.start(self.name, self.argv, env=env)
        if wait:
            wait_for(
                f"{self.name}'s /healthz",
                lambda: self.procs.check(self.name, self.proc) or self.health("healthz")[0] == 200,
                timeout=60,
            )

    def health(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/{path}", timeout=3) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def metrics(self) -> str:
        return (
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no Lease released."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        self.procs.stop(self.proc, timeout=60)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return (self.procs.logdir / f"{self.name}.log").read_text(errors="replace")


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a /metrics text; None when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


class VllmExporter:
    """vLLM's metrics for pools, at request rates the test sets (100 prompt and 50 output tokens a request)."""

    def __init__(self, prom: Prometheus) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.prom = prom
        self.registry = CollectorRegistry()
        labels = ["servingpool", "namespace"]
        self.success = Counter("vllm:request_success", "finished requests", labels, registry=self.registry)
        self.prompt = Counter("vllm:prompt_tokens", "prompt tokens", labels, registry=self.registry)
        self.generation = Counter(
            "vllm:generation_tokens", "generation tokens", labels, registry=self.registry
        )
        self.running = Gauge("vllm:num_requests_running", "running", labels, registry=self.registry)
        self.waiting = Gauge("vllm:num_requests_waiting", "waiting", labels, registry=self.registry)
        self.kv = Gauge("vllm:kv_cache_usage_perc", "kv", labels, registry=self.registry)
        self.rates: dict[tuple[str, str], float] = {}
        self.text: bytes = b""
        self.port = free_port()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def set_rate(self, namespace: str, pool: str, rate: float) -> None:
        key = (pool, namespace)
        self.rates[key] = rate
        self.running.labels(*key).set(min(rate, 4.0))
        self.waiting.labels(*key).set(0)
        self.kv.labels(*key).set(0.1)

    def _loop(self) -> None:
        from prometheus_client import generate_latest

        last = time.monotonic()
        # many pools: a step a second (the scrape interval), so the exposition does not hog the process
        step = 0.1 if len(self.rates) <= 20 else 1.0
        while not self._stop.wait(step):
            now = time.monotonic()
            dt, last = now - last, now
            for key, rate in list(self.rates.items()):
                n = rate * dt
                self.success.labels(*key).inc(n)
                self.prompt.labels(*key).inc(100 * n)
                self.generation.labels(*key).inc(50 * n)
            if len(self.rates) > 20:  # many pools: scrapes serve the text made here (within a scrape timeout)
                self.text = generate_latest(self.registry)

    def __enter__(self) -> VllmExporter:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        registry, exporter = self.registry, self

        class Handler(BaseHTTPRequestHandler):
            # Always the text format: prometheus-client's OpenMetrics output (which Prometheus asks for first)
            # spells vLLM's "vllm:" names with an underscore.
            def do_GET(self):
                body = exporter.text or generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self._thread.start()
        self.prom.set_targets([{"targets": [f"127.0.0.1:{self.port}"], "labels": {"job": "vllm-exporter"}}])
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.shutdown()
        self.server.server_close()
        self.prom.set_targets([])
