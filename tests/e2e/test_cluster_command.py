"""``burstpilot cluster up|status|down`` as a user runs them: processes that outlive the command, a kubeconfig
that works, the sample pool deciding and served, and a ``down`` that leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
from e2e_harness import BIN

from burstpilot.operator.cluster.procs import pid_alive, read_records

pytestmark = pytest.mark.e2e


def burstpilot(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "burstpilot"), "cluster", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_up_status_down(tmp_path: Path, toolchain):
    state = tmp_path / "state"
    up = burstpilot("up", "--state-dir", state)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        info = json.loads((state / "cluster.json").read_text())
        kubeconfig = info["kubeconfig"]
        assert f"kubeconfig:  {kubeconfig}" in up.stdout
        assert "kubectl get servingpools -A -w" in up.stdout and "burstpilot replay" in up.stdout
        # the command has returned; its processes run on, reachable with the printed kubeconfig
        kubectl = [toolchain["kubectl"], f"--kubeconfig={kubeconfig}"]
        pools = json.loads(subprocess.run([*kubectl, "get", "servingpools", "-A", "-o", "json"],
                                          capture_output=True, text=True, check=True).stdout)["items"]  # fmt: skip
        (pool,) = pools
        assert (pool["metadata"]["namespace"], pool["metadata"]["name"]) == ("demo", "llm")
        assert pool["status"]["lastDecision"]["reason"]
        assert condition(pool, "Ready") == "True" and condition(pool, "MetricsAvailable") == "True"
        url = info["sample"]["url"]
        assert f"Service {url}" in up.stdout
        with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as resp:
            assert json.loads(resp.read())["data"][0]["id"]
        apiservice = json.loads(subprocess.run([*kubectl, "get", "apiservice", "v1beta1.external.metrics.k8s.io",
                                                "-o", "json"], capture_output=True, text=True, check=True).stdout)  # fmt: skip
        assert any(
            c["type"] == "Available" and c["status"] == "True" for c in apiservice["status"]["conditions"]
        )

        status = burstpilot("status", "--state-dir", state)
        assert status.returncode == 0, status.stdout + status.stderr
        names = {e["name"] for e in read_records(state / "processes.json")}
        assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "prometheus",
                "operator", "keda-operator", "keda-metrics-apiserver", "serve-demo-llm"} <= names  # fmt: skip
        for name in names:
            assert name in status.stdout

        again = burstpilot("up", "--state-dir", state)
        assert again.returncode == 2 and "already runs" in again.stderr and "cluster down" in again.stderr
        started = processes_under(state)  # every process the cluster started runs in a folder of it
        assert len(started) > len(names), "the replicas run beside the recorded processes"
    finally:
        records = read_records(state / "processes.json")
        down = burstpilot("down", "--state-dir", state)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not state.exists()
    alive = [e["name"] for e in records if pid_alive(e["pid"], e.get("start_ticks"))]
    assert not alive, f"still running after down: {alive}"
    assert not processes_under(state), "a process of the cluster outlived down (the replicas included)"
    again = burstpilot("down", "--state-dir", state)
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def test_up_without_a_toolchain_says_make_toolchain(tmp_path: Path):
    res = burstpilot(
        "up", "--state-dir", tmp_path / "state", env={"BURSTPILOT_CACHE": str(tmp_path / "empty")}
    )
    assert res.returncode == 2
    assert "toolchain.json is missing" in res.stderr and "make toolchain" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "state").exists()


def processes_under(folder: Path) -> list[str]:
    """Command lines of the processes whose working directory is inside ``folder``."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd").removesuffix(" (deleted)")
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd == str(folder) or cwd.startswith(f"{folder}/"):
            out.append(args)
    return out


def condition(obj: dict, ctype: str) -> str | None:
    return next((c["status"] for c in obj["status"].get("conditions", []) if c["type"] == ctype), None)
