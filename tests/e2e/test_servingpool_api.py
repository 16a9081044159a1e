"""The ServingPool CRD in the API server: defaults, validation messages, printer columns."""

from __future__ import annotations

import copy

import pytest

pytestmark = pytest.mark.e2e

VALID = {
    "apiVersion": "burstpilot.io/v1alpha1",
    "kind": "ServingPool",
    "metadata": {"name": "api-check", "namespace": "default"},
    "spec": {"targetRef": {"name": "llm"}, "maxReplicas": 4, "profile": {"name": "h100-llama3-8b"}},
}


def with_spec(name: str, **spec) -> dict:
    obj = copy.deepcopy(VALID)
    obj["metadata"]["name"] = name
    obj["spec"].update(spec)
    return obj


def test_defaults_are_filled_in(cluster, chart_installed):
    obj = with_spec("defaults-check")
    cluster.apply(obj)
    spec = cluster.get_json("servingpool", "defaults-check", "-n", "default")["spec"]
    assert spec["minReplicas"] == 1 and spec["gpusPerReplica"] == 1 and spec["mode"] == "Active"
    assert spec["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"}
    assert spec["slo"] == {"ttftSeconds": 2, "tpotSeconds": 0.1, "attainment": 0.99}
    assert spec["forecasting"]["model"] == "burst" and spec["scaling"]["scaleDownStabilizationSeconds"] == 300
    assert spec["missingMetrics"]["policy"] == "Hold"
    cluster.kubectl("delete", "servingpool", "defaults-check", "-n", "default")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"minReplicas": 5, "maxReplicas": 2}, "minReplicas must be less than or equal to maxReplicas"),
        (
            {"profile": {"name": "x", "decodeTokensPerSecond": 100}},
            "profile needs exactly one of name, configMapRef, inline or an explicit capacity",
        ),
        (
            {"profile": {"decodeTokensPerSecond": 100}},
            "needs decodeTokensPerSecond and prefillTokensPerSecond",
        ),
        ({"mode": "Yolo"}, 'spec.mode: Unsupported value: "Yolo"'),
        ({"forecasting": {"quantile": 1.5}}, "spec.forecasting.quantile"),
        ({"maxReplicas": 0}, "spec.maxReplicas: Invalid value: 0"),
        ({"surpriseField": 1}, 'unknown field "spec.surpriseField"'),
        ({"profile": {"name": "h100-llama3-8b", "capacityScale": 20}}, "spec.profile.capacityScale"),
        (
            {"profile": {"name": "h100-llama3-8b", "configMapRef": {"name": "p"}}},
            "profile needs exactly one of name, configMapRef, inline",
        ),
        (
            {"profile": {"configMapRef": {"key": "profile.json"}}},
            "spec.profile.configMapRef.name: Required value",
        ),
        ({"metrics": {"prometheusUrl": "ftp://x"}}, "spec.metrics.prometheusUrl"),
        ({"metrics": {"scrapeIntervalSeconds": 0.05}}, "spec.metrics.scrapeIntervalSeconds"),
        ({"metrics": {"windowSeconds": 0.5}}, "spec.metrics.windowSeconds"),
        (
            {"missingMetrics": {"policy": "Floor", "floorReplicas": 9}},
            "floorReplicas must be less than or equal",
        ),
    ],
)
def test_invalid_servingpool_is_refused_with_a_clear_message(cluster, chart_installed, spec, message):
    res = cluster.apply(with_spec("invalid", **spec), check=False)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr


def test_calibrated_capacity_scale_is_kept_and_read_by_the_policy(cluster, chart_installed):
    from burstpilot.policy import PoolSpec
    from burstpilot.sim import load_profile

    cluster.apply(with_spec("scale-check", profile={"name": "h100-llama3-8b", "capacityScale": 0.8}))
    spec = cluster.get_json("servingpool", "scale-check", "-n", "default")["spec"]
    assert spec["profile"] == {"name": "h100-llama3-8b", "capacityScale": 0.8}
    assert PoolSpec.from_crd(spec, resolve_profile=load_profile).capacity_scale == 0.8
    cluster.kubectl("delete", "servingpool", "scale-check", "-n", "default")


def test_target_is_immutable(cluster, chart_installed):
    cluster.apply(with_spec("immutable-check"))
    res = cluster.apply(with_spec("immutable-check", targetRef={"name": "other"}), check=False)
    assert res.returncode != 0 and "targetRef kind and name are immutable" in res.stderr
    cluster.kubectl("delete", "servingpool", "immutable-check", "-n", "default")


def test_printer_columns(cluster, chart_installed):
    cluster.apply(with_spec("columns-check"))
    header = cluster.kubectl("get", "servingpools", "-n", "default").stdout.splitlines()[0].split()
    assert header == ["NAME", "DESIRED", "CURRENT", "READY", "FORECAST", "REASON", "AGE"]
    wide = cluster.kubectl("get", "sp", "-n", "default", "-o", "wide").stdout.splitlines()[0].split()
    assert "PENDING" in wide and "MODE" in wide
    cluster.kubectl("delete", "servingpool", "columns-check", "-n", "default")


def test_a_profile_by_configmap_reference_or_inline_is_kept(cluster, chart_installed):
    cluster.apply(with_spec("ref-check", profile={"configMapRef": {"name": "llama-profile"}}))
    spec = cluster.get_json("servingpool", "ref-check", "-n", "default")["spec"]
    assert spec["profile"] == {"configMapRef": {"name": "llama-profile", "key": "profile.json"}}
    inline = {
        "name": "measured",
        "step_model": {"w_ms": 6.3},
        "provenance": {"tool": "burstpilot profile measure"},
    }
    cluster.apply(with_spec("inline-check", profile={"inline": inline, "capacityScale": 0.9}))
    spec = cluster.get_json("servingpool", "inline-check", "-n", "default")["spec"]
    assert spec["profile"] == {"inline": inline, "capacityScale": 0.9}  # unknown fields kept for the loader
    cluster.kubectl("delete", "servingpool", "ref-check", "inline-check", "-n", "default")
