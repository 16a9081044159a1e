"""End-to-end tier harness: a real control plane on 127.0.0.1, fake GPU nodes, a real Prometheus, the chart, the operator.

The binaries come from scripts/build-toolchain.sh (``$BURSTPILOT_CACHE/toolchain.json``). Missing binaries
fail these tests (never skip): ``make test`` builds them first.

Session fixtures start everything once:
- etcd, kube-apiserver (static-token admin, RBAC on), kube-controller-manager, kube-scheduler, kwok, with
  fake nodes advertising ``nvidia.com/gpu`` so the scheduler places GPU pods and leaves the rest Pending;
- Prometheus (Debian's binary) scraping the simulated replicas through a file_sd target file;
- ``helm install`` of charts/burstpilot, then the operator on the host as the chart's ServiceAccount (a token
  from the TokenRequest API), launched with the Dockerfile's command line;
- a replica keeper that runs one ``burstpilot sim serve`` per Running pod of a target Deployment, as a kubelet
  would, and a small HTTP front (the Service) spreading requests over those replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("BURSTPILOT_CACHE", Path.home() / ".cache" / "burstpilot"))
BIN = Path(sys.executable).parent
GPU_NODES = 2
GPUS_PER_NODE = 2
RELEASE, RELEASE_NS = "burstpilot", "burstpilot-system"
ADMIN_TOKEN = "burstpilot-e2e-admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float = 60.0, interval: float = 0.5):
    """Polls ``check()`` until it returns a truthy value; fails the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the thing is not up yet
            last_exc = exc
        time.sleep(interval)
    pytest.fail(
        f"timed out after {timeout:.0f}s waiting for {what}"
        + (f" (last error: {last_exc})" if last_exc else "")
    )


