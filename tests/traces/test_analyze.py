"""`trace analyze`: the shipped Azure trace against independent computations, the summary keys,
the report, and the acceptance properties of the `burstgpt` preset."""

from __future__ import annotations

import csv
import json
from datetime import datetime

import numpy as np
import pytest
from scipy import stats

from burstpilot.cli import main
from burstpilot.traces.analyze import find_bursts, summarize
from burstpilot.traces.generate import generate_preset

GROUP_KEYS = {
    "rows",
    "mean_rps",
    "failure_rate",
    "interarrival",
    "request_tokens",
    "response_tokens",
    "correlation",
    "bursts",
}
INTER_KEYS = {
    "method",
    "gamma_shape",
    "gamma_scale",
    "cv",
    "ks_gamma",
    "ks_exponential",
    "window_s",
    "window_gamma_shape_median",
}
TOP_KEYS = {
    "source",
    "format",
    "rows",
    "bad_rows",
    "duration_s",
    "mean_rps",
    "failure_rate",
    "overall",
    "groups",
    "periodicity",
    "sessions",
}


def _independent_azure(path):
    """Arrival seconds computed with the csv module and datetime, not with burstpilot."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    ts = [datetime.strptime(r["TIMESTAMP"][:26], "%Y-%m-%d %H:%M:%S.%f") for r in rows]
    t = np.array([(x - ts[0]).total_seconds() for x in ts])
    req = np.array([int(r["ContextTokens"]) for r in rows])
    return np.sort(t), req


def _check_group(g):
    assert GROUP_KEYS <= set(g)
    assert INTER_KEYS <= set(g["interarrival"])
    for col in ("request_tokens", "response_tokens"):
        assert {"mean", "p50", "p90", "p99", "max"} <= set(g[col])
    assert {"pearson", "spearman"} <= set(g["correlation"])
    for b in g["bursts"]:
        assert {"start_s", "duration_s", "peak_rps"} <= set(b)


def test_azure_summary_matches_independent_values(azure_path, azure_analysis):
    out, summary = azure_analysis
    t, req = _independent_azure(azure_path)
    assert summary["rows"] == len(t) == 19366
    assert summary["mean_rps"] == pytest.approx(len(t) / (t[-1] - t[0]), rel=1e-6)
    gaps = np.diff(t)
    shape_ref, _, scale_ref = stats.gamma.fit(gaps[gaps > 0], floc=0)
    ia = summary["overall"]["interarrival"]
    assert ia["method"] == "gamma-mle"  # sub-second timestamps: continuous likelihood
    assert ia["gamma_shape"] == pytest.approx(shape_ref, abs=0.01)
    assert ia["gamma_scale"] == pytest.approx(scale_ref, rel=0.02)
    assert ia["cv"] == pytest.approx(gaps.std() / gaps.mean(), rel=1e-3)
    assert 0.8 < ia["gamma_shape"] < 0.95  # mildly bursty, as published
    assert summary["overall"]["request_tokens"]["p50"] == pytest.approx(np.median(req))
    assert summary["periodicity"] is None and summary["sessions"] is None
    assert summary["groups"] == []  # no model / log type columns


def test_azure_outputs(azure_analysis):
    out, summary = azure_analysis
    assert TOP_KEYS <= set(summary)
    _check_group(summary["overall"])
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["rows"] == summary["rows"] and on_disk["overall"]["interarrival"]["method"] == "gamma-mle"
    report = (out / "report.md").read_text()
    assert "gamma-mle" in report and "19,366" in report
    for fig in ("rate.png", "interarrival.png", "tokens.png", "request_response.png", "window_shapes.png"):
        assert (out / fig).stat().st_size > 1000 and f"({fig})" in report
    w = summary["overall"]["windows"]
    assert len(w["start_s"]) == 3 and sum(w["count"]) == summary["rows"]


@pytest.fixture(scope="module")
def preset_summary():
    """Two days of the burstgpt preset, 1-second timestamps as in BurstGPT."""
    trace = generate_preset("burstgpt", duration_s=2 * 86400, rps=2.5, seed=11, round_timestamps=True)
    return trace, summarize(trace)


def test_preset_acceptance(preset_summary):
    trace, s = preset_summary
    assert TOP_KEYS <= set(s)
    assert s["interarrival_method"] == "gamma-mle-interval-censored-1s"
    assert s["failure_rate"] == pytest.approx(0.02, abs=0.003)
    groups = {(g["model"], g["log_type"]): g for g in s["groups"]}
    assert set(groups) == {(m, lt) for m in ("ChatGPT", "GPT-4") for lt in ("Conversation log", "API log")}
    for g in groups.values():
        _check_group(g)
    conv = groups["ChatGPT", "Conversation log"]
    api = groups["ChatGPT", "API log"]
    # conversation follows working hours, API does not
    assert conv["periodicity"]["daily_autocorrelation"] > 0.5
    assert abs(api["periodicity"]["daily_autocorrelation"]) < 0.4
    hourly = np.array(conv["periodicity"]["hourly"])
    assert hourly[3:7].mean() < 0.15 * hourly[9:17].mean()
    # API traffic is Gamma-bursty with shape well below 1
    for key in (("ChatGPT", "API log"), ("GPT-4", "API log")):
        assert groups[key]["interarrival"]["gamma_shape"] < 0.5
        assert groups[key]["interarrival"]["window_gamma_shape_median"] < 0.5
    # ChatGPT responses are bimodal; request lengths heavy-tailed; conversation correlation positive
    assert conv["response_tokens"]["bimodality"]["bimodal"]
    assert conv["request_tokens"]["tail_exponent"] < 3
    assert conv["correlation"]["pearson"] > 0.25
    # failures rise inside bursts
    bs = s["overall"]["burst_stats"]
    assert bs["failure_rate_in_bursts"] > bs["failure_rate_outside_bursts"]
    rel = s["overall"]["failures_vs_load"]["relative_failure_rate"]
    assert rel[-1] > 1.3 * rel[0]  # the most loaded 10-second bins fail more than the quietest
    ss = s["sessions"]
    assert ss["single_turn_fraction"] == pytest.approx(0.36, abs=0.03) and ss["median_turns"] == 2


def test_bursts_found_where_planted():
    rng = np.random.default_rng(0)
    base = np.sort(rng.uniform(0, 3600, 3600))  # 1 req/s
    burst = 1800 + rng.uniform(0, 10, 500)  # 50 req/s for 10 s
    a = np.sort(np.concatenate([base, burst]))
    eps, st, in_burst = find_bursts(a, 0.0, 3600.0, 1200.0)
    assert st["count"] == 1 and len(eps) == 1
    assert 1795 <= eps[0]["start_s"] <= 1801 and 8 <= eps[0]["duration_s"] <= 12
    assert eps[0]["peak_rps"] > 30 and in_burst.sum() >= 500


def test_cli_analyze_with_filters(tmp_path, capsys):
    trace = generate_preset("burstgpt", duration_s=3600, rps=2.0, seed=5, start_s=36000)
    from burstpilot.traces import write_burstgpt_csv

    p = write_burstgpt_csv(trace, tmp_path / "w.csv")
    out = tmp_path / "rep"
    rc = main(["trace", "analyze", str(p), "--out", str(out), "--log-type", "API log", "--no-figures"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert {g["log_type"] for g in s["groups"]} == {"API log"}
    assert s["rows"] == int((trace.log_type == "API log").sum())
    assert "report:" in capsys.readouterr().out


def test_degenerate_traces_get_clear_errors():
    from burstpilot.errors import BurstpilotError
    from burstpilot.traces import make_trace

    with pytest.raises(BurstpilotError, match="all 4 requests arrive at the same time"):
        summarize(make_trace([5, 5, 5, 5], [1, 2, 3, 4], [1, 1, 1, 1]))
    with pytest.raises(BurstpilotError, match="at least 2 requests"):
        summarize(make_trace([5], [1], [1]))


def test_summary_json_is_strict():
    from burstpilot.traces.analyze import to_json

    text = to_json({"overall": {"windows": None, "x": float("nan"), "n": np.int64(3), "ok": np.bool_(True)}})
    assert json.loads(text) == {"overall": {"windows": None, "x": None, "n": 3, "ok": True}}
    assert "NaN" not in text


def _same(a, b, path="summary"):
    """Equal up to floating-point summation order."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_streaming_summary_equals_in_memory(tmp_path, fmt):
    from burstpilot.traces import iter_trace, read_trace, write_burstgpt_csv
    from burstpilot.traces.analyze import summarize_stream
    from burstpilot.traces.formats.parquet import write_parquet

    trace = generate_preset("burstgpt", duration_s=2 * 86400, rps=1.5, seed=21, round_timestamps=True)
    p = write_burstgpt_csv(trace, tmp_path / "w.csv")
    if fmt == "parquet":
        write_parquet(iter_trace(p), tmp_path / "w.parquet")
        p = tmp_path / "w.parquet"
    assert len(list(iter_trace(p))) > 1  # really more than one chunk
    in_memory = summarize(read_trace(p))
    streamed, _ = summarize_stream(lambda: iter_trace(p))
    _same(in_memory, streamed)
    assert streamed["sessions"]["count"] > 0 and len(streamed["groups"]) == 4


