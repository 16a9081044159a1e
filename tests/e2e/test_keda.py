"""Real KEDA on the real control plane: a ScaledObject with a Prometheus trigger scales a kwok Deployment through
the real HPA controller, which reads KEDA's metric through the API aggregation layer."""

from __future__ import annotations

import ipaddress
import math
import os
import subprocess
import time
from pathlib import Path

import pytest
from e2e_harness import BIN, GPU_NODES, GPUS_PER_NODE, wait_for

from burstpilot.operator.cluster.demo import phased_workload
from burstpilot.operator.cluster.keda import APISERVICE, external_metric

pytestmark = pytest.mark.e2e

RATE, THRESHOLD = 5.0, 1.5  # requests/s offered; requests/s per replica the trigger targets
MAX_REPLICAS = GPU_NODES * GPUS_PER_NODE


def scaled_object(ns: str, name: str, target: str, prometheus_url: str, pool: str) -> dict:
    query = f'sum(rate(vllm:request_success_total{{namespace="{ns}",servingpool="{pool}"}}[20s]))'
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "scaleTargetRef": {"name": target},
            "minReplicaCount": 1,
            "maxReplicaCount": MAX_REPLICAS,
            "pollingInterval": 5,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": query,
                        "threshold": str(THRESHOLD),
                    },
                }
            ],
        },
    }


def condition(obj: dict, ctype: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == ctype), {})


def test_keda_reports_its_release_and_serves_external_metrics(cluster, keda, toolchain):
    assert condition(cluster.get_json("apiservice", APISERVICE), "Available")["status"] == "True"
    log = keda.procs.tail(keda.OPERATOR, 400)
    assert f"KEDA Version: {cluster.tools['keda_version'].lstrip('v')}" in log
    assert f"Running on Kubernetes {toolchain['kubernetes_version'].lstrip('v').rsplit('.', 1)[0]}" in log
    groups = cluster.kubectl("api-versions").stdout.split()
    assert "external.metrics.k8s.io/v1beta1" in groups and "keda.sh/v1alpha1" in groups


