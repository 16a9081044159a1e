"""The real-time demo's controller reads the SLO signals the operator's default queries read (TTFT and TPOT p99,
the requests over the SLO's targets, completions and preemptions), from the replicas' vLLM histograms: before,
it passed none of them, so burstpilot's SLO budget, SLO feedback and learned capacity were blind there."""

import asyncio
import math

import aiohttp
import pytest
from aiohttp import web

from burstpilot.evaluation.realtime import add_increase, buckets, count_above, histogram_quantile, scrape

CUM = [(0.5, 10.0), (1.0, 20.0), (2.5, 30.0), (math.inf, 40.0)]


@pytest.mark.parametrize(
    ("q", "want"),
    [
        (0.5, 1.0),  # rank 20: the top of the (0.5, 1.0] bucket
        (0.125, 0.25),  # rank 5: halfway up the first bucket, from 0
        (0.625, 1.75),  # rank 25: halfway up (1.0, 2.5]
        (0.99, 2.5),  # in +Inf: the highest finite bound, as Prometheus answers
    ],
)
def test_the_p99_is_prometheus_histogram_quantile(q, want):
    assert histogram_quantile(q, CUM) == pytest.approx(want)


def test_no_observations_is_no_quantile():
    assert histogram_quantile(0.99, []) is None
    assert histogram_quantile(0.99, [(1.0, 0.0), (math.inf, 0.0)]) is None


@pytest.mark.parametrize(
    ("target", "want"),
    [
        (2.5, 10.0),  # on a bound: the +Inf bucket's share
        (2.0, 40.0 - (20.0 + 10.0 * (1.0 / 1.5))),  # interpolated within (1.0, 2.5]
        (0.25, 35.0),  # below the first bound: from 0
        (5.0, 10.0),  # above every finite bound: what +Inf holds
    ],
)
def test_the_count_over_a_target_interpolates_between_bounds(target, want):
    assert count_above(target, CUM) == pytest.approx(want)
    assert count_above(target, []) is None


METRICS = """# HELP vllm:time_to_first_token_seconds ttft
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="m"} 3.0
vllm:time_to_first_token_seconds_bucket{le="2.5",model_name="m"} 7.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 8.0
vllm:time_to_first_token_seconds_count{model_name="m"} 8.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 9.0
# HELP vllm:request_time_per_output_token_seconds tpot
# TYPE vllm:request_time_per_output_token_seconds histogram
vllm:request_time_per_output_token_seconds_bucket{le="0.1",model_name="m"} 6.0
vllm:request_time_per_output_token_seconds_bucket{le="+Inf",model_name="m"} 8.0
vllm:request_time_per_output_token_seconds_count{model_name="m"} 8.0
vllm:request_time_per_output_token_seconds_sum{model_name="m"} 0.9
# HELP vllm:request_success_total done
# TYPE vllm:request_success_total counter
vllm:request_success_total{finished_reason="stop",model_name="m"} 5.0
vllm:request_success_total{finished_reason="length",model_name="m"} 3.0
"""


def test_a_replicas_histograms_are_scraped_by_bound():
    async def go():
        async def metrics(_):
            return web.Response(text=METRICS, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as s:
                return await scrape(s, port)
        finally:
            await runner.cleanup()

    got = asyncio.run(go())
    assert got["finished"] == 8.0
    assert buckets(got, "ttft") == [(0.5, 3.0), (2.5, 7.0), (math.inf, 8.0)]
    assert buckets(got, "tpot") == [(0.1, 6.0), (math.inf, 8.0)]
    assert count_above(2.5, buckets(got, "ttft")) == 1.0 and count_above(0.1, buckets(got, "tpot")) == 2.0


def test_the_increase_of_two_replicas_is_their_sum_bucket_by_bucket():
    delta = {"finished": 0.0, "prompt": 0.0, "gen": 0.0, "preempt": 0.0}
    a_before = {"finished": 10.0, "ttft@0.5": 4.0, "ttft@inf": 10.0}
    a_now = {"finished": 14.0, "ttft@0.5": 6.0, "ttft@inf": 14.0}
    b_now = {"finished": 3.0, "ttft@0.5": 1.0, "ttft@inf": 3.0}  # new: all of it is the increase
    add_increase(delta, a_now, a_before)
    add_increase(delta, b_now, {})
    assert delta["finished"] == 7.0
    assert buckets(delta, "ttft") == [(0.5, 3.0), (math.inf, 7.0)]
    add_increase(delta, {"finished": 1.0, "ttft@0.5": 0.0, "ttft@inf": 1.0}, b_now)  # restarted: nothing
    assert delta["finished"] == 7.0 and buckets(delta, "ttft") == [(0.5, 3.0), (math.inf, 7.0)]
