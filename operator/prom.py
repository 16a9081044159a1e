"""Prometheus adapter: the PromQL of each signal, and batched instant queries through prometheus-api-client.

Every pool needs the same signals each tick (DEFAULT_QUERIES). The queries of all pools that tick at about the
same time against the same Prometheus (same URL and credentials) go out as one PromQL expression: each query is
tagged with a ``burstpilot_query`` label (``label_replace``) and the tagged vectors are joined with ``or``.
When the combined query fails as a whole (say one pool's override is not valid PromQL), each pool is asked on
its own, so one bad pool never blinds the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from burstpilot.errors import BurstpilotError
from burstpilot.operator import metrics as opmetrics

log = logging.getLogger(__name__)

# vLLM v1 metric names (the simulated replica exports the same). {selector} becomes the pool's label matchers,
# {window} the counting window (query_window: for example 90s for a 10 s tick and a 30 s scrape). vLLM counts
# no arrivals, so requests = finished + the growth of running and waiting over the window (vLLM has no finished
# series before the first request: 0 then).
# tpotP99 is the p99 of the requests' own time per output token (vLLM's per-request histogram), the quantity a
# TPOT target is about; the per-token vllm:inter_token_latency_seconds is not: its p99 holds every decode step
# a prefill slowed, so it sits at 2-4x the requests' p99 on a pool that meets its TPOT target.
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
    "tpotP99": (
        "histogram_quantile(0.99, sum by (le) "
        "(rate(vllm:request_time_per_output_token_seconds_bucket{selector}[{window}])))"
    ),
    "completed": "sum(increase(vllm:request_success_total{selector}[{window}]))",
    "preemptions": "sum(increase(vllm:num_preemptions_total{selector}[{window}]))",
    "lastSample": "max(timestamp(vllm:num_requests_running{selector}))",
    # the samples the counting window holds (of the replica scraped longest): under two, increase() answers
    # nothing; fewer than the stated scrape interval implies, Prometheus scrapes less often than the spec says
    "samples": "max(count_over_time(vllm:num_requests_running{selector}[{window}]))",
}
# sloViolations: the requests of the window that missed the SLO, from the TTFT and per-request TPOT histograms:
# for each, the count above the target, the bucket counts interpolated linearly between the bucket bounds on
# either side of it (vLLM's bounds, below); the larger of the two, or the one with series (a request over both
# counts once, so this is a lower bound on those over either). An override may use {ttftSeconds} and {tpotSeconds} besides {selector}
# and {window}. Refused requests (no histogram observation) are not in it.
SLO_QUERY = "sloViolations"
VLLM_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                     20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
VLLM_TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                     20.0, 40.0, 80.0)  # fmt: skip
TAG = "burstpilot_query"
TAG_OVERHEAD = len(f'label_replace((), "{TAG}", "000.promptTokens", "", "") or ')


class MetricsError(Exception):
    """Prometheus did not answer, or answered with an error or with something that is not an answer."""


class AuthError(MetricsError):
    """The credentials to query Prometheus with could not be read."""


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


# Prometheus Operator's scrape interval when a ServiceMonitor or PodMonitor sets none (kube-prometheus-stack's too).
DEFAULT_SCRAPE_INTERVAL_S = 30.0


def query_window(metrics_spec: Mapping[str, Any] | None, interval_s: float) -> float:
    """The seconds the counting queries (``increase``, ``rate``) look back over: ``metrics.windowSeconds`` where
    set, else max(interval + scrape, 3 x scrape) with the scrape interval ``metrics.scrapeIntervalSeconds``
    (default 30 s): a window that overlaps the last tick's by one scrape and holds at least two samples even with
    one scrape missed or late. A window of one tick under a scrape as long holds one sample or none, and
    ``increase()`` answers nothing."""
    metrics_spec = metrics_spec or {}
    if metrics_spec.get("windowSeconds") is not None:
        return _seconds(metrics_spec, "windowSeconds", 1.0)
    scrape = scrape_interval(metrics_spec)
    return max(float(interval_s) + scrape, 3.0 * scrape)


def scrape_interval(metrics_spec: Mapping[str, Any] | None) -> float:
    """The scrape interval the pool states (``metrics.scrapeIntervalSeconds``, default 30 s)."""
    metrics_spec = metrics_spec or {}
    if metrics_spec.get("scrapeIntervalSeconds") is not None:
        return _seconds(metrics_spec, "scrapeIntervalSeconds", 0.1)
    return DEFAULT_SCRAPE_INTERVAL_S


def _seconds(metrics_spec: Mapping[str, Any], key: str, least: float) -> float:
    """``metrics.<key>``: a number of seconds in [least, 3600] (the CRD's bounds; its schema is not the only
    writer a pool may have had), else a BurstpilotError naming the field."""
    value = metrics_spec[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and least <= value <= 3600
    if not ok:
        raise BurstpilotError(
            f"spec.metrics.{key} must be a number of seconds in [{least:g}, 3600], got {value!r}"
        )
    return float(value)


def pool_queries(
    metrics_spec: Mapping[str, Any] | None,
    window_s: float,
    ttft_s: float | None = None,
    tpot_s: float | None = None,
) -> dict[str, str]:
    """The PromQL of every signal for one pool: the defaults with the pool's overrides, templates filled in;
    ``sloViolations`` too when the SLO's targets are given (``ttft_s``, ``tpot_s``: None for one not set)."""
    metrics_spec = metrics_spec or {}
    overrides = metrics_spec.get("queries") or {}
    sel = selector_matchers(metrics_spec.get("selector"))
    window = format_window(window_s)
    out = {}
    for name, template in DEFAULT_QUERIES.items():
        q = overrides.get(name) or template
        out[name] = q.replace("{selector}", sel).replace("{window}", window)
    if ttft_s is not None or tpot_s is not None:
        q = overrides.get(SLO_QUERY) or slo_violations_query(sel, ttft_s, tpot_s)
        out[SLO_QUERY] = (
            q.replace("{selector}", sel)
            .replace("{window}", window)
            .replace("{ttftSeconds}", f"{ttft_s or 0:g}")
            .replace("{tpotSeconds}", f"{tpot_s or 0:g}")
        )
    return out