def test_streaming_refuses_unordered_rows(tmp_path):
    from burstpilot.errors import BurstpilotError
    from burstpilot.traces import iter_trace
    from burstpilot.traces.analyze import summarize_stream

    p = tmp_path / "u.csv"
    p.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        + "".join(f"{t},ChatGPT,1,1,2,API log\n" for t in [1, 2, 3, 2, 5, 6])
    )
    with pytest.raises(BurstpilotError, match="not in time order"):
        summarize_stream(lambda: iter_trace(p))


def test_cli_analyze_stream_and_mooncake_grid(tmp_path, capsys):
    from pathlib import Path

    mooncake = (
        Path(__file__).resolve().parents[2].parent
        / "shared"
        / "data"
        / "mooncake"
        / "conversation_trace.jsonl"
    )
    if not mooncake.exists():
        pytest.skip("shared Mooncake trace not found")
    out = tmp_path / "mc"
    assert main(["trace", "analyze", str(mooncake), "--out", str(out), "--stream"]) == 0
    line = capsys.readouterr().out
    assert "not identifiable at the 3-s timestamp grid" in line
    s = json.loads((out / "summary.json").read_text())
    assert s["timestamp_resolution_s"] == 3.0 and "3-s grid" in s["resolution_found_by"]
    ia = s["overall"]["interarrival"]
    assert ia["method"] == "gamma-mle-interval-censored-3s" and not ia["identifiable"]
    grid = ia["grid"]
    assert grid["arrivals_per_occupied_step"]["mean"] > 5 and grid["dispersion_index"] > 1
    assert "not identifiable" in (out / "report.md").read_text()
