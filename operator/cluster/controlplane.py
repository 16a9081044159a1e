"""A real Kubernetes control plane on 127.0.0.1 with fake GPU nodes.

etcd, kube-apiserver (static-token admin, RBAC, the API aggregation layer), kube-controller-manager (so the
Deployment, ReplicaSet, garbage-collector and HPA controllers run for real), kube-scheduler and kwok, which
keeps fake nodes advertising ``nvidia.com/gpu`` alive and moves the pods bound to them to Running and Ready.
kwok runs no containers: what a pod would serve is started beside it (``replicas.ReplicaKeeper``).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.request
from pathlib import Path

import yaml

from burstpilot.operator.cluster import pki
from burstpilot.operator.cluster.procs import ClusterError, Procs, free_port, wait_for

ADMIN_TOKEN = "burstpilot-e2e-admin"
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
FRONT_PROXY_CLIENT = "front-proxy-client"
# A pod with this annotation (value "replica") goes Running but not Ready under kwok; the replica keeper marks it
# Ready once its simulated replica answers /health and, with COLD_START_ANNOTATION, no sooner than that many
# seconds after its creation: what a kubelet does when the readiness probe of a server loading its model passes.
READINESS_ANNOTATION = "burstpilot.io/readiness"
READINESS_BY_REPLICA = "replica"
COLD_START_ANNOTATION = "burstpilot.io/cold-start-seconds"
# kwok's stage for such pods: Running, its container started but not ready (kwok's own fast pod-ready stage
# makes every other pod Ready at once).
_RUNNING_UNREADY = """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ModelLoading
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ModelLoading
  type: ContainersReady
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
{{ $hostIPs := NodeIPsWith .spec.nodeName }}
{{ with $hostIPs }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
{{ with $podIPs }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""


def kwok_stages(toolchain_stages: Path, out: Path) -> Path:
    """kwok's stages (the toolchain's copy of its fast node and pod stages) with one change: pods annotated
    ``burstpilot.io/readiness: replica`` go Running but not Ready (stage ``pod-running-unready``), and kwok's
    ``pod-ready`` leaves them alone. Written to ``out``."""
    docs = [d for d in yaml.safe_load_all(Path(toolchain_stages).read_text()) if d]
    key = f'.metadata.annotations["{READINESS_ANNOTATION}"]'
    ready = next((d for d in docs if d["metadata"]["name"] == "pod-ready"), None)
    if ready is None:
        raise ClusterError(f"{toolchain_stages}: no pod-ready stage (not kwok's stages?)")
    unready = json.loads(json.dumps(ready))
    ready["spec"]["selector"]["matchExpressions"].append({"key": key, "operator": "DoesNotExist"})
    unready["metadata"]["name"] = "pod-running-unready"
    unready["spec"]["selector"]["matchExpressions"].append(
        {"key": key, "operator": "In", "values": [READINESS_BY_REPLICA]}
    )
    unready["spec"]["next"] = {"statusTemplate": _RUNNING_UNREADY}
    out.write_text(yaml.safe_dump_all([*docs, unready], sort_keys=False))
    return out


class ControlPlane:
    """The control plane's processes (``start``) and the clients to it (kubectl, helm).

    ``attach``: a ControlPlane for one already running, from its directory and API port (what ``burstpilot
    cluster`` records), without starting anything.
    """

    def __init__(
        self,
        tools: dict,
        workdir: Path,
        procs: Procs | None,
        gpu_nodes: int = 2,
        gpus_per_node: int = 2,
        api_port: int | None = None,
        hpa_sync_period: str | None = None,
    ) -> None:
        self.tools, self.dir, self.procs = tools, Path(workdir), procs
        self.gpu_nodes, self.gpus_per_node = gpu_nodes, gpus_per_node
        self.hpa_sync_period = hpa_sync_period  # None: the controller manager's default (15s)
        self.api_port = api_port or free_port()
        self.server = f"https://127.0.0.1:{self.api_port}"
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.pki = self.dir / "pki"
        # kube-apiserver generates its serving certificate and CA here; clients verify against that chain.
        self.ca = self.pki / "apiserver.crt"

    @classmethod
    def attach(cls, tools: dict, workdir: Path, api_port: int, **kw) -> ControlPlane:
        return cls(tools, workdir, None, api_port=api_port, **kw)

    # -- clients -------------------------------------------------------------------------------------------

    def write_kubeconfig(self, path: Path, user: str, token: str, namespace: str = "default") -> Path:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "burstpilot",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "burstpilot",
                    "context": {"cluster": "burstpilot", "user": user, "namespace": namespace},
                }
            ],
            "current-context": "burstpilot",
        }
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)
        return path

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess:
        argv = [self.tools["kubectl"], f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stderr}{res.stdout}"
            )
        return res

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, obj: dict, check: bool = True) -> subprocess.CompletedProcess:
        return self.kubectl("apply", "-f", "-", input=json.dumps(obj), check=check)

    def namespace(self, name: str) -> str:
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.dir / "helm-cache"),
            "HELM_CONFIG_HOME": str(self.dir / "helm-config"),
            "HELM_DATA_HOME": str(self.dir / "helm-data"),
        }
        argv = [self.tools["helm"], f"--kubeconfig={self.kubeconfig}", *args]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        if check and res.returncode != 0:
            raise ClusterError(f"helm {' '.join(args)} failed ({res.returncode}):\n{res.stderr}{res.stdout}")
        return res

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path, duration: str = "24h"
    ) -> Path:
        """A kubeconfig with a TokenRequest token of the ServiceAccount: a process run with it has exactly the
        rights its RBAC gives."""
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        return self.write_kubeconfig(path, name, token, namespace=namespace)

    def readyz(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca))  # absent until the API server writes it
        req = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return resp.status == 200

    # -- processes -----------------------------------------------------------------------------------------

    def _pki(self) -> dict:
        self.pki.mkdir(parents=True, exist_ok=True)
        sa_key, sa_pub = pki.key_pair(self.pki, "sa")
        front_ca = pki.ca(self.pki, "front-proxy-ca", "front-proxy-ca")
        front = pki.certificate(
            self.pki, FRONT_PROXY_CLIENT, front_ca, FRONT_PROXY_CLIENT, server=False, client=True
        )
        return {"sa.key": sa_key, "sa.pub": sa_pub, "front-ca": front_ca[0], "front": front}

    def start(self) -> None:
        if self.procs is None:
            raise ClusterError("an attached control plane cannot be started")
        d, t, p = self.dir, self.tools, self.procs
        certs = self._pki()
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
                f"--cert-dir={self.pki}",
                f"--token-auth-file={d / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={certs['sa.pub']}",
                f"--service-account-signing-key-file={certs['sa.key']}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                # The API aggregation layer: requests proxied to an APIService's server carry the user in
                # these headers, authenticated by the front-proxy client certificate.
                f"--requestheader-client-ca-file={certs['front-ca']}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={certs['front'][0]}",
                f"--proxy-client-key-file={certs['front'][1]}",
            ],
        )
        wait_for(
            "kube-apiserver /readyz",
            lambda: p.check("etcd", etcd) or p.check("kube-apiserver", apiserver) or self.readyz(),
            timeout=180,
        )
        common = [
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--profiling=false",
        ]
        hpa = (
            [f"--horizontal-pod-autoscaler-sync-period={self.hpa_sync_period}"]
            if self.hpa_sync_period
            else []
        )
        p.start(
            "kube-controller-manager",
            [
                t["kube-controller-manager"],
                *common,
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={certs['sa.key']}",
                "--use-service-account-credentials=false",
                "--concurrent-deployment-syncs=2",
                "--concurrent-replicaset-syncs=2",
                *hpa,
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
                f"--config={kwok_stages(t['kwok-stages'], d / 'kwok-stages.yaml')}",
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

    def add_gpu_nodes(
        self,
        count: int | None = None,
        gpus_per_node: int | None = None,
        prefix: str = "gpu-node",
        labels: dict[str, str] | None = None,
    ) -> list[str]:
        """Adds ``count`` kwok nodes with ``gpus_per_node`` nvidia.com/gpu each (default: the plane's), named
        ``prefix-i`` and carrying ``labels`` besides kwok's and the GPU product's; waits until they are Ready."""
        count = self.gpu_nodes if count is None else count
        gpus = self.gpus_per_node if gpus_per_node is None else gpus_per_node
        names = [f"{prefix}-{i}" for i in range(count)]
        if not names:
            return []
        nodes = []
        for name in names:
            resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                        "labels": {
                            "type": "kwok",
                            "nvidia.com/gpu.product": GPU_PRODUCT,
                            "kubernetes.io/hostname": name,
                            **(labels or {}),
                        },
                    },
                    "status": {"capacity": resources, "allocatable": resources},
                }
            )
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})
        )

        def all_ready():
            items = self.get_json("nodes")["items"]
            ready = {
                n["metadata"]["name"]
                for n in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", [])
                )
            }
            return set(names) <= ready

        wait_for(f"kwok to mark the GPU nodes {prefix}-* Ready", all_ready, timeout=60)
        return names

    # -- objects -------------------------------------------------------------------------------------------

    @staticmethod
    def deployment(
        namespace: str,
        name: str,
        replicas: int,
        gpus: int = 1,
        node_selector: dict[str, str] | None = None,
        cold_start_s: float | None = None,
    ) -> dict:
        """A GPU serving Deployment (kwok runs no containers: its pods only go Running and Ready).

        ``cold_start_s``: its pods become Ready only when their simulated replica answers /health and at least
        this long after their creation (the replica keeper marks them, as a kubelet after a readiness probe);
        None: kwok makes them Ready as soon as they run."""
        labels = {"app": name}
        meta: dict = {"labels": labels}
        if cold_start_s is not None:
            meta["annotations"] = {
                READINESS_ANNOTATION: READINESS_BY_REPLICA,
                COLD_START_ANNOTATION: f"{float(cold_start_s):g}",
            }
        pod_spec: dict = {
            "containers": [
                {
                    "name": "vllm",
                    "image": "vllm/vllm-openai:v0.11.0",
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"cpu": "1"}},
                }
            ],
            "terminationGracePeriodSeconds": 0,
        }
        if node_selector:
            pod_spec["nodeSelector"] = dict(node_selector)
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": meta, "spec": pod_spec},
            },
        }
