"""Prometheus adapter: PromQL templating, batching across pools, and failure handling, over real HTTP."""

from __future__ import annotations

import asyncio
import math
import socket

import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.operator.kube import PodSummary
from burstpilot.operator.prom import (
    DEFAULT_QUERIES,
    Endpoint,
    MetricsError,
    PrometheusSource,
    combine,
    format_window,
    pool_queries,
    query_window,
    selector_matchers,
    split,
)
from burstpilot.operator.reconcile import observation
from tests.support.operator_fakes import FakePrometheus


def test_selector_matchers_escape_values():
    assert selector_matchers(None) == "{}"
    assert selector_matchers({"pool": 'a"b', "ns": "x\\y"}) == '{ns="x\\\\y",pool="a\\"b"}'


def test_windows_are_promql_durations():
    assert format_window(10) == "10s"
    assert format_window(2.5) == "2500ms"
    assert format_window(0.1) == "1s"


@pytest.mark.parametrize(
    ("metrics", "interval", "window"),
    [
        ({}, 10, 90),  # the default 30 s scrape: three scrapes (two samples with one missed)
        ({"scrapeIntervalSeconds": 15}, 10, 45),
        ({"scrapeIntervalSeconds": 15}, 60, 75),  # a tick longer than a scrape: the tick and one scrape more
        ({"scrapeIntervalSeconds": 1}, 2, 3),
        ({"scrapeIntervalSeconds": 1, "windowSeconds": 45}, 10, 45),  # set outright
    ],
)
def test_the_counting_window_holds_two_samples_and_overlaps_the_last_tick(metrics, interval, window):
    assert query_window(metrics, interval) == window


@pytest.mark.parametrize(
    ("metrics", "field"),
    [
        ({"scrapeIntervalSeconds": 0}, "spec.metrics.scrapeIntervalSeconds"),
        ({"scrapeIntervalSeconds": "15s"}, "spec.metrics.scrapeIntervalSeconds"),
        ({"windowSeconds": True}, "spec.metrics.windowSeconds"),
        ({"windowSeconds": 1e9}, "spec.metrics.windowSeconds"),
    ],
)
def test_a_bad_scrape_interval_or_window_is_refused_by_its_field(metrics, field):
    with pytest.raises(BurstpilotError, match=field):
        query_window(metrics, 10)


def test_pool_queries_fill_templates_and_take_overrides():
    q = pool_queries(
        {"selector": {"servingpool": "llm"}, "queries": {"waiting": "sum(my_queue{selector})"}}, 4
    )
    assert set(q) == set(DEFAULT_QUERIES)
    assert q["waiting"] == 'sum(my_queue{servingpool="llm"})'
    assert q["promptTokens"] == 'sum(increase(vllm:prompt_tokens_total{servingpool="llm"}[4s]))'
    assert all("{selector}" not in v and "{window}" not in v for v in q.values())


def test_the_slo_violation_query_interpolates_between_bucket_bounds_and_takes_an_override():
    q = pool_queries({"selector": {"servingpool": "llm"}}, 10, ttft_s=2.0, tpot_s=0.1)
    v = q["sloViolations"]
    # TTFT 2 s lies between vLLM's 1.0 and 2.5 bounds: 2/3 of the way; TPOT 0.1 s is a bound itself
    assert 'vllm:time_to_first_token_seconds_bucket{servingpool="llm",le=~"1(\\\\.0)?"}[10s]' in v
    assert 'le=~"2\\\\.5"' in v and "* 0.666667" in v
    assert 'vllm:request_time_per_output_token_seconds_bucket{servingpool="llm",le=~"0\\\\.1"}[10s]' in v
    assert " > " in v and "{window}" not in v and "{selector}" not in v
    # without SLO targets there is no such query; an override fills the SLO's targets in
    assert "sloViolations" not in pool_queries({}, 10)
    o = pool_queries(
        {"queries": {"sloViolations": "sum(late{selector}[{window}]) > {ttftSeconds}"}}, 10, 2.0, 0.1
    )
    assert o["sloViolations"] == "sum(late{}[10s]) > 2"


