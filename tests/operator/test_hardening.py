"""Bad answers and hostile values: a malformed 200 from Prometheus, implausible samples, a tick that hangs,
credentials in errors, API failures on the scale and status patches. None may crash, hang, or scale down."""

from __future__ import annotations

import asyncio
import json

import pytest

from burstpilot.operator.handlers import bounded_tick
from burstpilot.operator.health import TickWatch
from burstpilot.operator.kube import StatusError, TargetError
from burstpilot.operator.prom import (
    Endpoint,
    MetricsError,
    PrometheusSource,
    pool_queries,
    printable_url,
    query_window,
    scrub,
)
from burstpilot.operator.reconcile import PoolReconciler, Runtime, invalid_sample
from tests.support.operator_fakes import NOW, SPEC, UID, FakeKube, FakePrometheus, prom_values

MALFORMED = {
    "no data": {"status": "success"},
    "data null": {"status": "success", "data": None},
    "result a dict": {"status": "success", "data": {"resultType": "vector", "result": {"a": 1}}},
    "result strings": {"status": "success", "data": {"resultType": "vector", "result": ["x", "y"]}},
    "not an object": ["status", "success"],
}


@pytest.mark.parametrize("label", list(MALFORMED))
def test_a_malformed_200_is_a_metrics_error_for_every_pool_of_the_batch(label):
    with FakePrometheus({}, answer=MALFORMED[label]) as prom:
        src = PrometheusSource(linger_s=0.05)
        ep = Endpoint(prom.url)

        async def main():
            pools = [src.fetch(ep, {"x": f"sum(m{i})"}) for i in range(3)]
            return await asyncio.wait_for(asyncio.gather(*pools, return_exceptions=True), 20)

        results = asyncio.run(main())
    assert all(isinstance(r, MetricsError) for r in results), results
    assert len(prom.queries) == 1


def test_a_bad_value_in_one_pools_series_concerns_that_pool_only():
    answer = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"burstpilot_query": "0.x"}, "value": [1, "4"]},
                {"metric": {"burstpilot_query": "1.x"}, "value": "garbage"},
            ],
        },
    }
    with FakePrometheus({}, answer=answer) as prom:
        src = PrometheusSource(linger_s=0.05)

        async def main():
            pools = [src.fetch(Endpoint(prom.url), {"x": f"sum(m{i})"}) for i in range(2)]
            return await asyncio.gather(*pools, return_exceptions=True)

        good, bad = asyncio.run(main())
    assert good == {"x": 4.0}
    assert isinstance(bad, MetricsError) and "no numeric value" in str(bad)


def rt_for(kube, **kw):
    return Runtime(kube=kube, prom=PrometheusSource(linger_s=0.0), **kw)


def tick(rec, prom_url, status=None, spec=None, now=NOW):
    body = {
        "metadata": {"generation": 1, "uid": UID},
        "spec": {**SPEC, **(spec or {})},
        "status": status or {},
    }
    body["spec"]["metrics"] = {**body["spec"]["metrics"], "prometheusUrl": prom_url}
    return asyncio.run(rec.tick(body, now))


def reconciler(kube, events, **kw):
    return PoolReconciler(rt_for(kube, **kw), "serving", "llm", lambda *e: events.append(e))


def cond(status, ctype):
    return next(c for c in status["conditions"] if c["type"] == ctype)


@pytest.mark.parametrize("requests", [3e15, 1e300, float("inf"), float("nan"), -1e18])
def test_an_implausible_request_count_is_an_invalid_sample_never_a_crash_or_a_scale_down(requests):
    kube = FakeKube(replicas=4)
    events = []
    rec = reconciler(kube, events)
    values = prom_values(requests=2)
    values[pool_queries(SPEC["metrics"], query_window(SPEC["metrics"], 2.0))["requests"]] = requests
    with FakePrometheus(values) as prom:
        tick(rec, prom.url)
    st = kube.statuses[-1]
    c = cond(st, "MetricsAvailable")
    assert c["status"] == "False" and c["reason"] == "InvalidSample" and "requests" in c["message"]
    assert kube.scaled == [] and st["desiredReplicas"] == 4  # Hold: never down on invalid data
    assert ("Warning", "InvalidSample") in [(k, r) for k, r, _ in events]
    assert cond(st, "Ready")["status"] == "True"


def test_a_missing_ttft_histogram_is_no_data_not_an_invalid_sample():
    assert invalid_sample({"requests": 4.0, "ttftP99": float("nan"), "tpotP99": float("inf")}, {}) is None
    assert "kvUsage" in invalid_sample({"kvUsage": float("inf")}, {})


def test_a_tick_that_hangs_is_cancelled_reported_and_the_loop_goes_on():
    kube = FakeKube(replicas=2)
    events = []
    rt = rt_for(kube, tick_timeout_s=0.2)
    rec = PoolReconciler(rt, "serving", "llm", lambda *e: events.append(e))

    async def hang(body, now):
        await asyncio.Event().wait()

    rec.tick = hang
    body = {"metadata": {"generation": 1, "uid": UID}, "spec": {**SPEC, "scaling": {"intervalSeconds": 1}}}
    interval = asyncio.run(bounded_tick(rec, rt, "serving/llm", body))
    assert interval == 1
    c = cond(kube.statuses[-1], "Ready")
    assert c["status"] == "False" and c["reason"] == "TickTimeout"
    assert ("Warning", "TickTimeout") in [(k, r) for k, r, _ in events]
    assert rt.watch.running == {} and rt.watch.ticks == 1


