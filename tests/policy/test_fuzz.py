"""Bounded fuzzing (hypothesis, fixed budgets, derandomized): ``decide`` over hostile observations from any saved
SLO budget, and
``PoolSpec.from_crd`` against the ServingPool CRD's own schema."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from burstpilot.errors import BurstpilotError
from burstpilot.policy import Capacity, Observation, PolicyState, PoolSpec, decide, new_state
from burstpilot.policy.learned import K_MAX, K_MIN, MAX_DOWN, LearnedCapacity
from burstpilot.policy.signals import Signals
from burstpilot.policy.slobudget import SloBudget
from burstpilot.sim import load_profile

CRD = Path(__file__).resolve().parents[2] / "crds" / "servingpool.yaml"
SPEC_SCHEMA = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
    "properties"
]["spec"]

# ----------------------------------------------------------------------------------------------- decide

HOSTILE = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 3e15, 1e16, 1e300, float("nan"), float("inf"), -float("inf")]),
    st.floats(0.0, 500.0),
)
PLAIN = st.one_of(st.just(0.0), st.floats(0.0, 200.0))
# a saved SLO budget: anything from_dict accepts (sums of any size, per-count sums for any counts, any floor)
COUNT = st.one_of(st.just(0.0), st.floats(0.0, 1e9))
ROWS = st.lists(st.tuples(st.integers(1, 50), COUNT, COUNT), max_size=4, unique_by=lambda r: r[0])
BUDGETS = st.builds(
    SloBudget, COUNT, COUNT, COUNT, COUNT, ROWS.map(lambda rs: tuple(sorted(rs))), st.integers(0, 60),
    st.text(max_size=5),
).map(lambda b: SloBudget.from_dict(b.to_dict()))  # fmt: skip
REPLICAS = st.one_of(st.integers(-3, 40), st.sampled_from([10**6, 10**18]))


@st.composite
def observations(draw, t: float):
    hostile = draw(st.booleans())
    v = HOSTILE if hostile else st.one_of(st.none(), PLAIN)
    return Observation(
        time_s=draw(st.one_of(st.just(t), st.sampled_from([float("nan"), float("inf"), -1.0])))
        if hostile
        else t,
        requests=draw(v),
        prompt_tokens=draw(v),
        generation_tokens=draw(v),
        waiting=draw(v),
        running=draw(v),
        kv_usage=draw(st.one_of(st.none(), st.floats(0.0, 1.0), HOSTILE) if hostile else st.floats(0.0, 1.0)),
        ttft_p99_s=draw(v),
        tpot_p99_s=draw(v),
        completed=draw(v),
        preemptions=draw(v),
        slo_violations=draw(v),
        current=draw(REPLICAS),
        ready=draw(REPLICAS),
        starting=draw(REPLICAS),
        pending=draw(REPLICAS),
        metrics_age_s=draw(st.one_of(st.none(), st.floats(0.0, 120.0), HOSTILE) if hostile else st.just(0.0)),
        window_s=draw(st.one_of(st.none(), st.just(10.0), HOSTILE) if hostile else st.just(10.0)),
    )


def invalid(o: Observation) -> bool:
    """What the test calls invalid data (independently of the code): a present value that is not a finite,
    non-negative number, a KV usage above 1, or a count beyond 1e12."""
    values = [
        o.requests,
        o.prompt_tokens,
        o.generation_tokens,
        o.waiting,
        o.running,
        o.kv_usage,
        o.ttft_p99_s,
        o.tpot_p99_s,
        o.completed,
        o.preemptions,
        o.slo_violations,
    ]
    if any(v is not None and (not math.isfinite(v) or v < 0 or v > 1e12) for v in values):
        return True
    if o.kv_usage is not None and o.kv_usage > 1.0:
        return True
    if o.window_s is not None and not (math.isfinite(o.window_s) and 0 < o.window_s <= 86400):
        return True
    return o.metrics_age_s is not None and not math.isfinite(o.metrics_age_s) or not math.isfinite(o.time_s)


SPECS = st.builds(
    lambda missing, step, lo, hi, kv: PoolSpec(
        capacity=Capacity(100.0, 1000.0, kv_capacity_tokens=kv),
        min_replicas=lo,
        max_replicas=max(hi, lo, 1),
        max_step=min(step, max(hi, lo, 1)),
        missing_metrics=missing,
        missing_floor_replicas=min(3, max(hi, lo, 1)),
        cold_start_s=60.0,
        forecast_model="burst",
    ),
    st.sampled_from(["hold", "floor", "lastKnownGood"]),
    st.sampled_from([0, 2]),
    st.integers(0, 3),
    st.integers(1, 12),
    st.sampled_from([0, 5000]),
)


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec=SPECS, data=st.data())
def test_decide_never_raises_stays_in_the_clamp_and_never_scales_down_on_invalid_data(spec, data):
    state = new_state(spec).replace(slo_budget=data.draw(BUDGETS))
    for i in range(data.draw(st.integers(1, 6))):
        o = data.draw(observations(10.0 * (i + 1)))
        before = state.slo_budget
        d, state = decide(spec, o, state)
        assert spec.min_replicas <= d.replicas <= spec.max_replicas, (o, d)
        current = max(o.current, 0)
        if invalid(o):
            assert d.replicas >= min(current, spec.max_replicas), (o, d)
            # a hold, or the last known good sizing repeated with the bound that set it
            assert d.bound in (
                "missing-metrics", "throughput", "kv", "backlog", "cold-start", "min", "headroom", "slo-feedback",
                "slo-budget",
            ), d  # fmt: skip
            assert state.slo_budget == before, (o, state.slo_budget)  # invalid data never moves the budget
        assert 0 <= state.slo_budget.floor and (
            state.slo_budget == before or state.slo_budget.floor <= spec.max_replicas
        )
        assert PolicyState.from_dict(json.loads(json.dumps(state.to_dict()))).slo_budget == state.slo_budget


# ----------------------------------------------------------------------------------------------- from_crd


def _leaves(schema: dict, path: str = "") -> dict[str, dict]:
    """Every scalar field of the schema by its dotted path (the fields from_crd reads)."""
    out = {}
    for key, sub in (schema.get("properties") or {}).items():
        p = f"{path}.{key}" if path else key
        if sub.get("type") == "object" and "properties" in sub:
            out.update(_leaves(sub, p))
        elif sub.get("type") in ("integer", "number", "string", "boolean"):
            out[p] = sub
    return out


# The fields PoolSpec.from_crd reads, with the schema's constraints (targetRef and metrics are the operator's,
# and so are the profile sources it resolves before the decision core sees them: configMapRef and inline).
POLICY_FIELDS = {
    p: s
    for p, s in _leaves(SPEC_SCHEMA).items()
    if not p.startswith(("targetRef", "metrics", "profile.configMapRef", "profile.inline"))
    and p != "profile.name"
}
CAPACITY_KEYS = ("decodeTokensPerSecond", "prefillTokensPerSecond", "kvCapacityTokens", "maxNumSeqs")


def valid_value(schema: dict):
    """A strategy for values the schema accepts."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "string":
        return st.text(min_size=0, max_size=min(schema.get("maxLength", 20), 20))
    lo = schema.get("minimum", -(2**31) if kind == "integer" else -1e6)
    hi = schema.get("maximum", 2**31 - 1 if kind == "integer" else 1e6)
    if kind == "integer":
        return st.integers(int(lo) + bool(schema.get("exclusiveMinimum")), int(hi))
    return st.floats(
        lo,
        hi,
        exclude_min=bool(schema.get("exclusiveMinimum")),
        exclude_max=bool(schema.get("exclusiveMaximum")),
        allow_nan=False,
    )


