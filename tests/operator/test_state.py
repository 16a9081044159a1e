"""The decision core's state in a ConfigMap per pool: round trip, exact resume, migration, failures."""

from __future__ import annotations

import asyncio
import json

from burstpilot.operator.prom import PrometheusSource
from burstpilot.operator.reconcile import BudgetBook, PoolReconciler, dump_state
from burstpilot.operator.state import POOL_LABEL, StateStore, configmap_name, labels
from burstpilot.policy import PoolSpec, new_state
from tests.support.operator_fakes import NOW, SPEC, UID, FakeKube, FakePrometheus, prom_values

CM = "llm-burstpilot-state"


def reconciler(kube, events=None):
    sink = events if events is not None else []
    return PoolReconciler(
        kube,
        PrometheusSource(linger_s=0.0),
        BudgetBook(),
        "serving",
        "llm",
        lambda kind, reason, msg: sink.append((kind, reason, msg)),
    )


def body(prom_url, status=None, uid=UID):
    spec = {**SPEC, "metrics": {**SPEC["metrics"], "prometheusUrl": prom_url}}
    return {"metadata": {"generation": 1, "uid": uid}, "spec": spec, "status": status or {}}


def saved(kube, name=CM):
    return json.loads(kube.configmaps[name]["data"]["policyState"])


def test_state_goes_to_an_owned_labelled_configmap_and_never_into_the_status():
    kube = FakeKube(replicas=1)
    rec = reconciler(kube)
    with FakePrometheus(prom_values(requests=4)) as prom:
        for i in range(3):
            asyncio.run(rec.tick(body(prom.url), NOW + 2 * i))
    cm = kube.configmaps[CM]
    assert cm["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "burstpilot.io/v1alpha1",
            "kind": "ServingPool",
            "name": "llm",
            "uid": UID,
            "controller": True,
        }
    ]
    assert cm["metadata"]["labels"][POOL_LABEL] == "llm"
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "burstpilot"
    assert saved(kube)["state"]["forecaster"]["n_steps"] == 3
    assert kube.configmap_writes == [("create", CM), ("patch", CM), ("patch", CM)]
    # every status patch is small and holds no state
    assert len(kube.statuses) == 3
    for patch in kube.statuses:
        assert "policyState" not in patch and "forecaster" not in json.dumps(patch)
        assert len(json.dumps(patch)) < 2500


def test_a_restart_resumes_exactly_where_the_last_tick_left_off():
    """Ticks of one reconciler, and the same ticks with a fresh reconciler (a restart) before each one,
    leave the same state in the ConfigMap: a restart loses nothing."""
    counts = [2, 3, 20, 24, 6, 2]
    docs = {}
    for restarts in (False, True):
        kube = FakeKube(replicas=1)
        rec = reconciler(kube)
        for i, n in enumerate(counts):
            if restarts:
                rec = reconciler(kube)
            with FakePrometheus(prom_values(requests=n)) as prom:
                asyncio.run(rec.tick(body(prom.url, {"desiredReplicas": kube.replicas}), NOW + 2 * i))
        docs[restarts] = kube.configmaps[CM]["data"]["policyState"]
    assert docs[True] == docs[False]
    assert json.loads(docs[True])["state"]["forecaster"]["n_steps"] == len(counts)


def test_status_policy_state_of_an_earlier_version_is_migrated_once_and_dropped():
    spec = PoolSpec.from_crd(SPEC, "llm")
    old = new_state(spec)
    old.forecaster["n_steps"] = 40  # a marker: the migrated forecaster continues from step 40
    old.forecaster["n_observed"] = 40
    status = {"policyState": dump_state(old, SPEC["forecasting"])}
    kube = FakeKube(replicas=1)
    rec = reconciler(kube)
    with FakePrometheus(prom_values(requests=2)) as prom:
        asyncio.run(rec.tick(body(prom.url, status), NOW))
        assert saved(kube)["state"]["forecaster"]["n_steps"] == 41
        assert kube.statuses[-1]["policyState"] is None  # merge patch: deletes the field
        # the watch may still deliver the old status: the ConfigMap wins, the field is not cleared twice
        asyncio.run(rec.tick(body(prom.url, status), NOW + 2))
        assert saved(kube)["state"]["forecaster"]["n_steps"] == 42
        assert "policyState" not in kube.statuses[-1]
        # a restarted operator reads the ConfigMap, not the stale status
        asyncio.run(reconciler(kube).tick(body(prom.url, status), NOW + 4))
    assert saved(kube)["state"]["forecaster"]["n_steps"] == 43


def test_a_configmap_of_an_earlier_pool_with_that_name_is_not_resumed():
    kube = FakeKube(replicas=1)
    with FakePrometheus(prom_values(requests=2)) as prom:
        for i in range(3):
            asyncio.run(reconciler(kube).tick(body(prom.url, uid="old-uid"), NOW + 2 * i))
        assert saved(kube)["state"]["forecaster"]["n_steps"] == 3
        asyncio.run(reconciler(kube).tick(body(prom.url), NOW + 6))
    assert saved(kube)["state"]["forecaster"]["n_steps"] == 1
    assert [o["uid"] for o in kube.configmaps[CM]["metadata"]["ownerReferences"]] == [UID]


def test_configmap_failures_keep_ticking_in_memory_and_keep_the_migration_source():
    spec = PoolSpec.from_crd(SPEC, "llm")
    status = {"policyState": dump_state(new_state(spec), SPEC["forecasting"])}
    kube = FakeKube(replicas=1)
    kube.configmap_error = 'configmaps "llm-burstpilot-state" is forbidden'
    events = []
    rec = reconciler(kube, events)
    with FakePrometheus(prom_values(requests=2)) as prom:
        asyncio.run(rec.tick(body(prom.url, status), NOW))
        asyncio.run(rec.tick(body(prom.url, status), NOW + 2))
        assert kube.configmaps == {} and len(kube.statuses) == 2 and kube.statuses[-1]["lastDecision"]
        assert all("policyState" not in p for p in kube.statuses)  # not dropped while unsaved
        assert [r for _, r, _ in events if r.startswith("State")] == ["StateNotSaved"]
        kube.configmap_error = None
        asyncio.run(rec.tick(body(prom.url, status), NOW + 4))
    # the in-memory state went on through the failures and is saved once the API server lets it
    assert saved(kube)["state"]["forecaster"]["n_steps"] == 3
    assert kube.statuses[-1]["policyState"] is None
    assert [r for _, r, _ in events if r.startswith("State")] == ["StateNotSaved", "StateSaved"]


def test_unchanged_state_is_not_written_again():
    kube = FakeKube()
    store = StateStore(kube, "serving", "llm")
    assert store.load(UID) is None
    assert store.save('{"a":1}', UID) is True
    assert store.save('{"a":1}', UID) is False
    assert store.save('{"a":2}', UID) is True
    assert kube.configmap_writes == [("create", CM), ("patch", CM)]
    again = StateStore(kube, "serving", "llm")
    assert again.load(UID) == '{"a":2}' and again.save('{"a":2}', UID) is False


def test_configmap_names_and_labels_fit_kubernetes_limits():
    assert configmap_name("llama") == "llama-burstpilot-state"
    long_a, long_b = "a" * 250, "a" * 249 + "b"
    assert len(configmap_name(long_a)) <= 253 and configmap_name(long_a) != configmap_name(long_b)
    assert configmap_name(long_a).endswith("-burstpilot-state")
    assert POOL_LABEL not in labels("x" * 64) and labels("x" * 63)[POOL_LABEL] == "x" * 63
