"""Trace readers, characterization and burst-preserving workload generation."""

from burstpilot.traces.readers import ColumnMap, detect_format, filter_trace, iter_trace, read_trace
from burstpilot.traces.table import NO_SESSION, Trace, make_trace
from burstpilot.traces.writer import write_burstgpt_csv

__all__ = [
    "NO_SESSION",
    "ColumnMap",
    "Trace",
    "detect_format",
    "filter_trace",
    "iter_trace",
    "make_trace",
    "read_trace",
    "write_burstgpt_csv",
]
