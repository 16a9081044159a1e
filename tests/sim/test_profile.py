import csv
import json
from pathlib import Path

import numpy as np
import pytest

from burstpilot.cli import main
from burstpilot.errors import BurstpilotError
from burstpilot.sim import list_profiles, load_profile

ROOT = Path(__file__).resolve().parents[2]


def _errors(step, table: Path) -> dict[str, np.ndarray]:
    rows = list(csv.DictReader(line for line in table.open() if not line.startswith("#")))
    out: dict[str, list] = {}
    for r in rows:
        b, ctx, p, ms = int(r["batch"]), int(r["context_len"]), int(r["prefill_tokens"]), float(r["ms"])
        out.setdefault(r["kind"], []).append(step.step_ms(b, b * ctx, p) / ms - 1)
    return {k: np.abs(v) for k, v in out.items()}


@pytest.mark.parametrize("name", ["h100-llama3-8b", "h200-llama3-8b"])
def test_measured_profile_fits_its_table(name):
    """Decode within 10 % everywhere and 3 % on average; every kind of step within 15 %."""
    prof = load_profile(name)
    err = _errors(prof.step, ROOT / prof.calibration["table"])
    assert set(err) == {"decode", "prefill", "mixed"} and sum(map(len, err.values())) > 80
    worst = max(float(e.max()) for e in err.values())
    print(
        f"{name}: decode worst {err['decode'].max():.3f} mean {err['decode'].mean():.4f}, all worst {worst:.3f}"
    )
    assert err["decode"].max() <= 0.10 and err["decode"].mean() <= 0.03
    assert worst <= 0.15
    assert prof.calibration["max_abs_rel_error"] == pytest.approx(worst, abs=1e-3)
    assert prof.calibration["decode_mean_abs_rel_error"] == pytest.approx(err["decode"].mean(), abs=1e-3)


def test_measured_kv_capacity_is_the_profiles():
    for name in ("h200-llama3-8b", "h200-llama3-70b"):
        prof = load_profile(name)
        mem = json.loads((ROOT / prof.calibration["memory"]).read_text())
        assert prof.kv_capacity_tokens == mem["kv_capacity_tokens"]
        assert prof.kv_bytes_per_token == mem["kv_bytes_per_token"]


def test_70b_layer_fit_and_the_fp8_profile_against_what_was_measured():
    """The measured 70B bf16 layers (the per-term ratios) and the FP8 steps the FP8 profile is fitted to."""
    layers = json.loads((ROOT / "calibration/h200_llama3_70b_bf16_l20_fit.json").read_text())
    from burstpilot.sim.profile import StepModel

    err = _errors(StepModel(**layers["params"]), ROOT / "calibration" / layers["table"])
    assert err["decode"].max() <= 0.10 and err["decode"].mean() <= 0.03
    assert max(float(e.max()) for e in err.values()) <= 0.15
    fp8 = load_profile("h200-llama3-70b")
    table = ROOT / fp8.calibration["table"]
    rows = [r for r in csv.DictReader(line for line in table.open() if not line.startswith("#"))]
    big = [r for r in rows if int(r["prefill_tokens"]) >= 1024]
    assert len(big) >= 10
    rel = [
        abs(fp8.step.step_ms(int(r["batch"]), int(r["batch"]) * int(r["context_len"]), int(r["prefill_tokens"]))
            / float(r["ms"]) - 1)
        for r in big
    ]  # fmt: skip
    assert max(rel) <= 0.10 and np.mean(rel) <= 0.05
    # decode is derived: the FP8 kernels that were measured are slower at few rows, never faster
    decode = [r for r in rows if r["kind"] == "decode"]
    ratio = [
        float(r["ms"]) / fp8.decode_ms(int(r["batch"]), int(r["batch"]) * int(r["context_len"]))
        for r in decode
    ]
    assert min(ratio) > 1.0


def test_profiles_and_capacity():
    assert {"h100-llama3-8b", "h100-llama3-70b-tp4", "h200-llama3-8b", "h200-llama3-70b"} <= set(
        list_profiles()
    )
    p8, p70 = load_profile("h100-llama3-8b"), load_profile("h100-llama3-70b-tp4")
    # 8B: 128 KiB of KV per token; the capacity is what 90% of 80 GB leaves after weights and reserve
    assert 350_000 < p8.kv_capacity_tokens < 500_000
    assert p70.gpus_per_replica == 4 and p70.decode_ms(1, 1000) > p8.decode_ms(1, 1000)
    assert p8.decode_ms(64, 64 * 2048) > p8.decode_ms(64, 64 * 128) > p8.decode_ms(1, 128)
    assert 60 <= p8.cold_start_s <= 180


def test_bad_profile_names_the_field(tmp_path):
    d = json.loads((ROOT / "sim/profiles/h100-llama3-8b.json").read_text())
    del d["step_model"]["kl_ms"]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(d))
    with pytest.raises(BurstpilotError, match="kl_ms"):
        load_profile(path)
    path.write_text("{not json")
    with pytest.raises(BurstpilotError, match="line 1"):
        load_profile(path)


def test_70b_profiles_are_the_documented_derivation():
    import importlib.util

    spec = importlib.util.spec_from_file_location("derive_70b", ROOT / "calibration" / "derive_70b.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for rel, data in mod.derive_all().items():
        shipped = json.loads((ROOT / rel).read_text())
        if rel.startswith("sim/"):
            steps = data.pop("step_model")
            assert {k: v for k, v in shipped.items() if k != "step_model"} == data, rel
            assert shipped["step_model"] == pytest.approx(steps, rel=1e-6, abs=1e-9), rel
        else:  # the fit reports: the same parameters (least squares on another machine: within rounding)
            for k, v in data["params"].items():
                assert shipped["params"][k] == pytest.approx(v, rel=1e-6, abs=1e-12), (rel, k)


def test_profiles_and_simulate_commands(tmp_path, capsys):
    from burstpilot.traces import write_burstgpt_csv
    from burstpilot.traces.generate import generate_preset

    assert main(["sim", "profiles", "--json"]) == 0
    rows = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(list_profiles())
    assert rows["h200-llama3-8b"]["source"].startswith("measured")
    assert (
        "derived" in rows["h200-llama3-70b"]["source"] and "derived" in rows["h100-llama3-70b-tp4"]["source"]
    )
    trace = generate_preset("burstgpt", duration_s=120, rps=4, seed=3)
    path = tmp_path / "w.csv"
    write_burstgpt_csv(trace, path)
    out = tmp_path / "summary.json"
    assert (
        main(
            [
                "sim",
                "simulate",
                str(path),
                "--profile",
                "h100-llama3-8b",
                "--replicas",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads(out.read_text())
    assert summary["requests"] == len(trace) and summary["completed"] + summary["rejected"] == len(trace)
    assert 0 < summary["ttft_p50_s"] < summary["ttft_p99_s"]
    assert main(["sim", "simulate", str(tmp_path / "missing.csv"), "--profile", "h100-llama3-8b"]) == 2
