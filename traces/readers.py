"""Reading traces: ``read_trace`` (the whole file as one Trace) and ``iter_trace`` (record
batches, for traces larger than memory). The formats live in ``burstpilot.traces.formats``, one
module each, behind one registry; this module is the public entry point and applies the filters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from burstpilot.errors import BurstpilotError
from burstpilot.traces import formats
from burstpilot.traces.formats.base import TIME_UNITS, ColumnMap, ReadOptions, Source
from burstpilot.traces.formats.burstgpt import V1 as BURSTGPT_V1
from burstpilot.traces.formats.burstgpt import V2 as BURSTGPT_V2
from burstpilot.traces.table import Trace, concat_traces

log = logging.getLogger(__name__)

FORMATS = tuple(formats.choices())

__all__ = [
    "BURSTGPT_V1",
    "BURSTGPT_V2",
    "FORMATS",
    "TIME_UNITS",
    "ColumnMap",
    "detect_format",
    "filter_trace",
    "iter_trace",
    "read_trace",
]


def _open(path, fmt: str, columns: ColumnMap | None) -> tuple[Source, formats.TraceFormat]:
    path = Path(path)
    if fmt != "auto":
        chosen = formats.get(fmt)
    if not path.exists():
        raise BurstpilotError(f"{path}: no such file")
    src = Source(path)
    if src.is_dir and not formats.parquet.FORMAT.sniff(src):
        raise BurstpilotError(f"{path}: is a directory, expected a trace file (or a Parquet folder)")
    if fmt == "auto":
        chosen = formats.detect(src, columns)
    elif not src.is_dir and src.magic != formats.parquet.MAGIC:
        src.head  # noqa: B018 - an empty file is named as such before any format reads it
    return src, chosen


def read_trace(
    path,
    fmt: str = "auto",
    model=None,
    log_type=None,
    start_s: float | None = None,
    end_s: float | None = None,
    include_failed: bool = True,
    skip_bad_rows: bool = False,
    columns: ColumnMap | None = None,
) -> Trace:
    """Read a trace file (plain or gzip, or a Parquet folder) into a :class:`Trace`.

    ``fmt``: auto (by content) or a registered format name (``formats.names()``); csv needs
    ``columns``. Filters: ``model`` / ``log_type`` (a name or a list of names),
    ``start_s <= arrival < end_s`` on the trace's time axis, ``include_failed``. With
    ``skip_bad_rows`` malformed rows are dropped and counted in ``bad_rows`` instead of raising.
    Rows are sorted by arrival (stable; a warning says how many were out of order).
    """
    src, chosen = _open(path, fmt, columns)
    chunks = list(chosen.chunks(src, ReadOptions(skip_bad_rows, columns, whole_file=True)))
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise BurstpilotError(f"{src}: no valid rows (only a header, or every row was bad)")
    trace = concat_traces(chunks)
    del chunks
    pa.default_memory_pool().release_unused()  # the parsed batches are numpy arrays now
    if trace.origin is not None:
        lo = float(trace.arrival_s.min())
        if lo < 0:  # a later batch held earlier date-times: arrival 0 is the earliest request
            trace = trace.shifted(-lo)
            trace.origin = trace.origin + timedelta(seconds=lo)
            trace.clock_offset_s = (trace.clock_offset_s + lo) % 86400.0
    trace = _sorted(trace)
    return filter_trace(trace, model, log_type, start_s, end_s, include_failed)


def iter_trace(
    path,
    fmt: str = "auto",
    model=None,
    log_type=None,
    start_s: float | None = None,
    end_s: float | None = None,
    include_failed: bool = True,
    skip_bad_rows: bool = False,
    columns: ColumnMap | None = None,
) -> Iterator[Trace]:
    """The trace as Trace chunks in file order (record batches of at most a few hundred thousand
    rows), with the filters of ``read_trace`` applied per chunk. Memory stays bounded whatever
    the file's length; rows are not sorted across chunks."""
    src, chosen = _open(path, fmt, columns)
    seen = 0
    for chunk in chosen.chunks(src, ReadOptions(skip_bad_rows, columns)):
        seen += len(chunk)
        if len(chunk) == 0:
            continue
        yield filter_trace(chunk, model, log_type, start_s, end_s, include_failed, strict=False)
    if seen == 0:
        raise BurstpilotError(f"{src}: no valid rows (only a header, or every row was bad)")


def _sorted(trace: Trace) -> Trace:
    if len(trace) > 1:
        d = np.diff(trace.arrival_s)
        if (d < 0).any():
            log.warning(
                "%s: timestamps are not sorted (%d rows out of order); sorted by arrival time",
                trace.source,
                int((d < 0).sum()),
            )
            trace = trace._take(np.argsort(trace.arrival_s, kind="stable"))
    return trace


def detect_format(path, head: str | None = None, columns: ColumnMap | None = None) -> str:
    """Name the format of a trace file from its content (``head`` is accepted for backward
    compatibility and ignored: the file itself is read)."""
    return _open(path, "auto", columns)[1].name


def filter_trace(
    trace: Trace, model=None, log_type=None, start_s=None, end_s=None, include_failed=True, strict=True
):
    """Apply the read_trace filters to an in-memory trace. ``strict``: an unknown model or log
    type name is an error (a chunk of a stream may simply not hold it yet)."""
    mask = np.ones(len(trace), bool)
    if model is not None:
        mask &= _category_mask(trace.model_codes, trace.models, model, "model", trace.source, strict)
    if log_type is not None:
        mask &= _category_mask(
            trace.log_type_codes, trace.log_types, log_type, "log type", trace.source, strict
        )
    if start_s is not None:
        mask &= trace.arrival_s >= start_s
    if end_s is not None:
        mask &= trace.arrival_s < end_s
    if not include_failed:
        mask &= ~trace.failed
    return trace if mask.all() else trace.subset(mask)


def _category_mask(codes, categories, wanted, what, source, strict=True) -> np.ndarray:
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    lookup = {str(c).lower(): i for i, c in enumerate(categories)}
    idx = []
    for name in names:
        if name.lower() not in lookup:
            if not strict:
                continue
            have = ", ".join(map(str, categories)) or "none"
            raise BurstpilotError(f"{source}: no {what} {name!r} in this trace ({what}s: {have})")
        idx.append(lookup[name.lower()])
    return np.isin(codes, idx)