def test_combine_tags_every_query_and_split_reads_them_back():
    promql = combine({"a": "sum(x)", "b": "avg(y)"})
    assert (
        promql == 'label_replace((sum(x)), "burstpilot_query", "a", "", "") or '
        'label_replace((avg(y)), "burstpilot_query", "b", "", "")'
    )
    result = [
        {"metric": {"burstpilot_query": "a"}, "value": [1.0, "3"]},
        {"metric": {"burstpilot_query": "b", "model": "m1"}, "value": [1.0, "1.5"]},
        {"metric": {"burstpilot_query": "b", "model": "m2"}, "value": [1.0, "2"]},
        {"metric": {"burstpilot_query": "c"}, "value": [1.0, "NaN"]},
    ]
    out = split(result, ["a", "b", "c", "d"])
    assert out["a"] == 3.0 and out["b"] == 3.5 and out["d"] is None
    assert math.isnan(out["c"])  # kept: the reconciler decides what a non-finite sample means


def test_pools_ticking_together_share_one_query():
    with FakePrometheus({"sum(a)": 1.0, "sum(b)": 2.0, "sum(c)": 3.0}) as prom:
        src = PrometheusSource(linger_s=0.05)
        ep = Endpoint(prom.url, bearer_token="s3cret")

        async def main():
            return await asyncio.gather(
                src.fetch(ep, {"x": "sum(a)", "y": "sum(b)"}),
                src.fetch(ep, {"x": "sum(c)", "y": "sum(missing)"}),
            )

        one, two = asyncio.run(main())
    assert one == {"x": 1.0, "y": 2.0} and two == {"x": 3.0, "y": None}
    assert len(prom.queries) == 1
    assert prom.auth == ["Bearer s3cret"]


def test_one_bad_pool_does_not_blind_the_others():
    with FakePrometheus({"sum(a)": 1.0}) as prom:
        src = PrometheusSource(linger_s=0.05)
        ep = Endpoint(prom.url)

        async def main():
            return await asyncio.gather(
                src.fetch(ep, {"x": "sum(a)"}), src.fetch(ep, {"x": "bad(query"}), return_exceptions=True
            )

        good, bad = asyncio.run(main())
    assert good == {"x": 1.0}
    assert isinstance(bad, MetricsError) and "refused the query" in str(bad)
    assert len(prom.queries) == 3  # the batch, then each pool on its own


def test_unreachable_prometheus_is_a_metrics_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = PrometheusSource(linger_s=0.0, timeout_s=2.0)
    with pytest.raises(MetricsError, match="did not answer"):
        asyncio.run(src.fetch(Endpoint(f"http://127.0.0.1:{port}"), {"x": "sum(a)"}))


def test_a_large_batch_is_split_into_requests_under_the_length_limit():
    values = {f"sum(metric_{i})": float(i) for i in range(12)}
    with FakePrometheus(values) as prom:
        src = PrometheusSource(linger_s=0.05, max_query_chars=300)
        ep = Endpoint(prom.url)

        async def main():
            return await asyncio.gather(*(src.fetch(ep, {"x": f"sum(metric_{i})"}) for i in range(12)))

        results = asyncio.run(main())
    assert [r["x"] for r in results] == [float(i) for i in range(12)]
    assert 1 < len(prom.queries) < 12
    assert all(len(q) <= 300 for q in prom.queries)


def test_the_slo_violation_count_reaches_the_decision_cores_observation_only_with_fresh_metrics():
    values = {"requests": 40.0, "completed": 38.0, "sloViolations": 3.0, "lastSample": 99.0}
    obs = observation(100.0, values, 2, PodSummary(ready=2), 10.0)
    assert obs.slo_violations == 3.0 and obs.completed == 38.0
    stale = observation(100.0, {**values, "lastSample": None}, 2, PodSummary(ready=2), 10.0)
    assert stale.slo_violations is None  # no fresh sample: the budget does not move
