"""One pool's tick with the Kubernetes adapter replaced by an in-memory double and Prometheus served over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from burstpilot.operator.decisions import BudgetBook, dump_state, load_state
from burstpilot.operator.kube import PodSummary
from burstpilot.operator.prom import PrometheusSource, pool_queries
from burstpilot.operator.reconcile import PoolReconciler, Runtime, measured_cold_start, observation
from burstpilot.operator.state import decode
from burstpilot.operator.status import json_safe
from burstpilot.policy import PoolSpec, new_state
from tests.support.operator_fakes import NOW, SPEC, UID, FakeKube, FakePrometheus, prom_values


def run_tick(kube, prom_url, status=None, spec=None, budgets=None, name="llm", now=NOW):
    events = []
    body = {
        "metadata": {"generation": 3, "uid": UID},
        "spec": {**SPEC, **(spec or {})},
        "status": status or {},
    }
    body["spec"]["metrics"] = {**body["spec"]["metrics"], "prometheusUrl": prom_url}
    rt = Runtime(kube=kube, prom=PrometheusSource(linger_s=0.0), budgets=budgets or BudgetBook())
    rec = PoolReconciler(rt, "serving", name, lambda kind, reason, msg: events.append((kind, reason, msg)))
    interval = asyncio.run(rec.tick(body, now))
    return interval, events, kube.statuses[-1]


def cond(status, ctype):
    return next(c for c in status["conditions"] if c["type"] == ctype)


def test_a_burst_scales_the_target_up_and_reports_why():
    kube = FakeKube(replicas=1)
    with FakePrometheus(prom_values(requests=24)) as prom:  # 12 requests/s against ~1.5/s per replica
        interval, events, st = run_tick(kube, prom.url)
    assert interval == 2
    assert kube.scaled == [6]
    assert st["desiredReplicas"] == 6 and st["currentReplicas"] == 6 and st["observedGeneration"] == 3
    assert (
        st["lastDecision"]["reason"].startswith("scale up 1->6")
        and st["lastDecision"]["bound"] == "throughput"
    )
    assert st["forecast"]["rate"] >= 8 and st["forecast"]["quantile"] == 0.9
    assert cond(st, "Ready")["status"] == "True" and cond(st, "MetricsAvailable")["status"] == "True"
    assert cond(st, "ScalingLimited")["reason"] == "MaxReplicas"
    assert ("Normal", "ScaledUp") in [(k, r) for k, r, _ in events]
    state = decode(kube.configmaps["llm-burstpilot-state"]["data"])
    assert state["forecasting"] == SPEC["forecasting"] and state["state"]["forecaster"]["n_steps"] == 1
    assert "policyState" not in st


def test_counts_over_a_window_of_several_scrapes_are_scaled_to_the_tick():
    # A 10 s tick under the default 30 s scrape: a 10 s window would hold one sample or none (increase()
    # answers nothing); the queries look back 90 s, and 180 requests over them are 20 in the tick.
    kube = FakeKube(replicas=1)
    spec = {"scaling": {"intervalSeconds": 10}, "metrics": {"selector": {"servingpool": "llm"}}}
    values = prom_values(requests=20, interval=10.0, metrics=spec["metrics"])
    q = pool_queries(spec["metrics"], 90.0)
    assert values[q["requests"]] == pytest.approx(180.0)
    with FakePrometheus(values) as prom:
        _, _, st = run_tick(kube, prom.url, spec=spec)
        asked = " ".join(prom.queries)
    assert "[90s]" in asked and "[10s]" not in asked
    assert cond(st, "MetricsAvailable")["message"] == "counts over 90s, scaled to the tick"
    assert 2.0 <= st["forecast"]["rate"] < 4.0, st["forecast"]  # 2/s and the prior's margin, not 18/s
    pods = PodSummary(ready=2, starting=0, pending=0)
    o = observation(NOW, {**{k: 90.0 for k in q}, "lastSample": NOW - 1, "waiting": 7.0}, 2, pods, 10.0, 90.0)
    assert (o.requests, o.prompt_tokens, o.completed, o.preemptions) == pytest.approx(
        (10.0, 10.0, 10.0, 10.0)
    )
    assert o.waiting == 7.0 and o.kv_usage == 90.0 and o.window_s == 10.0  # gauges as read


def test_a_scrape_interval_the_schema_let_through_is_an_invalid_spec_naming_it():
    # the API server stored scrapeIntervalSeconds: 0 although the CRD's minimum is 0.1 (seen on the test cluster)
    kube = FakeKube(replicas=2)
    spec = {"metrics": {"selector": {"servingpool": "llm"}, "scrapeIntervalSeconds": 0}}
    with FakePrometheus(prom_values(requests=16)) as prom:
        _, _, st = run_tick(kube, prom.url, spec=spec)
    c = cond(st, "Ready")
    assert c["status"] == "False" and c["reason"] == "InvalidSpec", c
    assert "spec.metrics.scrapeIntervalSeconds" in c["message"] and kube.scaled == []


def test_the_raw_answers_are_logged_at_debug(caplog):
    # what each query returned, for a decision that looks wrong afterwards (the status holds only the result)
    kube = FakeKube(replicas=1)
    with (
        FakePrometheus(prom_values(requests=24)) as prom,
        caplog.at_level("DEBUG", "burstpilot.operator.reconcile"),
    ):
        run_tick(kube, prom.url)
    lines = [r.getMessage() for r in caplog.records if "Prometheus over" in r.getMessage()]
    assert (
        len(lines) == 1 and "serving/llm: Prometheus over 3s" in lines[0] and "'requests': 36.0" in lines[0]
    )


def test_the_saved_state_is_resumed_on_the_next_tick():
    kube = FakeKube(replicas=1)
    with FakePrometheus(prom_values(requests=2)) as prom:
        _, _, st1 = run_tick(kube, prom.url)
        _, _, st2 = run_tick(kube, prom.url, status=st1, now=NOW + 2)  # a new reconciler: a restart
    saved = decode(kube.configmaps["llm-burstpilot-state"]["data"])
    assert saved["state"]["forecaster"]["n_steps"] == 2
    # lastTransitionTime stays while a condition's status does not change (st2 is a merge patch: the status
    # the API server holds after it is st1 with st2 on top)
    assert cond({**st1, **st2}, "Ready")["lastTransitionTime"] == cond(st1, "Ready")["lastTransitionTime"]


def test_changed_forecasting_settings_start_a_fresh_forecaster():
    spec = PoolSpec.from_crd(SPEC, "llm")
    marked = new_state(spec)
    marked.forecaster["n_steps"] = 7  # a marker
    saved = dump_state(marked, {"model": "ewma"})
    assert load_state(saved, spec, SPEC["forecasting"]).forecaster["n_steps"] == 0
    assert load_state(saved, spec, {"model": "ewma"}).forecaster["n_steps"] == 7
    assert load_state({"state": "not a state"}, spec, SPEC["forecasting"]).forecaster["n_steps"] == 0
    no_forecaster = {"forecasting": {"model": "ewma"}, "state": {"version": 1}}
    assert load_state(no_forecaster, spec, {"model": "ewma"}).forecaster["n_steps"] == 0
    assert load_state(None, spec, SPEC["forecasting"]).forecaster["n_steps"] == 0


def test_missing_target_is_a_condition_not_an_exception():
    kube = FakeKube(replicas=None)
    with FakePrometheus({}) as prom:
        _, events, st = run_tick(kube, prom.url)
    assert cond(st, "Ready") | {"lastTransitionTime": None} == cond(st, "Ready") | {
        "lastTransitionTime": None
    }
    assert cond(st, "Ready")["status"] == "False" and cond(st, "Ready")["reason"] == "TargetNotFound"
    assert ("Warning", "TargetNotFound") in [(k, r) for k, r, _ in events]
    assert kube.scaled == []


def test_no_series_holds_the_replicas_and_says_so():
    kube = FakeKube(replicas=3, pods=PodSummary(ready=3))
    with FakePrometheus({}) as prom:
        _, events, st = run_tick(kube, prom.url)
    assert kube.scaled == []
    assert (
        cond(st, "MetricsAvailable")["status"] == "False"
        and cond(st, "MetricsAvailable")["reason"] == "NoSeries"
    )
    assert st["desiredReplicas"] == 3 and "metrics missing" in st["lastDecision"]["reason"]


def test_a_window_holding_too_few_samples_names_the_scrape_interval_to_fix():
    # Prometheus scrapes every 3 s where the pool states 1 s: the 3 s window holds one sample, increase()
    # answers nothing; the condition says why and which field to set, not "no samples"
    kube = FakeKube(replicas=3, pods=PodSummary(ready=3))
    values = prom_values(requests=4, scrape=3.0)
    q = pool_queries(SPEC["metrics"], 3.0)
    values = {k: v for k, v in values.items() if k not in (q["requests"], q["promptTokens"])}
    with FakePrometheus(values) as prom:
        _, _, st = run_tick(kube, prom.url)
    c = cond(st, "MetricsAvailable")
    assert c["status"] == "False" and c["reason"] == "WindowTooShort", c
    assert "window 3s holds 1 sample" in c["message"] and "scrapeIntervalSeconds (1 s)" in c["message"]
    assert kube.scaled == [] and "metrics missing" in st["lastDecision"]["reason"]


@pytest.mark.parametrize(("scrape", "warned"), [(1.0, False), (1.5, True)])
def test_fresh_metrics_warn_when_prometheus_scrapes_slower_than_the_pool_states(scrape, warned):
    kube = FakeKube(replicas=1)
    with FakePrometheus(prom_values(requests=4, scrape=scrape)) as prom:
        _, _, st = run_tick(kube, prom.url)
    c = cond(st, "MetricsAvailable")
    assert c["status"] == "True" and c["reason"] == "Fresh"
    assert ("scrapes about every 1.5 s, not the 1 s" in c["message"]) is warned, c["message"]


def test_pending_pods_make_scaling_limited():
    pods = PodSummary(
        ready=4, pending=2, pending_message="0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    )
    kube = FakeKube(replicas=6, pods=pods)
    with FakePrometheus(prom_values(requests=16)) as prom:
        _, _, st = run_tick(kube, prom.url)
    c = cond(st, "ScalingLimited")
    assert c["status"] == "True" and c["reason"] == "PodsPending" and "nvidia.com/gpu" in c["message"]
    assert st["pendingReplicas"] == 2 and st["readyReplicas"] == 4


def test_advisory_mode_reports_without_scaling():
    kube = FakeKube(replicas=1)
    with FakePrometheus(prom_values(requests=16)) as prom:
        _, events, st = run_tick(kube, prom.url, spec={"mode": "Advisory"})
    assert kube.scaled == []
    assert (
        st["desiredReplicas"] == 6 and st["currentReplicas"] == 1 and st["lastDecision"]["advisory"] is True
    )


def test_a_hand_edit_is_reported_and_taken_as_current():
    kube = FakeKube(replicas=4, pods=PodSummary(ready=4))
    with FakePrometheus(prom_values(requests=2)) as prom:
        _, events, st = run_tick(kube, prom.url, status={"desiredReplicas": 2})
    assert ("Warning", "ManualScale") in [(k, r) for k, r, _ in events]
    assert kube.scaled == [] and st["desiredReplicas"] == 4  # stabilization holds the edited count


def test_budget_group_caps_pools_sharing_it():
    book = BudgetBook()
    budget = {"budget": {"group": "h100", "gpus": 5, "priority": 0}}
    with FakePrometheus(prom_values(requests=16)) as prom:
        _, _, a = run_tick(FakeKube(replicas=1), prom.url, spec=budget, budgets=book, name="a")
        kube_b = FakeKube(replicas=1)
        _, _, b = run_tick(
            kube_b,
            prom.url,
            spec={**budget, "budget": {**budget["budget"], "priority": 1}},
            budgets=book,
            name="b",
        )
    assert a["desiredReplicas"] == 5  # alone in the group so far
    # b has the higher priority: everything but a's minimum replica
    assert b["desiredReplicas"] == 4 and kube_b.scaled == [4]
    assert (
        cond(b, "BudgetLimited")["status"] == "True"
        and cond(b, "BudgetLimited")["reason"] == "BudgetExhausted"
    )


def test_bearer_token_comes_from_the_named_secret():
    kube = FakeKube(replicas=1)
    kube.secrets["prom-token"] = {"token": "abc\n"}
    auth = {
        "metrics": {
            **SPEC["metrics"],
            "auth": {"bearerTokenSecretRef": {"name": "prom-token", "key": "token"}},
        }
    }
    with FakePrometheus(prom_values(requests=2)) as prom:
        run_tick(kube, prom.url, spec=auth)
    assert prom.auth == ["Bearer abc"]


def test_missing_secret_makes_metrics_unavailable():
    kube = FakeKube(replicas=1)
    auth = {"metrics": {**SPEC["metrics"], "auth": {"bearerTokenSecretRef": {"name": "absent"}}}}
    with FakePrometheus(prom_values(requests=2)) as prom:
        _, _, st = run_tick(kube, prom.url, spec=auth)
    assert cond(st, "MetricsAvailable")["reason"] == "AuthUnavailable" and prom.queries == []


def test_invalid_spec_is_a_condition():
    kube = FakeKube(replicas=1)
    with FakePrometheus({}) as prom:
        _, _, st = run_tick(kube, prom.url, spec={"profile": {"name": "no-such-profile"}})
    assert cond(st, "Ready")["reason"] == "InvalidSpec" and "no-such-profile" in cond(st, "Ready")["message"]


@pytest.mark.parametrize(
    ("samples", "expected"), [([], None), ([10, 20], None), ([10, 20, 30, 40, 50], 46.0)]
)
def test_cold_start_uses_a_high_quantile_once_measured(samples, expected):
    assert measured_cold_start(samples) == expected


def test_status_patch_has_no_nan():
    """A forecast without data can be NaN; the API server refuses NaN in JSON, so it goes out as null."""
    assert json_safe({"forecast": {"rate": float("nan"), "quantile": 0.9}, "c": [float("inf"), 1]}) == {
        "forecast": {"rate": None, "quantile": 0.9},
        "c": [None, 1],
    }


def test_a_state_saved_by_the_untyped_version_1_core_is_resumed_and_the_learned_capacity_reported():
    """A status.policyState written by the operator of the untyped decision core (tests/policy/data) is read,
    continued and saved with the typed state's new keys; status.capacity and the capacity gauges say what
    per-replica rate the decision sized with."""
    v1 = (Path(__file__).resolve().parents[1] / "policy" / "data" / "operator_state_v1.json").read_text()
    kube = FakeKube(replicas=1)
    with FakePrometheus(prom_values(requests=2)) as prom:
        _, _, st = run_tick(kube, prom.url, status={"policyState": v1})
    saved = decode(kube.configmaps["llm-burstpilot-state"]["data"])
    assert saved["state"]["forecaster"]["n_steps"] == 13  # 12 ticks of the old operator, then this one
    assert saved["state"]["capacity"]["factor"] == 1.0
    cap = st["capacity"]
    assert cap["source"] == "profile" and cap["factor"] == 1.0 and cap["note"]
    assert cap["ratePerReplica"] == pytest.approx(cap["modelRatePerReplica"]) and cap["ratePerReplica"] > 0
    # a version-1 state has no SLO budget: it starts fresh (no floor), and status.sloBudget says so
    assert saved["state"]["slo_budget"]["floor"] == 0 and saved["state"]["slo_budget"]["by_count"] == []
    assert st["sloBudget"]["floor"] == 0 and st["sloBudget"]["note"]
    rate = REGISTRY.get_sample_value(
        "burstpilot_operator_capacity_requests_per_second",
        {"namespace": "serving", "pool": "llm", "kind": "learned"},
    )
    assert rate == pytest.approx(cap["ratePerReplica"], rel=1e-3)
    assert REGISTRY.get_sample_value(
        "burstpilot_operator_capacity_factor", {"namespace": "serving", "pool": "llm"}
    ) == pytest.approx(1.0)
