import asyncio
import time
from dataclasses import replace

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from burstpilot.sim.des import simulate
from burstpilot.sim.workload import Workload
from tests.support.sim_replica import MODEL, PROFILE, running_replica, stream_tokens


async def with_replica(fn, max_body_bytes=1 << 20, **kw):
    async with running_replica(max_body_bytes, **kw) as (url, rep), aiohttp.ClientSession() as session:
        return await fn(session, url, rep)


def run(coro_fn, **kw):
    return asyncio.run(with_replica(coro_fn, **kw))


def test_streaming_and_plain_responses_have_openai_shapes():
    async def go(session, url, rep):
        body = {"model": MODEL, "prompt": "x" * 40, "max_tokens": 5, "ignore_eos": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        _, chunks = await stream_tokens(session, url, body)
        assert [c["object"] for c in chunks] == ["text_completion"] * 6
        assert [c["choices"][0]["finish_reason"] for c in chunks[:5]] == [None] * 4 + ["length"]
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
            "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}  # fmt: skip
        r = await session.post(url + "/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "ignore_eos": True,
            "burstpilot_prompt_tokens": 700})  # fmt: skip
        d = await r.json()
        assert d["object"] == "chat.completion" and d["choices"][0]["message"]["role"] == "assistant"
        assert d["usage"] == {"prompt_tokens": 700, "completion_tokens": 3, "total_tokens": 703}
        models = await (await session.get(url + "/v1/models")).json()
        assert models["data"][0]["id"] == MODEL

    run(go)