def test_the_liveness_watch_flags_a_tick_running_past_its_bound():
    now = [0.0]
    watch = TickWatch(clock=lambda: now[0])
    watch.started("a/x", 40.0)
    watch.started("a/y", 40.0)
    now[0] = 45.0
    assert watch.stuck() == []
    watch.finished("a/y")
    now[0] = 51.0
    assert watch.stuck() == ["a/x"]


def test_the_endpoint_never_prints_its_credentials():
    ep = Endpoint("https://user:hunter22@prom:9090", bearer_token="tok-abcdef", key_pem="-----BEGIN KEY-----")
    for text in (repr(ep), str(ep), f"{ep}", str([ep])):
        assert "tok-abcdef" not in text and "hunter22" not in text and "BEGIN KEY" not in text
        assert "prom:9090" in text and "bearer" in text
    assert printable_url("https://user:pw@h:1/x") == "https://h:1/x"


def test_prometheus_error_bodies_are_cut_and_scrubbed():
    body = "HTTP 401 (b'invalid token tok-abcdef for https://u:p@prom; Authorization: Bearer xyz123 token=s3cr3t')"
    out = scrub(body * 10, secrets=("tok-abcdef",))
    assert "tok-abcdef" not in out and "xyz123" not in out and "s3cr3t" not in out and "u:p@" not in out
    assert len(out) <= 240


def test_a_refused_query_condition_never_holds_the_token():
    kube = FakeKube(replicas=1)
    kube.secrets["prom-token"] = {"token": "tok-abcdef"}
    events = []
    rec = reconciler(kube, events)
    spec = {"metrics": {**SPEC["metrics"], "auth": {"bearerTokenSecretRef": {"name": "prom-token"}}}}
    spec["metrics"]["queries"] = {"requests": "bad(x"}  # the fake's 400 echoes the Authorization header
    with FakePrometheus(prom_values(requests=2)) as prom:
        tick(rec, prom.url, spec=spec)
    text = json.dumps(kube.statuses) + json.dumps(events)
    assert "refused the query" in text and "Authorization" in text  # the error is shown ...
    assert "tok-abcdef" not in text  # ... without the token


def test_a_failing_scale_patch_is_a_condition_and_no_false_hand_edit_after():
    kube = FakeKube(replicas=1)
    events = []
    rec = reconciler(kube, events)
    kube.scale_error = TargetError(
        "ScaleFailed", "patching the scale of llm: 429 Too Many Requests (after 3 retries)"
    )
    with FakePrometheus(prom_values(requests=16)) as prom:
        tick(rec, prom.url)
        c = cond(kube.statuses[-1], "Ready")
        assert c["status"] == "False" and c["reason"] == "ScaleFailed" and "429" in c["message"]
        assert kube.statuses[-1]["currentReplicas"] == 1
        kube.scale_error = None
        tick(rec, prom.url, status=kube.statuses[-1], now=NOW + 2)
    assert kube.scaled == [6] and cond(kube.statuses[-1], "Ready")["status"] == "True"
    assert "ManualScale" not in [r for _, r, _ in events]


def test_a_failing_status_patch_warns_once_and_catches_up():
    kube = FakeKube(replicas=1)
    events = []
    rec = reconciler(kube, events)
    kube.status_error = StatusError("patching the status: 500 Internal Server Error")
    with FakePrometheus(prom_values(requests=2)) as prom:
        tick(rec, prom.url)
        tick(rec, prom.url, now=NOW + 2)
        assert [r for _, r, _ in events].count("StatusNotSaved") == 1 and kube.statuses == []
        kube.status_error = None
        tick(rec, prom.url, now=NOW + 4)
    assert "StatusSaved" in [r for _, r, _ in events]
    assert kube.statuses[-1]["lastDecision"] and cond(kube.statuses[-1], "Ready")["status"] == "True"


def test_a_pool_deleted_mid_tick_ends_quietly():
    kube = FakeKube(replicas=1)
    events = []
    rec = reconciler(kube, events)
    kube.status_error = StatusError("patching the status: 404 Not Found", gone=True)
    with FakePrometheus(prom_values(requests=2)) as prom:
        tick(rec, prom.url)
    assert "StatusNotSaved" not in [r for _, r, _ in events]


def test_killed_right_after_a_scale_the_restarted_operator_neither_scales_again_nor_sees_a_hand_edit():
    kube = FakeKube(replicas=1)
    events = []
    with FakePrometheus(prom_values(requests=16)) as prom:
        first = reconciler(kube, events)
        kube.status_error = StatusError("connection refused")  # dies before its status is written
        tick(first, prom.url)
        assert kube.scaled == [6] and kube.statuses == []
        kube.status_error = None
        restarted = reconciler(kube, events)  # a new process: only the ConfigMap and the target remain
        tick(restarted, prom.url, now=NOW + 2)
    assert kube.scaled == [6], "no second scale"
    assert "ManualScale" not in [r for _, r, _ in events]
    assert kube.statuses[-1]["desiredReplicas"] == 6 and kube.statuses[-1]["currentReplicas"] == 6


def test_a_lost_lease_stops_writes_within_the_tick():
    kube = FakeKube(replicas=1)
    events = []
    rec = reconciler(kube, events, may_act=lambda: False)
    with FakePrometheus(prom_values(requests=16)) as prom:
        tick(rec, prom.url)
    assert kube.scaled == [] and kube.statuses == [] and kube.configmap_writes == []
