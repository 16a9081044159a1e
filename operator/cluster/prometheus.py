"""Prometheus (Debian's binary) on 127.0.0.1, scraping what file_sd target files list.

Two jobs, each reading every ``*.json`` of its folder (Prometheus' file_sd format), so several writers (one per
pool's replica keeper, one per controller) each own a file:
- ``sim-replicas`` (``targets/``): the simulated vLLM replicas, labelled namespace, pod, servingpool;
- ``controllers`` (``controllers/``): the operators' own /metrics (burstpilot's, KEDA's).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import yaml
from prometheus_api_client import PrometheusConnect

from burstpilot.operator.cluster.procs import Procs, free_port, wait_for

SCRAPE_INTERVAL_S = 1


class Prometheus:
    def __init__(self, binary: str, workdir: Path, procs: Procs | None, port: int | None = None) -> None:
        self.dir = Path(workdir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets_dir = self.dir / "targets"
        self.controllers_dir = self.dir / "controllers"
        self.binary, self.procs, self.proc = binary, procs, None

    @classmethod
    def attach(cls, workdir: Path, port: int) -> Prometheus:
        return cls("", workdir, None, port=port)

    def start(self) -> None:
        for folder in (self.targets_dir, self.controllers_dir):
            folder.mkdir(parents=True, exist_ok=True)
        s = f"{SCRAPE_INTERVAL_S}s"
        config = {
            "global": {"scrape_interval": s, "evaluation_interval": s, "scrape_timeout": "900ms"},
            "scrape_configs": [
                {
                    "job_name": job,
                    "file_sd_configs": [{"files": [str(folder / "*.json")], "refresh_interval": "1s"}],
                }
                for job, folder in (("sim-replicas", self.targets_dir), ("controllers", self.controllers_dir))
            ],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc = self.procs.start(
            "prometheus",
            [
                self.binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d",
            ],
        )
        wait_for(
            "Prometheus /-/ready",
            lambda: (
                self.procs.check("prometheus", self.proc)
                or urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200
            ),
            timeout=60,
        )

    def query(self, promql: str) -> list:
        """An instant query's result vector (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
        return PrometheusConnect(url=self.url, disable_ssl=True).custom_query(promql)

    def set_targets(self, groups: list[dict], name: str = "default") -> None:
        """Replaces the target file ``name`` of the replica job (groups of ``{"targets": [...], "labels": {}}``)."""
        _write_atomic(self.targets_dir / f"{name}.json", groups)

    def set_controller(self, name: str, address: str | None, labels: dict | None = None) -> None:
        """Scrapes (``address`` HOST:PORT) or stops scraping (None) a controller's /metrics."""
        path = self.controllers_dir / f"{name}.json"
        if address is None:
            path.unlink(missing_ok=True)
        else:
            _write_atomic(path, [{"targets": [address], "labels": {"controller": name, **(labels or {})}}])


def _write_atomic(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")  # not *.json: Prometheus never reads a half-written file
    tmp.write_text(json.dumps(content))
    tmp.replace(path)
