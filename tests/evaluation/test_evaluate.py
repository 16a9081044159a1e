"""`burstpilot evaluate`: every policy on one workload, deterministic for a seed, in parallel and in shards."""

import json

import numpy as np
import pytest

from burstpilot.cli import main
from burstpilot.errors import BurstpilotError
from burstpilot.evaluation import capacity
from burstpilot.evaluation.cli import burstgpt_window, load_workload, parse_slo, pool_spec
from burstpilot.evaluation.harness import Case, evaluate, merge, run_sweep
from burstpilot.evaluation.report import verdict
from burstpilot.evaluation.runner import (
    ALL_POLICIES,
    ONLINE_POLICIES,
    TUNED_POLICIES,
    by_hour,
    prepare_workload,
)
from burstpilot.policy import SLO
from burstpilot.sim import load_profile
from burstpilot.traces import write_burstgpt_csv
from burstpilot.traces.generate import generate_preset

KEYS = {
    "slo_attainment",
    "slo_violations",
    "meets_goal",
    "ttft_p99_s",
    "tpot_p99_s",
    "gpu_hours",
    "gpu_hours_vs_oracle",
    "scale_events",
    "preemptions",
    "rejected",
    "capacity_source",
}
NAMES = list(ALL_POLICIES)


def small_case(duration: float = 240.0, **kw) -> Case:
    profile = load_profile("h100-llama3-8b")
    spec = pool_spec(profile, SLO(ttft_s=2.0, tpot_s=0.1), 60.0, 1, 8)
    return Case(
        name="small",
        workload=lambda: generate_preset("burstgpt", duration_s=duration, rps=20, seed=3, start_s=10 * 3600),
        profile=profile,
        spec=spec,
        cold_start_s=60.0,
        **kw,
    )


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    return evaluate(small_case(), NAMES, seed=5, out_dir=out, workers=2), out


def test_evaluate_scores_every_policy_from_the_profile_and_is_deterministic(evaluated):
    res, out = evaluated
    on_disk = json.loads((out / "results.json").read_text())
    assert list(on_disk["policies"]) == NAMES
    for name, m in on_disk["policies"].items():
        assert KEYS <= set(m), name
        assert 0.0 <= m["slo_attainment"] <= 1.0 and m["gpu_hours"] > 0
        assert m["meets_goal"] == (m["slo_attainment"] >= 0.99)
        # no online policy sees anything the oracle computed: capacity from the profile (burstpilot's learned
        # from there by what the pool shows)
        want = {"oracle": "oracle", "burstpilot": "learned"}.get(name, "profile")
        assert m["capacity_source"] == want, name
        # four minutes are one hour of the clock: its attainment is the run's
        assert m["hours"] == 1 and m["attainment_by_hour"] == [pytest.approx(m["slo_attainment"])], name
        assert m["hours_under_goal"] == (not m["meets_goal"]), name
    assert on_disk["meta"]["capacity"] == {"source": "profile", "capacity_scale": 1.0}
    assert on_disk["policies"]["oracle"]["gpu_hours_vs_oracle"] == 1.0
    assert on_disk["policies"]["static-peak"]["scale_events"] == 0
    assert on_disk["policies"]["hpa"]["knobs"]["averageValue"] > 0  # the configuration is recorded
    # one process, the same results (every run is seeded; the cold-start draws too)
    again = evaluate(small_case(), ["oracle", "kpa", "dynamo"], seed=5, workers=1)
    for name in ("oracle", "kpa", "dynamo"):
        assert again["policies"][name] == res["policies"][name], name
    assert again["meta"]["oracle"] == res["meta"]["oracle"]
    for f in ("replicas.png", "ttft.png"):
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_day_that_meets_the_goal_can_have_hours_that_miss_it():
    # hour 0: 1,000 requests, 30 missed (97 %); hour 1: 2,000, none missed; hour 2 empty; hour 3: 100, 1 missed
    arrival = np.concatenate([np.linspace(0, 3599, 1000), np.linspace(3600, 7199, 2000), [10900.0] * 100])
    met = np.ones(arrival.size, dtype=bool)
    met[:30] = False
    met[-1] = False
    h = by_hour(arrival, met, 0.99)
    assert met.mean() >= 0.99  # the whole run meets the goal ...
    assert (
        h["hours"] == 3 and h["hours_under_goal"] == 1
    )  # ... its first hour does not (the empty one is none)
    assert h["attainment_by_hour"] == [pytest.approx(0.97), 1.0, None, pytest.approx(0.99)]
    assert h["requests_by_hour"] == [1000, 2000, 0, 100]
    assert h["worst_hour_attainment"] == pytest.approx(0.97)
    assert by_hour([], [], 0.99)["hours"] == 0
    with pytest.raises(BurstpilotError, match="3 arrival times for 2 requests"):
        by_hour([0.0, 1.0, 2.0], [True, False], 0.99)


