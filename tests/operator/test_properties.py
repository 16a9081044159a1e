"""Property tests with a fixed budget (hypothesis, derandomized): the ServingPool spec against the CRD's own
schema, and the Prometheus answer parsing against arbitrary JSON."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import hypothesis.strategies as st
import yaml
from hypothesis import HealthCheck, given, settings

from burstpilot.errors import BurstpilotError
from burstpilot.operator.decisions import ProfileCache, read_spec
from burstpilot.operator.prom import Endpoint, MetricsError, PrometheusSource, split
from burstpilot.policy import PoolSpec
from tests.support.operator_fakes import FakePrometheus

CRD = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "servingpool.yaml").read_text())
SPEC_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
INT32 = 2**31 - 1
PROFILES = ("h100-llama3-8b", "h100-llama3-70b-tp4")


def _number(schema: dict, integer: bool):
    lo = schema.get("minimum", -INT32 if integer else -1e12)
    hi = schema.get("maximum", INT32 if integer else 1e12)
    if integer:
        ilo = math.ceil(lo) + (bool(schema.get("exclusiveMinimum")) and lo == math.ceil(lo))
        ihi = math.floor(hi) - (bool(schema.get("exclusiveMaximum")) and hi == math.floor(hi))
        return st.integers(ilo, ihi) if ilo <= ihi else st.nothing()
    return st.floats(
        lo,
        hi,
        exclude_min=bool(schema.get("exclusiveMinimum")),
        exclude_max=bool(schema.get("exclusiveMaximum")),
        allow_nan=False,
        allow_infinity=False,
    )


def _string(schema: dict):
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    size = min(schema.get("maxLength", 40), 40)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=False).filter(
            lambda s: len(s) <= schema.get("maxLength", 4096)
        )
    return st.text(min_size=schema.get("minLength", 0), max_size=size)


def strategy(schema: dict):
    """Values valid under a structural CRD schema (types, bounds, enums, patterns, required fields)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return st.dictionaries(st.text(max_size=8), st.integers(), max_size=3)
    kind = schema.get("type")
    if kind == "object":
        if "properties" not in schema:
            value = strategy(schema.get("additionalProperties") or {"type": "string"})
            keys = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True)
            return st.dictionaries(keys, value, max_size=schema.get("maxProperties", 4))
        props = schema["properties"]
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: strategy(v) for k, v in props.items() if k in required},
            optional={k: strategy(v) for k, v in props.items() if k not in required},
        )
    if kind == "integer":
        return _number(schema, True)
    if kind == "number":
        return _number(schema, False) | _number(schema, True)
    if kind == "string":
        return _string(schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(strategy(schema["items"]), max_size=3)
    return st.none()


def cel_valid(spec: dict) -> bool:
    """The CRD's CEL rules (the API server refuses a spec that breaks one)."""
    mx = spec["maxReplicas"]
    prof = spec["profile"]
    explicit = any(
        k in prof
        for k in ("decodeTokensPerSecond", "prefillTokensPerSecond", "kvCapacityTokens", "maxNumSeqs")
    )
    sources = sum(bool(x) for x in ("name" in prof, "configMapRef" in prof, "inline" in prof, explicit))
    return (
        spec.get("minReplicas", 1) <= mx
        and spec.get("missingMetrics", {}).get("floorReplicas", 0) <= mx
        and spec.get("scaling", {}).get("maxStep", 0) <= mx
        and sources == 1
        and (not explicit or ("decodeTokensPerSecond" in prof and "prefillTokensPerSecond" in prof))
    )


SPECS = strategy(SPEC_SCHEMA)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec=SPECS)
def test_from_crd_on_any_schema_valid_spec_returns_a_spec_or_a_clear_error(spec):
    try:
        out = PoolSpec.from_crd(spec, "p")
    except BurstpilotError as exc:
        assert str(exc)  # names the field
        return
    assert out.max_replicas == spec["maxReplicas"] and out.min_replicas == spec.get("minReplicas", 1)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec=SPECS, known=st.sampled_from(PROFILES))
def test_every_spec_the_api_server_accepts_is_read(spec, known):
    prof = spec["profile"]
    if "name" in prof:  # a name the API server accepts but no shipped profile has: use a shipped one
        prof = {**prof, "name": known}
    prof.pop("configMapRef", None)
    prof.pop("inline", None)
    prof = prof or {"name": known}
    spec = {**spec, "profile": prof}
    if not cel_valid(spec):
        return
    out = read_spec(spec, "p", "ns", ProfileCache(), lambda ns, name: None)
    assert out.max_replicas == spec["maxReplicas"]
    assert out.mode == spec.get("mode", "Active").lower()
    if "name" in prof:
        assert out.profile == known and out.profile_obj is not None
    else:
        assert out.capacity.decode_tokens_per_s == prof["decodeTokensPerSecond"]
    for section, key, attr in (("slo", "ttftSeconds", None), ("scaling", "intervalSeconds", "interval_s")):
        if key in spec.get(section, {}):
            got = out.slo.ttft_s if attr is None else getattr(out, attr)
            assert math.isclose(got, spec[section][key])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SERIES = st.fixed_dictionaries(
    {
        "metric": st.fixed_dictionaries(
            {"burstpilot_query": st.sampled_from(["0.x", "0.y", "1.x", "2.x", "9.z"])}
        )
    },
    optional={
        "value": st.tuples(st.floats(0, 2e9), st.sampled_from(["1", "2.5", "NaN", "+Inf", "x", "1e308"])).map(
            list
        )
        | JSON
    },
)
RESULTS = JSON | st.lists(SERIES | JSON, max_size=5)


class CannedSource(PrometheusSource):
    """The batching and answer handling, with the HTTP answer replaced by a generated ``data.result``."""

    def __init__(self, result):
        super().__init__(linger_s=0.0)
        self.result = result

    def _query(self, endpoint, queries):
        return self.result


@settings(max_examples=150, deadline=None, derandomize=True)
@given(result=RESULTS)
def test_any_result_resolves_every_pool_with_values_or_a_metrics_error(result):
    src = CannedSource(result)

    async def main():
        pools = [src.fetch(Endpoint("http://p"), {"x": "a", "y": "b"}) for _ in range(3)]
        return await asyncio.wait_for(asyncio.gather(*pools, return_exceptions=True), 10)

    for out in asyncio.run(main()):
        if isinstance(out, dict):
            assert set(out) == {"x", "y"} and all(v is None or isinstance(v, float) for v in out.values())
        else:
            assert isinstance(out, MetricsError), repr(out)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(result=RESULTS)
def test_split_returns_floats_or_raises_a_metrics_error(result):
    try:
        out = split(result, ["0.x", "0.y"])
    except MetricsError:
        return
    assert set(out) == {"0.x", "0.y"} and all(v is None or isinstance(v, float) for v in out.values())


def test_any_http_body_becomes_values_or_a_metrics_error():
    """The same through HTTP: whatever body Prometheus answers 200 with (one server, 60 bodies)."""
    bodies = (
        st.fixed_dictionaries(
            {}, optional={"status": JSON, "data": JSON | st.fixed_dictionaries({"result": RESULTS})}
        )
        | JSON
    )
    with FakePrometheus({}) as prom:

        @settings(max_examples=60, deadline=None, derandomize=True)
        @given(body=bodies)
        def check(body):
            prom.answer = body if body is not None else {}
            src = PrometheusSource(linger_s=0.0, timeout_s=5.0)
            try:
                out = asyncio.run(asyncio.wait_for(src.fetch(Endpoint(prom.url), {"x": "a"}), 20))
            except MetricsError:
                return
            assert set(out) == {"x"}

        check()
