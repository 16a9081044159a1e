"""The backtest: binning, metrics, and `burstpilot forecast backtest` end to end on a small trace."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from burstpilot.cli import main
from burstpilot.errors import BurstpilotError
from burstpilot.forecasting import DEFAULT_QUANTILES
from burstpilot.forecasting.backtest import bin_trace, run_model, score, time_grid_s
from burstpilot.forecasting.plots import burst_episodes, plot_bands
from burstpilot.traces import make_trace, read_trace


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


def test_time_grid_is_found_on_gridded_timestamps_only():
    rng = np.random.default_rng(4)
    continuous = np.cumsum(rng.exponential(0.3, 5000))
    assert time_grid_s(continuous) is None
    assert time_grid_s(np.floor(continuous)) == pytest.approx(1.0)
    # Mooncake's: a 3 s grid, each tick a millisecond or two off (every arrival of a tick alike).
    tick = np.floor(continuous / 3.0)
    jitter = rng.uniform(-0.002, 0.002, int(tick.max()) + 1)[tick.astype(int)]
    assert time_grid_s(3.0 * tick + jitter) == pytest.approx(3.0, abs=0.01)


def test_gridded_arrivals_are_spread_over_their_cell_before_binning():
    # 10 arrivals on every tick of a 3 s grid: a constant rate of 10/3 per second.
    ticks = np.repeat(np.arange(0.0, 3000.0, 3.0), 10)
    trace = make_trace(ticks, np.ones(len(ticks)), np.ones(len(ticks)))
    raw = bin_trace(trace, 10.0, ["requests"], dequantize=False)["requests"]
    spread = bin_trace(trace, 10.0, ["requests"])["requests"]
    assert set(np.unique(raw)) == {30.0, 40.0}  # 3 or 4 ticks per 10 s step: an artefact of the grid
    assert spread.sum() == pytest.approx(raw.sum(), abs=40)  # the same arrivals
    assert spread.std() < 0.6 * raw.std()  # what is left is the noise of where in its cell each arrival was
    assert np.array_equal(spread, bin_trace(trace, 10.0, ["requests"])["requests"])  # fixed seed


def test_burst_episodes_after_the_warm_up_and_the_one_inside_it():
    rng = np.random.default_rng(5)
    counts = rng.poisson(20.0, 400).astype(float)
    counts[30] += 200.0  # the largest spike, inside a 60-step warm-up
    counts[250] += 90.0  # a smaller one after it
    counts[320:335] += 25.0  # a surge of the horizon's mean, no single huge step
    found = burst_episodes(counts, horizon_steps=6, warmup_steps=60, n=10)
    by_step = {e.step: e for e in found}
    assert not by_step[30].scored and by_step[250].scored
    assert by_step[250].span_steps == 1
    surge = [e for e in found if 320 <= e.step < 340]
    assert surge and surge[0].span_steps == 6
    assert found[0].step == 30  # largest first
    flat = rng.poisson(20.0, 400).astype(float)
    assert burst_episodes(flat, horizon_steps=6) == []


@pytest.mark.parametrize("spikes", [[], [250]])
def test_plot_bands_writes_a_figure_with_and_without_episodes(tmp_path, spikes):
    rng = np.random.default_rng(6)
    counts = rng.poisson(20.0, 300).astype(float)
    counts[20] += 300.0  # inside the warm-up: noted, not zoomed
    for i in spikes:
        counts[i] += 150.0
    runs = {
        m: run_model(counts, 10.0, m, [60.0], warmup_s=600.0)["horizons"][60.0] for m in ("last", "burst")
    }
    path = tmp_path / "bands.png"
    plot_bands(path, "t", counts, 10.0, 6, runs, DEFAULT_QUANTILES, warmup_steps=60, unit="requests")
    from matplotlib.image import imread

    height, width = imread(path).shape[:2]
    assert width == 1540 and height == (880 if spikes else 528)  # the episode row only when there is one
