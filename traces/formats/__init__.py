"""The trace formats, behind one registry.

``REGISTRY`` lists every format in detection order; the CLI's ``--format`` choices
(``choices()``), auto-detection (``detect``) and the formats table in docs/traces.md
(``markdown_table()``, kept equal by a test) all come from it. A new format is a module with a
``FORMAT = TraceFormat(...)`` and one line here.
"""

from __future__ import annotations

from burstpilot.errors import BurstpilotError
from burstpilot.traces.formats import azure, burstgpt, generic, mooncake, parquet
from burstpilot.traces.formats.base import ColumnMap, ReadOptions, Source, TraceFormat

REGISTRY: tuple[TraceFormat, ...] = (
    parquet.FORMAT,  # binary first: the text formats read a first line
    burstgpt.FORMAT,
    azure.FORMAT,
    mooncake.FORMAT,
    generic.FORMAT,
)
_BY_NAME = {f.name: f for f in REGISTRY}


def names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def choices() -> list[str]:
    """The values of ``--format``: auto, then every registered format."""
    return ["auto", *names()]


def get(name: str) -> TraceFormat:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise BurstpilotError(f"unknown trace format {name!r} (choose from {', '.join(choices())})") from None


def detect(src: Source, columns: ColumnMap | None = None) -> TraceFormat:
    """The format of ``src``: the first registered format that recognises it; a column mapping
    means generic CSV when no known header matches."""
    for fmt in REGISTRY:
        if fmt.sniff(src):
            return fmt
    if columns is not None:
        return generic.FORMAT
    raise BurstpilotError(
        f"{src}: unrecognized trace format (header {src.head[:120]!r}). Known: "
        + "; ".join(f"{f.title}: {f.detected_by.replace('`', '')}" for f in REGISTRY)
    )


def markdown_table() -> str:
    """The formats table of docs/traces.md."""
    lines = ["| format | `--format` | detected by | time axis |", "|---|---|---|---|"]
    lines += [f"| {f.title} | `{f.name}` | {f.detected_by} | {f.time_axis} |" for f in REGISTRY]
    return "\n".join(lines)


__all__ = [
    "REGISTRY",
    "ColumnMap",
    "ReadOptions",
    "Source",
    "TraceFormat",
    "choices",
    "detect",
    "get",
    "names",
]
