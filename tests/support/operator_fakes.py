"""Test doubles for the operator's unit tests: a Prometheus HTTP API and the Kubernetes adapter."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from urllib.parse import parse_qs

from aiohttp import web

from burstpilot.operator.kube import PodSummary, Scale, StateError, StatusError, TargetError
from burstpilot.operator.prom import pool_queries, query_window, scrape_interval

# One pool shared by the operator's unit tests: its spec, the clock, its uid, and Prometheus's answers.
NOW = 1_900_000_000.0
SPEC = {
    "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"},
    "minReplicas": 1,
    "maxReplicas": 6,
    "profile": {"decodeTokensPerSecond": 100, "prefillTokensPerSecond": 2000},
    "metrics": {"selector": {"servingpool": "llm"}, "scrapeIntervalSeconds": 1},
    "forecasting": {"model": "burst", "stepSeconds": 2, "quantile": 0.9},
    "scaling": {"intervalSeconds": 2, "scaleDownStabilizationSeconds": 30},
}


def prom_values(
    requests: float,
    interval: float = 2.0,
    age: float = 1.0,
    metrics: dict | None = None,
    scrape: float | None = None,
) -> dict[str, float]:
    """What Prometheus answers for the default queries of SPEC (or of a pool's ``metrics``) at NOW: `requests` a
    tick of `interval` seconds (over the counting window, query_window, at the same rate), 100+50 tokens each;
    the window's samples at a scrape every ``scrape`` seconds (default: the interval the pool states)."""
    metrics = SPEC["metrics"] if metrics is None else metrics
    window = query_window(metrics, interval)
    q = pool_queries(metrics, window)
    n = requests * window / interval
    every = scrape if scrape is not None else scrape_interval(metrics)
    return {
        q["samples"]: float(int(window / every)),
        q["requests"]: n,
        q["promptTokens"]: n * 100,
        q["generationTokens"]: n * 50,
        q["waiting"]: 0.0,
        q["running"]: 1.0,
        q["kvUsage"]: 0.1,
        q["lastSample"]: NOW - age,
    }


UID = "6c1f0d6e-0000-4000-8000-000000000001"


class FakePrometheus:
    """Answers /api/v1/query like Prometheus: each tagged sub-query's value is looked up by its PromQL text.
    A sub-query containing "bad(" makes the whole expression a 400, as a PromQL parse error would."""

    def __init__(self, values: dict[str, float], answer: object = None) -> None:
        self.values = values
        self.answer = answer  # a JSON body to answer every query with instead (malformed-answer tests)
        self.queries: list[str] = []
        self.auth: list[str | None] = []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    async def query(self, request):
        params = parse_qs(request.query_string) if request.method == "GET" else await request.post()
        promql = params["query"][0] if isinstance(params["query"], list) else params["query"]
        self.queries.append(promql)
        self.auth.append(request.headers.get("Authorization"))
        if self.answer is not None:
            return web.json_response(self.answer)
        if "bad(" in promql:
            return web.json_response(
                # echoes the request as some proxies in front of Prometheus do (credentials included)
                {
                    "status": "error",
                    "errorType": "bad_data",
                    "error": f"Authorization: {request.headers.get('Authorization')}; parse error in {promql[:200]!r}",
                },
                status=400,
            )
        result = []
        for part in re.split(r" or (?=label_replace\(\()", promql):
            inner = part[len("label_replace((") : part.index('), "burstpilot_query"')]
            key = part.split('"burstpilot_query", "')[1].split('"')[0]
            if inner in self.values:
                result.append({"metric": {"burstpilot_query": key}, "value": [0, str(self.values[inner])]})
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    def __enter__(self):
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_route("*", "/api/v1/query", self.query)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class FakeKube:
    """The Kube adapter's interface over in-memory objects; records scale patches, statuses, ConfigMap writes.
    ``configmap_error``: every ConfigMap call fails with it (no permission, API server down)."""

    def __init__(self, replicas: int | None = 1, pods: PodSummary | None = None) -> None:
        self.replicas = replicas  # None: the target does not exist
        self.pod_summary = pods or PodSummary(ready=replicas or 0)
        self.scaled: list[int] = []
        self.statuses: list[dict] = []
        self.secrets: dict[str, dict[str, str]] = {}
        self.configmaps: dict[str, dict] = {}
        self.configmap_writes: list[tuple[str, str]] = []  # (verb, name)
        self.configmap_bodies: list[dict] = []  # every create body and patch, as sent
        self.configmap_error: str | None = None
        self.status_error: StatusError | None = None  # every status patch fails with it
        self.scale_error: TargetError | None = None  # every scale patch fails with it
        self.others: list = []  # Autoscaler records: the namespace's HPAs and ScaledObjects

    def get_scale(self, namespace, target):
        if self.replicas is None:
            raise TargetError("TargetNotFound", f"Deployment {namespace}/{target['name']} not found")
        return Scale(self.replicas, self.replicas, "app=llm")

    def set_scale(self, namespace, target, replicas):
        if self.scale_error is not None:
            raise self.scale_error
        self.scaled.append(replicas)
        self.replicas = replicas

    def pods(self, namespace, selector):
        return self.pod_summary

    def patch_status(self, namespace, name, status):
        if self.status_error is not None:
            raise self.status_error
        self.statuses.append(json.loads(json.dumps(status)))

    def autoscalers(self, namespace):
        return list(self.others)

    def read_secret(self, namespace, name):
        if name not in self.secrets:
            raise KeyError(f"secret {name} not found")
        return self.secrets[name]

    def _configmap_call(self) -> None:
        if self.configmap_error:
            raise StateError(self.configmap_error)

    def get_configmap(self, namespace, name):
        self._configmap_call()
        return json.loads(json.dumps(self.configmaps[name])) if name in self.configmaps else None

    def create_configmap(self, namespace, body):
        self._configmap_call()
        name = body["metadata"]["name"]
        if name in self.configmaps:
            return False
        self.configmap_writes.append(("create", name))
        self.configmap_bodies.append(json.loads(json.dumps(body)))
        self.configmaps[name] = json.loads(json.dumps(body))
        return True

    def patch_configmap(self, namespace, name, patch):
        self._configmap_call()
        if name not in self.configmaps:
            return False
        self.configmap_writes.append(("patch", name))
        self.configmap_bodies.append(json.loads(json.dumps(patch)))
        cm = self.configmaps[name]
        cm["metadata"].update(patch.get("metadata", {}))
        data = cm.setdefault("data", {})
        for key, value in patch.get("data", {}).items():  # a JSON merge patch: null deletes
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        return True
