"""BurstGPT (Wang et al., KDD'25) in both schemas: the 6-column release and the 8-column one with
session ids and elapsed time. Timestamps are seconds from 0:00 of the first day, kept as they are;
a failure is a row with ``Response tokens == 0``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow.compute as pc

from burstpilot.traces.formats.base import (
    BadRows,
    Chunk,
    ReadOptions,
    Source,
    TraceFormat,
    dict_codes,
    header_fields,
    session_ids,
)
from burstpilot.traces.formats.csvcore import Col, csv_batches
from burstpilot.traces.table import Trace

V1 = ["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"]
V2 = [
    "Timestamp",
    "Session ID",
    "Elapsed time",
    "Model",
    "Request tokens",
    "Response tokens",
    "Total tokens",
    "Log Type",
]


def _sniff(src: Source) -> bool:
    return header_fields(src.head) in (V1, V2)


def _chunks(src: Source, opts: ReadOptions) -> Iterator[Trace]:
    v2 = "Session ID" in header_fields(src.head)
    spec = [
        Col("Timestamp", "time"),
        Col("Model", "dict"),
        Col("Request tokens", "tokens"),
        Col("Response tokens", "tokens"),
        Col("Log Type", "dict"),
    ]
    if v2:
        spec += [Col("Session ID", "session", required=False), Col("Elapsed time", "float", required=False)]
    bad = BadRows(src.path, opts.skip_bad_rows)
    fmt = "burstgpt-v2" if v2 else "burstgpt-v1"
    for arrays in csv_batches(src, spec, bad, whole=opts.whole_file):
        resp = arrays["Response tokens"].to_numpy(zero_copy_only=False)
        chunk = Chunk(
            arrival=arrays["Timestamp"].to_numpy(zero_copy_only=False),
            request=arrays["Request tokens"].to_numpy(zero_copy_only=False),
            response=resp,
            failed=resp == 0,
            model=dict_codes(arrays["Model"]),
            log_type=dict_codes(arrays["Log Type"]),
            meta={"clock_offset_s": 0.0},
        )
        if v2 and "Session ID" in arrays:
            chunk.session, chunk.session_labels = session_ids(arrays["Session ID"])
        if v2 and "Elapsed time" in arrays:
            chunk.elapsed = pc.fill_null(arrays["Elapsed time"], np.nan).to_numpy(zero_copy_only=False)
        yield chunk.to_trace(src.path, fmt, bad)
    bad.warn()


FORMAT = TraceFormat(
    name="burstgpt",
    title="BurstGPT v1 / v2",
    detected_by="header `" + ",".join(V1) + "` (v1) or `" + ",".join(V2) + "` (v2)",
    time_axis="`Timestamp` kept as is: seconds from 0:00 of the first day; session ids and elapsed time kept (v2)",
    sniff=_sniff,
    chunks=_chunks,
)