def test_oracle_is_the_cheapest_run_that_meets_the_goal(evaluated):
    """In the same run, no policy that meets the SLO goal (static pools included) costs less than the oracle,
    and the oracle is the cheapest schedule it simulated that meets the goal."""
    res, _ = evaluated
    goal = 0.99
    pol = res["policies"]
    assert pol["oracle"]["slo_attainment"] >= goal and res["meta"]["oracle"]["meets_goal"]
    feasible = {n: m["gpu_hours"] for n, m in pol.items() if n != "oracle" and m["slo_attainment"] >= goal}
    assert "static-peak" in feasible  # the comparison is not empty
    for name, gpu_h in feasible.items():
        assert pol["oracle"]["gpu_hours"] <= gpu_h, name
    tried = [t for t in res["meta"]["oracle"]["trials"] if t["attainment"] is not None]
    assert pol["oracle"]["gpu_hours"] == min(t["gpu_hours"] for t in tried if t["attainment"] >= goal)
    # the constant pools it tried are the static baselines' very runs (same simulation, same numbers)
    pools = {t["param"]: t for t in tried if t["family"] == "constant"}
    for name in ("static-peak", "static-mean"):
        t = pools[pol[name]["initial_replicas"]]
        assert (t["attainment"], t["gpu_hours"]) == (pol[name]["slo_attainment"], pol[name]["gpu_hours"])


def test_reports_open_with_the_verdict(evaluated):
    res, out = evaluated
    md = (out / "report.md").read_text().splitlines()
    assert md[0].startswith("# Evaluation")
    first = md[2].strip("*")
    goal_met = sorted(
        (m["gpu_hours"], n) for n, m in res["policies"].items() if n != "oracle" and m["meets_goal"]
    )
    assert first.startswith(goal_met[0][1]) and "fewest GPU-hours" in first
    html = (out / "report.html").read_text()
    assert 'id="verdict"' in html and "data:image/png;base64," in html and 'src="replicas' not in html


def test_shards_merge_into_the_unsharded_results(evaluated, tmp_path):
    res, _ = evaluated
    units = []
    names = ["oracle", "hpa", "static-peak"]
    for i in range(3):
        units += run_sweep([small_case()], [5], names, tmp_path / f"s{i}", shard=(i, 3), workers=1)
    assert (
        len(units) == 6 and len({u["unit"] for u in units}) == 6
    )  # 4 oracle families + 2 policies, once each
    merged = merge(units)[("small", 5)]
    for name in names:
        assert merged["policies"][name] == res["policies"][name], name
    assert merged["meta"]["oracle"]["family"] == res["meta"]["oracle"]["family"]
    with pytest.raises(BurstpilotError, match="twice"):
        merge(units + units[:1])


def test_the_oracle_capacity_fit_is_labelled():
    res = evaluate(small_case(120.0, capacity="oracle"), ["burstpilot", "hpa"], seed=5, workers=1)
    cap = res["meta"]["capacity"]
    assert cap["source"] == "oracle" and 0 < cap["capacity_scale"] <= 1.5
    assert {m["capacity_source"] for m in res["policies"].values()} == {"oracle"}


def test_measured_capacity_is_a_load_test_of_one_replica(monkeypatch):
    monkeypatch.setattr(capacity, "LOAD_TEST_S", 120.0)  # shorter steps than the real load test's 10 minutes
    res = evaluate(small_case(120.0, capacity="measured"), ["burstpilot", "static-peak"], seed=0, workers=1)
    cap = res["meta"]["capacity"]
    assert cap["source"] == "measured" and cap["measured_rate"] > 0
    # the SLO holds at the measured rate and not at twice the model's rate
    tried = {float(k): v for k, v in cap["rates_tried"].items()}
    assert min(v for r, v in tried.items() if r <= cap["measured_rate"] + 1e-9) >= 0.99
    assert tried[max(tried)] < 0.99
    assert all(m["capacity_source"] == "measured" for m in res["policies"].values())


