"""The decision core's state in a ConfigMap per pool: round trip, exact resume, migration, failures."""

from __future__ import annotations

import asyncio
import json

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from burstpilot.operator.decisions import dump_state
from burstpilot.operator.prom import PrometheusSource
from burstpilot.operator.reconcile import PoolReconciler, Runtime
from burstpilot.operator.state import (
    POOL_LABEL,
    StateFormatError,
    StateStore,
    configmap_name,
    decode,
    encode,
    labels,
)
from burstpilot.policy import PoolSpec, new_state
from tests.support.operator_fakes import NOW, SPEC, UID, FakeKube, FakePrometheus, prom_values

CM = "llm-burstpilot-state"


def reconciler(kube, events=None):
    sink = events if events is not None else []
    rt = Runtime(kube=kube, prom=PrometheusSource(linger_s=0.0))
    return PoolReconciler(rt, "serving", "llm", lambda kind, reason, msg: sink.append((kind, reason, msg)))


def body(prom_url, status=None, uid=UID):
    spec = {**SPEC, "metrics": {**SPEC["metrics"], "prometheusUrl": prom_url}}
    return {"metadata": {"generation": 1, "uid": uid}, "spec": spec, "status": status or {}}


def saved(kube, name=CM):
    return decode(kube.configmaps[name]["data"])


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
        docs[restarts] = kube.configmaps[CM]["data"]
    assert docs[True] == docs[False]
    assert decode(docs[True])["state"]["forecaster"]["n_steps"] == len(counts)


def test_status_policy_state_of_an_earlier_version_is_migrated_once_and_dropped():
    spec = PoolSpec.from_crd(SPEC, "llm")
    old = new_state(spec)
    old.forecaster["n_steps"] = 40  # a marker: the migrated forecaster continues from step 40
    old.forecaster["n_observed"] = 40
    status = {"policyState": json.dumps(dump_state(old, SPEC["forecasting"]))}
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
    status = {"policyState": json.dumps(dump_state(new_state(spec), SPEC["forecasting"]))}
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
    assert store.save({"a": 1}, UID) is True
    assert store.save({"a": 1}, UID) is False
    assert store.save({"a": 2}, UID) is True
    assert kube.configmap_writes == [("create", CM), ("patch", CM)]
    again = StateStore(kube, "serving", "llm")
    assert again.load(UID) == {"a": 2} and again.save({"a": 2}, UID) is False


def test_configmap_names_and_labels_fit_kubernetes_limits():
    assert configmap_name("llama") == "llama-burstpilot-state"
    long_a, long_b = "a" * 250, "a" * 249 + "b"
    assert len(configmap_name(long_a)) <= 253 and configmap_name(long_a) != configmap_name(long_b)
    assert configmap_name(long_a).endswith("-burstpilot-state")
    assert POOL_LABEL not in labels("x" * 64) and labels("x" * 63)[POOL_LABEL] == "x" * 63


def ring_doc(count: int, size: int = 10, width: int = 3) -> dict:
    start = max(0, count - size)
    rows = [[float(i), i / 7, None][:width] for i in range(start, count)]
    return {
        "forecasting": {"model": "burst"},
        "state": {"forecaster": {"ring": {"size": size, "count": count, "rows": rows}}},
    }


def test_a_tick_writes_only_the_head_and_the_chunk_it_adds_to():
    previous = encode(ring_doc(21))  # rows 11..20: chunks 2 (rows 8-11) .. 5 (rows 20-23)
    data = encode(ring_doc(22), previous)  # rows 12..21
    changed = {k for k in data if previous.get(k) != data[k]} | {k for k in previous if k not in data}
    # the head, the chunk row 21 joins, and the chunk whose last row (row 11) left the ring
    assert changed == {
        "policyState",
        "ring.state.forecaster.ring.0000000005",
        "ring.state.forecaster.ring.0000000002",
    }
    assert "ring.state.forecaster.ring.0000000002" not in data
    assert decode(data) == ring_doc(22)


def test_a_state_with_a_missing_chunk_is_refused_not_misread():
    data = encode(ring_doc(21))
    del data["ring.state.forecaster.ring.0000000003"]
    with pytest.raises(StateFormatError, match="missing"):
        decode(data)


def test_a_document_without_rings_is_written_whole_and_format_1_is_read_as_it_is():
    assert decode(encode({"a": [1, 2]})) == {"a": [1, 2]}
    old = {"forecasting": {}, "state": {"x": 1}}
    assert decode({"policyState": json.dumps(old)}) == old


def test_the_state_written_per_tick_is_small_at_a_15s_interval():
    """The forecaster's ring (its calibration window) is the bulk of the state: a tick adds one row to it."""
    spec = {**SPEC, "forecasting": {"model": "burst", "stepSeconds": 15, "quantile": 0.9}}
    spec["scaling"] = {"intervalSeconds": 15, "scaleDownStabilizationSeconds": 300}
    kube = FakeKube(replicas=2)
    rec = reconciler(kube)
    ticks = 150  # past the ring's 120 rows: chunks are deleted as well as added
    with FakePrometheus({}) as prom:
        for i in range(ticks):
            prom.values.clear()
            prom.values.update(prom_values(requests=30 + (7 * i) % 13, interval=15.0, age=1.0 - 15 * i))
            b = body(prom.url)
            b["spec"] = {**spec, "metrics": b["spec"]["metrics"]}
            asyncio.run(rec.tick(b, NOW + 15 * i))
    doc = saved(kube)
    assert doc["state"]["forecaster"]["n_steps"] == ticks
    full = len(json.dumps(kube.configmaps[CM]["data"]))
    later = rec.store.bytes_written - first_write_bytes(kube, rec)
    assert full > 20_000 and later / (ticks - 1) < 4096, (full, later / (ticks - 1))


def first_write_bytes(kube, rec) -> int:
    return len(json.dumps(kube.configmap_bodies[0], separators=(",", ":")))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    size=st.integers(1, 40),
    counts=st.lists(st.integers(0, 200), min_size=1, max_size=6),
    width=st.integers(1, 4),
)
def test_any_sequence_of_ring_states_round_trips_through_the_deltas(size, counts, width):
    previous = None
    for count in sorted(counts):
        doc = ring_doc(count, size, width)
        data = encode(doc, previous)
        assert decode(data) == doc
        previous = data