def invalid_values(schema: dict):
    """A strategy for values the schema refuses."""
    bad = [st.sampled_from([None, [], {}, True]) if schema["type"] != "boolean" else st.just("yes")]
    if "enum" in schema:
        bad.append(st.text(max_size=8).filter(lambda s: s not in schema["enum"]))
    elif schema["type"] == "string":
        bad.append(st.integers())
    else:
        bad.append(st.sampled_from([float("nan"), float("inf"), "x"]))
        if schema["type"] == "integer":
            bad.append(st.sampled_from([0.5, 2.25]))
        if "minimum" in schema:
            m = schema["minimum"]
            bad.append(st.just(m) if schema.get("exclusiveMinimum") else st.just(m - 1))
        if "maximum" in schema:
            m = schema["maximum"]
            bad.append(st.just(m) if schema.get("exclusiveMaximum") else st.just(m + 1))
    return st.one_of(bad)


def put(spec: dict, path: str, value) -> dict:
    head, *rest = path.split(".")
    if not rest:
        return {**spec, head: value}
    return {**spec, head: put(spec.get(head) or {}, ".".join(rest), value)}


@st.composite
def valid_specs(draw):
    """A spec the CRD schema and its CEL rules accept."""
    spec: dict = {"targetRef": {"name": "x"}}
    named = draw(st.booleans())
    for path, schema in POLICY_FIELDS.items():
        if path.startswith("profile.") and path != "profile.capacityScale":
            key = path.split(".", 1)[1]
            if named or (key in CAPACITY_KEYS[2:] and not draw(st.booleans())):
                continue
        elif draw(st.booleans()) and path not in ("maxReplicas",):
            continue  # optional field left out
        spec = put(spec, path, draw(valid_value(schema)))
    if named:
        spec = put(spec, "profile.name", "h100-llama3-8b")
    mx = spec["maxReplicas"]
    spec["minReplicas"] = min(spec.get("minReplicas", 1), mx)
    for path in ("missingMetrics.floorReplicas", "scaling.maxStep"):
        head, key = path.split(".")
        if key in spec.get(head, {}):
            spec[head] = {**spec[head], key: min(spec[head][key], mx)}
    return spec


