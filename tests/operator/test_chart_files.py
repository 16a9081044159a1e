"""The chart's generated README, its dashboard and its values, checked without a cluster (the e2e tier checks
the rendered chart against the API server, and the dashboard's and alerts' PromQL against Prometheus)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from burstpilot.operator import metrics as opmetrics

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "burstpilot"


def test_the_readme_is_generated_from_the_values_comments():
    res = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "chart_readme.py"), "--check"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    readme = (CHART / "README.md").read_text()
    for key in (
        "replicaCount",
        "leaderElection.leaseDuration",
        "logging.format",
        "networkPolicy.enabled",
        "extraArgs",
    ):
        assert f"| {key} |" in readme


def test_every_value_is_in_the_schema_and_the_keda_conventions_are_there():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in (
        "replicaCount",
        "podAnnotations",
        "extraArgs",
        "env",
        "resources",
        "nodeSelector",
        "tolerations",
        "affinity",
    ):
        assert key in values, key
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) == set(schema["properties"]), set(values) ^ set(schema["properties"])


def test_the_dashboard_is_well_formed_and_reads_only_exported_metrics():
    board = json.loads((CHART / "dashboards" / "burstpilot.json").read_text())
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all({"x", "y", "w", "h"} <= set(p["gridPos"]) for p in panels)
    names = {v["name"] for v in board["templating"]["list"]}
    assert names == {"datasource", "namespace", "pool"}
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert all(t["datasource"]["uid"] == "${datasource}" for p in panels for t in p.get("targets", []))
    exported = {m._name for m in vars(opmetrics).values() if hasattr(m, "_name") and hasattr(m, "_type")}
    exported |= {n + "_total" for n in exported} | {n + "_bucket" for n in exported}
    used = {n for e in exprs for n in re.findall(r"burstpilot_operator_[a-z0-9_]+", e)}
    assert used and used <= exported, used - exported
    titles = " ".join(p["title"] for p in panels)
    for shown in ("forecast", "Replicas", "Bound", "SLO", "GPUs", "Tick latency", "Errors"):
        assert shown in titles
