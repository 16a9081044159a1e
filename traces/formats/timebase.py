"""Absolute date-times -> seconds on the trace's axis, consistently across record batches."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa


class DateTimeAxis:
    """Seconds relative to the first date-time seen (arrival 0); naive times stay naive. A later
    batch with earlier times gets negative seconds, which ``read_trace`` shifts back to 0."""

    def __init__(self):
        self.first_ns: int | None = None
        self.tz = None

    def seconds(self, ts) -> tuple[np.ndarray, dict]:
        ns = ts.cast(pa.int64()).to_numpy(zero_copy_only=False)
        if self.first_ns is None and len(ns):
            self.first_ns = int(ns.min())
            self.tz = UTC if getattr(ts.type, "tz", None) else None
        first = self.first_ns or 0
        return (ns - first).astype(np.float64) / 1e9, origin_meta(first, self.tz)


def origin_meta(first_ns: int, tz) -> dict:
    origin = datetime.fromtimestamp(first_ns // 1_000_000_000, tz=UTC).replace(
        microsecond=(first_ns % 1_000_000_000) // 1000
    )
    origin = origin if tz else origin.replace(tzinfo=None)
    clock = origin.hour * 3600 + origin.minute * 60 + origin.second + origin.microsecond / 1e6
    return {"origin": origin, "clock_offset_s": clock}
