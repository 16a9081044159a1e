"""Any other CSV, read through a column mapping (``ColumnMap``: --time-col, --request-col, ...)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.traces.formats.base import (
    TIME_UNITS,
    BadRows,
    Chunk,
    ReadOptions,
    Source,
    TraceFormat,
    dict_codes,
    session_ids,
)
from burstpilot.traces.formats.csvcore import Col, csv_batches
from burstpilot.traces.formats.timebase import DateTimeAxis
from burstpilot.traces.table import Trace

_OPTIONAL = {"model": "dict", "log_type": "dict", "session": "session", "elapsed": "float", "failed": "flag"}


def _sniff(src: Source) -> bool:
    return False  # chosen by --format csv or by a column mapping, never by its header


def _chunks(src: Source, opts: ReadOptions) -> Iterator[Trace]:
    cm = opts.columns
    if cm is None:
        raise BurstpilotError(
            f"{src}: generic CSV needs a column mapping (--time-col, --request-col, --response-col)"
        )
    if cm.time_unit not in (*TIME_UNITS, "datetime"):
        raise BurstpilotError(f"unknown time unit {cm.time_unit!r} (s, ms, us, ns or datetime)")
    dt = cm.time_unit == "datetime"
    scale = 1.0 if dt else TIME_UNITS[cm.time_unit]
    spec = [
        Col(cm.time, "datetime" if dt else "time", scale=scale),
        Col(cm.request, "tokens"),
        Col(cm.response, "tokens"),
    ]
    spec += [Col(getattr(cm, f), kind) for f, kind in _OPTIONAL.items() if getattr(cm, f) is not None]
    bad = BadRows(src.path, opts.skip_bad_rows)
    axis = DateTimeAxis()
    for arrays in csv_batches(src, spec, bad, whole=opts.whole_file):
        if dt:
            arrival, meta = axis.seconds(arrays[cm.time])
        else:
            arrival, meta = arrays[cm.time].to_numpy(zero_copy_only=False) * scale, {}
        chunk = Chunk(
            arrival=arrival,
            request=arrays[cm.request].to_numpy(zero_copy_only=False),
            response=arrays[cm.response].to_numpy(zero_copy_only=False),
            meta=meta,
        )
        if cm.model:
            chunk.model = dict_codes(arrays[cm.model])
        if cm.log_type:
            chunk.log_type = dict_codes(arrays[cm.log_type])
        if cm.session:
            chunk.session, chunk.session_labels = session_ids(arrays[cm.session])
        if cm.elapsed:
            chunk.elapsed = arrays[cm.elapsed].to_numpy(zero_copy_only=False).astype(np.float64)
        if cm.failed:
            chunk.failed = arrays[cm.failed].to_numpy(zero_copy_only=False) != 0
        yield chunk.to_trace(src.path, "csv", bad)
    bad.warn()


FORMAT = TraceFormat(
    name="csv",
    title="generic CSV",
    detected_by="`--format csv` or a column mapping (`--time-col`, `--request-col`, `--response-col`)",
    time_axis="per `--time-unit` (s, ms, us, ns, or datetime: seconds from the first request)",
    sniff=_sniff,
    chunks=_chunks,
    needs_columns=True,
)