def test_scaledobject_scales_a_kwok_deployment_through_the_real_hpa(
    cluster, keda, prometheus, front_factory, tmp_path: Path
):
    ns, pool = cluster.namespace("e2e-keda"), "llm-keda"
    cluster.apply(cluster.deployment(ns, "llm", replicas=1))
    keeper, front = front_factory(ns, "app=llm", pool, "h100-llama3-8b")
    with keeper, front:
        wait_for("one simulated replica behind the Service", lambda: len(keeper.backends) == 1, timeout=90)
        cluster.apply(scaled_object(ns, "llm", "llm", prometheus.url, pool))
        hpa = wait_for(
            "KEDA's HPA for the ScaledObject",
            lambda: cluster.get_json("hpa", "keda-hpa-llm", "-n", ns),
            timeout=60,
        )
        assert [(o["kind"], o["name"]) for o in hpa["metadata"]["ownerReferences"]] == [
            ("ScaledObject", "llm")
        ]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "External"
        metric_name = metric["external"]["metric"]["name"]
        assert metric_name == "s0-prometheus"
        assert float(metric["external"]["target"]["averageValue"]) == THRESHOLD
        wait_for(
            "the ScaledObject Ready",
            lambda: (
                condition(cluster.get_json("scaledobject", "llm", "-n", ns), "Ready").get("status") == "True"
            ),
            timeout=60,
        )

        workload = tmp_path / "steady.csv"
        duration = 75.0
        phased_workload(workload, [(duration, RATE)])
        replay = subprocess.Popen(
            [
                BIN / "burstpilot", "replay", workload, "--target", front.url, "--out", tmp_path / "replay",
                "--no-progress", "--no-plot", "--timeout", "60s",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        seen: list[float] = []

        def scaled_up():
            items = external_metric(cluster, ns, metric_name, "llm")  # what the HPA controller reads
            seen.extend(
                float(i["value"].rstrip("m")) / (1000 if i["value"].endswith("m") else 1) for i in items
            )
            return cluster.get_json("deployment", "llm", "-n", ns)["spec"]["replicas"] >= 3

        t0 = time.monotonic()
        wait_for(
            "the HPA to scale the Deployment up from KEDA's metric", scaled_up, timeout=duration, interval=2
        )
        scale_up_s = time.monotonic() - t0
        out, _ = replay.communicate(timeout=duration + 60)
        assert replay.returncode == 0, out
        expected = math.ceil(RATE / THRESHOLD)  # 4: the HPA's rule for an AverageValue target
        assert max(seen) > 2 * THRESHOLD, f"KEDA's metric through the aggregator: {seen}"
        hpa = cluster.get_json("hpa", "keda-hpa-llm", "-n", ns)
        assert hpa["status"]["desiredReplicas"] >= 3
        assert condition(hpa, "ScalingActive")["status"] == "True"
        events = cluster.get_json("events", "-n", ns, "--field-selector", "involvedObject.name=keda-hpa-llm")
        rescales = [e["message"] for e in events["items"] if e["reason"] == "SuccessfulRescale"]
        assert any(f"external metric {metric_name}" in m and "above target" in m for m in rescales), rescales
        pods = cluster.get_json("pods", "-n", ns, "-l", "app=llm")["items"]
        nodes = {p["spec"].get("nodeName") for p in pods if p["status"].get("phase") == "Running"}
        assert len(nodes) >= 1 and nodes <= {f"gpu-node-{i}" for i in range(GPU_NODES)}
        assert len([p for p in pods if p["status"].get("phase") == "Running"]) >= min(expected, 3)

        # The load is over: the rate falls to 0 and the HPA (no scale-down stabilization here) returns to 1.
        wait_for(
            "the HPA to scale back to minReplicaCount",
            lambda: cluster.get_json("deployment", "llm", "-n", ns)["spec"]["replicas"] == 1,
            timeout=120,
            interval=2,
        )
    print(f"scaled up {scale_up_s:.0f}s after the load began; metric values seen {sorted(set(seen))[-3:]}")
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_pods_of_a_serving_deployment_are_ready_only_after_their_cold_start(cluster, front_factory):
    """What the HPA, KEDA and burstpilot count as Ready (bench/k8s_peers.py relies on it): a pod annotated for
    its replica's readiness runs at once but is Ready, and routed to, only when its simulated replica answers
    /health and its declared cold start has passed since its creation."""
    ns, cold = cluster.namespace("e2e-cold-start"), 20.0
    cluster.apply(cluster.deployment(ns, "llm", replicas=2, cold_start_s=cold))
    keeper, front = front_factory(ns, "app=llm", "llm-cold", "h100-llama3-8b")

    def pods():
        return cluster.get_json("pods", "-n", ns, "-l", "app=llm")["items"]

    def ready(p):
        return any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))

    with keeper, front:

        def both_running():
            run = [p for p in pods() if p["status"].get("phase") == "Running"]
            return run if len(run) == 2 else None

        running = wait_for("both pods Running", both_running)
        assert not any(ready(p) for p in running) and keeper.backends == []
        wait_for("both pods Ready", lambda: len([p for p in pods() if ready(p)]) == 2, timeout=90)
        assert len(keeper.backends) == 2
        for rec in keeper.lifetimes():
            assert rec["ready"] - rec["created"] >= cold, rec
        st = cluster.get_json("deployment", "llm", "-n", ns)["status"]
        assert st["readyReplicas"] == 2 and st["availableReplicas"] == 2
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) of every TCP socket ``pid`` listens on, from /proc/net/tcp{,6}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A: LISTEN
                continue
            hexaddr, hexport = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            if width == 8:
                addr = str(ipaddress.IPv4Address(raw[::-1]))
            else:  # four little-endian 32-bit words
                addr = str(ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))))
            out.add((addr, int(hexport, 16)))
    return out


def test_everything_listens_on_loopback_but_kedas_metrics_port(cluster, keda, procs):
    """Each process of the session (control plane, Prometheus, replicas, KEDA) listens on 127.0.0.1 only; the one
    exception is the port KEDA's metrics server binds as ":port" for its own /metrics (no address flag)."""
    exception = keda.ports["adapter-metrics"]
    seen, wide = {}, []
    for name, proc in procs.procs:
        if proc.poll() is not None:
            continue
        socks = listening(proc.pid)
        seen[name] = socks
        wide += [(name, a, p) for a, p in socks if a not in ("127.0.0.1", "::ffff:127.0.0.1")]
    assert {keda.OPERATOR, keda.ADAPTER, "kube-apiserver", "etcd"} <= set(seen)
    assert wide == [(keda.ADAPTER, "::", exception)] or wide == [(keda.ADAPTER, "0.0.0.0", exception)], wide
