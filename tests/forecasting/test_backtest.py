"""The backtest: binning, metrics, and `burstpilot forecast backtest` end to end on a small trace."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from burstpilot.cli import main
from burstpilot.errors import BurstpilotError
from burstpilot.forecasting.backtest import bin_trace, run_model, score
from burstpilot.traces import read_trace


def write_azure_csv(path, seconds: float = 1500.0, rate: float = 3.0, seed: int = 0):
    """A small trace in the Azure LLM inference format, with a burst in the middle."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, seconds, rng.poisson(rate * seconds)))
    burst = rng.uniform(900, 960, 600)
    t = np.sort(np.concatenate([t, burst]))
    origin = datetime(2023, 11, 16, 18, 0, 0)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for x in t:
        stamp = (origin + timedelta(seconds=float(x))).strftime("%Y-%m-%d %H:%M:%S.%f")
        lines.append(f"{stamp},{rng.integers(10, 2000)},{rng.integers(1, 500)}")
    path.write_text("\n".join(lines) + "\n")
    return len(t)


def test_score_by_hand():
    actual = np.array([1.0, 2.0, 3.0, 4.0])
    mean = np.array([1.0, 1.0, 4.0, 4.0])
    q9 = np.array([2.0, 2.0, 2.0, 5.0])
    peak = np.array([2.0, 3.0, 4.0, 5.0])
    s = score(mean, {0.9: q9}, {0.9: np.array([2.5, 2.5, 5.0, 5.0])}, actual, peak)
    assert s["mae"] == pytest.approx(0.5)
    assert s["smape"] == pytest.approx(100 * np.mean([0, 2 / 3, 2 / 7, 0]))
    # pinball: under-forecast costs 0.9 per unit, over-forecast 0.1 per unit
    assert s["pinball"]["0.9"] == pytest.approx(np.mean([0.1, 0.0, 0.9, 0.1]))
    assert s["coverage"]["0.9"] == pytest.approx(0.75)
    assert s["peak_exceed_rate"]["0.9"] == pytest.approx(0.25)


def test_bin_trace_counts_requests_and_tokens(tmp_path):
    path = tmp_path / "azure.csv"
    n = write_azure_csv(path)
    trace = read_trace(path)
    series = bin_trace(trace, 10.0, ["requests", "prompt_tokens", "output_tokens", "tokens"])
    steps = int((trace.arrival_s[-1] - trace.arrival_s[0]) // 10.0)
    assert all(len(v) == steps for v in series.values())
    kept = np.count_nonzero(trace.arrival_s - trace.arrival_s[0] < steps * 10.0)
    assert series["requests"].sum() == kept and n - kept < 60  # only the last, incomplete step is dropped
    np.testing.assert_allclose(series["tokens"], series["prompt_tokens"] + series["output_tokens"])
    with pytest.raises(BurstpilotError, match="unknown series"):
        bin_trace(trace, 10.0, ["gpus"])


def test_run_model_rejects_a_series_too_short_for_the_horizon():
    with pytest.raises(BurstpilotError, match="too short"):
        run_model(np.ones(50), 10.0, "last", [120.0], warmup_s=400.0)


def test_backtest_cli_writes_json_table_and_plots(tmp_path, capsys):
    path = tmp_path / "azure.csv"
    write_azure_csv(path)
    out = tmp_path / "bt"
    argv = ["forecast", "backtest", str(path), "--step", "10", "--horizon", "60", "--warmup", "300"]
    rc = main([*argv, "--models", "last,ewma,burst", "--series", "requests,tokens", "--out", str(out)])
    assert rc == 0
    doc = json.loads((out / "backtest.json").read_text())
    assert doc["step_s"] == 10 and doc["horizon_s"] == 60
    assert set(doc["models"]) == {"last", "ewma", "burst"}
    for entry in doc["models"].values():
        assert {"mae", "smape", "pinball", "coverage", "peak_exceed_rate", "update_ms"} <= set(entry)
        assert set(entry["pinball"]) == set(entry["coverage"]) == {"0.5", "0.9", "0.95", "0.99"}
    assert set(doc["series"]) == {"requests", "tokens"}
    assert doc["series"]["requests"]["models"]["burst"] == doc["models"]["burst"]
    assert (out / "bands_requests.png").stat().st_size > 10_000
    assert (out / "bands_tokens.png").exists()
    printed = capsys.readouterr().out
    assert "pinball 0.9" in printed and "burst" in printed


def test_backtest_cli_bad_input_exits_2(tmp_path, capsys):
    path = tmp_path / "azure.csv"
    write_azure_csv(path, seconds=900)
    assert main(["forecast", "backtest", str(path), "--models", "last,magic", "--out", str(tmp_path)]) == 2
    assert "unknown model 'magic'" in capsys.readouterr().err
    assert main(["forecast", "backtest", str(tmp_path / "none.csv"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