def _le(bound: float) -> str:
    """A regex matching a bucket bound as client libraries write it ("1", "1.0", "0.25")."""
    text = repr(float(bound))
    return text[:-2] + "(\\\\.0)?" if text.endswith(".0") else text.replace(".", "\\\\.")


def count_above(metric: str, sel: str, target: float, bounds: tuple[float, ...]) -> str:
    """PromQL: requests of the window whose ``metric`` histogram observation is above ``target``: the count less
    the bucket counts interpolated between the bounds on either side of the target."""

    def bucket(b: float) -> str:
        matchers = sel[:-1] + ("," if sel != "{}" else "") + f'le=~"{_le(b)}"}}'
        return f"sum(increase({metric}_bucket{matchers}[{{window}}]))"

    total = f"sum(increase({metric}_count{sel}[{{window}}]))"
    below = [b for b in bounds if b <= target]
    above = [b for b in bounds if b > target]
    if below and below[-1] == target or not above:
        return f"{total} - {bucket(below[-1])}" if below else total
    hi = above[0]
    if not below:  # below the first bound: interpolate from zero
        return f"{total} - {bucket(hi)} * {target / hi:.6g}"
    lo = below[-1]
    share = (target - lo) / (hi - lo)
    return f"{total} - ({bucket(lo)} + ({bucket(hi)} - {bucket(lo)}) * {share:.6g})"


def slo_violations_query(sel: str, ttft_s: float | None, tpot_s: float | None) -> str:
    """The default ``sloViolations`` PromQL (see SLO_QUERY); ``{window}`` is left to fill."""
    parts = []
    if ttft_s is not None:
        parts.append(
            ("ttft", count_above("vllm:time_to_first_token_seconds", sel, ttft_s, VLLM_TTFT_BUCKETS))
        )
    if tpot_s is not None:
        parts.append(
            (
                "tpot",
                count_above("vllm:request_time_per_output_token_seconds", sel, tpot_s, VLLM_TPOT_BUCKETS),
            )
        )
    if len(parts) == 1:
        return f"({parts[0][1]})"
    a, b = (f"({q})" for _, q in parts)
    # the larger of the two, and either alone when the other has no series (a replica without that histogram)
    return f"({a} > {b}) or {b} or {a}"


