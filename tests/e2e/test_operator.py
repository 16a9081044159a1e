"""The operator in the real control plane: failures as conditions and Events, and a burst end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from e2e_harness import BIN, GPU_NODES, GPUS_PER_NODE, RELEASE_NS, free_port, wait_for

from burstpilot.operator.cluster.prometheus import SCRAPE_INTERVAL_S
from burstpilot.operator.state import decode

pytestmark = pytest.mark.e2e

# A pool whose declared per-replica capacity is small, so a modest burst asks for more replicas than
# there are GPUs: 100 prompt + 50 output tokens per request -> 1 / (100/2000 + 50/100) = 1.8 requests/s.
CAPACITY = {"decodeTokensPerSecond": 100, "prefillTokensPerSecond": 2000}
PROMPT, OUTPUT = 100, 50


def pool(name: str, target: str, prometheus_url: str, **spec) -> dict:
    base = {
        "targetRef": {"kind": "Deployment", "name": target},
        "minReplicas": 1,
        "maxReplicas": GPU_NODES * GPUS_PER_NODE + 2,
        "gpusPerReplica": 1,
        "profile": CAPACITY,
        "coldStartSeconds": 4,
        "metrics": {
            "prometheusUrl": prometheus_url,
            "selector": {"servingpool": name},
            "scrapeIntervalSeconds": SCRAPE_INTERVAL_S,
        },
        "forecasting": {"model": "burst", "stepSeconds": 2, "quantile": 0.9},
        "scaling": {"intervalSeconds": 2, "scaleDownStabilizationSeconds": 15},
    }
    base.update(spec)
    return {
        "apiVersion": "burstpilot.io/v1alpha1",
        "kind": "ServingPool",
        "metadata": {"name": name},
        "spec": base,
    }


def status(cluster, ns: str, name: str) -> dict:
    return cluster.get_json("servingpool", name, "-n", ns).get("status") or {}


def condition(st: dict, ctype: str) -> dict:
    return next((c for c in st.get("conditions", []) if c["type"] == ctype), {})


def events(cluster, ns: str, name: str) -> list[dict]:
    items = cluster.get_json("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]
    return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def test_missing_target_is_a_condition_and_an_event(cluster, operator, prometheus):
    ns = cluster.namespace("e2e-missing")
    obj = pool("ghost", "no-such-deployment", prometheus.url)
    obj["metadata"]["namespace"] = ns
    cluster.apply(obj)
    st = wait_for(
        "Ready=False TargetNotFound",
        lambda: (
            (s := status(cluster, ns, "ghost"))
            and condition(s, "Ready").get("reason") == "TargetNotFound"
            and s
        ),
        timeout=60,
    )
    assert condition(st, "Ready")["status"] == "False"
    assert "no-such-deployment" in condition(st, "Ready")["message"]
    assert st["observedGeneration"] == 1
    wait_for(
        "a TargetNotFound Event",
        lambda: any(e["reason"] == "TargetNotFound" for e in events(cluster, ns, "ghost")),
    )
    assert operator.alive(), "the operator keeps running"
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_prometheus_down_is_a_condition_and_replicas_hold(cluster, operator):
    ns = cluster.namespace("e2e-noprom")
    dep = cluster.deployment(ns, "llm", replicas=1)
    dep["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
    cluster.apply(dep)
    obj = pool("blind", "llm", f"http://127.0.0.1:{free_port()}", missingMetrics={"policy": "Hold"})
    obj["metadata"]["namespace"] = ns
    cluster.apply(obj)
    st = wait_for(
        "MetricsAvailable=False",
        lambda: (
            (s := status(cluster, ns, "blind"))
            and condition(s, "MetricsAvailable").get("status") == "False"
            and s
        ),
        timeout=60,
    )
    assert condition(st, "MetricsAvailable")["reason"] == "PrometheusUnavailable"
    assert condition(st, "Ready")["status"] == "True"
    assert st["desiredReplicas"] == 1 and "metrics missing" in st["lastDecision"]["reason"]
    wait_for(
        "a PrometheusUnavailable Event",
        lambda: any(e["reason"] == "PrometheusUnavailable" for e in events(cluster, ns, "blind")),
    )
    assert cluster.get_json("deployment", "llm", "-n", ns)["spec"]["replicas"] == 1
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def write_workload(path, phases: list[tuple[float, float]], seed: int = 0) -> float:
    """BurstGPT CSV with Poisson arrivals: phases of (seconds, requests per second). Returns the duration."""
    rng = np.random.default_rng(seed)
    t, rows = 0.0, []
    for seconds, rate in phases:
        end = t + seconds
        x = t + rng.exponential(1.0 / rate)
        while x < end:
            rows.append(x)
            x += rng.exponential(1.0 / rate)
        t = end
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"])
        for x in rows:
            w.writerow([f"{x:.3f}", "ChatGPT", PROMPT, OUTPUT, PROMPT + OUTPUT, "Conversation log"])
    return t


def test_burst_scales_up_on_gpu_nodes_then_down(cluster, operator, prometheus, front_factory, tmp_path):
    ns = cluster.namespace("e2e-burst")
    cluster.apply(cluster.deployment(ns, "llm", replicas=1))
    obj = pool("llm", "llm", prometheus.url)
    obj["metadata"]["namespace"] = ns
    keeper, front = front_factory(ns, "app=llm", "llm", "h100-llama3-8b")
    history: list[dict] = []
    with keeper, front:
        wait_for("one simulated replica behind the Service", lambda: len(keeper.backends) == 1, timeout=60)
        cluster.apply(obj)
        wait_for(
            "the pool's first decision", lambda: status(cluster, ns, "llm").get("lastDecision"), timeout=60
        )
        workload = tmp_path / "burst.csv"
        duration = write_workload(workload, [(20, 1.0), (30, 9.0), (10, 0.5)])
        replay = subprocess.Popen(
            [
                str(BIN / "burstpilot"),
                "replay",
                str(workload),
                "--target",
                front.url,
                "--out",
                str(tmp_path / "replay"),
                "--no-progress",
                "--no-plot",
                "--timeout",
                "60s",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        t0 = time.monotonic()
        while replay.poll() is None and time.monotonic() - t0 < duration + 120:
            st = status(cluster, ns, "llm")
            st["t"] = round(time.monotonic() - t0, 1)
            st["replica_processes"] = len(keeper.backends)
            history.append(st)
            time.sleep(1.0)
        out, _ = replay.communicate(timeout=30)
        (tmp_path / "history.json").write_text(json.dumps(history, indent=1))
        assert replay.returncode == 0, out
        burst = [h for h in history if 20 <= h["t"] <= 50]
        peak = max(h.get("desiredReplicas", 0) for h in burst)
        assert peak > GPU_NODES * GPUS_PER_NODE, f"the burst asks for more replicas than GPUs: {peak}"
        # sized for the forecast peak quantile over the cold-start horizon, above the burst's mean rate
        assert max((h.get("forecast") or {}).get("rate") or 0 for h in burst) > 9.0
        assert any(h.get("pendingReplicas", 0) > 0 for h in history), "pods beyond the GPUs show as pending"
        limited = [condition(h, "ScalingLimited") for h in history]
        assert any(
            c.get("reason") == "PodsPending" and "nvidia.com/gpu" in c.get("message", "") for c in limited
        )
        pods = cluster.get_json("pods", "-n", ns, "-l", "app=llm")["items"]
        nodes = {p["spec"].get("nodeName") for p in pods if p["status"].get("phase") == "Running"}
        assert nodes and nodes <= {f"gpu-node-{i}" for i in range(GPU_NODES)}
        # the keeper ran one simulated replica per Running (Ready) pod
        assert any(h["replica_processes"] == h.get("readyReplicas") > 1 for h in history)

        # After the burst: back to one replica once the stabilization window has passed.
        final = wait_for(
            "scale down after the stabilization window",
            lambda: (s := status(cluster, ns, "llm")).get("desiredReplicas") == 1 and s,
            timeout=120,
        )
        assert "scale down" in final["lastDecision"]["reason"] or final["currentReplicas"] == 1
        # each pod's creation-to-Ready time is measured once (kwok makes pods Ready at once)
        assert final["coldStartsUntil"] and 3 <= len(final["coldStarts"]) <= 12
        assert final["coldStartSeconds"] == pytest.approx(sorted(final["coldStarts"])[-1], abs=5)
        # the capacity the decisions sized with is kept by the API server (the CRD's status schema has it)
        cap = final["capacity"]
        assert (
            cap["ratePerReplica"] > 0
            and cap["modelRatePerReplica"] > 0
            and cap["source"] in ("profile", "learned")
        )
        assert cap["ratePerReplica"] == pytest.approx(cap["modelRatePerReplica"] * cap["factor"], rel=1e-2)
    reasons = [e["reason"] for e in events(cluster, ns, "llm")]
    assert "ScaledUp" in reasons and "ScaledDown" in reasons
    scaled = next(e for e in events(cluster, ns, "llm") if e["reason"] == "ScaledUp")
    assert "scale up" in scaled["message"] and "bound" in scaled["message"]
    summary = json.loads((tmp_path / "replay" / "summary.json").read_text())
    assert summary  # the load generator's own report of the run
    metrics = urllib.request.urlopen(operator.metrics, timeout=5).read().decode()
    assert (
        'burstpilot_operator_scale_operations_total{direction="up",namespace="e2e-burst",pool="llm"}'
        in metrics
    )
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_manual_scale_is_reported_and_taken_as_current(cluster, operator, prometheus):
    ns = cluster.namespace("e2e-manual")
    dep = cluster.deployment(ns, "llm", replicas=1)
    dep["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
    cluster.apply(dep)
    obj = pool(
        "hand", "llm", prometheus.url, scaling={"intervalSeconds": 2, "scaleDownStabilizationSeconds": 600}
    )
    obj["metadata"]["namespace"] = ns
    cluster.apply(obj)
    wait_for(
        "the first decision", lambda: status(cluster, ns, "hand").get("desiredReplicas") == 1, timeout=60
    )
    cluster.kubectl("scale", "deployment", "llm", "-n", ns, "--replicas=3")
    wait_for(
        "a ManualScale Event", lambda: any(e["reason"] == "ManualScale" for e in events(cluster, ns, "hand"))
    )
    st = wait_for(
        "status to follow the edit",
        lambda: (s := status(cluster, ns, "hand")).get("currentReplicas") == 3 and s,
    )
    assert st["desiredReplicas"] == 3  # held by the stabilization window, not undone at once
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def state_configmap(cluster, ns: str, pool_name: str) -> dict:
    res = cluster.kubectl(
        "get", "configmap", f"{pool_name}-burstpilot-state", "-n", ns, "-o", "json", check=False
    )
    return json.loads(res.stdout) if res.returncode == 0 else {}


def test_restarted_operator_resumes_the_forecaster(cluster, operator, prometheus):
    """The decision core's state lives in a ConfigMap owned by the pool, never in its status; a restart
    resumes from it; a status.policyState left by an earlier version is migrated; deleting the pool deletes it."""
    ns = cluster.namespace("e2e-resume")
    dep = cluster.deployment(ns, "llm", replicas=1)
    dep["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
    cluster.apply(dep)
    obj = pool("resume", "llm", prometheus.url)
    obj["metadata"]["namespace"] = ns
    cluster.apply(obj)

    def steps() -> int:
        data = state_configmap(cluster, ns, "resume").get("data") or {}
        return decode(data)["state"]["forecaster"]["n_steps"] if data else 0

    before = wait_for(
        "a few forecaster steps saved in the state ConfigMap", lambda: (n := steps()) >= 3 and n, timeout=60
    )
    cm = state_configmap(cluster, ns, "resume")
    uid = cluster.get_json("servingpool", "resume", "-n", ns)["metadata"]["uid"]
    assert [(o["kind"], o["name"], o["uid"]) for o in cm["metadata"]["ownerReferences"]] == [
        ("ServingPool", "resume", uid)
    ]
    assert cm["metadata"]["labels"]["burstpilot.io/servingpool"] == "resume"
    st = status(cluster, ns, "resume")
    assert "policyState" not in st and st["lastDecision"]["reason"] and st["conditions"]

    operator.restart()
    after = wait_for("a tick of the restarted operator", lambda: (n := steps()) != before and n, timeout=60)
    assert after > before, f"the restarted operator continued from step {before} (now {after}), not from zero"

    # Migration: an operator of an earlier version kept the state in status.policyState, and no ConfigMap.
    operator.procs.stop(operator.proc)
    document = decode(state_configmap(cluster, ns, "resume")["data"])  # the last tick's state
    saved = json.dumps(
        {"forecasting": document["forecasting"], "state": document["state"]}
    )  # as 0.1 wrote it
    migrated_from = document["state"]["forecaster"]["n_steps"]
    cluster.kubectl("delete", "configmap", "resume-burstpilot-state", "-n", ns)
    patch = json.dumps({"status": {"policyState": saved}})
    cluster.kubectl(
        "patch", "servingpool", "resume", "-n", ns, "--subresource=status", "--type=merge", "-p", patch
    )
    assert status(cluster, ns, "resume")["policyState"] == saved
    operator.start()
    resumed = wait_for("the state ConfigMap written again", lambda: steps(), timeout=60)
    assert resumed > migrated_from, f"migrated from step {migrated_from}, resumed at {resumed}"
    wait_for(
        "status.policyState removed after the migration",
        lambda: "policyState" not in status(cluster, ns, "resume"),
        timeout=30,
    )

    # The garbage collector deletes the ConfigMap with its ServingPool.
    cluster.kubectl("delete", "servingpool", "resume", "-n", ns)
    wait_for("the state ConfigMap collected", lambda: not state_configmap(cluster, ns, "resume"), timeout=60)
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_state_configmap_rights_are_least_privilege(cluster, operator):
    """The ServiceAccount may read and write ConfigMaps by name (its pools' state), not list or delete them."""
    who = f"--as=system:serviceaccount:{RELEASE_NS}:{operator.service_account}"

    def can(*args: str) -> str:
        return cluster.kubectl("auth", "can-i", *args, "-n", "default", who, check=False).stdout.strip()

    assert [can(v, "configmaps") for v in ("get", "create", "patch")] == ["yes"] * 3
    assert [can(v, "configmaps") for v in ("list", "watch", "delete", "deletecollection")] == ["no"] * 4
