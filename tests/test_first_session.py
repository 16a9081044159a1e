"""Acceptance (issue 16): README's "A first session" runs as written, from a fresh clone.

The commands are read from README.md itself, so the test and the README cannot drift apart. They run in a
`git clone` of this repository's HEAD in a temporary folder (the committed README and layout, `out/` written
there, `../shared` beside it as on every checkout and in CI), with the `burstpilot` of this virtual environment
on PATH: `source .venv/bin/activate` is the one line replaced, since a clone has no virtual environment and
building one would test pip, not burstpilot. Allowed changes, each of which must match exactly once: shorter
durations (an hour of workload becomes 15 minutes, the 10-minute replay one minute, the fleet's 60 s model
load 3 s) and a free port instead of 8100 (tests never take fixed ports). The background fleet (`&`) is started
as a process of its own and `kill %1` stops it.

Checks: every command exits 0 (replay's --fail-under 0.99 included), the replay's SLO attainment against the
simulated fleet is at least 0.99, and every file the README promises exists. `trace analyze`, `forecast
backtest` and `evaluate` belong to other areas: only their exit codes and files are checked.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VENV_BIN = Path(sys.executable).parent

SHORTER = {  # README text -> what the test runs; durations only
    "--duration 3600": "--duration 900",  # the workload: 15 minutes (the backtest needs 10 of warm-up)
    "--cold-start 60": "--cold-start 3",
    "--duration 10m": "--duration 60s",
}
PROMISED = {  # every file README's first session says a command writes
    "out/azure": ["report.md", "summary.json"],
    "out": ["burstgpt.csv", "azure40.csv", "replicas.json"],
    "out/replay": [
        "report.html", "report.md", "latency.png", "summary.json", "summary.csv", "vllm-bench.json",
        "requests.parquet", "requests.jsonl", "server_metrics.jsonl",
    ],
    "out/backtest": ["backtest.json"],
    "out/eval": ["results.json", "replicas.png", "ttft.png"],
}  # fmt: skip


def readme_commands(text: str) -> list[str]:
    section = text.split("## A first session", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def adapted(commands: list[str], port: int) -> list[str]:
    joined = "\n".join(commands)
    for old, new in SHORTER.items():
        assert joined.count(old) == 1, f"README's first session no longer has {old!r} once"
        joined = joined.replace(old, new)
    assert "8100" in joined
    return joined.replace("8100", str(port)).split("\n")


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason=f"{SHARED}/data (the shared traces) is not here")
def test_readme_first_session_from_a_fresh_clone(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = readme_commands(readme)
    assert commands[0] == "source .venv/bin/activate"
    section = readme.split("## A first session", 1)[1].split("\n## ", 1)[0]
    for folder, names in PROMISED.items():  # the README says what is written where
        for name in names:
            assert name in section, f"README's first session does not mention {folder}/{name}"

    checkout = tmp_path / "burstpilot"
    subprocess.run(["git", "clone", "--quiet", "--no-local", str(REPO), str(checkout)], check=True)
    (tmp_path / "shared").symlink_to(SHARED)  # ../shared beside the checkout
    assert (checkout / "README.md").read_text(encoding="utf-8") == readme, "commit README.md before this test"
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    background: list[subprocess.Popen] = []
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        for i, line in enumerate(adapted(commands[1:], free_port()), start=1):
            log = logs / f"{i:02d}.log"
            if line == "kill %1":
                proc = background.pop()
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) in (0, -signal.SIGTERM), log.read_text()
                continue
            argv = shlex.split(line.removesuffix("&"))
            assert argv[0] == "burstpilot", line
            with open(log, "w") as fh:
                proc = subprocess.Popen(argv, cwd=checkout, env=env, stdout=fh, stderr=subprocess.STDOUT)
            if line.endswith("&"):
                background.append(proc)
                continue
            t = time.monotonic()
            try:
                code = proc.wait(timeout=900)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            out = log.read_text()
            assert code == 0, f"`{line}` exited {code} after {time.monotonic() - t:.0f} s:\n{out[-3000:]}"
    finally:
        for proc in background:
            proc.kill()
            proc.wait()
    for folder, names in PROMISED.items():
        for name in names:
            path = checkout / folder / name
            assert path.is_file() and path.stat().st_size > 0, f"{folder}/{name} was not written"
    summary = json.loads((checkout / "out/replay/summary.json").read_text())
    assert summary["slo"]["attainment"] >= 0.99, summary["slo"]
    assert summary["requests"]["completed"] >= 0.99 * summary["requests"]["recorded"]
    assert summary["server_metrics"]["series"]["vllm:kv_cache_usage_perc"]["max"] > 0
    replay_log = next(p.read_text() for p in sorted(logs.iterdir()) if "verdict:" in p.read_text())
    assert "is ready after" in replay_log and "— met" in replay_log
