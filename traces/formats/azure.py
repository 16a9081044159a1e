"""Azure LLM inference traces 2023 and 2024 (Patel et al., ISCA 2024; AzurePublicDataset):
absolute date-times (the 2024 release with a zone), context and generated tokens. Arrival times
are seconds from the first request; ``origin`` is its date-time."""

from __future__ import annotations

from collections.abc import Iterator

from burstpilot.traces.formats.base import BadRows, Chunk, ReadOptions, Source, TraceFormat, header_fields
from burstpilot.traces.formats.csvcore import Col, csv_batches
from burstpilot.traces.formats.timebase import DateTimeAxis
from burstpilot.traces.table import Trace

COLUMNS = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]


def _sniff(src: Source) -> bool:
    return header_fields(src.head)[:3] == COLUMNS


def _chunks(src: Source, opts: ReadOptions) -> Iterator[Trace]:
    spec = [Col("TIMESTAMP", "datetime"), Col("ContextTokens", "tokens"), Col("GeneratedTokens", "tokens")]
    bad = BadRows(src.path, opts.skip_bad_rows)
    axis = DateTimeAxis()
    for arrays in csv_batches(src, spec, bad, whole=opts.whole_file):
        arrival, meta = axis.seconds(arrays["TIMESTAMP"])
        chunk = Chunk(
            arrival=arrival,
            request=arrays["ContextTokens"].to_numpy(zero_copy_only=False),
            response=arrays["GeneratedTokens"].to_numpy(zero_copy_only=False),
            meta=meta,
        )
        yield chunk.to_trace(src.path, "azure", bad)
    bad.warn()


FORMAT = TraceFormat(
    name="azure",
    title="Azure LLM 2023 / 2024",
    detected_by="header `" + ",".join(COLUMNS) + "`",
    time_axis="seconds from the first request; `origin` = its date-time (zone kept when given)",
    sniff=_sniff,
    chunks=_chunks,
)