def test_bad_requests_get_openai_errors():
    cases = [
        (b"{nope", 400, None),
        (b"[1, 2]", 400, None),
        ({"prompt": "a"}, 400, "model"),
        ({"model": "other", "prompt": "a"}, 404, "model"),
        ({"model": MODEL}, 400, "prompt"),
        ({"model": MODEL, "prompt": {"a": 1}}, 400, "prompt"),
        ({"model": MODEL, "prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
        ({"model": MODEL, "prompt": "a", "max_tokens": "5"}, 400, "max_tokens"),
        ({"model": MODEL, "prompt": "a", "max_tokens": 40_000}, 400, "max_tokens"),
        ({"model": MODEL, "prompt": "a", "n": 2}, 400, "n"),
        ({"model": MODEL, "prompt": "a", "stream": "yes"}, 400, "stream"),
        ({"model": MODEL, "prompt": "a", "stream_options": {"include_usage": True}}, 400, "stream_options"),
        ({"model": MODEL, "prompt": "a", "ignore_eos": 1}, 400, "ignore_eos"),
        ({"model": MODEL, "prompt": "a", "burstpilot_prompt_tokens": -3}, 400, "burstpilot_prompt_tokens"),
        ({"model": MODEL, "prompt": "a", "burstpilot_prompt_tokens": 33_000}, 400, "max_tokens"),
        (b"[" * 2000 + b"]" * 2000, 400, None),  # nested deeper than the JSON decoder recurses
        (b'{"model": "m", "prompt": "a", "x": ' + b"[" * 1900 + b"]" * 1900 + b"}", 400, None),
        ({"model": ["x"], "prompt": "a"}, 400, "model"),
        ({"model": MODEL, "prompt": "\ud800 lone surrogate"}, 200, None),
        ({"model": MODEL, "prompt": "a", "n": True}, 400, "n"),
        (
            {"model": MODEL, "prompt": "a", "stream": True, "stream_options": {"include_usage": "yes"}},
            400,
            "stream_options",
        ),
    ]
    chat_cases = [
        ({"model": MODEL, "messages": []}, 400, "messages"),
        ({"model": MODEL, "messages": ["x"]}, 400, "messages"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            400,
            "messages",
        ),
        ({"model": MODEL, "messages": [{"role": "assistant", "content": None}], "max_tokens": 2}, 200, None),
    ]

    async def go(session, url, rep):
        for path, items in (("/v1/completions", cases), ("/v1/chat/completions", chat_cases)):
            for body, status, param in items:
                kw = {"data": body} if isinstance(body, bytes) else {"json": body}
                r = await session.post(url + path, **kw)
                assert r.status == status, body
                if status == 200:
                    await r.read()
                    continue
                err = (await r.json())["error"]
                assert err["param"] == param and err["message"] and err["code"] == status
        r = await session.post(url + "/v1/completions", data=b"x" * 5000)
        assert r.status == 413
        assert rep.engine.num_running == 0 and rep.engine.num_waiting == 0

    run(go, max_body_bytes=4096)


def test_cold_start_and_queue_limit_answer_503():
    async def go(session, url, rep):
        assert (await session.get(url + "/health")).status == 503
        r = await session.post(url + "/v1/completions", json={"model": MODEL, "prompt": "a"})
        assert r.status == 503 and "loading" in (await r.json())["error"]["message"]
        await asyncio.sleep(0.45)
        assert (await session.get(url + "/health")).status == 200
        # 300 requests at once: the first ones wait for the next step, and only 2 may wait
        body = {"model": MODEL, "prompt": "a", "max_tokens": 20, "ignore_eos": True}
        tasks = [asyncio.create_task(session.post(url + "/v1/completions", json=body)) for _ in range(300)]
        done = [await t for t in tasks]
        statuses = [r.status for r in done]
        assert 503 in statuses
        msg = [await r.json() for r in done if r.status == 503][0]["error"]["message"]
        assert "queue is full" in msg

    async def outer(session, url, rep):
        try:
            await asyncio.wait_for(go(session, url, rep), 30)
        except TimeoutError:
            raise AssertionError("queue limit test hung") from None

    run(outer, cold_start_s=0.3, max_waiting=2)


def test_metrics_parse_with_prometheus_parser():
    async def go(session, url, rep):
        await stream_tokens(
            session, url, {"model": MODEL, "prompt": "hello", "max_tokens": 4, "ignore_eos": True}
        )
        return await (await session.get(url + "/metrics")).text()

    text = run(go)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    expect = {
        "vllm:num_requests_running": "gauge",
        "vllm:num_requests_waiting": "gauge",
        "vllm:kv_cache_usage_perc": "gauge",
        "vllm:num_preemptions": "counter",
        "vllm:prompt_tokens": "counter",
        "vllm:generation_tokens": "counter",
        "vllm:request_success": "counter",
        "vllm:time_to_first_token_seconds": "histogram",
        "vllm:inter_token_latency_seconds": "histogram",
        "vllm:request_time_per_output_token_seconds": "histogram",
        "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:request_queue_time_seconds": "histogram",
    }
    for name, kind in expect.items():
        assert fams[name].type == kind, name
        assert all(s.labels.get("model_name") == MODEL for s in fams[name].samples), name
    val = {s.name: s.value for f in fams.values() for s in f.samples if not s.name.endswith("_created")}
    assert val["vllm:generation_tokens_total"] == 4 and val["vllm:prompt_tokens_total"] == 2
    assert (
        val["vllm:time_to_first_token_seconds_count"] == 1
        and val["vllm:inter_token_latency_seconds_count"] == 3
    )
    # one request of 4 tokens: its time per output token is the mean of its 3 inter-token gaps
    assert val["vllm:request_time_per_output_token_seconds_count"] == 1
    tpot = val["vllm:request_time_per_output_token_seconds_sum"]
    assert tpot > 0 and abs(tpot - val["vllm:inter_token_latency_seconds_sum"] / 3) < 1e-9


def test_client_disconnect_frees_its_sequence():
    async def go(session, url, rep):
        body = {"model": MODEL, "prompt": "a", "max_tokens": 4000, "ignore_eos": True, "stream": True}
        async with session.post(url + "/v1/completions", json=body) as r:
            n = 0
            async for line in r.content:
                n += line.startswith(b"data: ")
                if n >= 3:
                    break
            assert rep.engine.num_running == 1
            r.close()
        for _ in range(100):
            if rep.engine.num_running == 0:
                break
            await asyncio.sleep(0.02)
        assert rep.engine.num_running == 0 and rep.engine.used_blocks == 0
        assert rep.outstanding == 0

    run(go)


def test_real_time_agrees_with_discrete_event():
    # 10 long prompts nearly at once, so prefills queue behind each other: TTFTs spread over ~0.6 s
    arrival = np.arange(10) * 0.02
    prompt = np.array(
        [4000, 3000, 3500, 500, 3900, 2500, 1000, 4100, 3100, 2000]
    )  # distinct: they name requests
    out = np.array([30, 5, 20, 40, 10, 25, 15, 30, 5, 20])
    des = simulate(Workload(arrival, prompt, out), PROFILE, replicas=1)

    async def go(session, url, rep):
        t0 = time.perf_counter() + 0.05

        async def one(i):
            await asyncio.sleep(t0 + arrival[i] - time.perf_counter())
            body = {"model": MODEL, "prompt": "x", "burstpilot_prompt_tokens": int(prompt[i]),
                    "max_tokens": int(out[i]), "ignore_eos": True}  # fmt: skip
            ttft, chunks = await stream_tokens(session, url, body)
            assert len(chunks) == out[i]
            return ttft

        return await asyncio.gather(*(one(i) for i in range(10))), sorted(
            (f.arrival, f.first_token, f.finish, f.prompt_tokens, f.generation_tokens)
            for f in rep.recent.finished
        )

    client_ttft, log = run(go)
    client_ttft = np.array(client_ttft)
    assert des.ttft_s.max() > 0.3  # the workload does queue
    # on the step clock, with the arrival times the server saw, real time is the discrete-event run exactly
    seen = np.array([a for a, *_ in log])
    replay = simulate(Workload(seen - seen[0], np.array([r[3] for r in log]), np.array([r[4] for r in log])),
                      PROFILE, replicas=1)  # fmt: skip
    np.testing.assert_allclose([f - a for a, f, *_ in log], replay.ttft_s, atol=1e-6)
    np.testing.assert_allclose([e - a for a, _, e, *_ in log], replay.e2e_s, atol=1e-6)
    # as the clients saw it, with HTTP and the OS in between: 30 ms at the median
    row = {int(r[3]): i for i, r in enumerate(log)}
    des_ttft = np.array([replay.ttft_s[row[int(p)]] for p in prompt])
    print(
        "TTFT real time, client:",
        np.round(client_ttft, 3),
        "\nTTFT DES:              ",
        np.round(des_ttft, 3),
    )
    assert np.median(np.abs(client_ttft - des_ttft)) <= 0.03


def test_non_streaming_client_that_leaves_frees_its_sequence():
    async def go(session, url, rep):
        body = {"model": MODEL, "prompt": "a", "max_tokens": 4000, "ignore_eos": True}
        task = asyncio.create_task(session.post(url + "/v1/completions", json=body))
        for _ in range(100):
            if rep.engine.num_running == 1:
                break
            await asyncio.sleep(0.01)
        assert rep.engine.num_running == 1
        task.cancel()  # the client goes away before the answer
        for _ in range(100):
            if rep.engine.num_running == 0 and rep.outstanding == 0:
                break
            await asyncio.sleep(0.02)
        assert rep.engine.num_running == 0 and rep.engine.used_blocks == 0 and rep.outstanding == 0

    run(go)


def test_a_request_larger_than_the_whole_kv_cache_is_refused_not_left_waiting():
    small = replace(PROFILE, gpu_memory_gib=PROFILE.weights_gib / 0.9 + 2.0, reserved_gib=0.0)  # ~15k tokens
    assert small.kv_capacity_tokens < small.max_model_len

    async def go():
        async with running_replica(profile=small) as (url, rep), aiohttp.ClientSession() as s:
            # within the model's context but not the cache: it could never be scheduled
            body = {
                "model": MODEL,
                "prompt": "x",
                "burstpilot_prompt_tokens": small.kv_capacity_tokens,
                "max_tokens": 10,
            }
            r = await asyncio.wait_for(s.post(url + "/v1/completions", json=body), 10)
            err = (await r.json())["error"]
            assert r.status == 400 and "do not fit this replica's KV cache" in err["message"]
            assert rep.engine.num_waiting == 0

    asyncio.run(go())
