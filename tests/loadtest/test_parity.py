"""What vllm bench serve and AIPerf users expect, checked against a fake server that records what it receives:
authentication, headers and extra body fields; generated and closed-loop schedules, warm-up, limits; the
vllm-bench JSON, the CSV; the target's /metrics captured beside the latencies."""

from __future__ import annotations

import asyncio
import csv
import json
import re

import numpy as np
import pytest

from burstpilot.cli import main
from burstpilot.errors import BurstpilotError
from burstpilot.loadtest import ReplayOptions, build_schedule, replay
from burstpilot.loadtest.records import read_records
from burstpilot.traces import make_trace, write_burstgpt_csv
from tests.support.fake_openai import FakeServer, with_server
from tests.support.workloads import make_workload


def _cli_against(server: FakeServer, *argv, env: dict | None = None, monkeypatch=None):
    """Runs `burstpilot ...` in a thread beside the server's event loop; returns the exit code."""

    async def go(s):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, main, [str(a).replace("{url}", s.url) for a in argv])

    return with_server(server, go)


def test_api_key_headers_and_extra_body_reach_the_server(tmp_path, monkeypatch):
    trace = make_trace([0.0, 0.01, 0.02], [5, 6, 7], [2, 3, 2])
    csv_path = write_burstgpt_csv(trace, tmp_path / "w.csv")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    server = FakeServer(api_key="sk-from-env")
    code = _cli_against(
        server, "replay", csv_path, "--target", "{url}", "--out", tmp_path / "a", "--no-progress",
        "--header", "X-Tenant: blue", "--header", "X-Trace:abc:def",
        "--extra-body", '{"top_p": 0.5, "max_tokens": 1, "seed": 7}',
    )  # fmt: skip
    assert code == 0
    assert len(server.bodies) == 3
    for body, headers in zip(server.bodies, server.headers, strict=True):
        assert headers["Authorization"] == "Bearer sk-from-env"
        assert headers["X-Tenant"] == "blue" and headers["X-Trace"] == "abc:def"  # the first colon splits
        assert body["top_p"] == 0.5 and body["seed"] == 7 and body["max_tokens"] == 1  # merged, and it wins
        assert body["stream"] is True and body["ignore_eos"] is True
    # --api-key wins over the environment; a --header Authorization wins over both
    server = FakeServer(api_key="sk-flag")
    code = _cli_against(server, "replay", csv_path, "--target", "{url}", "--out", tmp_path / "b", "--no-progress",
                        "--api-key", "sk-flag")  # fmt: skip
    assert code == 0 and {h["Authorization"] for h in server.headers} == {"Bearer sk-flag"}
    server = FakeServer(api_key="sk-hdr")
    code = _cli_against(server, "replay", csv_path, "--target", "{url}", "--out", tmp_path / "c", "--no-progress",
                        "--api-key", "sk-flag", "--header", "Authorization: Bearer sk-hdr")  # fmt: skip
    assert code == 0 and {h["Authorization"] for h in server.headers} == {"Bearer sk-hdr"}
    # secrets are never written: not in run.json, the summary, the records or the report
    for d in ("a", "b", "c"):
        for f in (tmp_path / d).iterdir():
            if f.suffix in (".json", ".jsonl", ".md", ".html", ".csv"):
                # an embedded figure is base64, where any short word can occur by chance
                text = re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", f.read_text())
                assert "sk-" not in text and "blue" not in text, f
    meta = json.loads((tmp_path / "a" / "run.json").read_text())
    assert meta["options"]["api_key"] == "(set)" and meta["options"]["headers"] == {
        "X-Tenant": "(set)",
        "X-Trace": "(set)",
    }


def test_a_wrong_key_stops_the_run_before_the_clock(tmp_path, capsys):
    trace = make_trace([0.0, 0.01], [5, 6], [2, 3])
    csv_path = write_burstgpt_csv(trace, tmp_path / "w.csv")
    server = FakeServer(api_key="right")
    code = _cli_against(
        server, "replay", csv_path, "--target", "{url}", "--out", tmp_path / "o", "--api-key", "x"
    )
    assert code == 2 and server.bodies == []
    assert "answered HTTP 401" in capsys.readouterr().err
    for flag, value, why in (("--header", "no-colon", "'no-colon' is not KEY:VALUE"),
                             ("--extra-body", "[1]", "must be a JSON object")):  # fmt: skip
        with pytest.raises(SystemExit) as e:  # argparse's usage error
            main(
                [
                    "replay",
                    str(csv_path),
                    "--target",
                    "http://127.0.0.1:9",
                    "--out",
                    str(tmp_path / "p"),
                    flag,
                    value,
                ]
            )
        assert e.value.code == 2 and why in capsys.readouterr().err


