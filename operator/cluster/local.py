"""``burstpilot cluster up|down|status``: the end-to-end environment as a local cluster that outlives the command.

Everything it makes lives in one state directory: ``cluster.json`` (ports, paths, what runs), ``processes.json``
(every process by PID and kernel start time, so ``down`` stops exactly those), ``logs/``, and one folder per
part (control plane, Prometheus, operator, KEDA, pools). The same classes start the e2e tier's fixtures.

A benchmark drives it through ``LocalCluster``: ``stop_operator``/``start_operator``, ``stop_keda``/``start_keda``,
``serve_pool`` (one simulated replica per Ready pod of a Deployment, behind a Service front), and
``pod_lifetimes`` (each pod's creation, Ready and deletion times).
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from burstpilot.operator.cluster.controllers import OperatorProcess, install_chart
from burstpilot.operator.cluster.controlplane import ControlPlane
from burstpilot.operator.cluster.keda import Keda
from burstpilot.operator.cluster.procs import (
    ClusterError,
    Procs,
    free_port,
    running_records,
    stop_recorded,
    wait_for,
)
from burstpilot.operator.cluster.prometheus import SCRAPE_INTERVAL_S, Prometheus
from burstpilot.operator.cluster.replicas import ReplicaKeeper, ServiceFront
from burstpilot.operator.cluster.toolchain import cache_dir, load_toolchain

STATE_VERSION = 1
SAMPLE_NAMESPACE, SAMPLE_POOL = "demo", "llm"
SAMPLE_PROFILE = "h100-llama3-8b"  # what the simulated replicas serve
# What the sample pool declares one replica serves (100 prompt + 50 output tokens per request -> about 1.8
# requests/s): far below the simulated H100, so that a burst of a few requests per second, which a laptop can
# send, already needs more replicas than the four fake GPUs hold.
SAMPLE_CAPACITY = {"decodeTokensPerSecond": 100, "prefillTokensPerSecond": 2000}
SAMPLE_INTERVAL_S, SAMPLE_STABILIZATION_S = 3, 20
BIN = Path(sys.executable).parent


def default_state_dir() -> Path:
    return cache_dir() / "cluster"


def sample_pool(name: str, namespace: str, target: str, prometheus_url: str, max_replicas: int) -> dict:
    return {
        "apiVersion": "burstpilot.io/v1alpha1",
        "kind": "ServingPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"kind": "Deployment", "name": target},
            "minReplicas": 1,
            "maxReplicas": max_replicas,
            "gpusPerReplica": 1,
            "profile": SAMPLE_CAPACITY,
            "slo": {"ttftSeconds": 2, "tpotSeconds": 0.1, "attainment": 0.99},
            "coldStartSeconds": 4,
            "metrics": {
                "prometheusUrl": prometheus_url,
                "selector": {"servingpool": name},
                "scrapeIntervalSeconds": SCRAPE_INTERVAL_S,
            },
            "forecasting": {"model": "burst", "stepSeconds": SAMPLE_INTERVAL_S, "quantile": 0.9},
            "scaling": {
                "intervalSeconds": SAMPLE_INTERVAL_S,
                "scaleDownStabilizationSeconds": SAMPLE_STABILIZATION_S,
            },
        },
    }


class LocalCluster:
    def __init__(self, state_dir: Path | None = None) -> None:
        self.dir = Path(state_dir or default_state_dir()).expanduser().resolve()
        self.state_file = self.dir / "cluster.json"
        self.record = self.dir / "processes.json"
        self.state: dict = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self._tools: dict | None = None

    # -- state ---------------------------------------------------------------------------------------------

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.state_file)

    def running(self) -> list[dict]:
        return running_records(self.record)

    def _require_up(self) -> None:
        if not self.state.get("api_port"):
            raise ClusterError(f"no local cluster in {self.dir}: `burstpilot cluster up` first")

    @property
    def tools(self) -> dict:
        if self._tools is None:
            self._tools = self.state.get("tools") or load_toolchain(keda=False)
        return self._tools

    def procs(self) -> Procs:
        return Procs(self.dir / "logs", record=self.record, detach=True)

    @property
    def plane(self) -> ControlPlane:
        self._require_up()
        s = self.state
        return ControlPlane.attach(
            self.tools,
            self.dir / "plane",
            s["api_port"],
            gpu_nodes=s["gpu_nodes"],
            gpus_per_node=s["gpus_per_node"],
        )

    @property
    def prometheus(self) -> Prometheus:
        self._require_up()
        return Prometheus.attach(self.dir / "prometheus", self.state["prometheus_port"])

    # -- up / down -----------------------------------------------------------------------------------------

    def up(
        self,
        gpu_nodes: int = 2,
        gpus_per_node: int = 2,
        keda: bool = True,
        sample: bool = True,
        hpa_sync_period: str | None = None,
        progress: Callable[[str], None] = print,
    ) -> dict:
        """Starts everything; on a failure stops what it started and keeps the logs (``down`` removes them)."""
        if self.running():
            raise ClusterError(
                f"a local cluster already runs from {self.dir} ({len(self.running())} processes): "
                "`burstpilot cluster down` first, or pass another --state-dir"
            )
        tools = load_toolchain(keda=keda)
        if self.dir.exists():
            shutil.rmtree(self.dir)  # a stale directory: nothing of it runs
        self.dir.mkdir(parents=True)
        self._tools = tools
        self.state = {
            "version": STATE_VERSION,
            "created": time.time(),
            "tools": tools,
            "gpu_nodes": gpu_nodes,
            "gpus_per_node": gpus_per_node,
            "pools": {},
        }
        self._save()
        procs = self.procs()
        try:
            self._up(procs, tools, keda, sample, hpa_sync_period, progress)
        except BaseException:
            stop_recorded(self.record)
            self.state["failed"] = True
            self._save()
            raise
        return self.state

    def _up(self, procs, tools, keda, sample, hpa_sync_period, progress) -> None:
        t0 = time.monotonic()

        def step(what: str, fn):
            t = time.monotonic()
            progress(f"  {what} ...")
            out = fn()
            progress(f"  {what}: ready in {time.monotonic() - t:.1f}s")
            return out

        s = self.state
        plane = ControlPlane(
            tools,
            self.dir / "plane",
            procs,
            gpu_nodes=s["gpu_nodes"],
            gpus_per_node=s["gpus_per_node"],
            hpa_sync_period=hpa_sync_period,
        )
        s.update(api_port=plane.api_port, server=plane.server, kubeconfig=str(plane.kubeconfig))
        self._save()
        step(
            f"control plane (etcd, kube-apiserver {tools['kubernetes_version']}, controller-manager, scheduler, "
            f"kwok; {s['gpu_nodes']} nodes x {s['gpus_per_node']} nvidia.com/gpu)",
            plane.start,
        )
        prom = Prometheus(tools["prometheus"], self.dir / "prometheus", procs)
        s.update(prometheus_port=prom.port, prometheus_url=prom.url)
        self._save()
        step("Prometheus", prom.start)
        step("Helm chart charts/burstpilot", lambda: install_chart(plane))
        self.start_operator(procs, progress=step)
        if keda:
            self.start_keda(procs, install=True, progress=step)
        if sample:
            self.create_sample(progress=step)
        progress(f"up in {time.monotonic() - t0:.0f}s")

    def start_operator(self, procs: Procs | None = None, progress=None) -> OperatorProcess:
        """burstpilot's operator, as the chart's ServiceAccount; Prometheus scrapes its /metrics."""
        op = OperatorProcess(self.plane, procs or self.procs(), self.dir / "operator")
        (progress or _quiet)("burstpilot operator (the chart's ServiceAccount)", op.start)
        self.state["operator"] = {"metrics": op.metrics_address, "health": op.health}
        self._save()
        self.prometheus.set_controller("burstpilot-operator", op.metrics_address)
        return op

    def stop_operator(self) -> int:
        self.prometheus.set_controller("burstpilot-operator", None)
        self.state["operator"] = None
        self._save()
        return stop_recorded(self.record, names={OperatorProcess.NAME})

    def start_keda(self, procs: Procs | None = None, install: bool = False, progress=None) -> Keda:
        """KEDA's operator and metrics server (KEDA's objects applied first when ``install``)."""
        self.tools.update(load_toolchain(keda=True))
        ports = (self.state.get("keda") or {}).get("ports")
        k = Keda(self.plane, procs or self.procs(), self.dir / "keda", ports=None if install else ports)
        step = progress or _quiet
        if install:
            step(f"KEDA {self.tools['keda_version']} objects (CRDs, RBAC, APIService)", k.install)
        step("KEDA operator and metrics API server (v1beta1.external.metrics.k8s.io)", k.start)
        self.state["keda"] = {"ports": k.ports, "operator_metrics": k.operator_metrics}
        self._save()
        self.prometheus.set_controller("keda-operator", k.operator_metrics)
        return k

    def stop_keda(self) -> int:
        self.prometheus.set_controller("keda-operator", None)
        return stop_recorded(self.record, names={Keda.OPERATOR, Keda.ADAPTER})

    def serve_pool(
        self,
        namespace: str,
        selector: str,
        pool: str,
        profile: str = SAMPLE_PROFILE,
        cold_start_s: float = 2.0,
        wait_replicas: bool = True,
    ) -> str:
        """Starts ``burstpilot cluster serve`` for a Deployment's pods; returns its Service URL."""
        key = f"{namespace}/{pool}"
        port = free_port()
        folder = self.dir / "pools" / f"{namespace}-{pool}"
        folder.mkdir(parents=True, exist_ok=True)
        argv = [
            BIN / "burstpilot",
            "cluster",
            "serve",
            "--state-dir",
            self.dir,
            "--namespace",
            namespace,
            "--selector",
            selector,
            "--pool",
            pool,
            "--profile",
            profile,
            "--cold-start",
            str(cold_start_s),
            "--port",
            str(port),
        ]
        name = f"serve-{namespace}-{pool}"
        procs = self.procs()
        proc = procs.start(name, argv)
        url = f"http://127.0.0.1:{port}"
        self.state["pools"][key] = {
            "namespace": namespace,
            "pool": pool,
            "selector": selector,
            "profile": profile,
            "url": url,
            "lifetimes": str(folder / "lifetimes.json"),
        }
        self._save()

        def answers():
            procs.check(name, proc)
            with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as resp:
                return resp.status == 200

        if wait_replicas:
            wait_for(f"a simulated replica behind {url}", answers, timeout=90)
        return url

    def stop_pool(self, namespace: str, pool: str) -> int:
        """Stops the replicas ``serve_pool`` started for ``namespace/pool`` (its process and their replicas) and
        forgets the pool; returns how many processes were stopped."""
        n = stop_recorded(self.record, names={f"serve-{namespace}-{pool}"})
        self.state.get("pools", {}).pop(f"{namespace}/{pool}", None)
        self._save()
        return n

    def pod_lifetimes(self, namespace: str, pool: str) -> list[dict]:
        """Each pod the pool's replica keeper saw: name, uid, node, created, ready, deleted (Unix s or None)."""
        entry = self.state.get("pools", {}).get(f"{namespace}/{pool}")
        if entry is None:
            raise ClusterError(f"no pool {namespace}/{pool} is served in {self.dir}")
        path = Path(entry["lifetimes"])
        return json.loads(path.read_text()) if path.exists() else []

    def create_sample(self, progress=None) -> None:
        plane, step = self.plane, progress or _quiet
        ns, name = SAMPLE_NAMESPACE, SAMPLE_POOL
        plane.namespace(ns)
        plane.apply(plane.deployment(ns, name, replicas=1))
        url = step(
            f"sample Deployment {ns}/{name} with one simulated {SAMPLE_PROFILE} replica per Ready pod",
            lambda: self.serve_pool(ns, f"app={name}", name),
        )
        max_replicas = self.state["gpu_nodes"] * self.state["gpus_per_node"] + 2
        plane.apply(sample_pool(name, ns, name, self.state["prometheus_url"], max_replicas))

        def decided():
            # decided on metrics, not on their absence: the first ticks may come before Prometheus scraped
            st = plane.get_json("servingpool", name, "-n", ns).get("status") or {}
            metrics = [c for c in st.get("conditions") or [] if c.get("type") == "MetricsAvailable"]
            return st.get("lastDecision") if metrics and metrics[0].get("status") == "True" else None

        step(
            f"sample ServingPool {ns}/{name} (first decision on scraped metrics)",
            lambda: wait_for("its first decision on scraped metrics", decided, timeout=120),
        )
        self.state["sample"] = {"namespace": ns, "pool": name, "url": url}
        self._save()

    def down(self, progress: Callable[[str], None] = print) -> bool:
        """Stops every recorded process and removes the state directory; False when there was nothing."""
        if not self.dir.exists():
            return False
        if self.state_file.exists() or self.record.exists():
            stop_recorded(self.record, progress=progress)
        elif any(self.dir.iterdir()):
            raise ClusterError(
                f"{self.dir} holds no cluster.json: not a local cluster's directory, left as it is"
            )
        shutil.rmtree(self.dir)
        return True

    # -- reporting -----------------------------------------------------------------------------------------

    def summary(self) -> str:
        s = self.state
        kubectl = s["tools"]["kubectl"]
        lines = [
            f"state:       {self.dir}",
            f"kubeconfig:  {s['kubeconfig']}",
            f"API server:  {s['server']} (Kubernetes {s['tools']['kubernetes_version']})",
            f"Prometheus:  {s['prometheus_url']}",
        ]
        if s.get("keda"):
            lines.append(
                f"KEDA:        {s['tools']['keda_version']} (external metrics through the aggregator)"
            )
        if s.get("sample"):
            lines.append(
                f"sample pool: {s['sample']['namespace']}/{s['sample']['pool']}, Service {s['sample']['url']}"
            )
        lines += [
            "",
            "next:",
            f"  export KUBECONFIG={s['kubeconfig']}",
            f"  alias kubectl={kubectl}",
            "  kubectl get servingpools -A -w",
        ]
        if s.get("sample"):
            lines += [
                "  burstpilot trace generate --preset burstgpt --rps 2 --duration 300 --seed 1 --out burst.csv",
                f"  burstpilot replay burst.csv --target {s['sample']['url']} --slo ttft=2s,tpot=100ms --out replay",
            ]
        lines.append(
            f"  burstpilot cluster down{'' if self.dir == default_state_dir() else f' --state-dir {self.dir}'}"
        )
        return "\n".join(lines)


def _quiet(what: str, fn):
    return fn()


def serve(
    state_dir: Path, namespace: str, selector: str, pool: str, profile: str, cold_start_s: float, port: int
) -> None:
    """``burstpilot cluster serve``: a ReplicaKeeper and its ServiceFront until SIGTERM or SIGINT."""
    lc = LocalCluster(state_dir)
    plane, prom = lc.plane, lc.prometheus
    folder = lc.dir / "pools" / f"{namespace}-{pool}"
    folder.mkdir(parents=True, exist_ok=True)
    procs = Procs(lc.dir / "logs" / f"{namespace}-{pool}")  # children of this process, in its process group
    keeper = ReplicaKeeper(
        plane.kubeconfig,
        prom,
        procs,
        namespace,
        selector,
        pool,
        profile,
        cold_start_s=cold_start_s,
        lifetimes_file=folder / "lifetimes.json",
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: keeper.stop())
    front = ServiceFront(keeper, port)
    try:
        with front:
            print(f"serving {namespace}/{pool} ({selector}) at {front.url}", flush=True)
            keeper.run()
    finally:
        keeper.close()
