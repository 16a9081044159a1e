"""One SLO check and one run-metrics record for the load generator, the simulator and the evaluation."""

import math

import numpy as np
import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.slo import SLO, LatencyStats, RunMetrics

NAN = math.nan

# (label, slo, ttft, tpot, e2e, itl_max, failed, met)
CASES = [
    ("inside every objective", SLO(ttft_s=2, tpot_s=0.1), 1.0, 0.05, 5.0, 0.2, False, True),
    ("ttft over", SLO(ttft_s=2, tpot_s=0.1), 2.5, 0.05, 5.0, 0.2, False, False),
    ("tpot over", SLO(ttft_s=2, tpot_s=0.1), 1.0, 0.15, 5.0, 0.2, False, False),
    ("single token: no tpot, cannot violate it", SLO(ttft_s=2, tpot_s=0.1), 1.0, NAN, 1.0, NAN, False, True),
    ("single token: no gap, cannot violate itl", SLO(itl_s=0.1), 1.0, NAN, 1.0, NAN, False, True),
    ("no first token", SLO(tpot_s=0.1), NAN, NAN, NAN, NAN, False, False),
    ("failed request", SLO(ttft_s=2), 0.5, 0.01, 1.0, 0.01, True, False),
    ("e2e over", SLO(e2e_s=3), 0.5, 0.01, 3.5, 0.01, False, False),
    ("e2e unmeasured", SLO(e2e_s=3), 0.5, 0.01, NAN, 0.01, False, False),
    ("itl over", SLO(itl_s=0.1), 0.5, 0.01, 1.0, 0.5, False, False),
    ("objective not set is not judged", SLO(ttft_s=2), 1.0, 9.0, 99.0, 9.0, False, True),
    ("exactly at the limit meets it", SLO(ttft_s=2, tpot_s=0.1), 2.0, 0.1, 5.0, 0.2, False, True),
]


@pytest.mark.parametrize(("label", "slo", "ttft", "tpot", "e2e", "itl", "failed", "met"), CASES)
def test_one_request(label, slo, ttft, tpot, e2e, itl, failed, met):
    got = slo.met([ttft], [tpot], [e2e], [itl], [failed])
    assert bool(got[0]) is met, label


def test_parse_names_objectives_and_keeps_defaults():
    assert SLO.parse("ttft=2s,tpot=100ms") == SLO(ttft_s=2.0, tpot_s=0.1)
    assert SLO.parse("e2e=1m,itl=250ms,attainment=0.995") == SLO(e2e_s=60.0, itl_s=0.25, attainment=0.995)
    base = SLO(ttft_s=2.0, tpot_s=0.1, attainment=0.99)
    assert SLO.parse("tpot=50ms", defaults=base) == SLO(ttft_s=2.0, tpot_s=0.05, attainment=0.99)
    with pytest.raises(BurstpilotError, match="names no latency objective"):
        SLO.parse("attainment=0.9")
    with pytest.raises(BurstpilotError, match="ttft.*positive"):
        SLO.parse("ttft=0s")


def test_round_trip_and_older_shapes():
    slo = SLO(ttft_s=1.5, tpot_s=0.08, attainment=0.95)
    assert SLO.from_dict(slo.to_dict()) == slo
    assert SLO.from_dict({"ttft": 1.5, "tpot": 0.08}) == SLO(ttft_s=1.5, tpot_s=0.08)  # replay's old options
    assert SLO.from_dict({"ttft_s": 1.5, "attainment": 0.95}) == SLO(ttft_s=1.5, attainment=0.95)
    assert SLO.from_dict(None) is None
    with pytest.raises(BurstpilotError, match="unknown field 'latency'"):
        SLO.from_dict({"latency": 1})


def test_run_metrics_counts_and_quantiles():
    ttft = np.array([0.1, 0.2, 0.3, 3.0, NAN])
    tpot = np.array([0.01, 0.02, 0.5, 0.01, NAN])
    e2e = ttft + 1.0
    failed = np.array([False, False, False, False, False])
    m = RunMetrics.from_requests(ttft, tpot, e2e, failed, SLO(ttft_s=2, tpot_s=0.1, attainment=0.5))
    assert (m.requests, m.completed, m.failed) == (5, 4, 1)  # no first token counts as failed
    assert (m.slo_met, m.slo_violations) == (2, 3)
    assert m.slo_attainment == pytest.approx(0.4) and m.meets_goal is False
    assert m.ttft.count == 4 and m.ttft.max == 3.0
    assert m.ttft.p(50) == pytest.approx(np.percentile([0.1, 0.2, 0.3, 3.0], 50))
    d = m.to_dict()
    assert d["slo_attainment"] == pytest.approx(0.4) and d["ttft_s"]["p99"] == m.ttft.p(99)


def test_empty_runs_and_no_slo():
    m = RunMetrics.from_requests([], [], [], [], SLO(ttft_s=1))
    assert m.requests == 0 and m.slo_attainment == 1.0 and m.ttft == LatencyStats()
    assert RunMetrics.from_requests([0.1], [0.01], [1.0], [False]).slo_attainment is None
    assert LatencyStats.of([NAN, math.inf]).count == 0
