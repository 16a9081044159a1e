"""Replay against the fake streaming server: timings, failures, interrupts, shards."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.loadtest import ReplayOptions, Timeouts, merge, replay
from burstpilot.loadtest.records import ERROR_KINDS, read_records
from burstpilot.slo import SLO
from tests.support.fake_openai import FakeServer, with_server
from tests.support.workloads import make_workload

REPO = Path(__file__).resolve().parents[2]


def test_metric_definitions_on_known_stream(tmp_path):
    ttft, itl, n = 0.05, 0.02, 5
    w = make_workload([0.0, 0.05, 0.1], response_tokens=n)

    async def go(s):
        return await replay(w, [s.url], tmp_path, ReplayOptions(slo=SLO(ttft_s=10.0, tpot_s=10.0)))

    summary = with_server(FakeServer(ttft_s=ttft, itl_s=itl), go)
    recs = read_records(tmp_path)
    assert [r["index"] for r in recs] == [0, 1, 2]
    for r in recs:
        assert r["error"] == "" and r["status"] == 200
        assert r["output_tokens"] == n and r["usage_reported"] and r["chunks"] == n
        assert len(r["itl_s"]) == n - 1
        assert r["ttft_s"] >= ttft * 0.99
        # the last chunk cannot arrive before the server wrote it
        assert r["ttft_s"] + sum(r["itl_s"]) >= (ttft + (n - 1) * itl) * 0.99
        # TPOT = (E2E - TTFT) / (n - 1); the stream's end follows the last chunk.
        assert r["tpot_s"] == pytest.approx((r["e2e_s"] - r["ttft_s"]) / (n - 1))
        assert r["e2e_s"] >= r["ttft_s"] + sum(r["itl_s"]) - 1e-6
        assert r["dispatch_lag_s"] == pytest.approx(r["sent_s"] - r["scheduled_s"])
    assert summary["itl_s"]["count"] == 3 * (n - 1)  # ITL pools every gap of every request
    assert summary["requests"] == {"scheduled": 3, "recorded": 3, "completed": 3, "failed": 0, "errors": {}}
    assert summary["output_tokens"] == 3 * n
    assert summary["slo"]["attainment"] == 1.0
    assert summary["slo"]["goodput"] == pytest.approx(3 / summary["duration_s"])
    table = pq.read_table(tmp_path / "requests.parquet")
    assert table.num_rows == 3 and "ttft_s" in table.column_names
    assert (tmp_path / "latency.png").stat().st_size > 0
    assert json.loads((tmp_path / "summary.json").read_text())["requests"]["completed"] == 3


def test_request_shape_completions_and_chat(tmp_path):
    w = make_workload([0.0, 0.01], request_tokens=[30, 7], response_tokens=[3, 2])

    async def go(s):
        await replay(w, [s.url], tmp_path / "c", ReplayOptions(plot=False))
        await replay(w, [s.url + "/v1"], tmp_path / "chat", ReplayOptions(api="chat", model="m2", plot=False))
        return s.bodies

    bodies = with_server(FakeServer(), go)
    first = bodies[0]
    assert first["model"] == "fake-model"  # taken from /v1/models
    assert first["max_tokens"] == 3 and first["ignore_eos"] and first["stream"]
    assert first["burstpilot_prompt_tokens"] == 30 and len(first["prompt"].split()) == 30
    chat = bodies[2]
    assert chat["model"] == "m2" and chat["messages"][0]["role"] == "user"
    recs = read_records(tmp_path / "chat")
    assert [r["output_tokens"] for r in recs] == [3, 2] and not any(r["error"] for r in recs)


def test_non_streaming_requests(tmp_path):
    w = make_workload([0.0, 0.01], response_tokens=[4, 1])

    async def go(s):
        await replay(w, [s.url], tmp_path / "c", ReplayOptions(stream=False, plot=False))
        await replay(w, [s.url], tmp_path / "chat", ReplayOptions(stream=False, api="chat", plot=False))
        return s.bodies

    bodies = with_server(FakeServer(ttft_s=0.02, itl_s=0.01), go)
    assert not any(b["stream"] for b in bodies) and "stream_options" not in bodies[0]
    for d in ("c", "chat"):
        recs = read_records(tmp_path / d)
        assert [r["error"] for r in recs] == ["", ""]
        assert [r["output_tokens"] for r in recs] == [4, 1]
        assert all(r["ttft_s"] == pytest.approx(r["e2e_s"], abs=0.005) for r in recs)  # no stream: TTFT = E2E
        assert recs[0]["ttft_s"] >= 0.02 + 3 * 0.01


def test_failed_rows_are_skipped_unless_included(tmp_path):
    w = make_workload([0.0, 0.01, 0.02], response_tokens=[2, 0, 2], failed=[False, True, False])

    async def go(s):
        a = await replay(w, [s.url], tmp_path / "a", ReplayOptions(plot=False))
        b = await replay(w, [s.url], tmp_path / "b", ReplayOptions(include_failed=True, plot=False))
        return a, b

    a, b = with_server(FakeServer(), go)
    assert [r["index"] for r in read_records(tmp_path / "a")] == [0, 2]
    assert b["requests"]["completed"] == 3


FAILURE_MODES = {
    10: ("http_400", "http_4xx"),
    11: ("http_503", "http_5xx"),
    12: ("reset", "reset"),
    13: ("truncate", "truncated"),
    14: ("cut", "truncated"),
    15: ("malformed", "malformed_sse"),
    16: ("garbage", "malformed_sse"),
    17: ("stall_first", "first_token_timeout"),
    18: ("slow", "total_timeout"),
    19: ("error_event", "http_5xx"),
    20: ("rst", "reset"),  # issue 15 item 7: a reset before any response is `reset`, not `client`
    21: ("bad_choices", "malformed_response"),  # issue 15 item 3
    22: ("bad_usage", "malformed_response"),
    23: ("long_line", "malformed_response"),
    24: ("empty", "empty_response"),
}


def test_every_failure_kind_is_recorded_and_replay_goes_on(tmp_path):
    modes = {k: m for k, (m, _) in FAILURE_MODES.items()}
    prompt = [30, *modes, 30]
    out = [30 if modes.get(p) == "slow" else 6 for p in prompt]  # slow: 6 s of tokens, past the total timeout
    w = make_workload([0.01 * i for i in range(len(prompt))], request_tokens=prompt, response_tokens=out)
    dead = FakeServer(stop_after_models=True)  # accepts the pre-flight check, then goes away

    async def go(s):
        await dead.start()
        # generous for a busy machine (a 2 s first-token limit once failed a sound request under load), yet
        # short of the 5 s first-token stall and the slow stream's 6 s
        opts = ReplayOptions(timeouts=Timeouts(connect_s=4, first_token_s=4.0, total_s=5.0), plot=False)
        summary = await replay(w, [s.url], tmp_path / "main", opts)
        w2 = make_workload([0.0], request_tokens=[31], response_tokens=2)
        await replay(w2, [dead.url], tmp_path / "dead", replace(opts, wait_ready_s=0))
        return summary

    summary = with_server(FakeServer(modes=modes), go)
    recs = read_records(tmp_path / "main")
    got = {r["expected_prompt_tokens"]: r["error"] for r in recs}
    assert {k: got[k] for k in modes} == {k: kind for k, (_, kind) in FAILURE_MODES.items()}
    assert [r["error"] for r in recs if r["expected_prompt_tokens"] == 30] == ["", ""]
    assert recs[-1]["error"] == ""  # the replay went on after every failure
    assert summary["requests"]["errors"]["malformed_sse"] == 2
    assert summary["requests"]["errors"]["malformed_response"] == 3
    assert summary["requests"]["completed"] == 2
    assert [r["status"] for r in recs if r["expected_prompt_tokens"] in (10, 11)] == [400, 503]
    bad = {r["expected_prompt_tokens"]: r["error_detail"] for r in recs}
    assert "choices is a dict, not a list" in bad[21]
    assert "usage.completion_tokens is many (str), not a token count" in bad[22]
    assert "an SSE line longer than 128 KiB" in bad[23]
    dead_rec = read_records(tmp_path / "dead")[0]
    assert dead_rec["error"] == "connect"
    assert {r["error"] for r in recs} - {""} <= set(ERROR_KINDS)  # the documented vocabulary


def test_malformed_json_answers_fail_without_streaming(tmp_path):
    modes = {10: "bad_choices", 11: "bad_usage"}
    w = make_workload([0.0, 0.01, 0.02], request_tokens=[10, 11, 12], response_tokens=3)

    async def go(s):
        return await replay(w, [s.url], tmp_path, ReplayOptions(stream=False, plot=False))

    summary = with_server(FakeServer(modes=modes), go)
    assert [r["error"] for r in read_records(tmp_path)] == ["malformed_response", "malformed_response", ""]
    assert summary["requests"]["completed"] == 1


def test_refusing_target_fails_before_the_clock_starts(tmp_path, capsys):
    from tests.support.fake_openai import free_port

    w = make_workload([0.0, 0.1])

    async def go(s):
        dead = f"http://127.0.0.1:{free_port()}"
        with pytest.raises(BurstpilotError, match=r"--target http://127\.0\.0\.1:\d+: cannot connect"):
            await replay(w, [s.url, dead], tmp_path / "a", ReplayOptions(wait_ready_s=0))
        t = time.monotonic()
        with pytest.raises(
            BurstpilotError, match=r"not ready after 1 s \(--wait-ready\); last: cannot connect"
        ):
            await replay(w, [s.url, dead], tmp_path / "b", ReplayOptions(wait_ready_s=1.0))
        return s.arrivals, time.monotonic() - t

    arrivals, waited = with_server(FakeServer(), go)
    assert arrivals == [] and not list(tmp_path.glob("*/requests.jsonl"))
    assert waited >= 1.0  # it did wait, and said so
    assert "waiting up to 1 s for http://127.0.0.1:" in capsys.readouterr().err


def test_the_clock_starts_when_the_target_is_ready(tmp_path, capsys):
    """A target in its cold start (/health 503, completions 503) is waited for: nothing fails, nothing is sent
    before it is ready, and the first request leaves at the start of the schedule once it is."""
    w = make_workload([0.0, 0.05, 0.1], response_tokens=2)
    server = FakeServer(ready_after_s=1.5)

    async def go(s):
        return await replay(w, [s.url], tmp_path, ReplayOptions(plot=False, wait_ready_s=30))

    summary = with_server(server, go)
    assert summary["requests"]["errors"] == {} and summary["requests"]["completed"] == 3
    assert min(server.arrivals) - server.started_at >= 1.5
    assert max(r["dispatch_lag_s"] for r in read_records(tmp_path)) < 0.5  # the clock started after the wait
    err = capsys.readouterr().err
    assert "waiting up to 30 s for http://127.0.0.1:" in err and "(GET /health: HTTP 503 loading)" in err
    assert "is ready after" in err and "starting the clock" in err


def test_a_server_without_health_is_ready_when_it_lists_its_models(tmp_path):
    from aiohttp import web

    from tests.support.fake_openai import free_port

    async def models(request):
        return web.json_response({"data": [{"id": "m"}]})

    async def go():
        app = web.Application()
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            from burstpilot.loadtest.runner import preflight

            return await preflight([f"http://127.0.0.1:{port}/v1"], ReplayOptions(wait_ready_s=5))
        finally:
            await runner.cleanup()

    assert asyncio.run(go()) == "m"


def test_absolute_deadlines_catch_up_after_a_stall(tmp_path):
    """A 0.4 s stall of the event loop must not shift the rest of the schedule (no accumulated sleeps)."""
    w = make_workload([0.02 * i for i in range(60)], response_tokens=1)

    async def go(s):
        asyncio.get_running_loop().call_later(0.3, time.sleep, 0.4)  # blocks the loop from ~0.3 to ~0.7 s
        return await replay(w, [s.url], tmp_path, ReplayOptions(plot=False))

    with_server(FakeServer(), go)
    recs = read_records(tmp_path)
    assert len(recs) == 60
    assert all(r["sent_s"] >= r["scheduled_s"] - 1e-3 for r in recs)  # never early
    late = [r for r in recs if r["scheduled_s"] >= 0.9]
    assert late and max(r["dispatch_lag_s"] for r in late) < 0.2  # back on schedule, not 0.4 s behind
    assert max(r["dispatch_lag_s"] for r in recs) > 0.2  # the stall was real


def test_least_outstanding_and_round_robin_spread_over_targets(tmp_path):
    w = make_workload([0.005 * i for i in range(12)], response_tokens=1)

    async def go(s):
        b = FakeServer()
        await b.start()
        try:
            await replay(w, [s.url, b.url], tmp_path / "rr", ReplayOptions(plot=False))
            await replay(
                w, [s.url, b.url], tmp_path / "lo", ReplayOptions(balance="least-outstanding", plot=False)
            )
        finally:
            await b.stop()
        return s.url, b.url

    a_url, b_url = with_server(FakeServer(), go)
    rr = read_records(tmp_path / "rr")
    assert [r["target"] for r in rr] == [a_url, b_url] * 6
    lo = read_records(tmp_path / "lo")
    assert {r["target"] for r in lo} == {a_url, b_url}


def test_max_concurrency_bounds_in_flight_requests(tmp_path):
    w = make_workload([0.0] * 6, response_tokens=2)

    async def go(s):
        return await replay(w, [s.url], tmp_path, ReplayOptions(max_concurrency=2, plot=False))

    with_server(FakeServer(ttft_s=0.1), go)
    recs = sorted(read_records(tmp_path), key=lambda r: r["sent_s"])
    ends = [r["sent_s"] + r["e2e_s"] for r in recs]
    for r in recs:  # at each send, at most one other request is still running
        assert sum(1 for q, e in zip(recs, ends, strict=True) if q["sent_s"] < r["sent_s"] < e) <= 1


def test_interrupt_flushes_and_resume_completes(tmp_path):
    w = make_workload([0.05 * i for i in range(40)], response_tokens=3)

    async def interrupt_after(s, n):  # SIGINT once n requests have arrived (the run is under way)
        while len(s.arrivals) < n:
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    async def go(s):
        killer = asyncio.create_task(interrupt_after(s, 8))
        first = await replay(w, [s.url], tmp_path, ReplayOptions(grace_s=0.05, plot=False))
        await killer
        with pytest.raises(BurstpilotError, match="already holds replay results"):
            await replay(w, [s.url], tmp_path, ReplayOptions(plot=False))
        second = await replay(w, [s.url], tmp_path, ReplayOptions(resume=True, plot=False))
        return first, second

    first, second = with_server(FakeServer(ttft_s=0.2), go)
    assert first["interrupted"] and 0 < first["requests"]["recorded"] < 40
    assert first["requests"]["errors"].get("cancelled", 0) >= 1  # in flight past the grace period
    assert not second["interrupted"]
    recs = read_records(tmp_path)
    assert sorted(r["index"] for r in recs) == list(range(40))
    assert second["requests"]["completed"] == 40
    # resumed rows keep their place in the schedule frame
    assert all(abs(r["scheduled_s"] - 0.05 * r["index"]) < 1e-9 for r in recs)


def test_torn_last_line_is_dropped(tmp_path):
    good = {"index": 0, "scheduled_s": 0.0, "sent_s": 0.0, "ttft_s": 0.1, "e2e_s": 0.2, "error": ""}
    (tmp_path / "requests.jsonl").write_text(json.dumps(good) + '\n{"index": 1, "sched')
    assert read_records(tmp_path) == [good]
    (tmp_path / "requests.jsonl").write_text('{"index": 1, "sched\n' + json.dumps(good) + "\n")
    with pytest.raises(BurstpilotError, match=r"requests\.jsonl:1: not a JSON record"):
        read_records(tmp_path)


KILL_SCRIPT = textwrap.dedent(
    """
    import asyncio
    from tests.support.workloads import make_workload
    from burstpilot.loadtest import ReplayOptions, replay
    w = make_workload([0.02 * i for i in range(1000)], response_tokens=2)
    print("start", flush=True)
    asyncio.run(replay(w, [{url!r}], {out!r}, ReplayOptions(plot=False)))
    """
)


def test_kill_9_keeps_everything_completed_a_second_before(tmp_path):
    async def go(s):
        script = KILL_SCRIPT.format(url=s.url, out=str(tmp_path))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdout=subprocess.PIPE, cwd=str(REPO)
        )
        await proc.stdout.readline()
        while len(s.finished) < 90:  # bounded by the workload: 1000 requests at 50/s
            await asyncio.sleep(0.05)
        killed_at = time.time()
        proc.kill()
        await proc.wait()
        return [t for t in s.finished if t < killed_at - 1.0]

    durable = with_server(FakeServer(), go)
    assert len(durable) >= 1
    assert len(read_records(tmp_path)) >= len(durable)


def test_shards_merge_to_the_unsharded_accounting(tmp_path):
    modes = {13: "truncate", 10: "http_400"}
    tokens = [8, 13, 8, 10, 8, 8, 13, 8, 8, 8, 10]
    w = make_workload([0.01 * i for i in range(len(tokens))], request_tokens=tokens, response_tokens=3)

    async def go(s):
        full = await replay(w, [s.url], tmp_path / "full", ReplayOptions(plot=False))
        for i in range(3):
            await replay(w, [s.url], tmp_path / f"s{i}", ReplayOptions(shard=(i, 3), plot=False))
        return full

    full = with_server(FakeServer(modes=modes), go)
    shard_rows = [sorted(r["index"] for r in read_records(tmp_path / f"s{i}")) for i in range(3)]
    assert shard_rows == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    merged = merge([tmp_path / f"s{i}" for i in range(3)], tmp_path / "merged")
    for key in ("requests", "prompt_tokens", "output_tokens"):
        assert merged[key] == full[key]
    assert merged["ttft_s"]["count"] == full["ttft_s"]["count"]
    assert merged["itl_s"]["count"] == full["itl_s"]["count"]
    assert merged["missing_shards"] == [] and merged["shards"] == ["0/3", "1/3", "2/3"]
    assert pq.read_table(tmp_path / "merged" / "requests.parquet").num_rows == len(tokens)
    with pytest.raises(BurstpilotError, match="appears twice"):
        merge([tmp_path / "s0", tmp_path / "s0"], tmp_path / "bad")
    with pytest.raises(BurstpilotError, match="different splits"):
        merge([tmp_path / "s0", tmp_path / "full"], tmp_path / "bad")


def test_workers_share_one_schedule(tmp_path):
    w = make_workload([0.01 * i for i in range(30)], response_tokens=2)

    async def go(s):
        return await replay(w, [s.url], tmp_path, ReplayOptions(workers=2, plot=False))

    summary = with_server(FakeServer(), go)
    recs = read_records(tmp_path)
    assert sorted(r["index"] for r in recs) == list(range(30))
    assert {r["worker"] for r in recs} == {0, 1}
    assert all(r["worker"] == r["index"] % 2 for r in recs)
    assert summary["requests"]["completed"] == 30
    assert sorted(p.name for p in tmp_path.glob("requests*.jsonl")) == [
        "requests-w0.jsonl",
        "requests-w1.jsonl",
    ]


def test_connect_timeout_is_recorded():
    """A listener whose accept queue is full drops SYNs on loopback: the connect times out."""
    import socket as sk

    from burstpilot.loadtest.client import send
    from burstpilot.loadtest.runner import ReplayOptions as Opts
    from burstpilot.loadtest.runner import _session

    listener = sk.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):  # fill the accept queue (never accepted)
        c = sk.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.1)

    async def go():
        opts = Opts(timeouts=Timeouts(connect_s=0.3, first_token_s=5, total_s=5))
        rec = {"scheduled_s": 0.0}
        async with _session(opts) as session:
            await send(
                session,
                f"http://127.0.0.1:{port}/v1/completions",
                b"{}",
                rec,
                opts.timeouts,
                time.perf_counter(),
            )
        return rec

    try:
        rec = asyncio.run(go())
    finally:
        for c in fillers:
            c.close()
        listener.close()
    assert rec["error"] == "connect_timeout", rec


def test_stored_records_of_any_shape_never_crash_the_summary_and_resume_works(tmp_path):
    """Issue 15 item 3: records an older version stored (status 200, no error, no timings, text where numbers
    belong) are failures of their own kind in the summary, and --resume completes the run."""
    w = make_workload([0.01 * i for i in range(6)], response_tokens=2)

    async def go(s):
        first = await replay(w, [s.url], tmp_path, ReplayOptions(limit=2, plot=False))
        return first

    with_server(FakeServer(), go)
    # the limited run's fingerprint differs; rewrite run.json as a full run would have it, with stored junk
    from burstpilot.loadtest.schedule import build_schedule

    meta = json.loads((tmp_path / "run.json").read_text())
    meta["fingerprint"] = build_schedule(w).fingerprint
    (tmp_path / "run.json").write_text(json.dumps(meta))
    junk = [
        {"index": 2, "sent_s": 0.02, "scheduled_s": 0.02, "status": 200, "error": "", "ttft_s": None, "e2e_s": None,
         "output_tokens": "many", "usage_reported": "yes"},
        {"index": 3, "sent_s": "soon", "scheduled_s": 0.03, "status": "200", "error": "", "ttft_s": "0.1",
         "e2e_s": 0.2, "itl_s": "x", "prompt_tokens": [1]},
        {"index": 4.0, "sent_s": 0.04, "scheduled_s": 0.04, "error": 5, "ttft_s": float("inf"),
         "e2e_s": 0.3, "itl_s": [0.1, "a", None], "output_tokens": True},
    ]  # fmt: skip
    with open(tmp_path / "requests.jsonl", "a") as fh:
        for r in junk:
            fh.write(json.dumps(r) + "\n")
    records = read_records(tmp_path)
    assert [r["error"] for r in records][2:] == ["malformed_response", "empty_response", "5"]
    from burstpilot.loadtest import summarize

    s = summarize(records, SLO(ttft_s=1.0))
    assert s["requests"]["recorded"] == 5 and s["requests"]["completed"] == 2
    assert s["requests"]["errors"] == {"5": 1, "empty_response": 1, "malformed_response": 1}

    async def resume(s):
        return await replay(w, [s.url], tmp_path, ReplayOptions(resume=True, plot=False, slo=SLO(ttft_s=1.0)))

    summary = with_server(FakeServer(), resume)
    assert (
        summary["requests"]["recorded"] == 6
    )  # the 5th row was sent now; the junk records are kept as failures
    assert json.loads((tmp_path / "summary.json").read_text())["requests"]["completed"] == 3
    assert pq.read_table(tmp_path / "requests.parquet").num_rows == 6
