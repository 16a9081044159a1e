"""Workload generation: the preset, replay scaling, modeled scaling, CSV output, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from burstpilot.cli import main
from burstpilot.errors import BurstpilotError
from burstpilot.traces import make_trace, read_trace, write_burstgpt_csv
from burstpilot.traces.analyze import summarize
from burstpilot.traces.fit import fit_interarrival
from burstpilot.traces.generate import generate_modeled, generate_preset, scale_replay
from tests.traces.conftest import gamma_arrivals


def test_preset_deterministic_and_seed_sensitive():
    a = generate_preset("burstgpt", duration_s=1800, rps=4, seed=3, start_s=36000)
    b = generate_preset("burstgpt", duration_s=1800, rps=4, seed=3, start_s=36000)
    c = generate_preset("burstgpt", duration_s=1800, rps=4, seed=4, start_s=36000)
    assert a.equals(b) and np.array_equal(a.session_id, b.session_id)
    assert not a.equals(c)
    assert 36000 <= a.arrival_s[0] and a.arrival_s[-1] < 37800
    assert len(a) / 1800 == pytest.approx(4, rel=0.15)


def test_preset_rate_over_a_day():
    t = generate_preset("burstgpt", duration_s=86400, rps=1.5, seed=0)
    assert len(t) / 86400 == pytest.approx(1.5, rel=0.05)
    assert t.failed.mean() == pytest.approx(0.02, abs=0.004)
    assert (t.response_tokens[t.failed] == 0).all() and (t.response_tokens[~t.failed] > 0).all()
    assert np.median(t.request_tokens) > 200  # realistic medians, not a truncated Zipf(1.1)
    assert set(t.models) == {"ChatGPT", "GPT-4"} and set(t.log_types) == {"Conversation log", "API log"}
    conv = t.log_type == "Conversation log"
    assert (t.session_id[conv] >= 0).all() and (t.session_id[~conv] == -1).all()


@pytest.mark.parametrize("rounded", [False, True])
def test_preset_csv_reads_back_identically(tmp_path, rounded):
    t = generate_preset("burstgpt", duration_s=900, rps=5, seed=1, start_s=40000, round_timestamps=rounded)
    back = read_trace(write_burstgpt_csv(t, tmp_path / "w.csv"))
    assert back.equals(t) and np.array_equal(back.session_id, t.session_id)
    assert back.format == "burstgpt-v2"
    if rounded:
        assert np.all(t.arrival_s == np.floor(t.arrival_s))


def _planted(shape=0.4, rate=1.0, hours=6.0, seed=0):
    rng = np.random.default_rng(seed)
    n = int(rate * hours * 3600 * 1.2)
    a = np.floor(gamma_arrivals(rng, shape, rate, n))
    a = a[a < hours * 3600]
    req = np.maximum(rng.lognormal(np.log(500), 1.0, len(a)).astype(int), 1)
    resp = np.maximum((req**0.5 * rng.lognormal(1.5, 0.5, len(a))).astype(int), 1)
    return make_trace(a, req, resp, model=np.full(len(a), "ChatGPT"), log_type=np.full(len(a), "API log"))


def test_replay_scaling_keeps_shape_and_tokens():
    src = _planted()
    out = scale_replay(src, rps=4.0)
    assert out.arrival_s[0] == 0 and len(out) == len(src)
    assert out.mean_rps == pytest.approx(4.0, rel=0.01)
    np.testing.assert_array_equal(out.request_tokens, src.request_tokens)
    gs, go = np.diff(src.arrival_s), np.diff(out.arrival_s)
    assert go.std() / go.mean() == pytest.approx(gs.std() / gs.mean(), rel=1e-9)
    s_out = summarize(out)
    assert s_out["mean_rps"] == pytest.approx(4.0, rel=0.05)
    k_src = summarize(src)["overall"]["interarrival"]["gamma_shape"]
    assert s_out["overall"]["interarrival"]["gamma_shape"] == pytest.approx(k_src, abs=0.1)
    assert s_out["interarrival_method"].startswith("gamma-mle-interval-censored")  # 1/k-second ticks


def test_replay_window_and_speedup():
    src = _planted()
    out = scale_replay(src, speedup=2.0, start_s=3600, duration_s=3600)
    sel = (src.arrival_s >= 3600) & (src.arrival_s < 7200)
    assert len(out) == sel.sum()
    np.testing.assert_allclose(out.arrival_s, (src.arrival_s[sel] - 3600) / 2)
    with pytest.raises(BurstpilotError, match="exactly one"):
        scale_replay(src, rps=1, speedup=2)
    assert out.source == f"replay:{src.source} x2"
    # a speedup of 1 only moves the time axis: applied twice, the source still names the trace once
    again = scale_replay(scale_replay(src, speedup=1.0, start_s=3600), speedup=1.0)
    assert again.source == src.source and again.arrival_s[0] == pytest.approx(0.0)


def test_modeled_round_trip_rate_and_shape(tmp_path):
    src = _planted(shape=0.4, rate=1.0, hours=6)
    fit = summarize(src)
    k_src = fit["overall"]["interarrival"]["gamma_shape"]
    assert k_src == pytest.approx(0.4, abs=0.1)  # planted shape recovered from 1-s timestamps
    gen = generate_modeled(json.loads(json.dumps(fit)), rps=3.0, duration_s=6 * 3600, seed=2)
    s = summarize(gen)
    assert s["mean_rps"] == pytest.approx(3.0, rel=0.05)
    assert s["overall"]["interarrival"]["gamma_shape"] == pytest.approx(k_src, abs=0.1)
    assert s["overall"]["request_tokens"]["p50"] == pytest.approx(
        fit["overall"]["request_tokens"]["p50"], rel=0.1
    )
    assert s["overall"]["correlation"]["spearman"] == pytest.approx(
        fit["overall"]["correlation"]["spearman"], abs=0.1
    )
    assert gen.arrival_s[0] >= fit["start_s"]  # on the trace's own time axis
    back = read_trace(write_burstgpt_csv(gen, tmp_path / "m.csv"))
    assert back.equals(gen)
    again = generate_modeled(fit, rps=3.0, duration_s=6 * 3600, seed=2)
    assert again.equals(gen)


def test_modeled_keeps_rate_profile_and_burst_shape():
    """More load is the fitted profile scaled, not copies superimposed: the shape stays."""
    rng = np.random.default_rng(5)
    quiet = gamma_arrivals(rng, 0.3, 0.5, 1800)
    busy = quiet[-1] + gamma_arrivals(rng, 0.3, 2.0, 7200)
    a = np.concatenate([quiet, busy])
    a = a[a < 7200]
    src = make_trace(a, np.full(len(a), 100), np.full(len(a), 10))
    fit = summarize(src, window_s=600)
    gen = generate_modeled(fit, rps=10 * src.mean_rps, duration_s=7200, seed=0)
    split = quiet[-1]
    ratio_src = (a >= split).sum() / max((a < split).sum(), 1)
    g = gen.arrival_s
    ratio_gen = (g >= split).sum() / max((g < split).sum(), 1)
    assert ratio_gen == pytest.approx(ratio_src, rel=0.25)
    assert fit_interarrival(np.diff(g), 0.0)["gamma_shape"] < 0.45


def test_modeled_errors():
    with pytest.raises(BurstpilotError, match="not a burstpilot trace summary"):
        generate_modeled({"rows": 3}, rps=1, duration_s=10)


def test_cli_generate(tmp_path, capsys):
    pre = tmp_path / "pre.csv"
    assert main(["trace", "generate", "--preset", "burstgpt", "--rps", "3", "--duration", "600",
                 "--start", "36000", "--seed", "9", "--out", str(pre)]) == 0  # fmt: skip
    t = read_trace(pre)
    assert t.equals(generate_preset("burstgpt", duration_s=600, rps=3, seed=9, start_s=36000))
    rep = tmp_path / "rep.csv"
    assert main(["trace", "generate", "--from", str(pre), "--speedup", "2", "--out", str(rep)]) == 0
    assert read_trace(rep).duration_s == pytest.approx(t.duration_s / 2)
    out = tmp_path / "an"
    assert main(["trace", "analyze", str(pre), "--out", str(out), "--no-figures"]) == 0
    mod = tmp_path / "mod.csv.gz"
    assert main(["trace", "generate", "--fit", str(out / "summary.json"), "--rps", "6",
                 "--duration", "600", "--out", str(mod)]) == 0  # fmt: skip
    assert len(read_trace(mod)) / 600 == pytest.approx(6, rel=0.2)
    capsys.readouterr()
    assert main(["trace", "generate", "--preset", "burstgpt", "--out", str(tmp_path / "x.csv")]) == 2
    assert "needs --rps and --duration" in capsys.readouterr().err
    assert main(["trace", "generate", "--rps", "1", "--out", str(tmp_path / "x.csv")]) == 2


def _hourly_shape(t):
    h = np.floor((t.arrival_s + (t.clock_offset_s or 0.0)) / 3600).astype(int) % 24
    return np.bincount(h, minlength=24) / len(t)


def _burst_durations(t):
    """Burst episodes in rate-free terms, so that traces at different rates compare: runs of
    seconds whose 5-s smoothed count is at least 3x its 20-minute centred baseline."""
    from scipy import ndimage

    c = np.bincount((t.arrival_s - t.arrival_s[0]).astype(int)).astype(float)
    base = ndimage.uniform_filter1d(c, 1200, mode="nearest")
    smooth = ndimage.uniform_filter1d(c, 5, mode="nearest")
    labels, _ = ndimage.label(smooth >= 3 * base + 1e-9)
    return np.bincount(labels)[1:]


@pytest.fixture(scope="module")
def three_days():
    return generate_preset("burstgpt", duration_s=3 * 86400, rps=2.0, seed=3)


@pytest.mark.parametrize("rps", [1.5, 5.0])
def test_replay_rate_scaling_keeps_the_clock(three_days, rps):
    from burstpilot.traces.generate import scale_rate

    src = three_days
    out = scale_rate(src, rps, seed=1)
    assert out.mean_rps == pytest.approx(rps, rel=0.02)
    assert out.arrival_s[0] >= src.arrival_s[0] and out.arrival_s[-1] <= src.arrival_s[-1]  # same span
    assert out.clock_offset_s == src.clock_offset_s
    assert np.corrcoef(_hourly_shape(src), _hourly_shape(out))[0, 1] >= 0.95
    if rps < src.mean_rps:  # thinning: the bursts keep their durations
        d0, d1 = _burst_durations(src), _burst_durations(out)
        assert d1.mean() == pytest.approx(d0.mean(), rel=0.10)
        assert np.median(d1) == pytest.approx(np.median(d0), rel=0.10)
    else:  # superposed days: the source's own requests are all there, at their times
        assert np.isin(src.arrival_s, out.arrival_s).all()
        assert out.has_sessions and len(np.unique(out.session_id[out.session_id >= 0])) > len(
            np.unique(src.session_id[src.session_id >= 0])
        )


def test_modeled_rate_scaling_keeps_the_clock(three_days):
    from burstpilot.traces.generate import scale_rate

    out = scale_rate(three_days, 4.0, method="modeled", seed=2)
    assert out.mean_rps == pytest.approx(4.0, rel=0.05)
    assert abs(out.arrival_s[0] - three_days.arrival_s[0]) < 600
    assert np.corrcoef(_hourly_shape(three_days), _hourly_shape(out))[0, 1] >= 0.95


def test_cli_from_rps_keeps_the_clock(tmp_path, three_days):
    src = write_burstgpt_csv(three_days.subset(three_days.arrival_s < 86400), tmp_path / "d.csv")
    out = tmp_path / "o.csv"
    assert main(["trace", "generate", "--from", str(src), "--rps", "3", "--out", str(out)]) == 0
    t = read_trace(out)
    assert t.mean_rps == pytest.approx(3, rel=0.02) and t.arrival_s[0] < 600 and t.duration_s > 86000
    assert (
        main(["trace", "generate", "--from", str(src), "--rps", "1", "--speedup", "2", "--out", str(out)])
        == 2
    )