def combine(queries: Mapping[str, str]) -> str:
    """One PromQL expression answering every query, each result tagged with its key."""
    tagged = [f'label_replace(({q}), "{TAG}", "{key}", "", "")' for key, q in queries.items()]
    return " or ".join(tagged)


def split(result: Any, keys: list[str]) -> dict[str, float | None]:
    """Values of a combined query's result by key; None where a query returned no sample.

    A query returning several series (an override without an aggregation) counts as their sum. Non-finite
    values are kept (the caller treats them as an invalid sample, not as a missing one). Raises MetricsError when
    the answer is not a vector of ``{"metric": {...}, "value": [time, "number"]}`` series, or a series
    of one of ``keys`` holds no number.
    """
    if not isinstance(result, list):
        raise MetricsError(f"answer has no result vector (result is {type(result).__name__})")
    out: dict[str, float | None] = dict.fromkeys(keys)
    for series in result:
        if not isinstance(series, dict) or not isinstance(series.get("metric"), dict):
            raise MetricsError(f"answer holds a series that is not an object: {str(series)[:80]!r}")
        key = series["metric"].get(TAG)
        if key not in out:
            continue
        value = series.get("value")
        try:
            if not isinstance(value, list | tuple) or len(value) != 2 or not isinstance(value[1], str):
                raise ValueError
            number = float(value[1])
        except (TypeError, ValueError):
            raise MetricsError(f"series {key} has no numeric value: {str(value)[:80]!r}") from None
        out[key] = number if out[key] is None else out[key] + number
    return out


