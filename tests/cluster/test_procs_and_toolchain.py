"""The local cluster's process records and toolchain checks, without a cluster."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from burstpilot.operator.cluster.procs import (
    ClusterError,
    ProcessExited,
    Procs,
    pid_alive,
    read_records,
    running_records,
    stop_recorded,
    wait_for,
)
from burstpilot.operator.cluster.toolchain import load_toolchain

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# a process that ignores SIGTERM and runs a child in its session: down must still stop both
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)",
]


def test_detached_processes_are_recorded_and_stopped_by_a_later_reader(tmp_path: Path):
    record = tmp_path / "processes.json"
    procs = Procs(tmp_path / "logs", record=record, detach=True)
    a = procs.start("a", SLEEPER)
    b = procs.start("b", STUBBORN)
    time.sleep(0.5)
    entries = read_records(record)
    assert [e["name"] for e in entries] == ["a", "b"] and all(e["session"] for e in entries)
    assert [e["name"] for e in running_records(record)] == ["a", "b"]
    assert [e["name"] for e in running_records(record, names={"b"})] == ["b"]
    # another invocation (no Popen objects) stops them by PID, b's session child included
    assert stop_recorded(record, names={"b"}, timeout=1) == 1
    b.wait(5)
    assert a.poll() is None and running_records(record) == running_records(record, names={"a"})
    assert stop_recorded(record) == 1
    a.wait(5)
    assert stop_recorded(record) == 0  # idempotent


def test_a_reused_pid_is_not_taken_for_the_recorded_process(tmp_path: Path):
    procs = Procs(tmp_path, record=tmp_path / "r.json")
    p = procs.start("x", SLEEPER)
    (entry,) = read_records(tmp_path / "r.json")
    assert pid_alive(p.pid, entry["start_ticks"])
    assert not pid_alive(p.pid, entry["start_ticks"] + 1)  # same PID, another start time: not ours
    procs.stop_all()
    assert not pid_alive(p.pid, entry["start_ticks"])


def test_wait_for_raises_at_once_when_a_watched_process_exits(tmp_path: Path):
    procs = Procs(tmp_path)
    p = procs.start("quick", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"])
    p.wait(10)
    t0 = time.monotonic()
    with pytest.raises(ProcessExited, match=r"quick exited with 3:\nboom"):
        wait_for("never", lambda: procs.check("quick", p) or False, timeout=30)
    assert time.monotonic() - t0 < 5
    with pytest.raises(ClusterError, match="timed out after 0s waiting for nothing .last error: nope"):
        wait_for("nothing", lambda: (_ for _ in ()).throw(ValueError("nope")), timeout=0.2, interval=0.05)


def test_missing_toolchain_says_make_toolchain(tmp_path: Path):
    with pytest.raises(ClusterError, match=r"toolchain.json is missing.*make toolchain"):
        load_toolchain(cache=tmp_path)
    binary = tmp_path / "bin"
    binary.write_text("")
    tools = {k: str(binary) for k in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl",
                                      "etcd", "kwok", "kwok-stages", "helm", "prometheus")}  # fmt: skip
    (tmp_path / "toolchain.json").write_text(json.dumps(tools))
    assert load_toolchain(keda=False, cache=tmp_path) == tools
    with pytest.raises(
        ClusterError, match=r"missing keda-operator, keda-adapter, keda-admission-webhooks, keda-config"
    ):
        load_toolchain(keda=True, cache=tmp_path)
    (tmp_path / "toolchain.json").write_text("{")
    with pytest.raises(ClusterError, match="unreadable"):
        load_toolchain(cache=tmp_path)
