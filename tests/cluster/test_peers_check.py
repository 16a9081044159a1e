"""bench/k8s_peers_check.py on hand-made recordings: a KEDA-arm pool whose "real" HPA scales up on the
request rate, replayed through the simulator's `keda` baseline at the recorded sync times. The check finds the
syncs, reads the count each sync saw and the one it wrote, and scores the baseline: equal where the recording
is what a KEDA rate trigger does, out of tolerance (with the mismatches named) where it is not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from burstpilot.evaluation.scrape import MetricsSeries
from burstpilot.operator.cluster import peers
from burstpilot.policy.baselines import LoadTest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "k8s_peers_check.py"
_spec = importlib.util.spec_from_file_location("k8s_peers_check", BENCH)
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)

SIZING = {"prompt_tokens": 1100.0, "output_tokens": 220.0}
PHASE_S, END_S = 7.0, 420.0


def rate(t: float) -> float:
    """Arrivals per second: 1.5/s, then 6/s from 150 s."""
    return 1.5 if t < 150.0 else 6.0


def recording(profile: Path, skew: int = 0) -> dict:
    """One second scrapes and polls of a pool whose HPA syncs every 15 s (half a second after PHASE_S + 15 k)
    on KEDA's request-rate trigger, as the check's reference assembles it from the Kubernetes and KEDA source
    (External AverageValue over the pods, the nil-behavior normalization); ``skew`` replicas are added to every
    count the recorded HPA writes (a controller that is not what the baseline models)."""
    spec = peers.pool_spec(profile)
    lt = LoadTest.from_profile(spec, SIZING["prompt_tokens"], SIZING["output_tokens"])
    samples, served = [], 0.0
    for i in range(int(END_S) + 1):
        samples.append(
            {
                "time_s": float(i),
                "arrived": served,
                "finished": served,
                "prompt_tokens": served * 1100.0,
                "generation_tokens": served * 220.0,
                "preemptions": 0.0,
                "running": 0.0,
                "waiting": 0.0,
                "kv_usage": 0.1,
            }  # fmt: skip
        )
        served += rate(float(i))
    series = MetricsSeries.from_dict({"samples": samples})
    history, state, current, hpa = [], {}, 2, None
    syncs = [PHASE_S + 0.5 + 15.0 * k for k in range(int(END_S // 15.0) + 1)]
    for i in range(int(END_S) + 1):
        t = float(i)
        while syncs and syncs[0] <= t:
            at = syncs.pop(0)
            desired, value = check.reference_decide("keda", spec, state, at, series, current, current, lt)
            desired = min(desired + skew, spec.max_replicas)
            hpa = {"desired": desired, "metric": None if value is None else value / current}
            current = desired
        history.append(
            {"t": t, "spec": current, "ready": current, "starting": 0, "pods": current, "hpa": hpa}
        )
    return {"arm": "keda", "workload": "hand-made", "sizing": SIZING, "series": samples, "history": history}


def test_the_time_of_a_sync_takes_the_polls_at_least_a_second_and_a_half_away():
    history = [{"t": float(i), "spec": i, "hpa": {"desired": i}} for i in range(10)]
    assert check._at(history, 5.0, after=False)["t"] == 3.0
    assert check._at(history, 5.0, after=True)["t"] == 7.0
    assert check._at(history, 1.0, after=False) is None


def test_a_recording_of_what_a_rate_trigger_does_is_matched_by_the_keda_baseline(tmp_path: Path):
    profile = peers.write_profile(tmp_path / f"{peers.PROFILE_NAME}.json")
    out = check.check_pool("ns", recording(profile), profile)
    assert out["syncs"] >= 15 and out["real_changes"] >= 1, out["syncs"]
    b = out["baseline"]
    assert b["within_tolerance"] and b["match"] >= check.MATCH_GOAL and b["max_off"] <= check.MAX_OFF, b
    assert out["reference"]["within_tolerance"]
    # the scale-up on the rise is among the syncs compared, at the count the real HPA wrote
    ups = [r for r in out["rows"] if r["real"] > r["current"]]
    assert ups and all(r["baseline"] == r["real"] for r in ups[:1])


def test_a_recording_the_baseline_does_not_model_is_out_of_tolerance_with_each_mismatch_named(tmp_path: Path):
    profile = peers.write_profile(tmp_path / f"{peers.PROFILE_NAME}.json")
    out = check.check_pool("ns", recording(profile, skew=2), profile)
    b = out["baseline"]
    assert not b["within_tolerance"] and b["max_off"] >= 2 and b["match"] < check.MATCH_GOAL
    assert b["mismatches"] and {"t", "current", "real", "baseline"} <= set(b["mismatches"][0])
    assert check.score([])["baseline"]["within_tolerance"] is False  # no sync compared proves nothing


@pytest.mark.parametrize("arm", ["keda", "hpa"])
def test_the_thresholds_come_from_the_profile_and_lengths(arm: str, tmp_path: Path):
    profile = peers.write_profile(tmp_path / f"{peers.PROFILE_NAME}.json")
    lt = LoadTest.from_profile(peers.pool_spec(profile), SIZING["prompt_tokens"], SIZING["output_tokens"])
    (value,) = check._thresholds(arm, lt).values()
    assert value > 0
