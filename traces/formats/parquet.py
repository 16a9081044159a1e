"""burstpilot's own Parquet layout (``trace convert --out DIR.parquet``): one folder per day of the
trace's clock (``day=00012/part-0.parquet``), the Trace's columns as they are, so repeated analyses
skip parsing. Read back in day order, in record batches; a single ``.parquet`` file reads too."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from burstpilot.errors import BurstpilotError
from burstpilot.traces.formats.base import (
    MAX_ABS_TIME_S,
    MAX_TOKENS,
    BadRows,
    Chunk,
    ReadOptions,
    Source,
    TraceFormat,
    dict_codes,
    session_ids,
)
from burstpilot.traces.table import NO_SESSION, Trace

MAGIC = b"PAR1"
DAY_S = 86400.0
BATCH_ROWS = 262_144
META_KEY = b"burstpilot"
COLUMNS = ("arrival_s", "request_tokens", "response_tokens", "failed")


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.rglob("*.parquet"), key=lambda p: (_day_of(p), p.name))
    return [path]


def _day_of(p: Path) -> int:
    for part in p.parts:
        if part.startswith("day="):
            try:
                return int(part[4:])
            except ValueError:
                return 0
    return 0


def _sniff(src: Source) -> bool:
    if src.is_dir:
        return bool(_files(src.path))
    return src.magic == MAGIC


def _chunks(src: Source, opts: ReadOptions) -> Iterator[Trace]:
    files = _files(src.path)
    if not files:
        raise BurstpilotError(f"{src}: is a directory without Parquet files, expected a trace file")
    bad = BadRows(src.path, opts.skip_bad_rows)
    for f in files:
        try:
            pf = pq.ParquetFile(f, read_dictionary=["model", "log_type"])
            meta = json.loads((pf.schema_arrow.metadata or {}).get(META_KEY, b"{}"))
            missing = [c for c in COLUMNS if c not in pf.schema_arrow.names]
            if missing:
                raise BurstpilotError(
                    f"{f}: not a burstpilot Parquet trace (missing column(s) {', '.join(missing)}); "
                    "write one with `burstpilot trace convert TRACE --out DIR.parquet`"
                )
            batches = pf.iter_batches(batch_size=BATCH_ROWS)
            for rb in batches:
                yield _chunk(rb, meta, f).to_trace(src.path, meta.get("format", "parquet"), bad)
        except (OSError, pa.ArrowInvalid, json.JSONDecodeError) as exc:
            raise BurstpilotError(f"{f}: not a readable Parquet file ({exc})") from exc


def _chunk(rb: pa.RecordBatch, meta: dict, f: Path) -> Chunk:
    names = rb.schema.names
    col = {n: rb.column(n) for n in names}
    arrival = col["arrival_s"].to_numpy(zero_copy_only=False).astype(np.float64)
    req = col["request_tokens"].to_numpy(zero_copy_only=False)
    resp = col["response_tokens"].to_numpy(zero_copy_only=False)
    if len(arrival) and not (
        np.isfinite(arrival).all()
        and np.abs(arrival).max() <= MAX_ABS_TIME_S
        and min(req.min(), resp.min()) >= 0
        and max(req.max(), resp.max()) <= MAX_TOKENS
    ):
        raise BurstpilotError(
            f"{f}: values out of range (times must be finite, tokens in [0, {MAX_TOKENS:,}])"
        )
    chunk = Chunk(
        arrival=arrival,
        request=req.astype(np.int64),
        response=resp.astype(np.int64),
        failed=col["failed"].to_numpy(zero_copy_only=False).astype(bool),
    )
    if "model" in col:
        chunk.model = dict_codes(col["model"])
    if "log_type" in col:
        chunk.log_type = dict_codes(col["log_type"])
    if "session_label" in col:
        chunk.session, chunk.session_labels = session_ids(col["session_label"])
    elif "session_id" in col:
        chunk.session = col["session_id"].to_numpy(zero_copy_only=False).astype(np.int64)
    if "elapsed_s" in col:
        chunk.elapsed = col["elapsed_s"].to_numpy(zero_copy_only=False).astype(np.float64)
    m = {}
    if meta.get("origin"):
        m["origin"] = datetime.fromisoformat(meta["origin"])
    if meta.get("clock_offset_s") is not None:
        m["clock_offset_s"] = float(meta["clock_offset_s"])
    chunk.meta = m
    return chunk


def _strings(codes: np.ndarray, categories: np.ndarray) -> pa.Array:
    cats = pa.array([str(c) for c in categories], pa.string())
    idx = pa.array(np.where(codes >= 0, codes, 0).astype(np.int32), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(idx, cats if len(cats) else pa.array([""], pa.string()))


def _table(t: Trace) -> pa.Table:
    cols = {
        "arrival_s": pa.array(t.arrival_s),
        "request_tokens": pa.array(t.request_tokens),
        "response_tokens": pa.array(t.response_tokens),
        "failed": pa.array(t.failed),
        "model": _strings(t.model_codes, t.models),
        "log_type": _strings(t.log_type_codes, t.log_types),
        "session_id": pa.array(t.session_id),
        "elapsed_s": pa.array(t.elapsed_s),
    }
    if t.session_labels is not None:
        labels = np.asarray(t.session_labels, dtype=object)
        cols["session_label"] = pa.array(
            [None if s == NO_SESSION else str(labels[s]) for s in t.session_id.tolist()], pa.string()
        )
    return pa.table(cols)


def write_parquet(chunks: Iterable[Trace], out: Path) -> tuple[int, int]:
    """Write Trace chunks (in time order, or not) as a day-partitioned Parquet folder.
    Returns (rows, days). An existing folder is replaced only when it holds our layout."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(p for p in out.iterdir() if not p.name.startswith("day="))):
        raise BurstpilotError(f"{out}: exists and is not a burstpilot Parquet folder; choose another --out")
    if out.exists():
        for p in sorted(out.rglob("*.parquet")):
            p.unlink()
    writers: dict[int, pq.ParquetWriter] = {}
    parts: dict[int, int] = {}
    rows = 0
    schema = None
    try:
        for t in chunks:
            if len(t) == 0:
                continue
            if schema is None:
                meta = {
                    "format": t.format,
                    "source": t.source,
                    "origin": t.origin.isoformat() if t.origin else None,
                    "clock_offset_s": t.clock_offset_s,
                }
            offset = t.clock_offset_s or 0.0
            day = np.floor((t.arrival_s + offset) / DAY_S).astype(np.int64)
            table = _table(t)
            if schema is None or table.schema.names != schema.names:
                schema = table.schema.with_metadata({META_KEY: json.dumps(meta).encode()})
            table = table.replace_schema_metadata(schema.metadata)
            for d in np.unique(day):
                w = writers.get(int(d))
                if w is None or w.schema.names != table.schema.names:
                    if w is not None:
                        w.close()
                    k = parts.get(int(d), -1) + 1
                    parts[int(d)] = k
                    folder = out / f"day={int(d):05d}"
                    folder.mkdir(parents=True, exist_ok=True)
                    w = pq.ParquetWriter(folder / f"part-{k}.parquet", table.schema, compression="zstd")
                    writers[int(d)] = w
                w.write_table(table.filter(pa.array(day == d)))
            rows += len(t)
            # in time order the days before this chunk's first are complete: close them
            for d in [d for d in writers if d < int(day.min())]:
                writers.pop(d).close()
    finally:
        for w in writers.values():
            w.close()
    return rows, len(parts)


FORMAT = TraceFormat(
    name="parquet",
    title="Parquet (burstpilot's layout)",
    detected_by="a `.parquet` file or a folder of `day=N/part-K.parquet` written by `trace convert`",
    time_axis="as in the source trace (the source's origin and clock kept in the file's metadata)",
    sniff=_sniff,
    chunks=_chunks,
)
