"""The decision state: a typed value that resumes exactly after a JSON round trip, reads what the untyped
version-1 code saved, and stays readable by it."""

import json
from pathlib import Path

import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.policy import Capacity, Observation, PolicyState, PoolSpec, decide, new_state

DATA = Path(__file__).parent / "data"
# The operator test SPEC the fixture was written with (tests/policy/data/README.md).
V1_SPEC = {
    "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"},
    "minReplicas": 1,
    "maxReplicas": 6,
    "profile": {"decodeTokensPerSecond": 100, "prefillTokensPerSecond": 2000},
    "metrics": {"selector": {"servingpool": "llm"}},
    "forecasting": {"model": "burst", "stepSeconds": 2, "quantile": 0.9},
    "scaling": {"intervalSeconds": 2, "scaleDownStabilizationSeconds": 30},
    "missingMetrics": {"policy": "LastKnownGood"},
}
V1_NEXT = Observation(
    time_s=1_700_000_024.0,
    requests=10.0,
    prompt_tokens=1000.0,
    generation_tokens=500.0,
    waiting=0.0,
    running=1.0,
    kv_usage=0.1,
    current=6,
    ready=6,
    metrics_age_s=1.0,
    window_s=2.0,
)


def obs(t, rate, current):
    n = rate * 10.0
    return Observation(
        time_s=t,
        requests=n,
        prompt_tokens=100.0 * n,
        generation_tokens=10.0 * n,
        waiting=0.0,
        running=0.0,
        current=current,
        ready=current,
        window_s=10.0,
    )


def spec(**kw):
    return PoolSpec(capacity=Capacity(100.0, 1000.0), max_replicas=50, **kw)


def test_state_round_trips_through_json():
    s = spec(forecast_model="burst")
    st = new_state(s)
    for i in range(1, 30):
        _, st = decide(s, obs(10 * i, 5.0 + (i % 7), current=3), st)
    st = st.replace(cold_hold_since=250.0, advised=4)  # a cold-start hold in progress resumes from its start
    st2 = PolicyState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert st2 == st
    a, _ = decide(s, obs(300, 12.0, current=3), st)
    b, _ = decide(s, obs(300, 12.0, current=3), st2)
    assert a == b


def test_a_state_saved_by_the_version_1_operator_still_loads_and_decides_as_it_did():
    doc = json.loads((DATA / "operator_state_v1.json").read_text())
    assert doc["state"]["version"] == 1 and isinstance(doc["state"]["history"][0], list)
    s = PoolSpec.from_crd(V1_SPEC, "llm")
    st = PolicyState.from_dict(doc["state"])
    assert st.last_good is not None and st.last_good.requests == 3.0 and st.last_good.completed is None
    assert st.lengths.prompt == pytest.approx(100.0) and st.lengths.output == pytest.approx(50.0)
    assert st.forecaster["n_steps"] == 12 and len(st.history) == 13
    d, st2 = decide(s, V1_NEXT, st)
    # the forecaster resumed where the version-1 code left it: the same point forecast and rate it gave from
    # this very state (tests/policy/data/README.md). Twelve steps are too few to fit bands on: the busiest step
    # is the prior's, 9/s since the prior stopped using the dispersion of so young a history (12/s before)
    assert d.forecast["mean_rate"] == pytest.approx(3.9076602557945) and d.forecast["rate"] == pytest.approx(
        5.0
    )
    assert d.forecast["bands"] == "prior" and d.forecast["peak_rate"] == pytest.approx(9.0)
    assert st2.forecaster["n_steps"] == 13 and 1 <= d.replicas <= 6
    # a version-1 state has no learned capacity: it starts from the profile's
    assert st.capacity.factor == 1.0 and d.capacity["model_rate_per_replica"] > 0
    assert st.cold_hold_since is None  # nor a cold-start hold in progress
    # nor an SLO budget: it starts at the prior (met requests: no burn), no per-count sums, no floor
    assert (
        st.slo_budget.floor == 0
        and st.slo_budget.by_count == ()
        and d.evidence["slo_budget"]["burn_1h"] == 0.0
    )


def test_the_saved_form_keeps_the_version_1_keys_so_a_rolled_back_operator_reads_it():
    doc = json.loads((DATA / "operator_state_v1.json").read_text())
    st = PolicyState.from_dict(doc["state"])
    again = st.to_dict()
    assert set(doc["state"]) <= set(again)
    for key in ("acc_count", "acc_s", "prompt_mean", "output_mean", "length_sums", "history", "forecaster"):
        assert again[key] == doc["state"][key], key
    assert again["last_good"] == {
        **doc["state"]["last_good"],
        "completed": None,
        "tpot_p99_s": None,
        "preemptions": None,
        "slo_violations": None,
    }


def test_a_fresh_version_1_state_without_lazily_added_keys_loads():
    fresh = new_state(spec(forecast_model="ewma")).to_dict()
    v1 = {k: fresh[k] for k in ("forecaster", "acc_count", "acc_s", "history", "last_good")}
    v1.update(version=1, prompt_mean=None, output_mean=None)  # length_sums came with the first observation
    st = PolicyState.from_dict(v1)
    assert st.lengths.sums == (0.0, 0.0, 0.0) and st.history == () and st.last_good is None


@pytest.mark.parametrize(
    "bad,field",
    [
        ([], "object"),
        ({"version": 99, "forecaster": {}}, "version"),
        ({"version": 1}, "forecaster"),
        ({"version": 1, "forecaster": {}, "history": [[1.0]]}, "history"),
        ({"version": 1, "forecaster": {}, "acc_count": "x"}, "acc_count"),
        ({"version": 1, "forecaster": {}, "length_sums": [1, 2]}, "length_sums"),
        ({"version": 1, "forecaster": {}, "last_good": {"nope": 1}}, "last_good"),
        ({"version": 2, "forecaster": {}, "cold_hold_since": "soon"}, "cold_hold_since"),
        ({"version": 2, "forecaster": {}, "advised": 2.5}, "advised"),
        ({"version": 2, "forecaster": {}, "advised": -1}, "advised"),
    ],
)
def test_an_unreadable_state_is_a_clear_error_naming_the_key(bad, field):
    with pytest.raises(BurstpilotError, match=field):
        PolicyState.from_dict(bad)


def test_decide_leaves_the_input_state_as_it_was():
    s = spec(forecast_model="burst")
    st = new_state(s)
    for i in range(1, 5):
        _, st = decide(s, obs(10 * i, 5.0, current=3), st)
    before = json.dumps(st.to_dict())
    decide(s, obs(50, 30.0, current=3), st)
    assert json.dumps(st.to_dict()) == before
