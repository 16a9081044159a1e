"""Playing well with other autoscalers (an HPA, a KEDA ScaledObject on the same target), and replica profiles
given in a ConfigMap or inline."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.operator.conflicts import ConflictFinder, scaling
from burstpilot.operator.decisions import ProfileCache, read_spec
from burstpilot.operator.kube import Autoscaler, TargetError
from burstpilot.operator.prom import PrometheusSource
from burstpilot.operator.reconcile import PoolReconciler, Runtime
from tests.support.operator_fakes import NOW, SPEC, UID, FakeKube, FakePrometheus, prom_values

HPA = Autoscaler("HorizontalPodAutoscaler", "llm-hpa", "Deployment", "llm")
KEDA_HPA = Autoscaler(
    "HorizontalPodAutoscaler", "keda-hpa-llm-so", "Deployment", "llm", managed_by_keda="llm-so"
)
SCALED_OBJECT = Autoscaler("ScaledObject", "llm-so", "Deployment", "llm")


def run(kube, prom_url, spec=None, events=None, status=None, rt=None, now=NOW):
    events = events if events is not None else []
    rt = rt or Runtime(kube=kube, prom=PrometheusSource(linger_s=0.0))
    rec = PoolReconciler(rt, "serving", "llm", lambda *e: events.append(e))
    body = {
        "metadata": {"generation": 1, "uid": UID},
        "spec": {**SPEC, **(spec or {})},
        "status": status or {},
    }
    body["spec"]["metrics"] = {**body["spec"]["metrics"], "prometheusUrl": prom_url}
    asyncio.run(rec.tick(body, now))
    return events, kube.statuses[-1]


def cond(status, ctype):
    return next(c for c in status["conditions"] if c["type"] == ctype)


@pytest.mark.parametrize(
    ("others", "named"),
    [
        ([HPA], "HorizontalPodAutoscaler llm-hpa"),
        ([KEDA_HPA], "made by KEDA for ScaledObject llm-so"),
        ([SCALED_OBJECT, KEDA_HPA], "ScaledObject llm-so"),
    ],
)
def test_a_target_another_autoscaler_scales_is_left_alone(others, named):
    kube = FakeKube(replicas=1)
    kube.others = others
    with FakePrometheus(prom_values(requests=16)) as prom:
        events, st = run(kube, prom.url)
    assert kube.scaled == []
    c = cond(st, "Conflict")
    assert c["status"] == "True" and c["reason"] == "OtherAutoscaler" and named in c["message"]
    assert "mode: Advisory" in c["message"]  # how to resolve it
    assert cond(st, "Ready")["reason"] == "Conflict"
    assert st["desiredReplicas"] == 6 and st["currentReplicas"] == 1  # still decides and reports
    warnings = [(r, m) for k, r, m in events if k == "Warning"]
    assert any(r == "OtherAutoscaler" and named in m for r, m in warnings)
    assert "ManualScale" not in [r for r, _ in warnings]  # the other controller's counts are not hand edits


def test_autoscalers_of_other_targets_are_no_conflict():
    kube = FakeKube(replicas=1)
    kube.others = [
        Autoscaler("HorizontalPodAutoscaler", "x", "Deployment", "other"),
        Autoscaler("HorizontalPodAutoscaler", "y", "StatefulSet", "llm"),
    ]
    with FakePrometheus(prom_values(requests=16)) as prom:
        _, st = run(kube, prom.url)
    assert kube.scaled == [6] and cond(st, "Conflict")["status"] == "False"


def test_a_ScaledObject_and_the_HPA_KEDA_made_for_it_count_once():
    assert scaling([SCALED_OBJECT, KEDA_HPA, HPA], "Deployment", "llm") == [SCALED_OBJECT, HPA]


def test_the_conflict_listing_is_shared_and_survives_a_failed_listing():
    now = [0.0]
    calls = []

    def listing(ns):
        calls.append(ns)
        if len(calls) > 1:
            raise TargetError("ConflictUnknown", "listing HorizontalPodAutoscalers: 503")
        return [HPA]

    finder = ConflictFinder(clock=lambda: now[0])
    assert finder.others("serving", listing) == [HPA]
    assert finder.others("serving", listing) == [HPA] and calls == ["serving"]  # cached
    now[0] = 31.0
    assert finder.others("serving", listing) == [HPA] and len(calls) == 2  # listing failed: last known
    assert finder.others("batch", listing) is None  # never listed


def profile_doc():
    from importlib import resources

    text = (resources.files("burstpilot.sim") / "profiles" / "h100-llama3-8b.json").read_text()
    doc = json.loads(text)
    doc["name"] = "measured-llama"
    doc["provenance"] = {"measured_with": "burstpilot profile measure", "target": "http://vllm:8000"}
    return doc


def test_a_profile_from_a_configmap_and_inline_size_like_the_shipped_one():
    doc = profile_doc()
    kube = FakeKube()
    kube.configmaps["llama-profile"] = {
        "metadata": {"name": "llama-profile"},
        "data": {"profile.json": json.dumps(doc)},
    }
    cache = ProfileCache()
    base = {"maxReplicas": 8, "profile": {"name": "h100-llama3-8b"}}
    shipped = read_spec(base, "p", "serving", cache, kube.get_configmap)
    by_ref = read_spec(
        {**base, "profile": {"configMapRef": {"name": "llama-profile"}}},
        "p",
        "serving",
        cache,
        kube.get_configmap,
    )
    inline = read_spec(
        {**base, "profile": {"inline": doc, "capacityScale": 0.5}}, "p", "serving", cache, kube.get_configmap
    )
    assert by_ref.profile == inline.profile == "measured-llama" and inline.capacity_scale == 0.5
    assert by_ref.profile_obj.step == shipped.profile_obj.step
    # the same object every tick (the policy caches capacity per profile object)
    again = read_spec(
        {**base, "profile": {"inline": copy.deepcopy(doc)}}, "p", "serving", cache, kube.get_configmap
    )
    assert again.profile_obj is inline.profile_obj


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (
            {"configMapRef": {"name": "absent"}},
            "ConfigMap serving/absent key profile.json: no such ConfigMap",
        ),
        ({"configMapRef": {"name": "llama-profile", "key": "other.json"}}, "no such key"),
        ({"configMapRef": {"name": "broken"}}, "not valid JSON"),
        ({"inline": {"name": "x"}}, "spec.profile.inline"),
    ],
)
def test_a_bad_profile_reference_names_the_field(profile, message):
    kube = FakeKube()
    kube.configmaps["llama-profile"] = {"data": {"profile.json": json.dumps(profile_doc())}}
    kube.configmaps["broken"] = {"data": {"profile.json": "{nope"}}
    with pytest.raises(BurstpilotError, match=message.replace(".", r"\.")):
        read_spec({"maxReplicas": 4, "profile": profile}, "p", "serving", ProfileCache(), kube.get_configmap)


def test_a_profile_configmap_is_read_again_after_its_ttl_and_kept_when_the_api_fails():
    now = [0.0]
    doc = profile_doc()
    kube = FakeKube()
    kube.configmaps["llama-profile"] = {"data": {"profile.json": json.dumps(doc)}}
    cache = ProfileCache(clock=lambda: now[0])
    spec = {"maxReplicas": 4, "profile": {"configMapRef": {"name": "llama-profile"}}}
    first = read_spec(spec, "p", "serving", cache, kube.get_configmap).profile_obj
    doc["max_num_seqs"] = 64
    kube.configmaps["llama-profile"]["data"]["profile.json"] = json.dumps(doc)
    assert read_spec(spec, "p", "serving", cache, kube.get_configmap).profile_obj is first  # within the TTL
    now[0] = 61.0
    second = read_spec(spec, "p", "serving", cache, kube.get_configmap).profile_obj
    assert second.max_num_seqs == 64
    kube.configmap_error = "503 Service Unavailable"
    now[0] = 122.0
    assert read_spec(spec, "p", "serving", cache, kube.get_configmap).profile_obj is second


def test_an_invalid_profile_is_a_condition():
    kube = FakeKube(replicas=1)
    with FakePrometheus(prom_values(requests=2)) as prom:
        _, st = run(kube, prom.url, spec={"profile": {"configMapRef": {"name": "absent"}}})
    c = cond(st, "Ready")
    assert c["status"] == "False" and c["reason"] == "InvalidSpec" and "serving/absent" in c["message"]


def test_a_lowered_max_replicas_applies_at_once():
    kube = FakeKube(replicas=6)
    with FakePrometheus(prom_values(requests=16)) as prom:
        _, st = run(kube, prom.url, spec={"maxReplicas": 3}, status={"desiredReplicas": 6})
    assert (
        kube.scaled == [3]
        and st["desiredReplicas"] == 3
        and "maxReplicas 3 applies at once" in st["lastDecision"]["reason"]
    )
