"""Progress of long work, on a terminal and off it.

On a terminal: rich's live display (a bar per task). Anywhere else (a pipe, a file, ``kubectl logs``): one
plain line every ``interval_s`` seconds on stderr, even when nothing moved, so a reader can tell a slow run
from a stuck one::

    12:04:10 evaluate: oracle search 14 runs | burstpilot 43% (3720/8640 s) | elapsed 1m20s

Usage::

    with Reporter("evaluate") as rep:
        task = rep.add_task("burstpilot", total=8640.0, unit="s")
        rep.update(task, completed=3720.0)
        rep.update(task, advance=10.0, note="scale 4->6")

Updates are cheap (no I/O; the plain lines come from a timer thread) and safe from several threads.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

DEFAULT_INTERVAL_S = 10.0


@dataclass
class _Task:
    description: str
    total: float | None
    unit: str
    completed: float = 0.0
    note: str = ""
    done: bool = False
    rich_id: int | None = None

    def line(self) -> str:
        if self.total:
            share = min(self.completed / self.total, 1.0) if self.total > 0 else 1.0
            text = f"{self.description} {share:.0%} ({_num(self.completed)}/{_num(self.total)}{self.unit})"
        else:
            text = f"{self.description} {_num(self.completed)}{self.unit}"
        if self.note:
            text += f" {self.note}"
        return text + (" done" if self.done and not self.total else "")


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 1e-9 or abs(x) >= 100 else f"{x:.1f}"


def _elapsed(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Reporter:
    """Progress of one command's tasks; see the module docstring.

    ``live``: None decides by the stream (a terminal gets rich's display); ``enabled=False`` prints nothing.
    """

    def __init__(
        self,
        name: str,
        stream: TextIO | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        live: bool | None = None,
        enabled: bool = True,
    ):
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = float(interval_s)
        self.enabled = enabled
        self.live = (
            (self.stream.isatty() if hasattr(self.stream, "isatty") else False) if live is None else live
        )
        self._tasks: list[_Task] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rich: Progress | None = None
        self._t0 = time.monotonic()

    # -- lifecycle
    def __enter__(self) -> Reporter:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self._t0 = time.monotonic()
        if not self.enabled:
            return
        if self.live:
            self._rich = Progress(
                TextColumn("{task.description:<24}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._rich.start()
        else:
            self._thread = threading.Thread(target=self._beat, name=f"progress-{self.name}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stops the display; off a terminal, prints a last line (what was finished)."""
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._emit()

    # -- tasks
    def add_task(self, description: str, total: float | None = None, unit: str = "") -> int:
        with self._lock:
            t = _Task(description, total, unit)
            self._tasks.append(t)
            if self._rich is not None:
                t.rich_id = self._rich.add_task(description, total=total, note="")
            return len(self._tasks) - 1

    def update(
        self,
        task: int,
        completed: float | None = None,
        advance: float | None = None,
        total: float | None = None,
        note: str | None = None,
        done: bool = False,
    ) -> None:
        with self._lock:
            t = self._tasks[task]
            if total is not None:
                t.total = total
            if completed is not None:
                t.completed = float(completed)
            if advance is not None:
                t.completed += float(advance)
            if note is not None:
                t.note = note
            if done:
                t.done = True
                if t.total:
                    t.completed = t.total
            if self._rich is not None and t.rich_id is not None:
                self._rich.update(t.rich_id, completed=t.completed, total=t.total, note=t.note)

    def line(self) -> str:
        """The plain progress line as it would be printed now."""
        with self._lock:
            parts = [t.line() for t in self._tasks if not t.done] or [t.line() for t in self._tasks[-1:]]
        body = " | ".join(parts) if parts else "working"
        return f"{time.strftime('%H:%M:%S')} {self.name}: {body} | elapsed {_elapsed(time.monotonic() - self._t0)}"

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._emit()

    def _emit(self) -> None:
        try:
            print(self.line(), file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed pipe or stream must not take the work down with it
            self._stop.set()
