"""Writes charts/burstpilot/README.md from the chart's values.yaml comments (helm-docs' convention: a
``# -- description`` comment, continued by plain ``#`` lines, right above the key it describes).

    .venv/bin/python scripts/chart_readme.py          # write README.md
    .venv/bin/python scripts/chart_readme.py --check  # exit 1 when README.md is not what the values say
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "burstpilot"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_]+):")

HEAD = """# burstpilot Helm chart

{description}

```sh
kubectl apply -f crds/        # or let Helm install the CRD from the chart's crds/ folder
helm install burstpilot charts/burstpilot -n burstpilot-system --create-namespace
```

High availability: `--set replicaCount=2` runs two operator replicas; the one holding the leader Lease
(`coordination.k8s.io`, in the release namespace) acts, the other stands by and takes over when the Lease is
not renewed for `leaderElection.leaseDuration` seconds (at once when the leader shuts down cleanly). A
PodDisruptionBudget keeps one replica through voluntary disruptions. See docs/operator.md for the ServingPool,
the RBAC the operator needs, the failure drills and the observability bundle (dashboard, alerts, JSON logs).

This file is generated from values.yaml by `scripts/chart_readme.py`; edit the comments there.

## Values

| Key | Type | Default | Description |
|-----|------|---------|-------------|
"""


def entries(text: str, values: dict) -> list[tuple[str, str, str, str]]:
    out, comment, stack = [], None, []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and comment is not None:
            comment.append(stripped[1:].strip())
            continue
        m = KEY.match(line)
        if not m:
            if stripped and not stripped.startswith("-"):
                comment = None
            continue
        indent, key = len(m.group(1)), m.group(2)
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
        if comment is not None:
            path = [k for _, k in stack]
            value = values
            for k in path:
                value = value[k]
            kind = {
                dict: "object",
                list: "list",
                bool: "bool",
                int: "int",
                float: "float",
                str: "string",
            }.get(type(value), "string")
            out.append((".".join(path), kind, json.dumps(value), " ".join(comment)))
            comment = None
    return out


def render() -> str:
    text = (CHART / "values.yaml").read_text()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    rows = []
    for key, kind, default, desc in entries(text, yaml.safe_load(text)):
        cell = desc.replace("|", "\\|")
        rows.append(f"| {key} | {kind} | `{default}` | {cell} |")
    return HEAD.format(description=chart["description"]) + "\n".join(rows) + "\n"


def main() -> int:
    readme = CHART / "README.md"
    wanted = render()
    if "--check" in sys.argv[1:]:
        if not readme.exists() or readme.read_text() != wanted:
            print(f"{readme} is out of date: run scripts/chart_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
