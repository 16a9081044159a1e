"""Prometheus adapter: the PromQL of each signal, and batched instant queries through prometheus-api-client.

Every pool needs the same eight signals each tick. The queries of all pools that tick at about the same time
against the same Prometheus (same URL and credentials) go out as one PromQL expression: each query is tagged
with a ``burstpilot_query`` label (``label_replace``) and the tagged vectors are joined with ``or``. When the
combined query fails as a whole (say one pool's override is not valid PromQL), each pool is asked on its own,
so one bad pool never blinds the others.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from burstpilot.operator import metrics as opmetrics

# vLLM v1 metric names (the simulated replica exports the same). {selector} becomes the pool's label matchers,
# {window} the tick's window (for example 10s). vLLM counts no arrivals, so requests = finished + the growth
# of running and waiting over the window (vLLM has no finished series before the first request: 0 then).
DEFAULT_QUERIES: dict[str, str] = {
    "requests": (
        "(sum(increase(vllm:request_success_total{selector}[{window}])) or vector(0))"
        " + sum(delta(vllm:num_requests_running{selector}[{window}]))"
        " + sum(delta(vllm:num_requests_waiting{selector}[{window}]))"
    ),
    "promptTokens": "sum(increase(vllm:prompt_tokens_total{selector}[{window}]))",
    "generationTokens": "sum(increase(vllm:generation_tokens_total{selector}[{window}]))",
    "waiting": "sum(vllm:num_requests_waiting{selector})",
    "running": "sum(vllm:num_requests_running{selector})",
    "kvUsage": "avg(vllm:kv_cache_usage_perc{selector})",
    "ttftP99": "histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{selector}[{window}])))",
    "lastSample": "max(timestamp(vllm:num_requests_running{selector}))",
}
TAG = "burstpilot_query"
TAG_OVERHEAD = len(f'label_replace((), "{TAG}", "000.promptTokens", "", "") or ')


class MetricsError(Exception):
    """Prometheus did not answer, or answered with an error."""


def selector_matchers(selector: Mapping[str, str] | None) -> str:
    """``{"model_name": "x"}`` -> ``{model_name="x"}`` (PromQL string escaping); ``{}`` when empty."""
    parts = []
    for key in sorted(selector or {}):
        value = str(selector[key]).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{key}="{value}"')
    return "{" + ",".join(parts) + "}"


def format_window(seconds: float) -> str:
    """A PromQL duration: whole milliseconds, at least 1s."""
    ms = max(1000, int(round(seconds * 1000)))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def pool_queries(metrics_spec: Mapping[str, Any] | None, window_s: float) -> dict[str, str]:
    """The PromQL of every signal for one pool: the defaults with the pool's overrides, templates filled in."""
    metrics_spec = metrics_spec or {}
    overrides = metrics_spec.get("queries") or {}
    sel = selector_matchers(metrics_spec.get("selector"))
    window = format_window(window_s)
    out = {}
    for name, template in DEFAULT_QUERIES.items():
        q = overrides.get(name) or template
        out[name] = q.replace("{selector}", sel).replace("{window}", window)
    return out


def combine(queries: Mapping[str, str]) -> str:
    """One PromQL expression answering every query, each result tagged with its key."""
    tagged = [f'label_replace(({q}), "{TAG}", "{key}", "", "")' for key, q in queries.items()]
    return " or ".join(tagged)


def split(result: list[dict[str, Any]], keys: list[str]) -> dict[str, float | None]:
    """Values of a combined query's result by key; None where a query returned no (finite) sample.

    A query returning several series (an override without an aggregation) counts as their sum.
    """
    out: dict[str, float | None] = dict.fromkeys(keys)
    for series in result:
        key = series.get("metric", {}).get(TAG)
        if key not in out:
            continue
        try:
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if not math.isfinite(value):
            continue
        out[key] = value if out[key] is None else out[key] + value
    return out


@dataclass(frozen=True)
class Endpoint:
    """A Prometheus to query and how to authenticate; equal endpoints share one batched query."""

    url: str
    bearer_token: str | None = None
    ca_pem: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None
    insecure_skip_verify: bool = False


@dataclass
class _Pending:
    queries: dict[str, str]
    future: asyncio.Future = field(repr=False)


