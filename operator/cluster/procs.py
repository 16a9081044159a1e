"""Background processes of the local cluster: started with their logs, recorded by PID, stopped in reverse order.

Every process is written to a JSON record file as it starts (name, PID, the kernel's start time of that PID,
command line, log), so another invocation (``burstpilot cluster down``) can stop exactly what an earlier one
started, and never a later process that happens to reuse a PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from burstpilot.errors import BurstpilotError


class ClusterError(BurstpilotError):
    """The local cluster could not be started, reached or stopped; the message says which part and why."""


class ProcessExited(ClusterError):
    """A process of the cluster exited; the message ends with its log's last lines."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5) -> Any:
    """Polls ``check()`` until it returns a truthy value and returns it; raises ClusterError after ``timeout``.

    Exceptions from ``check`` count as "not yet", except ProcessExited (a process it watches has died), which
    is raised at once.
    """
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except ProcessExited:
            raise
        except Exception as exc:  # the thing is not up yet
            last_exc = exc
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"timed out after {timeout:.0f}s waiting for {what}"
                + (f" (last error: {last_exc})" if last_exc else "")
            )
        time.sleep(interval)


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces; fields after it are plain
    return int(stat.rsplit(")", 1)[1].split()[19])


def pid_alive(pid: int, start_ticks: int | None) -> bool:
    """True when PID runs and is the process recorded (same kernel start time), not a reused PID."""
    now = _start_ticks(pid)
    if now is None:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0:
            return False  # a zombie: exited, not yet reaped
    return start_ticks is None or now == start_ticks


class Procs:
    """Background processes with their logs, recorded in ``record`` (JSON) when given.

    ``detach``: each process starts in its own session (it outlives this Python process and a Ctrl-C on its
    terminal); ``stop_recorded`` then stops it by PID from any later process. Without ``detach`` the processes
    are ordinary children (the e2e tier's, and those of ``burstpilot cluster serve``), stopped with ``stop_all``.
    """

    def __init__(self, logdir: Path, record: Path | None = None, detach: bool = False) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.record = record
        self.detach = detach
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(
        self, name: str, argv: list[str], env: dict | None = None, cwd: Path | None = None
    ) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - closed once the child holds it
        try:
            proc = subprocess.Popen(
                [str(a) for a in argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd or self.logdir,
                start_new_session=self.detach,
            )
        except OSError as exc:
            raise ClusterError(f"cannot start {name} ({argv[0]}): {exc}") from None
        finally:
            log.close()
        self.procs.append((name, proc))
        if self.record is not None:
            self._write_record(name, proc, argv)
        return proc

    def _write_record(self, name: str, proc: subprocess.Popen, argv: list[str]) -> None:
        entries = read_records(self.record)
        entries.append(
            {
                "name": name,
                "pid": proc.pid,
                "start_ticks": _start_ticks(proc.pid),
                "session": self.detach,
                "argv": [str(a) for a in argv],
                "log": str(self.logdir / f"{name}.log"),
            }
        )
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        tmp.replace(self.record)

    def check(self, name: str, proc: subprocess.Popen) -> None:
        """Raises ClusterError with the end of the log when ``proc`` has exited."""
        if proc.poll() is not None:
            raise ProcessExited(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

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
        self.procs.clear()


def read_records(record: Path | None) -> list[dict]:
    if record is None or not record.exists():
        return []
    try:
        return json.loads(record.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ClusterError(f"{record}: unreadable process record: {exc}") from None


def running_records(record: Path | None, names: set[str] | None = None) -> list[dict]:
    """The recorded processes still running (``names``: only those), in the order they started."""
    return [
        e
        for e in read_records(record)
        if (names is None or e["name"] in names) and pid_alive(e["pid"], e.get("start_ticks"))
    ]


def stop_recorded(
    record: Path,
    names: set[str] | None = None,
    timeout: float = 10.0,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Stops the recorded processes still running (``names``: only those; newest first): SIGTERM to the process
    group when it has its own session, else to the process; SIGKILL after ``timeout``. Returns how many ran."""
    running = 0
    for entry in reversed(running_records(record, names)):
        pid, ticks = entry["pid"], entry.get("start_ticks")
        if not pid_alive(pid, ticks):
            continue
        running += 1
        if progress:
            progress(f"stopping {entry['name']} (pid {pid})")
        _signal(entry, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid, ticks) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reaps it when it is our own child
            time.sleep(0.1)
        if pid_alive(pid, ticks):
            _signal(entry, signal.SIGKILL)
    return running


def _signal(entry: dict, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if entry.get("session"):
            os.killpg(entry["pid"], sig)  # the process and what it started in its session
        else:
            os.kill(entry["pid"], sig)
