"""Summary definitions on hand-made records, and the parsers."""

import numpy as np
import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.loadtest import build_schedule, parse_slo, summarize
from burstpilot.loadtest.schedule import parse_shard
from burstpilot.slo import SLO
from burstpilot.units import parse_duration
from tests.support.workloads import make_workload


def rec(index, sched, sent, ttft=None, e2e=None, tpot=None, itl=(), out=0, error="", prompt=10):
    return {
        "index": index,
        "scheduled_s": sched,
        "sent_s": sent,
        "dispatch_lag_s": None if sent is None else sent - sched,
        "ttft_s": ttft,
        "e2e_s": e2e,
        "tpot_s": tpot,
        "itl_s": list(itl),
        "itl_max_s": max(itl) if itl else None,
        "output_tokens": out,
        "prompt_tokens": prompt,
        "error": error,
    }


def test_summary_definitions():
    records = [
        rec(0, 0.0, 0.001, ttft=0.1, e2e=0.4, tpot=0.1, itl=(0.1, 0.1, 0.1), out=4),
        rec(1, 1.0, 1.002, ttft=0.5, e2e=0.6, tpot=0.1, itl=(0.1,), out=2),
        rec(2, 2.0, 2.004, ttft=None, e2e=0.05, error="http_5xx"),
        rec(3, 3.0, 3.0, ttft=0.2, e2e=0.2, tpot=None, out=1),
    ]
    s = summarize(records, slo=SLO(ttft_s=0.3, tpot_s=0.2), scheduled=5)
    assert s["requests"] == {
        "scheduled": 5,
        "recorded": 4,
        "completed": 3,
        "failed": 1,
        "errors": {"http_5xx": 1},
    }
    assert s["duration_s"] == pytest.approx(3.2)  # first schedule to the last end
    assert s["request_rate"] == pytest.approx(3 / 3.2)
    assert s["output_tokens"] == 7 and s["prompt_tokens"] == 30
    assert s["output_token_throughput"] == pytest.approx(7 / 3.2)
    assert s["ttft_s"]["count"] == 3 and s["ttft_s"]["p50"] == pytest.approx(0.2)
    assert s["itl_s"]["count"] == 4  # every gap, pooled
    assert s["tpot_s"]["count"] == 2  # a single-token response has no TPOT
    assert s["dispatch_lag_s"]["max"] == pytest.approx(0.004)
    # request 1 misses the TTFT objective, request 2 failed; the single-token one meets it
    assert s["slo"]["met"] == 2 and s["slo"]["attainment"] == pytest.approx(0.5)
    assert s["slo"]["goodput"] == pytest.approx(2 / 3.2)


def test_parsers():
    assert parse_slo("ttft=2s, tpot=100ms,e2e=30") == SLO(ttft_s=2.0, tpot_s=0.1, e2e_s=30.0)
    assert parse_duration("250us", "x") == pytest.approx(2.5e-4)
    with pytest.raises(BurstpilotError, match="--slo: 'latency=2s'"):
        parse_slo("latency=2s")
    with pytest.raises(BurstpilotError, match="--slo ttft: 'fast' is not a duration"):
        parse_slo("ttft=fast")
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "a/b", "1"):
        with pytest.raises(BurstpilotError, match="--shard"):
            parse_shard(bad)


def test_schedule_frame_and_shards():
    w = make_workload(
        [5.0, 5.5, 6.0, 7.0, 9.0],
        request_tokens=[3, 0, 5, 6, 7],
        response_tokens=[1, 0, 2, 3, 0],
        failed=[False, True, False, False, False],
    )
    s = build_schedule(w)
    assert s.index.tolist() == [0, 2, 3, 4]
    assert s.scheduled_s.tolist() == [0.0, 1.0, 2.0, 4.0]
    assert s.output_tokens.tolist() == [1, 2, 3, 1]  # never ask for zero tokens
    parts = [s.shard(i, 3) for i in range(3)]
    assert sorted(np.concatenate([p.index for p in parts]).tolist()) == s.index.tolist()
    assert parts[1].scheduled_s.tolist() == [1.0]  # shards keep the workload's frame
    assert build_schedule(w, duration_s=2.0).index.tolist() == [0, 2]
    assert build_schedule(w, include_failed=True).fingerprint != s.fingerprint
    with pytest.raises(BurstpilotError, match="no requests"):
        build_schedule(make_workload([1.0], failed=[True]))
