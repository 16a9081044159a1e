"""Mooncake (Qin et al., FAST'25) JSON lines: ``timestamp`` in milliseconds, ``input_length``,
``output_length`` (``hash_ids`` ignored). pyarrow's JSON reader in record batches is the fast pass;
the first problem switches to a line-by-line pass that names each bad line."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from burstpilot.errors import BurstpilotError
from burstpilot.traces.formats.base import (
    BATCH_BYTES,
    MAX_ABS_TIME_S,
    MAX_TOKENS,
    BadRows,
    Chunk,
    ReadOptions,
    Source,
    TraceFormat,
)
from burstpilot.traces.table import Trace

KEYS = ("timestamp", "input_length", "output_length")
SLOW_BATCH = 65536


def _sniff(src: Source) -> bool:
    head = src.head
    if not head.startswith("{"):
        return False
    try:
        rec = json.loads(head)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BurstpilotError(f"{src}:1: looks like JSON lines but is not valid JSON ({exc})") from exc
    if isinstance(rec, dict) and set(KEYS) <= set(rec):
        return True
    found = ", ".join(sorted(map(str, rec))) if isinstance(rec, dict) else type(rec).__name__
    raise BurstpilotError(
        f"{src}: unrecognized JSON lines (expected Mooncake keys {', '.join(KEYS)}; found {found})"
    )


class _NeedSlow(Exception):
    pass


def _fast(src: Source) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    try:
        reader = pajson.open_json(
            src.arrow_stream(),
            read_options=pajson.ReadOptions(block_size=BATCH_BYTES),
        )
        for rb in reader:
            names = set(rb.schema.names)
            if not set(KEYS) <= names:
                raise _NeedSlow
            ts, req, resp = (rb.column(k) for k in KEYS)
            if any(c.null_count for c in (ts, req, resp)):
                raise _NeedSlow
            if not (pa.types.is_integer(ts.type) or pa.types.is_floating(ts.type)):
                raise _NeedSlow
            if not (pa.types.is_integer(req.type) and pa.types.is_integer(resp.type)):
                raise _NeedSlow  # fractional or huge lengths: the line pass names them
            t = ts.to_numpy(zero_copy_only=False).astype(np.float64)
            i, o = req.to_numpy(zero_copy_only=False), resp.to_numpy(zero_copy_only=False)
            if len(t) and not (
                np.isfinite(t).all()
                and np.abs(t).max() / 1000 <= MAX_ABS_TIME_S
                and min(i.min(), o.min()) >= 0
                and max(i.max(), o.max()) <= MAX_TOKENS
            ):
                raise _NeedSlow
            yield t, i, o
    except _NeedSlow:
        raise
    except pa.ArrowInvalid:
        raise _NeedSlow from None
    except (OSError, EOFError) as exc:
        if "JSON" in str(exc) or "parse" in str(exc).lower():
            raise _NeedSlow from None
        raise src.read_error(exc) from exc


def _check(rec) -> tuple[float, int, int]:
    if not isinstance(rec, dict):
        raise ValueError(f"not a JSON object (a {type(rec).__name__})")
    missing = [k for k in KEYS if k not in rec]
    if missing:
        raise ValueError(f"missing key {missing[0]!r}")
    t = rec["timestamp"]
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise ValueError(f"'timestamp' is not a number ({t!r})")
    if not abs(t) / 1000 <= MAX_ABS_TIME_S:  # also false for NaN and inf
        raise ValueError(f"'timestamp' is out of range ({t!r})")
    out = [float(t)]
    for key in KEYS[1:]:
        v = rec[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{key!r} is not a non-negative integer ({v!r})")
        if v < 0:
            raise ValueError(f"{key!r} is negative ({v!r})")
        if v > MAX_TOKENS:
            raise ValueError(f"{key!r} is out of range (above {MAX_TOKENS:,}) ({v!r})")
        out.append(v)
    return out[0], out[1], out[2]


def _slow(src: Source, bad: BadRows) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rows: list[tuple[float, int, int]] = []
    try:
        with src.open_binary() as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    rows.append(_check(json.loads(raw)))
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
                    bad.add([lineno], f"not valid JSON ({msg})")
                except RecursionError:
                    bad.add([lineno], "not valid JSON (nested too deeply)")
                except ValueError as exc:
                    bad.add([lineno], str(exc))
                if len(rows) >= SLOW_BATCH:
                    yield _arrays(rows)
                    rows = []
    except (OSError, EOFError) as exc:
        raise src.read_error(exc) from exc
    if rows:
        yield _arrays(rows)


def _arrays(rows):
    t, i, o = zip(*rows, strict=True)
    return np.array(t, np.float64), np.array(i, np.int64), np.array(o, np.int64)


def _chunks(src: Source, opts: ReadOptions) -> Iterator[Trace]:
    bad = BadRows(src.path, opts.skip_bad_rows)
    handed_out = 0
    try:
        for t, i, o in _fast(src):
            handed_out += len(t)
            yield Chunk(arrival=t / 1000.0, request=i, response=o).to_trace(src.path, "mooncake", bad)
        return
    except _NeedSlow:
        pass
    for t, i, o in _slow(src, bad):
        if handed_out >= len(t):
            handed_out -= len(t)
            continue
        t, i, o = t[handed_out:], i[handed_out:], o[handed_out:]
        handed_out = 0
        yield Chunk(arrival=t / 1000.0, request=i, response=o).to_trace(src.path, "mooncake", bad)
    bad.warn()


FORMAT = TraceFormat(
    name="mooncake",
    title="Mooncake",
    detected_by="JSON lines with `timestamp` (ms), `input_length`, `output_length`",
    time_axis="milliseconds / 1000",
    sniff=_sniff,
    chunks=_chunks,
)
