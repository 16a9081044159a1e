"""burstpilot's own controller on the local cluster: the Helm chart, and the operator run on the host.

Under kwok the chart's operator pod runs no code, so the operator runs as a process on the host with the
image's command line (the Dockerfile's ENTRYPOINT and CMD) and a TokenRequest token of the chart's
ServiceAccount, so the chart's RBAC is exactly what it runs with.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

from burstpilot.operator.cluster.controlplane import ControlPlane
from burstpilot.operator.cluster.procs import ClusterError, Procs, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "burstpilot"
RELEASE, RELEASE_NS = "burstpilot", "burstpilot-system"
BIN = Path(sys.executable).parent


def _checkout_file(path: Path) -> Path:
    if not path.exists():
        raise ClusterError(
            f"{path} not found: the local cluster installs the chart and runs the image's command line from a "
            "burstpilot checkout (an editable install: `make venv`)"
        )
    return path


def install_chart(plane: ControlPlane, chart: Path = CHART, timeout: str = "180s") -> None:
    plane.helm(
        "install",
        RELEASE,
        str(_checkout_file(chart)),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "--set",
        "image.pullPolicy=IfNotPresent",
        "--wait",
        "--timeout",
        timeout,
    )


def image_command() -> list[str]:
    """The image's command line (ENTRYPOINT + CMD of the Dockerfile), the venv's ``burstpilot`` first."""
    lines = _checkout_file(REPO / "Dockerfile").read_text().splitlines()
    entry = json.loads(next(x for x in lines if x.startswith("ENTRYPOINT"))[len("ENTRYPOINT") :])
    cmd = json.loads(next(x for x in lines if x.startswith("CMD"))[len("CMD") :])
    return [str(BIN / entry[0]), *cmd]


class OperatorProcess:
    """The operator on the host, as the chart's ServiceAccount, started with the image's command line."""

    NAME = "operator"

    def __init__(self, plane: ControlPlane, procs: Procs, workdir: Path, token_duration: str = "24h") -> None:
        sa = plane.get_json(
            "serviceaccount", "-n", RELEASE_NS, "-l", f"app.kubernetes.io/instance={RELEASE}"
        )["items"]
        if len(sa) != 1:
            raise ClusterError(f"expected one ServiceAccount of the chart in {RELEASE_NS}, found {len(sa)}")
        self.service_account = sa[0]["metadata"]["name"]
        workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = plane.service_account_kubeconfig(
            RELEASE_NS, self.service_account, workdir / "sa.kubeconfig", duration=token_duration
        )
        self.metrics_port, self.health_port = free_port(), free_port()
        self.argv = [
            *image_command()[:1],
            "-v",
            *image_command()[1:],
            f"--metrics-address=127.0.0.1:{self.metrics_port}",
            f"--health-address=127.0.0.1:{self.health_port}",
        ]
        self.metrics_address = f"127.0.0.1:{self.metrics_port}"
        self.metrics = f"http://{self.metrics_address}/metrics"
        self.health = f"http://127.0.0.1:{self.health_port}/healthz"
        self.procs = procs
        self.proc = None

    def start(self) -> OperatorProcess:
        self.proc = self.procs.start(
            self.NAME, self.argv, env={**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        )
        wait_for(
            "the operator's /healthz",
            lambda: (
                self.procs.check(self.NAME, self.proc)
                or urllib.request.urlopen(self.health, timeout=2).status == 200
            ),
            timeout=60,
        )
        return self

    def restart(self) -> None:
        self.procs.stop(self.proc)
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
