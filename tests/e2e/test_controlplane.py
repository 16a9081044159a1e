"""The control plane itself: the release it reports, fake GPU nodes, GPU-aware scheduling."""

from __future__ import annotations

import json

import pytest
from e2e_harness import GPU_NODES, GPUS_PER_NODE, wait_for

pytestmark = pytest.mark.e2e


def test_version_reports_the_release(cluster, toolchain):
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == toolchain["kubernetes_version"]
    assert out["clientVersion"]["gitVersion"] == toolchain["kubernetes_version"]


def test_gpu_nodes_advertise_gpus(cluster):
    nodes = cluster.get_json("nodes")["items"]
    gpus = [int(n["status"]["allocatable"].get("nvidia.com/gpu", 0)) for n in nodes]
    assert sum(gpus) == GPU_NODES * GPUS_PER_NODE


def test_scheduler_places_gpu_pods_and_leaves_the_rest_pending(cluster):
    ns = cluster.namespace("e2e-sched")
    total = GPU_NODES * GPUS_PER_NODE
    cluster.apply(cluster.deployment(ns, "gpu-hog", replicas=total + 1))

    def placed():
        pods = cluster.get_json("pods", "-n", ns, "-l", "app=gpu-hog")["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        pending = [p for p in pods if p["status"].get("phase") == "Pending"]
        return (running, pending) if len(running) == total and len(pending) == 1 else None

    running, pending = wait_for("GPU pods to be placed", placed, timeout=90)
    assert {p["spec"]["nodeName"] for p in running} == {f"gpu-node-{i}" for i in range(GPU_NODES)}
    cond = next(c for c in pending[0]["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["status"] == "False" and "nvidia.com/gpu" in cond["message"]
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