class PrometheusSource:
    """Batched instant queries. ``await fetch(endpoint, queries)`` -> ``{key: float | None}``.

    Calls that arrive within ``linger_s`` of each other for the same endpoint share one HTTP request (several
    when the combined PromQL would pass ``max_query_chars``).
    """

    def __init__(self, linger_s: float = 0.05, timeout_s: float = 5.0, max_query_chars: int = 8000) -> None:
        self.linger_s = linger_s
        self.timeout_s = timeout_s
        # The query travels in the URL (GET): pools beyond this length go in further requests.
        self.max_query_chars = max_query_chars
        self._pending: dict[Endpoint, list[_Pending]] = {}
        self._clients: dict[Endpoint, PrometheusConnect] = {}
        self._tmpdir: str | None = None

    async def fetch(self, endpoint: Endpoint, queries: Mapping[str, str]) -> dict[str, float | None]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        batch = self._pending.setdefault(endpoint, [])
        batch.append(_Pending(dict(queries), fut))
        if len(batch) == 1:
            loop.call_later(self.linger_s, lambda: loop.create_task(self._flush(endpoint)))
        return await fut

    async def _flush(self, endpoint: Endpoint) -> None:
        chunk: list[_Pending] = []
        size = 0
        for p in self._pending.pop(endpoint, []):
            n = sum(len(q) + TAG_OVERHEAD for q in p.queries.values())
            if chunk and size + n > self.max_query_chars:
                await self._run(endpoint, chunk)
                chunk, size = [], 0
            chunk.append(p)
            size += n
        if chunk:
            await self._run(endpoint, chunk)

    async def _run(self, endpoint: Endpoint, batch: list[_Pending]) -> None:
        keyed = {f"{i}.{name}": q for i, p in enumerate(batch) for name, q in p.queries.items()}
        try:
            values = await asyncio.to_thread(self._query, endpoint, keyed)
            for i, p in enumerate(batch):
                if not p.future.done():
                    p.future.set_result({name: values[f"{i}.{name}"] for name in p.queries})
            return
        except MetricsError as exc:
            if len(batch) == 1 or not _is_bad_query(exc):
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(MetricsError(str(exc)))
                return
        for p in batch:  # the batch failed as a query: ask each pool on its own
            try:
                res = await asyncio.to_thread(self._query, endpoint, p.queries)
                if not p.future.done():
                    p.future.set_result(res)
            except MetricsError as exc:
                if not p.future.done():
                    p.future.set_exception(exc)

    def _query(self, endpoint: Endpoint, queries: Mapping[str, str]) -> dict[str, float | None]:
        client = self._client(endpoint)
        opmetrics.PROM_QUERIES.inc()
        try:
            result = client.custom_query(combine(queries), timeout=self.timeout_s)
        except PrometheusApiClientException as exc:
            raise MetricsError(f"Prometheus at {endpoint.url} refused the query: {exc}") from None
        except requests.RequestException as exc:
            raise MetricsError(f"Prometheus at {endpoint.url} did not answer: {type(exc).__name__}") from None
        return split(result, list(queries))

    def _client(self, endpoint: Endpoint) -> PrometheusConnect:
        client = self._clients.get(endpoint)
        if client is not None:
            return client
        session = requests.Session()
        if endpoint.ca_pem:
            session.verify = self._write(endpoint.ca_pem, "ca")
        if endpoint.cert_pem and endpoint.key_pem:
            session.cert = (self._write(endpoint.cert_pem, "crt"), self._write(endpoint.key_pem, "key"))
        headers = {"Authorization": f"Bearer {endpoint.bearer_token}"} if endpoint.bearer_token else None
        client = PrometheusConnect(
            url=endpoint.url,
            headers=headers,
            disable_ssl=endpoint.insecure_skip_verify,
            session=session,
            timeout=self.timeout_s,
            # one quick retry: a Prometheus that is down must not stretch the tick (the next tick retries)
            retry=Retry(total=1, backoff_factor=0.2, status_forcelist=(502, 503, 504)),
        )
        if endpoint.ca_pem and not endpoint.insecure_skip_verify:
            session.verify = self._write(endpoint.ca_pem, "ca")  # PrometheusConnect resets verify
        self._clients[endpoint] = client
        return client

    def _write(self, pem: str, suffix: str) -> str:
        """PEM material from a Secret goes to a private temporary file (requests wants paths)."""
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="burstpilot-tls-")
        fd, path = tempfile.mkstemp(dir=self._tmpdir, suffix=f".{suffix}")
        with os.fdopen(fd, "w") as fh:
            fh.write(pem)
        return path


def _is_bad_query(exc: MetricsError) -> bool:
    return "refused the query" in str(exc)
