"""The cluster demo's report from a recorded history (no cluster): the figures it states and the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from burstpilot.operator.cluster.demo import PHASES, gpu_seconds, phased_workload, plot, write_report
from burstpilot.traces import read_trace


def row(t, desired, ready, pending=0, reason="hold"):
    return {"t": t, "wall": 1000.0 + t, "desired": desired, "current": desired, "ready": ready,
            "pending": pending, "forecast": 1.0, "reason": reason, "limited": ""}  # fmt: skip


def test_phased_workload_has_the_phases_rates(tmp_path: Path):
    arr = phased_workload(tmp_path / "w.csv", [(200, 1.0), (100, 10.0)], prompt=10, output=5, seed=1)
    trace = read_trace(tmp_path / "w.csv")
    assert np.allclose(trace.arrival_s, arr) and set(trace.request_tokens) == {10}
    assert 150 < (arr < 200).sum() < 250 and 850 < (arr >= 200).sum() < 1150


def test_report_states_scale_ups_pending_and_gpu_seconds(tmp_path: Path):
    burst = PHASES[0][0]
    history = [row(0, 1, 1), row(12, 4, 1, reason="early"), row(burst + 4, 6, 4, 2, "scale up 4->6"),
               row(burst + 60, 2, 2), row(burst + 80, 1, 1)]  # fmt: skip
    lifetimes = [
        {"created": 1000.0, "ready": 1001.0, "deleted": None},  # lives the whole window
        {"created": 1010.0, "ready": 1011.0, "deleted": 1040.0},
        {"created": 900.0, "ready": 901.0, "deleted": 950.0},  # before the window
    ]
    summary = {"requests": {"scheduled": 10, "completed": 9, "failed": 1}, "slo": {"attainment": 0.9},
               "ttft_s": {"p50": 0.1, "p99": 1.5}}  # fmt: skip
    events = [
        {"reason": "ScaledUp"},
        {"reason": "ScaledUp"},
        {"reason": "ScaledDown"},
        {"reason": "ManualScale"},
    ]
    png = plot(history, np.arange(0.0, 100.0, 0.5), 4, tmp_path / "replicas.png")
    assert png.stat().st_size > 10_000
    text = write_report(tmp_path, history, summary, lifetimes, events, 4, 1000.0, 1100.0, png).read_text()
    assert f"| first scale-up after the burst began (at {burst:.0f} s) | 4 s later |" in text
    assert f"12 s: 1 -> 4, {burst + 4:.0f} s: 4 -> 6" in text
    assert (
        "| peak desired replicas | 6 (GPUs: 4) |" in text
        and "| peak Pending pods (no GPU left) | 2 |" in text
    )
    assert "| scale events (ScaledUp / ScaledDown) | 2 / 1 |" in text
    assert (
        f"| {gpu_seconds(lifetimes, 1000.0, 1100.0):.0f} |" in text
        and gpu_seconds(lifetimes, 1000, 1100) == 130
    )
    assert "| SLO (ttft=2s,tpot=100ms) attainment | 0.900 |" in text and "0.10 s / 1.50 s" in text
    assert "scale up 4->6" in text and "![replicas vs arrival rate](replicas.png)" in text
