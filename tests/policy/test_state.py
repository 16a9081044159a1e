"""The decision state resumes exactly after a JSON round trip, with the real burst forecaster inside."""

import json

from burstpilot.policy import Capacity, Observation, PoolSpec, decide, new_state


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
    st2 = json.loads(json.dumps(st))
    a, _ = decide(s, obs(300, 12.0, current=3), st)
    b, _ = decide(s, obs(300, 12.0, current=3), st2)
    assert a == b