BUDGET = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@BUDGET
@given(valid_specs())
def test_from_crd_accepts_what_the_crd_schema_accepts(spec):
    s = PoolSpec.from_crd(spec, "p", resolve_profile=load_profile)
    assert s.max_replicas == spec["maxReplicas"] and s.model is not None


@BUDGET
@given(valid_specs(), st.sampled_from(sorted(POLICY_FIELDS)), st.data())
def test_from_crd_rejects_what_the_crd_schema_refuses_naming_the_field(spec, path, data):
    schema = POLICY_FIELDS[path]
    if path.startswith("profile.") and path != "profile.capacityScale" and "name" in spec["profile"]:
        path = (
            "profile.decodeTokensPerSecond"  # with a name, any capacity field is refused: name and capacity
        )
        schema = POLICY_FIELDS[path]
    value = data.draw(invalid_values(schema))
    if value is None and path in ("profile.decodeTokensPerSecond", "profile.prefillTokensPerSecond"):
        value = "x"  # an absent optional field is a default, not an error: give it a wrong type instead
    if value is None:
        return  # null is "not set" for every optional field
    bad = put(spec, path, value)
    try:
        PoolSpec.from_crd(bad, "p", resolve_profile=load_profile)
    except BurstpilotError as exc:
        field = path.rsplit(".", 1)[0] if path.startswith("profile.") else path
        assert f"spec.{field}" in str(exc) or f"spec.{path}" in str(exc), (path, value, str(exc))
    else:
        raise AssertionError(f"spec.{path} = {value!r} was accepted")


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)


@BUDGET
@given(
    st.dictionaries(
        st.sampled_from(["minReplicas", "maxReplicas", "profile", "slo", "scaling", "forecasting", "missingMetrics",
                         "budget", "mode", "coldStartSeconds", "gpusPerReplica"]),
        JSON,
    )
)  # fmt: skip
def test_from_crd_on_any_json_answers_a_spec_or_a_clear_error(spec):
    try:
        PoolSpec.from_crd(spec, "p", resolve_profile=load_profile)
    except BurstpilotError as exc:
        assert "spec" in str(exc)


# ----------------------------------------------------------------------------------------------- learned capacity

SIGNAL = st.one_of(st.none(), st.just(0.0), st.floats(0.0, 1e6))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    sig=st.builds(
        Signals,
        ready=st.integers(0, 50),
        starting=st.integers(0, 5),
        served_per_replica=SIGNAL,
        ttft=SIGNAL,
        tpot=SIGNAL,
        queue=SIGNAL,
        running_per_replica=SIGNAL,
        kv_usage=st.one_of(st.none(), st.floats(0.0, 1.0)),
        preemptions=SIGNAL,
        completions_known=st.booleans(),
    ),
    factor=st.floats(K_MIN, K_MAX),
    base=st.floats(1e-3, 1e4),
    resource=st.one_of(st.none(), st.floats(1e-3, 1e4)),
)
def test_a_learned_capacity_step_never_raises_and_stays_in_its_bounds(sig, factor, base, resource):
    spec = PoolSpec(capacity=Capacity(100.0, 1000.0))
    nxt = LearnedCapacity(factor=factor).step(spec, sig, base, resource, 10.0)
    assert K_MIN <= nxt.factor <= K_MAX and math.isfinite(nxt.factor) and nxt.note
    assert abs(math.log(nxt.factor / factor)) <= math.log(1 / MAX_DOWN) + 1e-9
