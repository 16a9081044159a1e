"""The operator's log lines: text (the default) or JSON, one object per line, for log pipelines.

A JSON line carries ``time``, ``level``, ``logger``, ``message`` and the structured fields its caller passed in
``extra`` (a decision: ``pool``, ``replicas``, ``current``, ``bound``, ``reason``; kopf's lines: the object they
concern). Exceptions come as one ``exc`` string.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

LEVELS = ("debug", "info", "warning", "error")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_") or key in out:
                continue
            if isinstance(value, str | int | float | bool) or value is None:
                out[key] = value
            elif key == "k8s_obj" and isinstance(value, dict):  # kopf: the object a line concerns
                meta = value.get("metadata") or {}
                out["object"] = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(fmt: str, level: str) -> None:
    """Every handler of the root logger (the CLI's) writes ``fmt`` at ``level``; kopf logs at the same level."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    formatter = (
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(level.upper())
    logging.getLogger("kopf").setLevel(level.upper())
