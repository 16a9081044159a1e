"""End-to-end tier fixtures: thin wrappers over ``burstpilot.operator.cluster``, the code ``burstpilot cluster up``
runs, so the tier tests the local cluster users start.

The binaries come from scripts/build-toolchain.sh (``$BURSTPILOT_CACHE/toolchain.json``). Missing binaries
fail these tests (never skip): ``make test`` builds them first.

Session fixtures start everything once, each part when a test first needs it:
- ``cluster``: etcd, kube-apiserver (static-token admin, RBAC, the API aggregation layer),
  kube-controller-manager, kube-scheduler, kwok, with fake nodes advertising ``nvidia.com/gpu``;
- ``prometheus``: Debian's binary, scraping the simulated replicas through file_sd target files;
- ``chart_installed``, ``operator``: ``helm install`` of charts/burstpilot, then the operator on the host as the
  chart's ServiceAccount, launched with the Dockerfile's command line;
- ``keda``: KEDA's objects, its operator and its metrics API server behind ``v1beta1.external.metrics.k8s.io``;
- ``front_factory``: a replica keeper (one ``burstpilot sim serve`` per Ready pod of a Deployment) and the
  Service front spreading requests over those replicas, in threads of the test process.
"""

from __future__ import annotations

import pytest

from burstpilot.operator.cluster import procs as _procs
from burstpilot.operator.cluster.controllers import BIN, CHART, RELEASE, RELEASE_NS, REPO, OperatorProcess
from burstpilot.operator.cluster.controllers import install_chart as _install_chart
from burstpilot.operator.cluster.controlplane import ControlPlane
from burstpilot.operator.cluster.keda import Keda
from burstpilot.operator.cluster.prometheus import Prometheus
from burstpilot.operator.cluster.replicas import ReplicaKeeper, ServiceFront
from burstpilot.operator.cluster.toolchain import load_toolchain

__all__ = [
    "BIN",
    "CHART",
    "GPU_NODES",
    "GPUS_PER_NODE",
    "RELEASE",
    "RELEASE_NS",
    "REPO",
    "free_port",
    "wait_for",
]

GPU_NODES = 2
GPUS_PER_NODE = 2
free_port = _procs.free_port


def wait_for(what: str, check, timeout: float = 60.0, interval: float = 0.5):
    """``burstpilot.operator.cluster.procs.wait_for``, failing the test (with the message) on a timeout or a
    process that died."""
    try:
        return _procs.wait_for(what, check, timeout=timeout, interval=interval)
    except _procs.ClusterError as exc:
        pytest.fail(str(exc))


def _fail_clearly(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except _procs.ClusterError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def toolchain() -> dict:
    return _fail_clearly(load_toolchain, keda=False)


@pytest.fixture(scope="session")
def procs(tmp_path_factory):
    p = _procs.Procs(tmp_path_factory.mktemp("e2e-logs"))
    yield p
    p.stop_all()


@pytest.fixture(scope="session")
def cluster(toolchain, procs, tmp_path_factory) -> ControlPlane:
    c = ControlPlane(
        toolchain, tmp_path_factory.mktemp("cluster"), procs, gpu_nodes=GPU_NODES, gpus_per_node=GPUS_PER_NODE
    )
    _fail_clearly(c.start)
    return c


@pytest.fixture(scope="session")
def chart_installed(cluster) -> None:
    _fail_clearly(_install_chart, cluster)


@pytest.fixture(scope="session")
def prometheus(toolchain, procs, tmp_path_factory) -> Prometheus:
    prom = Prometheus(toolchain["prometheus"], tmp_path_factory.mktemp("prometheus"), procs)
    _fail_clearly(prom.start)
    return prom


@pytest.fixture(scope="session")
def operator(cluster, chart_installed, procs, tmp_path_factory) -> OperatorProcess:
    op = OperatorProcess(cluster, procs, tmp_path_factory.mktemp("operator"), token_duration="2h")
    return _fail_clearly(op.start)


@pytest.fixture(scope="session")
def keda(cluster, procs, tmp_path_factory) -> Keda:
    cluster.tools.update(_fail_clearly(load_toolchain, keda=True))
    k = Keda(cluster, procs, tmp_path_factory.mktemp("keda"))
    _fail_clearly(k.install)
    _fail_clearly(k.start)
    return k


@pytest.fixture(scope="session")
def front_factory(cluster, prometheus, procs):
    def make(namespace: str, selector: str, pool: str, profile: str):
        keeper = ReplicaKeeper(cluster.kubeconfig, prometheus, procs, namespace, selector, pool, profile)
        return keeper, ServiceFront(keeper)

    return make