class Procs:
    """Background processes with their logs; stopped in reverse order of start."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.logdir)
        log.close()
        self.procs.append((name, proc))
        return proc

    def check(self, name: str, proc: subprocess.Popen) -> None:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            self.stop(proc)


@pytest.fixture(scope="session")
def toolchain() -> dict:
    manifest = CACHE / "toolchain.json"
    if not manifest.exists():
        pytest.fail(
            f"{manifest} is missing: run scripts/build-toolchain.sh (make test does) before the e2e tier"
        )
    tools = json.loads(manifest.read_text())
    missing = [k for k, v in tools.items() if not k.endswith("_version") and not Path(v).exists()]
    if missing:
        pytest.fail(f"toolchain binaries missing: {', '.join(missing)}; run scripts/build-toolchain.sh")
    return tools


class Cluster:
    def __init__(self, tools: dict, workdir: Path, procs: Procs) -> None:
        self.tools, self.dir, self.procs = tools, workdir, procs
        self.api_port = free_port()
        self.server = f"https://127.0.0.1:{self.api_port}"
        self.kubeconfig = workdir / "admin.kubeconfig"
        # kube-apiserver generates its serving certificate and CA here; clients verify against that chain.
        self.ca = workdir / "pki" / "apiserver.crt"

    def write_kubeconfig(self, path: Path, user: str, token: str) -> Path:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "e2e", "cluster": {"server": self.server, "certificate-authority": str(self.ca)}}
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": "e2e", "context": {"cluster": "e2e", "user": user, "namespace": "default"}}
            ],
            "current-context": "e2e",
        }
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)
        return path

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ):
        argv = [self.tools["kubectl"], f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=120)
        if check and res.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stderr}{res.stdout}")
        return res

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def helm(self, *args: str, check: bool = True):
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.dir / "helm-cache"),
            "HELM_CONFIG_HOME": str(self.dir / "helm-config"),
            "HELM_DATA_HOME": str(self.dir / "helm-data"),
        }
        argv = [self.tools["helm"], f"--kubeconfig={self.kubeconfig}", *args]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        if check and res.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed ({res.returncode}):\n{res.stderr}{res.stdout}")
        return res

    def _readyz(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca))  # absent until the API server writes it
        req = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return resp.status == 200

    def start(self) -> None:
        d, t, p = self.dir, self.tools, self.procs
        subprocess.run(
            ["openssl", "genrsa", "-out", str(d / "sa.key"), "2048"], check=True, capture_output=True
        )
        subprocess.run(
            ["openssl", "rsa", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub")],
            check=True,
            capture_output=True,
        )
        (d / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
        self.write_kubeconfig(self.kubeconfig, "admin", ADMIN_TOKEN)

        etcd_client, etcd_peer = free_port(), free_port()
        etcd = p.start(
            "etcd",
            [
                t["etcd"],
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes=1073741824",
                f"--listen-metrics-urls=http://127.0.0.1:{free_port()}",
            ],
        )
        apiserver = p.start(
            "kube-apiserver",
            [
                t["kube-apiserver"],
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={d / 'pki'}",
                f"--token-auth-file={d / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={d / 'sa.pub'}",
                f"--service-account-signing-key-file={d / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
        )
        wait_for(
            "kube-apiserver /readyz",
            lambda: p.check("etcd", etcd) or p.check("kube-apiserver", apiserver) or self._readyz(),
            timeout=180,
        )
        common = [
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--profiling=false",
        ]
        p.start(
            "kube-controller-manager",
            [
                t["kube-controller-manager"],
                *common,
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={d / 'sa.key'}",
                "--use-service-account-credentials=false",
                "--concurrent-deployment-syncs=2",
                "--concurrent-replicaset-syncs=2",
            ],
        )
        p.start("kube-scheduler", [t["kube-scheduler"], *common, f"--secure-port={free_port()}"])
        p.start(
            "kwok",
            [
                t["kwok"],
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.0.0.0/16",
                "--node-ip=127.0.0.1",
                f"--config={t['kwok-stages']}",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        self.add_gpu_nodes()
        wait_for(
            "the default ServiceAccount",
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            timeout=60,
        )

    def deployment(self, namespace: str, name: str, replicas: int, gpus: int = 1) -> dict:
        """A GPU serving Deployment (kwok runs no containers: its pods only go Running and Ready)."""
        labels = {"app": name}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "vllm",
                                "image": "vllm/vllm-openai:v0.11.0",
                                "resources": {
                                    "limits": {"nvidia.com/gpu": str(gpus)},
                                    "requests": {"cpu": "1"},
                                },
                            }
                        ],
                        "terminationGracePeriodSeconds": 0,
                    },
                },
            },
        }

    def apply(self, obj: dict, check: bool = True):
        return self.kubectl("apply", "-f", "-", input=json.dumps(obj), check=check)

    def namespace(self, name: str) -> str:
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def add_gpu_nodes(self) -> None:
        nodes = []
        for i in range(GPU_NODES):
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": f"gpu-node-{i}",
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                        "labels": {
                            "type": "kwok",
                            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                            "kubernetes.io/hostname": f"gpu-node-{i}",
                        },
                    },
                    "status": {
                        "capacity": {
                            "cpu": "32",
                            "memory": "256Gi",
                            "pods": "110",
                            "nvidia.com/gpu": str(GPUS_PER_NODE),
                        },
                        "allocatable": {
                            "cpu": "32",
                            "memory": "256Gi",
                            "pods": "110",
                            "nvidia.com/gpu": str(GPUS_PER_NODE),
                        },
                    },
                }
            )
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})
        )

        def all_ready():
            items = self.get_json("nodes")["items"]
            ready = [
                n
                for n in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", [])
                )
            ]
            return len(ready) == GPU_NODES

        wait_for("kwok to mark the GPU nodes Ready", all_ready, timeout=60)


@pytest.fixture(scope="session")
def procs(tmp_path_factory):
    p = Procs(tmp_path_factory.mktemp("e2e-logs"))
    yield p
    p.stop_all()


@pytest.fixture(scope="session")
def cluster(toolchain, procs, tmp_path_factory) -> Cluster:
    c = Cluster(toolchain, tmp_path_factory.mktemp("cluster"), procs)
    c.start()
    return c


@pytest.fixture(scope="session")
def chart_installed(cluster) -> None:
    cluster.helm(
        "install",
        RELEASE,
        str(REPO / "charts" / "burstpilot"),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "--set",
        "image.pullPolicy=IfNotPresent",
        "--wait",
        "--timeout",
        "180s",
    )


class Prometheus:
    def __init__(self, binary: str, workdir: Path, procs: Procs) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets = workdir / "targets.json"
        self.targets.write_text("[]")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "scrape_configs": [
                {
                    "job_name": "sim-replicas",
                    "file_sd_configs": [{"files": [str(self.targets)], "refresh_interval": "1s"}],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc = procs.start(
            "prometheus",
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
        )
        wait_for(
            "Prometheus /-/ready",
            lambda: (
                procs.check("prometheus", self.proc)
                or urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200
            ),
            timeout=60,
        )

    def query(self, promql: str) -> list:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())["data"]["result"]

    def set_targets(self, groups: list[dict]) -> None:
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets)


@pytest.fixture(scope="session")
def prometheus(toolchain, procs, tmp_path_factory) -> Prometheus:
    return Prometheus(toolchain["prometheus"], tmp_path_factory.mktemp("prometheus"), procs)


class OperatorProcess:
    """The operator on the host, as the chart's ServiceAccount, started with the image's command line."""

    def __init__(self, cluster: Cluster, procs: Procs, workdir: Path) -> None:
        sa = cluster.get_json(
            "serviceaccount", "-n", RELEASE_NS, "-l", f"app.kubernetes.io/instance={RELEASE}"
        )["items"]
        assert len(sa) == 1, "the chart creates one ServiceAccount"
        self.service_account = sa[0]["metadata"]["name"]
        token = cluster.kubectl(
            "create", "token", self.service_account, "-n", RELEASE_NS, "--duration=2h"
        ).stdout.strip()
        self.kubeconfig = cluster.write_kubeconfig(workdir / "sa.kubeconfig", self.service_account, token)
        lines = (REPO / "Dockerfile").read_text().splitlines()
        entry = json.loads(next(x for x in lines if x.startswith("ENTRYPOINT"))[len("ENTRYPOINT") :])
        cmd = json.loads(next(x for x in lines if x.startswith("CMD"))[len("CMD") :])
        metrics_port, health_port = free_port(), free_port()
        self.argv = [
            str(BIN / entry[0]),
            "-v",
            *cmd,
            f"--metrics-address=127.0.0.1:{metrics_port}",
            f"--health-address=127.0.0.1:{health_port}",
        ]
        self.metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        self.health = f"http://127.0.0.1:{health_port}/healthz"
        self.procs = procs
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = self.procs.start(
            "operator", self.argv, env={**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        )
        wait_for(
            "the operator's /healthz",
            lambda: (
                self.procs.check("operator", self.proc)
                or urllib.request.urlopen(self.health, timeout=2).status == 200
            ),
            timeout=60,
        )

    def restart(self) -> None:
        self.procs.stop(self.proc)
        self.start()

    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture(scope="session")
def operator(cluster, chart_installed, procs, tmp_path_factory) -> OperatorProcess:
    return OperatorProcess(cluster, procs, tmp_path_factory.mktemp("operator"))


class ReplicaKeeper:
    """One ``burstpilot sim serve`` per Running and Ready pod of a Deployment (what a kubelet would run), the
    Prometheus file_sd targets that follow them, and the backends of the Service front."""

    def __init__(
        self,
        cluster: Cluster,
        prom: Prometheus,
        procs: Procs,
        namespace: str,
        selector: str,
        pool: str,
        profile: str,
    ) -> None:
        self.cluster, self.prom, self.procs = cluster, prom, procs
        self.namespace, self.selector, self.pool, self.profile = namespace, selector, pool, profile
        self.replicas: dict[str, tuple[subprocess.Popen, int]] = {}
        self.backends: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        for proc, _ in self.replicas.values():
            self.procs.stop(proc)
        self.prom.set_targets([])

    def _running_pods(self) -> list[str]:
        res = self.cluster.kubectl(
            "get", "pods", "-n", self.namespace, "-l", self.selector, "-o", "json", check=False
        )
        if res.returncode != 0:
            return []
        out = []
        for pod in json.loads(res.stdout)["items"]:
            if pod["metadata"].get("deletionTimestamp") or pod["status"].get("phase") != "Running":
                continue
            if any(
                c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
            ):
                out.append(pod["metadata"]["name"])
        return out

    def sync(self) -> None:
        pods = set(self._running_pods())
        for name in list(self.replicas):
            if name not in pods:
                self.procs.stop(self.replicas.pop(name)[0])
        for name in sorted(pods - set(self.replicas)):
            port = free_port()
            proc = self.procs.start(
                f"replica-{name}",
                [
                    str(BIN / "burstpilot"),
                    "sim",
                    "serve",
                    "--profile",
                    self.profile,
                    "--port",
                    str(port),
                    "--host",
                    "127.0.0.1",
                    "--cold-start",
                    "2",
                ],
            )
            self.replicas[name] = (proc, port)
        self.backends = [f"http://127.0.0.1:{port}" for _, port in self.replicas.values()]
        self.prom.set_targets(
            [
                {
                    "targets": [f"127.0.0.1:{port}"],
                    "labels": {"namespace": self.namespace, "pod": name, "servingpool": self.pool},
                }
                for name, (_, port) in sorted(self.replicas.items())
            ]
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.sync()
            self._stop.wait(0.5)


class ServiceFront:
    """The Service in front of the replicas: forwards each request (streaming) to the backend with the fewest
    requests in flight, among those the keeper runs at that moment."""

    def __init__(self, keeper: ReplicaKeeper) -> None:
        self.keeper = keeper
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.inflight: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request):
        from aiohttp import ClientTimeout, web

        backends = list(self.keeper.backends)
        if not backends:
            return web.json_response({"error": "no ready replica"}, status=503)
        backend = min(backends, key=lambda b: self.inflight.get(b, 0))
        self.inflight[backend] = self.inflight.get(backend, 0) + 1
        try:
            body = await request.read()
            async with self._session.request(
                request.method,
                backend + request.rel_url.path_qs,
                data=body,
                headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
                timeout=ClientTimeout(total=600),
            ) as up:
                resp = web.StreamResponse(
                    status=up.status, headers={"Content-Type": up.headers.get("Content-Type", "")}
                )
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        finally:
            self.inflight[backend] -= 1

    def __enter__(self):
        from aiohttp import ClientSession, web

        async def setup():
            self._session = ClientSession()
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        self._thread.start()
        asyncio.run_coroutine_threadsafe(setup(), self._loop).result(10)
        return self

    def __exit__(self, *exc):
        async def teardown():
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(teardown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="session")
def front_factory(cluster, prometheus, procs):
    def make(namespace: str, selector: str, pool: str, profile: str):
        keeper = ReplicaKeeper(cluster, prometheus, procs, namespace, selector, pool, profile)
        return keeper, ServiceFront(keeper)

    return make