def scrub(text: str, secrets: tuple[str | None, ...] = (), limit: int = 240) -> str:
    """An error text fit for a condition, an Event or a log line: the given secrets, bearer tokens, basic-auth
    user information in URLs and ``token=``/``password=`` values masked, control characters removed, and cut to
    ``limit`` characters."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1***", text)
    text = _USERINFO.sub(r"\1***@", text)
    text = _KEYVALUE.sub(r"\1***", text)
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@")
_KEYVALUE = re.compile(
    r"(?i)((?:token|password|passwd|secret|api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"
)


def printable_url(url: str) -> str:
    """A URL without its user information (``https://user:pass@host`` -> ``https://host``)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@dataclass(frozen=True)
class Endpoint:
    """A Prometheus to query and how to authenticate; equal endpoints share one batched query.

    Its printable form (``repr``, ``str``) names the URL without user information and says which credentials
    it carries, never their values: it may end up in a log line or a traceback.
    """

    url: str
    bearer_token: str | None = field(default=None, repr=False)
    ca_pem: str | None = field(default=None, repr=False)
    cert_pem: str | None = field(default=None, repr=False)
    key_pem: str | None = field(default=None, repr=False)
    insecure_skip_verify: bool = False

    def __repr__(self) -> str:
        auth = [
            n
            for n, v in (("bearer", self.bearer_token), ("ca", self.ca_pem), ("client-cert", self.key_pem))
            if v
        ]
        extra = f", auth={'+'.join(auth)}" if auth else ""
        return (
            f"Endpoint({printable_url(self.url)}{extra}{', insecure' if self.insecure_skip_verify else ''})"
        )

    __str__ = __repr__

    @property
    def printable_url(self) -> str:
        return printable_url(self.url)

    def secrets(self) -> tuple[str | None, ...]:
        userinfo = urllib.parse.urlsplit(self.url).netloc.rpartition("@")[0]
        return (self.bearer_token, self.key_pem, userinfo or None, *userinfo.split(":"))


@dataclass
class _Pending:
    queries: dict[str, str]
    future: asyncio.Future = field(repr=False)


class PrometheusSource:
    """Batched instant queries. ``await fetch(endpoint, queries)`` -> ``{key: float | None}``.

    Calls that arrive within ``linger_s`` of each other for the same endpoint share one HTTP request (several
    when the combined PromQL would pass ``max_query_chars``).
    """

    def __init__(
        self, linger_s: float = 0.05, timeout_s: float = 5.0, max_query_chars: int = 8000, parallel: int = 8
    ) -> None:
        self.linger_s = linger_s
        self.parallel = parallel  # requests of one batch in flight at once
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
        chunks: list[list[_Pending]] = [[]]
        size = 0
        for p in self._pending.pop(endpoint, []):
            n = sum(len(q) + TAG_OVERHEAD for q in p.queries.values())
            if chunks[-1] and size + n > self.max_query_chars:
                chunks.append([])
                size = 0
            chunks[-1].append(p)
            size += n
        limit = asyncio.Semaphore(self.parallel)

        async def run(chunk: list[_Pending]) -> None:
            async with limit:
                await self._run(endpoint, chunk)

        try:  # the requests of one batch in parallel (a few at a time): 500 pools are some 45 requests
            await asyncio.gather(*(run(chunk) for chunk in chunks if chunk))
        finally:  # cancelled (the operator stops): nobody waits forever
            for chunk in chunks:
                for p in chunk:
                    _settle(p, exc=MetricsError("query cancelled"))

    async def _run(self, endpoint: Endpoint, batch: list[_Pending]) -> None:
        """Answer every future of ``batch``, whatever happens: an answer, a MetricsError, or (never expected) an
        internal error as a MetricsError, so no pool's tick ever waits on a future nobody resolves."""
        try:
            await self._answer(endpoint, batch)
        except Exception as exc:
            log.exception("batched Prometheus query failed unexpectedly")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(MetricsError(f"internal error: {type(exc).__name__}"))
        except BaseException:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(MetricsError("query cancelled"))
            raise

    async def _answer(self, endpoint: Endpoint, batch: list[_Pending]) -> None:
        keyed = {f"{i}.{name}": q for i, p in enumerate(batch) for name, q in p.queries.items()}
        try:
            result = await asyncio.to_thread(self._query, endpoint, keyed)
        except MetricsError as exc:
            if len(batch) == 1 or not _is_bad_query(exc):
                for p in batch:
                    _settle(p, exc=MetricsError(str(exc)))
                return
            for p in batch:  # the batch failed as a query: ask each pool on its own
                try:
                    one = await asyncio.to_thread(self._query, endpoint, p.queries)
                    _settle(p, value=split(one, list(p.queries)))
                except MetricsError as exc:
                    _settle(p, exc=exc)
            return
        if not isinstance(result, list) or not all(
            isinstance(s, dict) and isinstance(s.get("metric"), dict) for s in result
        ):  # cannot tell which pool a malformed answer concerns: all of them
            shape = "result is not a list" if not isinstance(result, list) else "a series is not an object"
            for p in batch:
                _settle(
                    p, exc=MetricsError(f"Prometheus at {endpoint.printable_url} answered 200 but {shape}")
                )
            return
        for i, p in enumerate(batch):
            keys = [f"{i}.{name}" for name in p.queries]
            try:
                values = split(result, keys)
            except MetricsError as exc:
                _settle(p, exc=MetricsError(f"Prometheus at {endpoint.printable_url}: {exc}"))
                continue
            _settle(p, value={name: values[f"{i}.{name}"] for name in p.queries})

    def _query(self, endpoint: Endpoint, queries: Mapping[str, str]) -> Any:
        """The raw ``data.result`` of one combined query. Raises MetricsError (scrubbed of credentials)."""
        client = self._client(endpoint)
        opmetrics.PROM_QUERIES.inc()
        url = endpoint.printable_url
        try:
            return client.custom_query(combine(queries), timeout=self.timeout_s)
        except PrometheusApiClientException as exc:
            raise MetricsError(
                f"Prometheus at {url} refused the query: {scrub(str(exc), endpoint.secrets())}"
            ) from None
        except requests.RequestException as exc:
            raise MetricsError(f"Prometheus at {url} did not answer: {type(exc).__name__}") from None
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
        ) as exc:  # a 200 without data.result, not JSON
            raise MetricsError(
                f"Prometheus at {url} answered 200 without a result ({type(exc).__name__})"
            ) from None

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


def _settle(p: _Pending, value: dict[str, float | None] | None = None, exc: Exception | None = None) -> None:
    if p.future.done():
        return
    if exc is not None:
        p.future.set_exception(exc)
    else:
        p.future.set_result(value)


def _is_bad_query(exc: MetricsError) -> bool:
    return "refused the query" in str(exc)
