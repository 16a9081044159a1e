"""Real KEDA on the local cluster: its operator and its metrics API server, behind the API aggregation layer.

KEDA's own install manifests (``kubectl kustomize config/default`` of the module the toolchain built) are
applied with three changes, because the binaries run on the host as KEDA's ServiceAccount rather than in
pods (kwok runs no containers):
- the Deployments are left out (the processes below take their place);
- the ``keda-metrics-apiserver`` Service becomes an ExternalName Service for 127.0.0.1: the aggregator's service
  resolver (k8s.io/apiserver's ``ResolveCluster``, used while ``--enable-aggregator-routing`` is off) maps an
  ExternalName Service to ``https://<externalName>:<APIService port>``, whereas Endpoints refuse loopback
  addresses. The APIService gets that port and the CA of the metrics server's certificate (``caBundle``), and
  the aggregator checks the certificate for ``keda-metrics-apiserver.keda.svc``;
- the admission webhooks are not run, nor their ValidatingWebhookConfiguration applied: the webhook server has
  no flag for its listen address and would listen on every interface (their binary is built all the same).

The certificates are made here (one CA, one certificate for the operator's gRPC metrics service and the
metrics server, as KEDA's own rotation makes them) and KEDA's rotation is off. Everything listens on 127.0.0.1
except the metrics server's own /metrics endpoint, for which KEDA has a port flag and no address flag.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.request
from pathlib import Path

import yaml

from burstpilot.operator.cluster import pki
from burstpilot.operator.cluster.controlplane import ControlPlane
from burstpilot.operator.cluster.procs import ClusterError, ProcessExited, Procs, free_port, wait_for

NAMESPACE = "keda"
SERVICE_ACCOUNT = "keda-operator"
METRICS_SERVICE = "keda-metrics-apiserver"
APISERVICE = "v1beta1.external.metrics.k8s.io"
LEFT_OUT = {"Deployment", "ValidatingWebhookConfiguration"}
LEFT_OUT_SERVICES = {"keda-operator", "keda-admission-webhooks"}  # reached by address, or not run


class Keda:
    OPERATOR, ADAPTER = "keda-operator", "keda-metrics-apiserver"

    def __init__(self, plane: ControlPlane, procs: Procs, workdir: Path, ports: dict | None = None) -> None:
        """``ports``: those of an earlier start (the APIService and the certificates name them); new ones when
        None, for ``install``."""
        self.plane, self.procs, self.dir = plane, procs, Path(workdir)
        self.config = Path(plane.tools["keda-config"])
        self.certs = self.dir / "certs"
        self.kubeconfig = self.dir / "sa.kubeconfig"
        names = ("grpc", "operator-metrics", "operator-health", "secure", "adapter-metrics")
        self.ports = dict(ports) if ports else {name: free_port() for name in names}
        self.procs_started: dict[str, object] = {}

    @property
    def operator_metrics(self) -> str:
        return f"127.0.0.1:{self.ports['operator-metrics']}"

    # -- objects -------------------------------------------------------------------------------------------

    def manifests(self) -> list[dict]:
        """KEDA's install manifests, changed as the module docstring says."""
        rendered = self.plane.kubectl("kustomize", str(self.config / "default")).stdout
        ca = base64.b64encode((self.certs / "ca.crt").read_bytes()).decode()
        out = []
        for doc in yaml.safe_load_all(rendered):
            if not doc or doc["kind"] in LEFT_OUT:
                continue
            name = doc["metadata"]["name"]
            if doc["kind"] == "Service":
                if name in LEFT_OUT_SERVICES:
                    continue
                if name == METRICS_SERVICE:
                    doc["spec"] = {
                        "type": "ExternalName",
                        "externalName": "127.0.0.1",
                        "ports": [{"name": "https", "port": self.ports["secure"], "protocol": "TCP"}],
                    }
            if doc["kind"] == "APIService" and name == APISERVICE:
                doc["spec"]["service"]["port"] = self.ports["secure"]
                doc["spec"].pop("insecureSkipTLSVerify", None)
                doc["spec"]["caBundle"] = ca
            out.append(doc)
        return out

    def _certificates(self) -> None:
        self.certs.mkdir(parents=True, exist_ok=True)
        authority = pki.ca(self.certs, "ca", "KEDA")
        names = []
        for svc in ("keda-operator", METRICS_SERVICE):
            names += [
                svc,
                f"{svc}.{NAMESPACE}",
                f"{svc}.{NAMESPACE}.svc",
                f"{svc}.{NAMESPACE}.svc.cluster.local",
            ]
        pki.certificate(
            self.certs, "tls", authority, "keda", dns=(*names, "localhost"), ips=("127.0.0.1",), client=True
        )

    # -- processes -----------------------------------------------------------------------------------------

    def _env(self) -> dict:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "WATCH_NAMESPACE": "",
            "POD_NAMESPACE": NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
        }

    def install(self) -> None:
        """Certificates, KEDA's objects (server-side apply: the CRDs are larger than an annotation may be), and a
        kubeconfig with a token of KEDA's ServiceAccount."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._certificates()
        docs = self.manifests()
        self._apply(docs)
        crds = [d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"]
        self.plane.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in crds)
        )
        self.kubeconfig = self.plane.service_account_kubeconfig(
            NAMESPACE, SERVICE_ACCOUNT, self.dir / "sa.kubeconfig", duration="24h"
        )

    def _apply(self, docs: list[dict]) -> None:
        listing = {"apiVersion": "v1", "kind": "List", "items": docs}
        self.plane.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(listing)
        )

    def operator_argv(self) -> list[str]:
        p = self.ports
        return [
            self.plane.tools["keda-operator"],
            "--leader-elect=false",
            "--zap-log-level=info",
            "--zap-encoder=console",
            f"--metrics-bind-address=127.0.0.1:{p['operator-metrics']}",
            f"--health-probe-bind-address=127.0.0.1:{p['operator-health']}",
            f"--metrics-service-bind-address=127.0.0.1:{p['grpc']}",
            "--enable-cert-rotation=false",
            f"--cert-dir={self.certs}",
            f"--ca-dir={self.certs}",
        ]

    def adapter_argv(self) -> list[str]:
        p, c = self.ports, self.certs
        return [
            self.plane.tools["keda-adapter"],
            "--bind-address=127.0.0.1",
            f"--secure-port={p['secure']}",
            f"--cert-dir={c}",
            f"--tls-cert-file={c / 'tls.crt'}",
            f"--tls-private-key-file={c / 'tls.key'}",
            f"--client-ca-file={c / 'ca.crt'}",
            f"--lister-kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--metrics-service-address=127.0.0.1:{p['grpc']}",
            f"--port={p['adapter-metrics']}",  # KEDA binds ":port": every interface (no address flag)
            "--zap-log-level=info",
            "--zap-encoder=console",
        ]

    def start(self) -> None:
        """Starts the operator and the metrics server and waits until the HPA controller could read external
        metrics through the aggregator (the APIService is Available). A process that finds one of its ports
        taken (another program bound it between ``free_port`` and the start) is started again on new ports."""
        op = self._start(self.OPERATOR, self.operator_argv, ("grpc", "operator-metrics", "operator-health"))
        adapter = self._start(self.ADAPTER, self.adapter_argv, ("secure", "adapter-metrics"))
        self.procs_started = {self.OPERATOR: op, self.ADAPTER: adapter}
        wait_for(
            f"APIService {APISERVICE} Available",
            lambda: (
                self.procs.check(self.ADAPTER, adapter)
                or self.procs.check(self.OPERATOR, op)
                or self.available()
            ),
            timeout=90,
        )

    def _healthy(self, name: str) -> bool:
        if name == self.OPERATOR:
            url = f"http://127.0.0.1:{self.ports['operator-health']}/healthz"
            return urllib.request.urlopen(url, timeout=2).status == 200
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        url = f"https://127.0.0.1:{self.ports['secure']}/healthz"
        return urllib.request.urlopen(url, context=ctx, timeout=2).status == 200

    def _start(self, name: str, argv, ports: tuple[str, ...], attempts: int = 3):
        attempt = 1
        while True:
            proc = self.procs.start(name, argv(), env=self._env())
            try:
                wait_for(
                    f"{name} /healthz",
                    lambda proc=proc: self.procs.check(name, proc) or self._healthy(name),
                    timeout=90,
                )
                return proc
            except ProcessExited as exc:
                if "address already in use" not in str(exc) or attempt == attempts:
                    raise
            attempt += 1
            for port in ports:
                self.ports[port] = free_port()
            if "secure" in ports:  # the APIService and its Service name the metrics server's port
                self._apply([d for d in self.manifests() if d["kind"] in ("Service", "APIService")])

    def available(self) -> bool:
        st = self.plane.get_json("apiservice", APISERVICE).get("status") or {}
        cond = next((c for c in st.get("conditions", []) if c["type"] == "Available"), {})
        if cond.get("status") == "True":
            return True
        raise RuntimeError(f"{cond.get('reason')}: {cond.get('message')}")  # shown if the wait times out

    def stop(self) -> None:
        for proc in reversed(list(self.procs_started.values())):
            self.procs.stop(proc)
        self.procs_started = {}


def external_metric(plane: ControlPlane, namespace: str, metric: str, scaled_object: str) -> list[dict]:
    """The external metric as the HPA controller reads it, through the aggregator and KEDA."""
    path = (
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
        f"?labelSelector=scaledobject.keda.sh%2Fname%3D{scaled_object}"
    )
    res = plane.kubectl("get", "--raw", path, check=False)
    if res.returncode != 0:
        raise ClusterError(f"GET {path}: {res.stderr.strip()}")
    return json.loads(res.stdout)["items"]
