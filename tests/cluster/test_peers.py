"""The side-by-side benchmark's pieces without a cluster (burstpilot.operator.cluster.peers): the replica, the
workloads and their shape, the controllers' configuration from the profile, and the measurements."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from burstpilot.errors import BurstpilotError
from burstpilot.operator.cluster import peers
from burstpilot.operator.cluster.controlplane import (
    COLD_START_ANNOTATION,
    READINESS_ANNOTATION,
    ControlPlane,
    kwok_stages,
)
from burstpilot.sim import load_profile

AZURE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "azure-llm-2023"


def test_the_replica_is_the_base_profile_slowed_down(tmp_path: Path):
    base = load_profile(peers.BASE_PROFILE)
    slow = load_profile(peers.write_profile(tmp_path / "p.json"))
    assert slow.decode_ms(32, 32 * 1200) == pytest.approx(peers.SLOWDOWN * base.decode_ms(32, 32 * 1200))
    assert slow.prefill_ms(2000) == pytest.approx(peers.SLOWDOWN * base.prefill_ms(2000))
    assert slow.kv_capacity_tokens == base.kv_capacity_tokens and slow.max_num_seqs == base.max_num_seqs
    assert slow.cold_start_s == peers.COLD_START_S
    s = peers.Sizing.from_profile(tmp_path / "p.json", 1100, 220)
    # a few replicas carry a few requests per second: what a laptop's load generator can send
    assert 1.0 < s.replica_rate < 2.5
    assert s.rate_threshold == pytest.approx(s.replica_rate * peers.TARGET_UTILIZATION, abs=1e-3)
    assert 5 < s.concurrency_threshold < s.replica_rate * 60  # Little's law at under a minute in the replica


def test_the_designed_rate_has_two_bursts_shorter_than_the_cold_start_and_a_slow_rise():
    cold = peers.COLD_START_S
    phases = peers.designed_phases(720.0, base=2.0, burst=8.0, peak=7.0, cold_start_s=cold)
    assert sum(p.seconds for p in phases) == pytest.approx(720.0)
    assert all(
        b.start_s == pytest.approx(a.start_s + a.seconds) for a, b in zip(phases, phases[1:], strict=False)
    )
    bursts = [p for p in phases if p.kind == "burst"]
    assert len(bursts) == 2 and all(p.seconds < cold for p in bursts)
    (rise,) = [p for p in phases if p.kind == "rise"]
    assert rise.seconds >= 3 * cold and rise.rate_end > 3 * rise.rate
    assert peers.phase_rate(phases, np.array([rise.start_s + rise.seconds / 2]))[0] == pytest.approx(4.5)
    with pytest.raises(BurstpilotError, match="too short"):
        peers.designed_phases(200.0, 2.0, 8.0, 7.0, cold)


def test_the_burstgpt_shaped_workload_follows_the_design_with_the_presets_texture():
    trace, phases = peers.burstgpt_shaped(720.0, base=2.0, burst=8.0, peak=7.0, cold_start_s=60.0, seed=1)
    t = trace.arrival_s
    assert t.min() >= 0 and t.max() < 720.0 and not trace.failed.any()
    for p in phases:
        n = np.sum((t >= p.start_s) & (t < p.start_s + p.seconds))
        expected = (p.rate + p.rate_end) / 2 * p.seconds
        assert abs(n - expected) < 0.35 * expected + 15, (p, n, expected)
    for b in (p for p in phases if p.kind == "burst"):  # each burst stands out of the minute before it
        inside = np.sum((t >= b.start_s) & (t < b.start_s + b.seconds)) / b.seconds
        before = np.sum((t >= b.start_s - 60) & (t < b.start_s)) / 60
        assert inside > 2.5 * before
    # BurstGPT's lengths (a long tail of prompts, capped), not a fixed size; and burstier than Poisson
    assert trace.request_tokens.max() == peers.PROMPT_CAP and trace.response_tokens.max() <= peers.OUTPUT_CAP
    assert 600 < trace.request_tokens.mean() < 1600 and np.median(trace.response_tokens) > 50
    base = [p for p in phases if p.kind == "base"][1]
    gaps = np.diff(t[(t >= base.start_s) & (t < base.start_s + base.seconds)])
    assert gaps.std() / gaps.mean() > 1.1


@pytest.mark.skipif(
    not (AZURE / "AzureLLMInferenceTrace_conv.csv").exists(), reason="shared data not present"
)
def test_a_real_slice_is_replay_scaled_to_the_rate_and_span():
    trace = peers.real_slice(AZURE / "AzureLLMInferenceTrace_conv.csv", 3.5, 600.0, 1980.0)
    assert len(trace) == 2100 and trace.arrival_s.min() >= 0 and trace.arrival_s.max() < 600.0
    assert "x0." in trace.source  # stretched: the real trace runs at about 7 requests/s there
    with pytest.raises(BurstpilotError, match="fewer than"):
        peers.real_slice(AZURE / "AzureLLMInferenceTrace_conv.csv", 3.5, 6000.0, 3000.0)


def test_initial_replicas_are_what_the_first_minute_needs():
    sizing = peers.Sizing(1000, 200, 1.5, 20, 1.3, 20)
    trace = peers._cap(
        peers.make_trace(np.linspace(0, 59, 160), [100] * 160, [10] * 160), "t"
    )  # 160 in the first minute: 2.7/s over 1.3/s -> 3
    assert peers.initial_replicas(trace, sizing) == 3


def test_each_arms_objects_as_its_users_write_them(tmp_path: Path):
    sizing = peers.Sizing(1000, 200, 1.5, 20.0, 1.3, 20.0)
    prom = "http://127.0.0.1:9090"
    (pool,) = peers.arm_objects("burstpilot", "ns", "llm", tmp_path / "p.json", prom, sizing)
    assert pool["kind"] == "ServingPool" and "mode" not in pool["spec"]
    assert pool["spec"]["coldStartSeconds"] == peers.COLD_START_S and "scaling" not in pool["spec"]
    (keda,) = peers.arm_objects("keda", "ns", "llm", tmp_path / "p.json", prom, sizing)
    trig = keda["spec"]["triggers"][0]
    assert trig["metricType"] == "AverageValue" and trig["metadata"]["threshold"] == "1.3"
    assert trig["metadata"]["query"] == 'sum(rate(vllm:request_success_total{namespace="ns"}[1m]))'
    assert "advanced" not in keda["spec"] and "pollingInterval" not in keda["spec"]  # defaults, as documented
    (hpa,) = peers.arm_objects("hpa", "ns", "llm", tmp_path / "p.json", prom, sizing)
    q = hpa["spec"]["triggers"][0]["metadata"]["query"]
    assert "num_requests_running" in q and "num_requests_waiting" in q and "advanced" not in hpa["spec"]
    sp, so = peers.arm_objects("advisory", "ns", "llm", tmp_path / "p.json", prom, sizing)
    assert sp["spec"]["mode"] == "Advisory"
    assert so["spec"]["triggers"][0]["metadata"] == {
        "serverAddress": prom,
        "query": 'max(burstpilot_operator_desired_replicas{namespace="ns",pool="llm"})',
        "threshold": "1",
    }
    assert so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == peers.ADVISORY_BEHAVIOR
    with pytest.raises(BurstpilotError, match="unknown arm"):
        peers.arm_objects("knative", "ns", "llm", tmp_path / "p.json", prom, sizing)


def test_gpu_hours_count_each_pod_from_creation_to_deletion_within_the_window():
    pods = [
        {"created": 0.0, "ready": 60.0, "deleted": None},  # the whole window
        {"created": 100.0, "ready": None, "deleted": 130.0},  # never Ready: its 30 s still count
        {"created": -50.0, "ready": 10.0, "deleted": 50.0},  # before the window: only 50 s inside
        {"created": 3500.0, "ready": 3560.0, "deleted": 4000.0},  # past the end: 100 s inside
    ]
    assert peers.gpu_hours(pods, 0.0, 3600.0) == pytest.approx((3600 + 30 + 50 + 100) / 3600)
    assert peers.cold_starts(pods) == [60.0, 60.0, 60.0]


def hist(specs, ready=None):
    return [
        {"t": float(i), "wall": 1000.0 + i, "spec": s, "ready": (ready or specs)[i]}
        for i, s in enumerate(specs)
    ]


def test_an_arms_row_from_the_load_generators_summary_the_lifetimes_and_the_history():
    h = hist([2, 2, 3, 5, 5, 4, 2])
    assert peers.scale_events(h) == [(2.0, 2, 3), (3.0, 3, 5), (5.0, 5, 4), (6.0, 4, 2)]
    summary = {
        "requests": {"scheduled": 100, "completed": 98, "failed": 2},
        "slo": {"met": 90, "attainment": 0.9},
        "ttft_s": {"p50": 0.5, "p99": 4.0},
        "tpot_s": {"p99": 0.12},
    }
    pods = [{"created": 1000.0, "ready": 1060.0, "deleted": None}]
    row = peers.summarize_arm("keda", "w", summary, pods, h, 1000.0, 10.0, [3.0])
    assert (row.requests, row.slo_violations, row.slo_attainment) == (100, 10, 0.9)
    assert row.goodput_rps == pytest.approx(9.0) and row.gpu_hours == pytest.approx(10 / 3600, abs=1e-4)
    assert (row.scale_events, row.scale_ups, row.scale_downs, row.peak_replicas) == (4, 2, 2, 5)
    assert row.mean_replicas == pytest.approx(np.mean([2, 2, 3, 5, 5, 4, 2]), abs=0.01)


def test_the_figure_has_a_panel_per_workload(tmp_path: Path):
    panels = [
        {"title": f"w{i}", "arrivals": list(np.linspace(0, 100, 300)), "duration_s": 100.0,
         "arms": {"burstpilot": hist([1, 2, 3]), "keda": hist([1, 1, 2])}}
        for i in range(2)
    ]  # fmt: skip
    png = peers.plot_replicas(panels, tmp_path / "f.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_kwok_leaves_readiness_to_the_keeper_for_annotated_pods(tmp_path: Path):
    stages = tmp_path / "kwok.yaml"
    stages.write_text(
        yaml.safe_dump_all(
            [
                {"kind": "Stage", "metadata": {"name": "pod-ready"},
                 "spec": {"selector": {"matchExpressions": [{"key": ".status.phase", "operator": "In",
                                                             "values": ["Pending"]}]},
                          "next": {"statusTemplate": "phase: Running"}}},
                {"kind": "Stage", "metadata": {"name": "pod-delete"}, "spec": {}},
            ]
        )
    )  # fmt: skip
    docs = list(yaml.safe_load_all(kwok_stages(stages, tmp_path / "out.yaml").read_text()))
    by = {d["metadata"]["name"]: d for d in docs}
    key = f'.metadata.annotations["{READINESS_ANNOTATION}"]'
    assert {"key": key, "operator": "DoesNotExist"} in by["pod-ready"]["spec"]["selector"]["matchExpressions"]
    unready = by["pod-running-unready"]["spec"]
    assert {"key": key, "operator": "In", "values": ["replica"]} in unready["selector"]["matchExpressions"]
    assert 'status: "False"\n  reason: ModelLoading\n  type: Ready' in unready["next"]["statusTemplate"]
    assert "pod-delete" in by
    (tmp_path / "bad.yaml").write_text("kind: Stage\nmetadata: {name: x}\n")
    with pytest.raises(BurstpilotError, match="no pod-ready"):
        kwok_stages(tmp_path / "bad.yaml", tmp_path / "o.yaml")
    d = ControlPlane.deployment("ns", "llm", 2, node_selector={"pool": "a"}, cold_start_s=60)
    tmpl = d["spec"]["template"]
    assert tmpl["metadata"]["annotations"] == {READINESS_ANNOTATION: "replica", COLD_START_ANNOTATION: "60"}
    assert tmpl["spec"]["nodeSelector"] == {"pool": "a"}
    assert "annotations" not in ControlPlane.deployment("ns", "llm", 1)["spec"]["template"]["metadata"]
    json.dumps(d)  # what kubectl apply gets


def test_the_hpas_sync_times_are_found_from_its_status_changes():
    rows = []
    for i in range(200):
        t = i * 1.0 + 0.3
        k = int((t - 4.0) // 15) if t >= 4.0 else -1  # syncs at 4, 19, 34, ...: the status changes then
        rows.append({"t": t, "hpa": {"metric": float(k), "desired": 2}})
    ticks = peers.hpa_sync_ticks(rows, 150.0)
    assert ticks[0] == pytest.approx(4.0, abs=0.6)
    assert np.allclose(np.diff(ticks), 15.0) and ticks[-1] < 150.0
    assert peers.hpa_sync_ticks([{"t": 0.0}, {"t": 1.0}], 10.0) == []
