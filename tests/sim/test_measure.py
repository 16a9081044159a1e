"""`burstpilot profile measure` against a real `burstpilot sim serve` replica.

"True capacity" is the highest rate meeting the SLO that the discrete-event simulator finds for the served
profile on the same levels (same arrivals and lengths, same SLO, same search); the measured profile must
reproduce it within 10 %. The sweep is short (a unit test, not a benchmark): 6-second levels at 5 rates and
one bisection step, about 40 s of real-time serving.
"""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from burstpilot.cli import main
from burstpilot.sim import load_profile
from burstpilot.sim.measure import capacity, level_workload, measure_profile, simulate_level
from burstpilot.sim.profile import profile_from_dict
from burstpilot.sim.workload import synthetic
from burstpilot.slo import SLO
from tests.support.fake_openai import free_port

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVES = SLO(ttft_s=1.0, tpot_s=0.04)
GOAL = 0.95
LEVEL_S = 6.0
RATES = [4.0, 8.0, 11.0, 13.0, 15.0, 17.0, 20.0]


@pytest.fixture
def served():
    """One `burstpilot sim serve` replica of h100-llama3-8b, ready (no cold start)."""
    port = free_port()
    exe = Path(sys.executable).parent / "burstpilot"
    cmd = [str(exe), "sim", "serve", "--profile", "h100-llama3-8b", "--port", str(port), "--cold-start", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"sim serve did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _des_capacity(profile, mix, seed=0):
    def attainment(rate):
        wl = level_workload(mix, rate, LEVEL_S, seed)
        return simulate_level(profile, wl.arrival_s, wl.request_tokens, wl.response_tokens, OBJECTIVES)[
            "attainment"
        ]

    return capacity(attainment, RATES, GOAL, bisect=4)[0]


def test_measured_profile_reproduces_the_true_capacity(served, tmp_path):
    truth = load_profile("h100-llama3-8b")
    workload = synthetic(5, 200, prompt_median=1500, output_median=150, sigma=0.6, seed=1)
    mix = (workload.request_tokens, workload.response_tokens)
    # the base is a wrong guess of the step times: the H200's, with the served profile's memory
    base = json.loads((ROOT / "sim/profiles/h100-llama3-8b.json").read_text())
    base["step_model"] = json.loads((ROOT / "sim/profiles/h200-llama3-8b.json").read_text())["step_model"]
    true_cap = _des_capacity(truth, mix)
    base_cap = _des_capacity(profile_from_dict(base, "base"), mix)
    assert abs(base_cap / true_cap - 1) > 0.10  # the fit has work to do

    prof = measure_profile(
        served, workload, OBJECTIVES, base, tmp_path / "levels", goal=GOAL, rates=RATES[:5], duration_s=LEVEL_S,
        bisect=1, name="measured-test", log=lambda s: None,
    )  # fmt: skip
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(prof))
    measured = load_profile(path)  # what sim, evaluate and the operator read
    fitted_cap = _des_capacity(measured, mix)
    cal = measured.calibration
    print(
        f"true {true_cap}, base {base_cap}, fitted {fitted_cap}, endpoint {cal['capacity_rps']}, {cal['factors']}"
    )
    assert fitted_cap == pytest.approx(true_cap, rel=0.10)
    # the sweep itself found the capacity near the truth too (one bisection step on a coarse grid)
    assert cal["capacity_rps"] is not None and cal["capacity_rps"] == pytest.approx(true_cap, rel=0.20)
    assert (
        cal["target"] == served
        and cal["slo_s"] == OBJECTIVES.objectives()
        and cal["base_profile"] == "h100-llama3-8b"
    )
    assert len(cal["levels"]) >= 5 and all(lv["requests"] > 0 for lv in cal["levels"])
    assert measured.kv_capacity_tokens == truth.kv_capacity_tokens  # memory comes from the base


def test_measure_command_rejects_bad_input(tmp_path, capsys):
    from burstpilot.traces import write_burstgpt_csv
    from burstpilot.traces.generate import generate_preset

    wl = tmp_path / "w.csv"
    write_burstgpt_csv(generate_preset("burstgpt", duration_s=60, rps=2, seed=0), wl)
    out = str(tmp_path / "p.json")
    common = ["profile", "measure", "--target", "http://127.0.0.1:9", "--workload", str(wl), "--out", out]
    assert main([*common, "--slo", "itl=1s"]) == 2
    assert "itl" in capsys.readouterr().err
    assert main([*common, "--slo", "ttft=1s", "--rates", "4,2"]) == 2
    assert "ascending" in capsys.readouterr().err
    assert main([*common, "--slo", "ttft=1s", "--rates", "a,b"]) == 2
    assert main([*common, "--slo", "ttft=1s", "--base-profile", "nope"]) == 2
    assert main([*common[:5], str(tmp_path / "missing.csv"), "--out", out, "--slo", "ttft=1s"]) == 2
    assert not Path(out).exists()