def test_evaluate_cli_takes_the_workload_as_an_argument_and_shards(tmp_path, capsys):
    path = tmp_path / "w.csv"
    write_burstgpt_csv(generate_preset("burstgpt", duration_s=120, rps=20, seed=3, start_s=10 * 3600), path)
    common = [
        "--policies",
        "oracle,burstpilot,hpa",
        "--cold-start",
        "1m",
        "--max-replicas",
        "8",
        "--workers",
        "1",
    ]
    out = tmp_path / "out"
    assert main(["evaluate", str(path), *common, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fewest GPU-hours" in text or "met the" in text or "No policy met" in text
    whole = json.loads((out / "results.json").read_text())
    assert list(whole["policies"]) == ["oracle", "burstpilot", "hpa"]
    assert (out / "report.html").exists() and (out / "report.md").exists()
    # shards and merge
    for i in range(2):
        assert (
            main(["evaluate", str(path), *common, "--shard", f"{i}/2", "--out", str(tmp_path / f"sh{i}")])
            == 0
        )
    merged = tmp_path / "merged"
    assert (
        main(["evaluate", "merge", str(tmp_path / "sh0"), str(tmp_path / "sh1"), "--out", str(merged)]) == 0
    )
    assert json.loads((merged / "results.json").read_text())["policies"] == whole["policies"]
    # the old flag still works, with a warning
    assert main(["evaluate", "--workload", str(path), *common, "--out", str(tmp_path / "old")]) == 0
    assert "deprecated" in capsys.readouterr().err


def test_off_a_terminal_progress_is_plain_lines(tmp_path, capsys):
    path = tmp_path / "w.csv"
    write_burstgpt_csv(generate_preset("burstgpt", duration_s=60, rps=10, seed=3, start_s=10 * 3600), path)
    args = [
        "evaluate",
        str(path),
        "--policies",
        "burstpilot,hpa",
        "--workers",
        "1",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 0
    err = capsys.readouterr().err.splitlines()
    lines = [ln for ln in err if " evaluate: " in ln]  # burstpilot.progress: "HH:MM:SS evaluate: ..."
    assert lines and "simulation jobs 100% (2/2)" in lines[-1] and "last: " in lines[-1]
    assert not any("\x1b[" in ln for ln in err)  # no terminal control codes in a log


def test_bad_input_names_the_field(tmp_path, capsys):
    assert parse_slo("ttft=1.5s,tpot=80ms,attainment=0.995") == SLO(ttft_s=1.5, tpot_s=0.08, attainment=0.995)
    with pytest.raises(BurstpilotError, match="--slo"):
        parse_slo("ttft=fast")
    rc = main(["evaluate", "x.csv", "--policies", "magic", "--out", str(tmp_path)])
    assert rc == 2 and "--policies" in capsys.readouterr().err
    rc = main(["evaluate", "x.csv", "--cold-start", "soon", "--out", str(tmp_path)])
    assert rc == 2 and "--cold-start" in capsys.readouterr().err
    assert main(["evaluate", "merge", "--out", str(tmp_path)]) == 2
    assert main(["evaluate", "merge", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    assert "units" in capsys.readouterr().err


def test_rps_scales_the_workload_on_its_own_clock(tmp_path, capsys):
    src = generate_preset("burstgpt", duration_s=1800, rps=4, seed=3, start_s=9 * 3600)
    path = tmp_path / "w.csv"
    write_burstgpt_csv(src, path)
    scaled = load_workload(str(path), None, None, rps=12.0)
    span = src.arrival_s[-1] - src.arrival_s[0]
    assert scaled.arrival_s[-1] - scaled.arrival_s[0] == pytest.approx(span, rel=0.02)  # the clock kept
    assert len(scaled) / span == pytest.approx(12.0, rel=0.05)
    rc = main(["evaluate", str(path), "--rps", "12", "--speedup", "4", "--out", str(tmp_path / "o")])
    assert rc == 2 and "--rps" in capsys.readouterr().err
    assert main(["evaluate", str(path), "--rps", "-1", "--out", str(tmp_path / "o")]) == 2


def test_prepare_workload_starts_at_zero_and_drops_unservable():
    profile = load_profile("h100-llama3-8b")
    trace = generate_preset("burstgpt", duration_s=120, rps=10, seed=1, start_s=3600)
    w, dropped = prepare_workload(trace, profile)
    assert w.arrival_s[0] == 0.0
    too_long = (trace.request_tokens + np.maximum(trace.response_tokens, 1)) > profile.max_model_len
    assert dropped == int(too_long.sum()) and len(w) == len(trace) - dropped


def test_demo_runs_on_the_real_time_axis_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--profile", "h100-llama3-8b", "--hours", "0.1", "--rps", "20"]
    assert main([*args, "--cold-start", "60", "--realtime-minutes", "0", "--workers", "1"]) == 0
    text = (out / "README.md").read_text()
    assert "| burstpilot |" in text and "| hpa |" in text and "| oracle |" in text and "replicas.png" in text
    assert "real time axis" in text and "compressed" not in text
    res = json.loads((out / "results.json").read_text())
    assert set(res["policies"]) == set(ALL_POLICIES)
    assert res["meta"]["duration_s"] == pytest.approx(360, abs=5)  # 0.1 h of the day, not squeezed
    assert (out / "report.html").exists()


def test_burstgpt_window_keeps_the_clock():
    w = burstgpt_window(10.0, 1, hours=0.5, start_h=9.0)
    assert w.arrival_s[0] >= 0 and w.arrival_s[-1] <= 1800 and 1800 * 5 < len(w) < 1800 * 20


def test_realtime_replays_through_fleets_the_policies_scale(tmp_path):
    profile = load_profile("h100-llama3-8b")
    trace = generate_preset("burstgpt", duration_s=120, rps=4, seed=2, start_s=10 * 3600)
    workload, _ = prepare_workload(trace, profile)
    path = tmp_path / "w.csv"
    write_burstgpt_csv(workload.subset(workload.arrival_s < 12.0), path)
    out = tmp_path / "rt"
    rc = main(["evaluate", str(path), "--policies", "burstpilot,hpa", "--realtime", "--cold-start", "5",
               "--max-replicas", "4", "--out", str(out)])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["meta"]["mode"] == "realtime"
    sent = int((~workload.failed[workload.arrival_s < 12.0]).sum())
    for name in ("burstpilot", "hpa"):
        m = res["policies"][name]
        assert KEYS - {"meets_goal"} <= set(m) and m["requests"] == sent and m["gpu_hours"] > 0
        assert (out / name / "summary.json").exists()  # the load generator's own record of the run
    assert (out / "report.html").exists()


def test_policy_lists_are_consistent():
    assert set(ONLINE_POLICIES) | set(TUNED_POLICIES) | {"oracle", "static-peak", "static-mean"} == set(
        ALL_POLICIES
    )


@pytest.mark.parametrize(
    ("rows", "said"),
    [
        (  # two policies miss the goal equally: neither is "the closest" alone
            {"burstpilot": (0.967, 0.28), "hpa": (0.967, 0.28), "keda": (0.90, 0.2)},
            "No policy met the 99.0% attainment goal; the closest were burstpilot (0.28 GPU-h) and hpa "
            "(0.28 GPU-h), tied at 96.70%.",
        ),
        (
            {"burstpilot": (0.967, 0.28), "hpa": (0.95, 0.30)},
            "No policy met the 99.0% attainment goal; the closest was burstpilot (0.28 GPU-h) at 96.70%.",
        ),
        (  # two meet it at the same cost: no "0.0% fewer than"
            {"burstpilot": (0.995, 1.5), "static-peak": (0.992, 1.5), "hpa": (0.991, 2.0)},
            "burstpilot and static-peak met the 99.0% attainment goal at the same fewest GPU-hours (1.50).",
        ),
        (
            {"burstpilot": (0.995, 1.2), "hpa": (0.991, 1.5)},
            "burstpilot met the 99.0% attainment goal at the fewest GPU-hours (1.20), 20.0% fewer than the next "
            "policy that met it, hpa (1.50).",
        ),
    ],
)
def test_the_verdict_names_ties_as_ties(rows, said):
    results = {
        "meta": {"slo": {"attainment": 0.99}},
        "policies": {n: {"slo_attainment": a, "gpu_hours": g} for n, (a, g) in rows.items()},
    }
    assert verdict(results) == said
