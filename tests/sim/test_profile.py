import csv
import json
from pathlib import Path

import pytest

from burstpilot.cli import main
from burstpilot.errors import BurstpilotError
from burstpilot.sim import list_profiles, load_profile

ROOT = Path(__file__).resolve().parents[2]


def test_fit_within_15_percent_of_every_measurement():
    prof = load_profile("h100-llama3-8b")
    table = ROOT / prof.calibration["table"]
    rows = list(csv.DictReader(line for line in table.open() if not line.startswith("#")))
    kinds = {r["kind"] for r in rows}
    assert kinds == {"decode", "prefill", "mixed"} and len(rows) > 50
    worst = 0.0
    for r in rows:
        b, ctx, p, ms = int(r["batch"]), int(r["context_len"]), int(r["prefill_tokens"]), float(r["ms"])
        pred = prof.step.step_ms(b, b * ctx, p)
        worst = max(worst, abs(pred / ms - 1))
    print(f"largest relative error of the step model over {len(rows)} measurements: {worst:.3f}")
    assert worst <= 0.15
    assert prof.calibration["max_abs_rel_error"] == pytest.approx(worst, abs=1e-3)


def test_profiles_and_capacity():
    assert {"h100-llama3-8b", "h100-llama3-70b-tp4"} <= set(list_profiles())
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


def test_70b_profile_is_the_documented_derivation_of_the_8b_one():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "derive_70b_tp4", ROOT / "calibration" / "derive_70b_tp4.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    profiles = ROOT / "sim/profiles"
    derived = mod.derive(json.loads((profiles / "h100-llama3-8b.json").read_text()))
    assert derived == json.loads((profiles / "h100-llama3-70b-tp4.json").read_text())


def test_profiles_and_simulate_commands(tmp_path, capsys):
    from burstpilot.traces import write_burstgpt_csv
    from burstpilot.traces.generate import generate_preset

    assert main(["sim", "profiles", "--json"]) == 0
    names = {p["name"] for p in json.loads(capsys.readouterr().out)}
    assert names == set(list_profiles())
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
