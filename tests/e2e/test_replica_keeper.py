"""The replica keeper (burstpilot.operator.cluster.replicas) when a simulated replica dies under a Running pod:
what a kubelet does for a container whose readiness probe starts failing and which then restarts."""

from __future__ import annotations

import logging
import time

from burstpilot.operator.cluster.procs import wait_for


def _pod_ready(cluster, ns: str, name: str) -> bool:
    pod = cluster.get_json("pods", name, "-n", ns)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def test_a_replica_that_exits_leaves_the_service_its_pod_goes_unready_and_it_starts_again(
    cluster, front_factory, caplog
):
    ns = cluster.namespace("e2e-keeper")
    cluster.apply(cluster.deployment(ns, "llm", replicas=1, cold_start_s=0))
    keeper, front = front_factory(ns, "app=llm", "llm", "h100-llama3-8b")
    caplog.set_level(logging.WARNING, logger="burstpilot.operator.cluster.replicas")
    with keeper, front:
        wait_for("the replica behind the Service", lambda: len(keeper.backends) == 1, timeout=60)
        ((pod, (proc, _)),) = keeper.replicas.items()
        wait_for("its pod Ready", lambda: _pod_ready(cluster, ns, pod), timeout=30)
        proc.kill()
        seen = []  # (backends, pod Ready) until a new replica serves and the pod is Ready again
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            again = pod in keeper.replicas and keeper.replicas[pod][0].pid != proc.pid
            seen.append((len(keeper.backends), _pod_ready(cluster, ns, pod)))
            if again and seen[-1] == (1, True):
                break
            time.sleep(0.1)
        assert again and seen[-1] == (1, True), f"not serving again within 60 s: {seen[-10:]}"
        assert (0, False) in seen, "while it was down the Service had no backend and the pod was not Ready"
        assert keeper.restarts[pod] == 1
    assert f"the replica of pod {pod} exited with code -9" in caplog.text, caplog.text