def test_request_rate_draws_gamma_gaps_as_vllm_does():
    w = make_workload([0.0, 1.0, 2.0], request_tokens=[5, 6, 7], response_tokens=[1, 2, 3])
    for burstiness in (0.25, 1.0, 4.0):
        s = build_schedule(w, mode="rate", rate=50.0, burstiness=burstiness, seed=3, limit=20_000)
        gaps = np.diff(s.scheduled_s)
        assert s.scheduled_s[0] == 0.0 and len(s) == 20_000
        assert gaps.mean() == pytest.approx(1 / 50, rel=0.05)
        assert gaps.std() / gaps.mean() == pytest.approx(1 / np.sqrt(burstiness), rel=0.08)  # CV = 1/sqrt(B)
    assert s.row[:6].tolist() == [0, 1, 2, 0, 1, 2]  # the rows' token counts, used again from the first
    assert s.index[:6].tolist() == [0, 1, 2, 3, 4, 5] and s.output_tokens[:4].tolist() == [1, 2, 3, 1]
    again = build_schedule(w, mode="rate", rate=50.0, burstiness=4.0, seed=3, limit=20_000)
    assert again.fingerprint == s.fingerprint and np.array_equal(again.scheduled_s, s.scheduled_s)
    assert build_schedule(w, mode="rate", rate=50.0, seed=4, limit=10).fingerprint != s.fingerprint
    d = build_schedule(w, mode="rate", rate=100.0, duration_s=2.0)
    assert d.scheduled_s.max() < 2.0 and 150 < len(d) < 250  # as many as the process gives in 2 s
    with pytest.raises(BurstpilotError, match="--burstiness: must be a positive number"):
        build_schedule(w, mode="rate", rate=5.0, burstiness=0.0)


def test_generated_rate_closed_loop_warmup_and_limits_end_to_end(tmp_path):
    w = make_workload([0.0, 0.5, 1.0, 1.5], request_tokens=[5, 6, 7, 8], response_tokens=2)

    async def go(s):
        out = {}
        out["rate"] = await replay(w, [s.url], tmp_path / "rate",
                                   ReplayOptions(request_rate=100.0, limit=30, plot=False))  # fmt: skip
        n_rate = len(s.bodies)
        s.max_in_flight = 0
        out["closed"] = await replay(w, [s.url], tmp_path / "closed",
                                     ReplayOptions(concurrency=3, limit=15, plot=False))  # fmt: skip
        closed_peak = s.max_in_flight
        before = len(s.bodies)
        out["warm"] = await replay(
            w, [s.url], tmp_path / "warm", ReplayOptions(warmup=5, limit=2, plot=False)
        )
        n_warm = len(s.bodies) - before
        out["dur"] = await replay(w, [s.url], tmp_path / "dur", ReplayOptions(duration_s=1.2, plot=False))
        return out, n_rate, closed_peak, n_warm

    out, n_rate, closed_peak, n_warm = with_server(FakeServer(ttft_s=0.05, itl_s=0.01), go)
    rate = read_records(tmp_path / "rate")
    assert n_rate == 30 and [r["index"] for r in rate] == list(range(30))
    assert [r["row"] for r in rate[:5]] == [0, 1, 2, 3, 0]
    assert [r["expected_prompt_tokens"] for r in rate[:5]] == [5, 6, 7, 8, 5]
    closed = read_records(tmp_path / "closed")
    assert len(closed) == 15 and closed_peak == 3  # three in flight at the server, never more
    for r in closed:
        in_flight = sum(1 for q in closed if q["sent_s"] <= r["sent_s"] < q["sent_s"] + q["e2e_s"])
        assert in_flight <= 3
        assert r["dispatch_lag_s"] < 0.05  # a closed loop sends when a slot frees: no schedule to lag
    assert n_warm == 7 and len(read_records(tmp_path / "warm")) == 2  # 5 warm-up requests, not recorded
    assert out["warm"]["requests"]["scheduled"] == 2
    assert json.loads((tmp_path / "warm" / "run.json").read_text())["warmup"] == {
        "requests": 5,
        "failed": 0,
        "errors": {},
    }
    assert [r["index"] for r in read_records(tmp_path / "dur")] == [0, 1, 2]  # scheduled before 1.2 s


def test_vllm_bench_json_and_csv(tmp_path):
    w = make_workload(
        [0.01 * i for i in range(20)], response_tokens=[1 if i % 5 == 0 else 4 for i in range(20)]
    )

    async def go(s):
        opts = ReplayOptions(plot=False, percentiles=(50.0, 99.0, 99.9))
        return await replay(w, [s.url], tmp_path, opts)

    summary = with_server(FakeServer(ttft_s=0.02, itl_s=0.005), go)
    v = json.loads((tmp_path / "vllm-bench.json").read_text())
    # the keys and units of vllm bench serve --save-result (vllm/benchmarks/serve.py)
    for key in ("date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts",
                "request_rate", "burstiness", "max_concurrency", "duration", "completed", "failed",
                "total_input_tokens", "total_output_tokens", "request_throughput", "request_goodput",
                "output_throughput", "total_token_throughput", "max_output_tokens_per_s",
                "max_concurrent_requests"):  # fmt: skip
        assert key in v, key
    for metric in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std", "p50", "p99", "p99.9"):
            assert isinstance(v[f"{stat}_{metric}_ms"], float), (stat, metric)
    assert (
        v["completed"] == 20 and v["failed"] == 0 and v["num_prompts"] == 20 and v["model_id"] == "fake-model"
    )
    assert v["p99_ttft_ms"] == pytest.approx(summary["ttft_s"]["p99"] * 1000)
    assert v["median_e2el_ms"] == pytest.approx(summary["e2e_s"]["p50"] * 1000)
    assert v["total_output_tokens"] == summary["output_tokens"] == 4 * 4 * 4 + 4
    assert v["request_rate"] == pytest.approx(100.0, rel=0.01)  # a trace's rate: its mean
    assert (
        1 <= v["max_concurrent_requests"] <= 20 and v["max_output_tokens_per_s"] == summary["output_tokens"]
    )
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    got = {(r["metric"], r["stat"]): r for r in rows}
    assert float(got["ttft", "p99"]["value"]) == pytest.approx(summary["ttft_s"]["p99"] * 1000)
    assert got["ttft", "p99"]["unit"] == "ms" and got["requests", "completed"]["value"] == "20"


def test_the_targets_metrics_are_captured_beside_the_latencies(tmp_path):
    w = make_workload([0.05 * i for i in range(30)], response_tokens=4)

    async def go(s):
        sd = tmp_path / "targets.json"
        sd.write_text(json.dumps([{"targets": [s.url.removeprefix("http://")]}]))
        a = await replay(w, [s.url], tmp_path / "a", ReplayOptions(server_metrics_interval_s=0.2))
        b = await replay(w, [s.url], tmp_path / "b",
                         ReplayOptions(server_metrics=[str(sd), s.url + "/nothing"], plot=False))  # fmt: skip
        c = await replay(w, [s.url], tmp_path / "c", ReplayOptions(server_metrics=[], plot=False))
        return a, b, c

    a, b, c = with_server(FakeServer(itl_s=0.02), go)
    sm = a["server_metrics"]
    assert sm["rounds"] >= 5 and sm["urls"] == [sm["sources"][0]]
    assert set(sm["series"]) == {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
    }
    assert sm["series"]["vllm:num_requests_running"]["max"] >= 1
    lines = (tmp_path / "a" / "server_metrics.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["t_s"] >= -0.1 and any(
        "vllm:num_requests_running" in k for k in first["metrics"][sm["urls"][0]]
    )
    assert not any("_bucket" in k for k in first["metrics"][sm["urls"][0]])  # histograms are left out
    assert b["server_metrics"]["rounds"] >= 1 and b["server_metrics"]["urls"][0].endswith("/metrics")
    assert "HTTP 404" in b["server_metrics"]["not_captured"][f"{b['server_metrics']['sources'][1]}"]
    assert "server_metrics" not in c and not (tmp_path / "c" / "server_metrics.jsonl").exists()
    assert "## The target's /metrics during the run" in (tmp_path / "a" / "report.md").read_text()
