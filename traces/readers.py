"""Trace readers: BurstGPT (both schemas), Azure LLM 2023/2024, Mooncake JSONL, generic CSV.

CSV files are parsed by pyarrow's multithreaded reader with the column types fixed up front.
Only when that fast pass meets a problem (a non-numeric field, a missing column, an empty
value, a negative token count) does a second, single-threaded pass read every column as text,
so that each bad row can be named by its physical line number.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from burstpilot.errors import BurstpilotError
from burstpilot.traces.table import NO_SESSION, Trace

log = logging.getLogger(__name__)

FORMATS = ("auto", "burstgpt", "azure", "mooncake", "csv")
MAX_LISTED_BAD_LINES = 20

BURSTGPT_V1 = ["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"]
BURSTGPT_V2 = [
    "Timestamp",
    "Session ID",
    "Elapsed time",
    "Model",
    "Request tokens",
    "Response tokens",
    "Total tokens",
    "Log Type",
]
AZURE = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]

_INT_RE = r"^\s*-?[0-9]+\s*$"
_FLOAT_RE = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"


@dataclass(frozen=True)
class ColumnMap:
    """Which source column holds which trace field (generic CSV)."""

    time: str
    request: str
    response: str
    model: str | None = None
    log_type: str | None = None
    session: str | None = None
    elapsed: str | None = None
    failed: str | None = None
    time_unit: str = "s"  # s, ms, us, ns or datetime


TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


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
    """Read a trace file (plain or .gz) into a :class:`Trace`.

    ``fmt``: auto (by header), burstgpt, azure, mooncake, csv (needs ``columns``).
    Filters: ``model`` / ``log_type`` (a name or a list of names), ``start_s <= arrival < end_s``
    on the trace's time axis, ``include_failed``. With ``skip_bad_rows`` malformed rows are
    dropped and counted in ``bad_rows`` instead of raising.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise BurstpilotError(f"unknown trace format {fmt!r} (choose from {', '.join(FORMATS)})")
    if not path.exists():
        raise BurstpilotError(f"{path}: no such file")
    if path.is_dir():
        raise BurstpilotError(f"{path}: is a directory, expected a trace file")
    head = _first_line(path)
    if fmt == "auto":
        fmt = detect_format(path, head, columns)
    if fmt == "burstgpt":
        trace = _read_burstgpt(path, head, skip_bad_rows)
    elif fmt == "azure":
        trace = _read_azure(path, skip_bad_rows)
    elif fmt == "mooncake":
        trace = _read_mooncake(path, skip_bad_rows)
    else:
        if columns is None:
            raise BurstpilotError(
                f"{path}: generic CSV needs a column mapping (--time-col, --request-col, --response-col)"
            )
        trace = _read_generic(path, columns, skip_bad_rows)
    if len(trace) == 0:
        raise BurstpilotError(f"{path}: no valid rows (only a header, or every row was bad)")
    return filter_trace(trace, model, log_type, start_s, end_s, include_failed)


def filter_trace(trace: Trace, model=None, log_type=None, start_s=None, end_s=None, include_failed=True):
    """Apply the read_trace filters to an in-memory trace."""
    mask = np.ones(len(trace), bool)
    if model is not None:
        mask &= _category_mask(trace.model_codes, trace.models, model, "model", trace.source)
    if log_type is not None:
        mask &= _category_mask(trace.log_type_codes, trace.log_types, log_type, "log type", trace.source)
    if start_s is not None:
        mask &= trace.arrival_s >= start_s
    if end_s is not None:
        mask &= trace.arrival_s < end_s
    if not include_failed:
        mask &= ~trace.failed
    return trace if mask.all() else trace.subset(mask)


def _category_mask(codes, categories, wanted, what, source) -> np.ndarray:
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    lookup = {str(c).lower(): i for i, c in enumerate(categories)}
    idx = []
    for name in names:
        if name.lower() not in lookup:
            have = ", ".join(map(str, categories)) or "none"
            raise BurstpilotError(f"{source}: no {what} {name!r} in this trace ({what}s: {have})")
        idx.append(lookup[name.lower()])
    return np.isin(codes, idx)


# ---------------------------------------------------------------------------------------------
# format detection


def _open_text(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _first_line(path: Path) -> str:
    try:
        with _open_text(path) as fh:
            for line in fh:
                if line.strip():
                    return line.strip().lstrip("\ufeff")
    except (OSError, EOFError) as exc:
        raise BurstpilotError(f"{path}: cannot read ({exc})") from exc
    raise BurstpilotError(f"{path}: file is empty")


def _header_fields(head: str) -> list[str]:
    return [f.strip().strip('"') for f in head.split(",")]


def detect_format(path: Path, head: str | None = None, columns: ColumnMap | None = None) -> str:
    """Name the format of a trace file from its first line."""
    head = _first_line(path) if head is None else head
    if head.startswith("{"):
        try:
            keys = set(json.loads(head))
        except json.JSONDecodeError as exc:
            raise BurstpilotError(f"{path}:1: looks like JSON lines but is not valid JSON ({exc})") from exc
        if {"timestamp", "input_length", "output_length"} <= keys:
            return "mooncake"
        raise BurstpilotError(
            f"{path}: unrecognized JSON lines (expected Mooncake keys timestamp, input_length, "
            f"output_length; found {', '.join(sorted(keys))})"
        )
    fields = _header_fields(head)
    if fields in (BURSTGPT_V1, BURSTGPT_V2):
        return "burstgpt"
    if fields[:3] == AZURE:
        return "azure"
    if columns is not None:
        return "csv"
    raise BurstpilotError(
        f"{path}: unrecognized trace format (header {head[:120]!r}). Known headers: BurstGPT "
        f"({','.join(BURSTGPT_V1)} or the 8-column schema with Session ID), Azure "
        f"({','.join(AZURE)}), Mooncake JSON lines; for any other CSV pass --format csv with "
        "--time-col, --request-col and --response-col"
    )


# ---------------------------------------------------------------------------------------------
# the CSV core: typed fast pass, text slow pass with line numbers


@dataclass(frozen=True)
class _Col:
    name: str
    kind: str  # float, int, dict, session, timestamp
    required: bool = True


class _BadRows:
    def __init__(self, path: Path, skip: bool):
        self.path, self.skip = path, skip
        self.lines: list[np.ndarray] = []
        self.first_reason: tuple[int, str] | None = None

    def add(self, lines: np.ndarray, reason: str) -> None:
        if len(lines) == 0:
            return
        if self.first_reason is None or lines.min() < self.first_reason[0]:
            self.first_reason = (int(lines.min()), reason)
        self.lines.append(np.asarray(lines, np.int64))

    def summary(self) -> tuple[int, list[int]]:
        if not self.lines:
            return 0, []
        allb = np.unique(np.concatenate(self.lines))
        line, reason = self.first_reason
        if not self.skip:
            raise BurstpilotError(f"{self.path}:{line}: {reason} (use --skip-bad-rows to drop bad rows)")
        if len(allb):
            log.warning(
                "%s: skipped %d bad rows (first at line %d: %s)",
                self.path,
                len(allb),
                self.first_reason[0],
                self.first_reason[1],
            )
        return len(allb), [int(x) for x in allb[:MAX_LISTED_BAD_LINES]]


def _arrow_type(kind: str):
    return {
        "float": pa.float64(),
        "int": pa.int64(),
        "dict": pa.dictionary(pa.int32(), pa.string()),
        "session": pa.int64(),
        "timestamp": pa.string(),
    }[kind]


def _read_csv_columns(path: Path, cols: list[_Col], skip_bad_rows: bool):
    """Return ({name: arrow array}, line numbers of kept rows or None, _BadRows)."""
    bad = _BadRows(path, skip_bad_rows)
    header = _header_fields(_first_line(path))
    missing = [c.name for c in cols if c.required and c.name not in header]
    if missing:
        raise BurstpilotError(f"{path}:1: missing column(s) {', '.join(missing)} in header {header}")
    cols = [c for c in cols if c.name in header]
    invalid: list[int | None] = []

    def on_invalid(row) -> str:
        invalid.append(row.number)
        return "skip"

    types = {c.name: _arrow_type(c.kind) for c in cols}
    try:
        try:
            table = _read_typed(path, cols, types, on_invalid)
        except pa.ArrowInvalid:
            # session ids that are not integers: read them as text, still in the fast pass
            sessions = [c.name for c in cols if c.kind == "session"]
            if not sessions:
                raise
            invalid.clear()
            table = _read_typed(path, cols, types | dict.fromkeys(sessions, pa.string()), on_invalid)
        arrays = {c.name: table.column(c.name).combine_chunks() for c in cols}
        fast_ok = not invalid and all(
            arrays[c.name].null_count == 0 for c in cols if c.required and c.kind != "dict"
        )
        if fast_ok:
            fast_ok = not any(
                c.kind == "int" and len(arrays[c.name]) and pc.min(arrays[c.name]).as_py() < 0 for c in cols
            )
        if fast_ok:
            fast_ok = all(_timestamp_ok(arrays[c.name]).all() for c in cols if c.kind == "timestamp")
        if fast_ok:
            return arrays, None, bad
    except pa.ArrowInvalid:
        pass
    return _read_csv_slow(path, cols, bad)


def _read_typed(path: Path, cols: list[_Col], types: dict, on_invalid):
    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            include_columns=[c.name for c in cols], column_types=types, strings_can_be_null=True
        ),
    )


def _read_csv_slow(path: Path, cols: list[_Col], bad: _BadRows):
    skipped: list[tuple[int, str]] = []

    def on_invalid(row) -> str:
        skipped.append((row.number, row.text))
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                include_columns=[c.name for c in cols],
                column_types={c.name: pa.string() for c in cols},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except pa.ArrowInvalid as exc:
        raise BurstpilotError(f"{path}: not a readable CSV file ({exc})") from exc
    n = table.num_rows
    skipped_lines = np.array([s[0] for s in skipped], np.int64)
    candidates = np.arange(2, 2 + n + len(skipped), dtype=np.int64)
    lines = np.setdiff1d(candidates, skipped_lines, assume_unique=True)
    nonblank = [(num, text) for num, text in skipped if text.strip()]
    if nonblank:
        num, text = nonblank[0]
        bad.add(
            np.array([s[0] for s in nonblank], np.int64),
            f"expected {len(_header_fields(_first_line(path)))} fields, got {text.count(',') + 1}: {text[:80]!r}",
        )
    arrays = {c.name: table.column(c.name).combine_chunks() for c in cols}
    # blank lines read as rows of nulls: dropped silently, as the fast pass does
    keep = np.logical_or.reduce([~_null_mask(arrays[c.name]) for c in cols])
    out = {}
    for c in cols:
        arr = arrays[c.name]
        nullmask = _null_mask(arr)
        if c.kind in ("float", "int", "session"):
            if c.kind == "session":
                ints = pc.fill_null(pc.match_substring_regex(arr, _INT_RE), True).to_numpy(
                    zero_copy_only=False
                )
                if not ints.all():
                    out[c.name] = arr  # non-integer session ids: kept as labels
                    continue
            regex = _INT_RE if c.kind == "int" else _FLOAT_RE
            ok = pc.fill_null(pc.match_substring_regex(arr, regex), False).to_numpy(zero_copy_only=False)
            if c.required:
                _report(bad, lines, keep & nullmask, f"empty {c.name!r}")
            else:
                ok |= nullmask
            _report(bad, lines, keep & ~ok & ~nullmask, f"{c.name!r} is not a number", arr)
            keep &= ok & (~nullmask if c.required else True)
            clean = pc.if_else(
                pa.array(ok & ~nullmask), pc.utf8_trim_whitespace(arr), pa.scalar(None, pa.string())
            )
            target = pa.float64() if c.kind == "float" else pa.int64()
            vals = pc.cast(clean, target)
            if c.kind == "int":
                neg = pc.fill_null(pc.less(vals, 0), False).to_numpy(zero_copy_only=False)
                _report(bad, lines, keep & neg, f"{c.name!r} is negative", arr)
                keep &= ~neg
            elif c.required:
                fin = pc.fill_null(pc.is_finite(vals), False).to_numpy(zero_copy_only=False)
                _report(bad, lines, keep & ~fin, f"{c.name!r} is not finite", arr)
                keep &= fin
            out[c.name] = vals
        elif c.kind == "timestamp":
            ok = _timestamp_ok(arr)
            _report(bad, lines, keep & nullmask, f"empty {c.name!r}")
            _report(bad, lines, keep & ~ok & ~nullmask, f"{c.name!r} is not a date-time", arr)
            keep &= ok
            out[c.name] = arr
        else:
            out[c.name] = arr
    sel = pa.array(keep)
    out = {k: pc.filter(v, sel) for k, v in out.items()}
    for c in cols:
        if c.kind == "dict":
            out[c.name] = pc.dictionary_encode(out[c.name])
    return out, lines[keep], bad


def _null_mask(arr) -> np.ndarray:
    isnull = pc.is_null(arr)
    if pa.types.is_string(arr.type):
        isnull = pc.or_(isnull, pc.fill_null(pc.equal(pc.utf8_trim_whitespace(arr), ""), False))
    return isnull.to_numpy(zero_copy_only=False)


def _report(bad: _BadRows, lines, mask, reason, arr=None) -> None:
    if mask.any():
        if arr is not None:
            first = int(np.flatnonzero(mask)[0])
            reason = f"{reason} ({arr[first].as_py()!r})"
        bad.add(lines[mask], reason)


_TS_RE = r"^\s*\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?\s*$"


def _timestamp_ok(arr) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(arr, _TS_RE), False).to_numpy(zero_copy_only=False)


def _parse_timestamps(arr, path: Path) -> tuple[np.ndarray, datetime]:
    """Absolute date-times -> (seconds relative to the first, origin). Naive times stay naive."""
    arr = pc.utf8_trim_whitespace(arr)
    try:
        ts = pc.cast(arr, pa.timestamp("ns"))
        tz = None
    except pa.ArrowInvalid:
        try:
            ts = pc.cast(arr, pa.timestamp("ns", tz="UTC"))
            tz = UTC
        except pa.ArrowInvalid as exc:
            raise BurstpilotError(f"{path}: cannot parse timestamps ({exc})") from exc
    ns = ts.cast(pa.int64()).to_numpy(zero_copy_only=False)
    first = int(ns.min()) if len(ns) else 0
    origin = datetime.fromtimestamp(first // 1_000_000_000, tz=UTC).replace(
        microsecond=(first % 1_000_000_000) // 1000
    )
    origin = origin if tz else origin.replace(tzinfo=None)
    return (ns - first).astype(np.float64) / 1e9, origin


def _clock_offset(origin: datetime) -> float:
    return origin.hour * 3600 + origin.minute * 60 + origin.second + origin.microsecond / 1e6


def _dict_codes(arr) -> tuple[np.ndarray, np.ndarray]:
    """Arrow dictionary array -> (int32 codes with -1 for null/empty, object categories)."""
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    cats = np.asarray(arr.dictionary.to_pylist(), dtype=object)
    codes = pc.fill_null(arr.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32)
    # merge duplicate categories (chunked dictionaries) and map empty strings to unknown
    names = np.array([("" if c is None else str(c).strip()) for c in cats], dtype=object)
    uniq, inv = np.unique(names, return_inverse=True) if len(names) else (names, np.zeros(0, int))
    remap = inv.astype(np.int32)
    empty = np.flatnonzero(uniq == "")
    if len(empty):
        remap = np.where(remap == empty[0], -1, remap - (remap > empty[0]))
        uniq = np.delete(uniq, empty[0])
    out = np.where(codes >= 0, remap[np.maximum(codes, 0)] if len(remap) else -1, -1).astype(np.int32)
    return out, uniq.astype(object)


def _session_ids(arr) -> tuple[np.ndarray, np.ndarray | None]:
    if arr is None:
        return None, None
    if pa.types.is_integer(arr.type):
        return pc.fill_null(arr, NO_SESSION).to_numpy(zero_copy_only=False).astype(np.int64), None
    arr = pc.if_else(pc.equal(pc.utf8_trim_whitespace(arr), ""), pa.scalar(None, pa.string()), arr)
    enc = pc.dictionary_encode(arr)
    codes = pc.fill_null(enc.indices, NO_SESSION).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, np.asarray(enc.dictionary.to_pylist(), dtype=object)


def _finish(path: Path, fmt: str, cols: dict, bad: _BadRows, **meta) -> Trace:
    """Common tail: sort by arrival (warning when needed), build the Trace."""
    arrival = cols["arrival"]
    n = len(arrival)
    bad_count, bad_lines = bad.summary()
    empty_codes = np.full(n, -1, np.int32)
    mcodes, mcats = cols.get("model", (empty_codes, np.array([], object)))
    lcodes, lcats = cols.get("log_type", (empty_codes, np.array([], object)))
    sess = cols.get("session")
    has_sessions = sess is not None and bool((sess != NO_SESSION).any())
    sess = np.full(n, NO_SESSION, np.int64) if sess is None else sess
    resp = cols["response"]
    failed = cols.get("failed")
    trace = Trace(
        arrival_s=arrival,
        request_tokens=cols["request"],
        response_tokens=resp,
        failed=np.zeros(n, bool) if failed is None else failed,
        model_codes=mcodes,
        models=mcats,
        log_type_codes=lcodes,
        log_types=lcats,
        session_id=sess,
        elapsed_s=cols.get("elapsed", np.full(n, np.nan)),
        source=str(path),
        format=fmt,
        bad_rows=bad_count,
        bad_lines=bad_lines,
        session_labels=cols.get("session_labels"),
        has_sessions=has_sessions,
        **meta,
    )
    if n > 1:
        d = np.diff(arrival)
        if (d < 0).any():
            log.warning(
                "%s: timestamps are not sorted (%d rows out of order); sorted by arrival time",
                path,
                int((d < 0).sum()),
            )
            trace = trace._take(np.argsort(arrival, kind="stable"))
    return trace


def _np(arr, dtype) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# formats


def _read_burstgpt(path: Path, head: str, skip_bad_rows: bool) -> Trace:
    v2 = "Session ID" in _header_fields(head)
    spec = [
        _Col("Timestamp", "float"),
        _Col("Model", "dict"),
        _Col("Request tokens", "int"),
        _Col("Response tokens", "int"),
        _Col("Log Type", "dict"),
    ]
    if v2:
        spec += [_Col("Session ID", "session", required=False), _Col("Elapsed time", "float", required=False)]
    arrays, _, bad = _read_csv_columns(path, spec, skip_bad_rows)
    resp = _np(arrays["Response tokens"], np.int64)
    cols = {
        "arrival": _np(arrays["Timestamp"], np.float64),
        "request": _np(arrays["Request tokens"], np.int64),
        "response": resp,
        "failed": resp == 0,
        "model": _dict_codes(arrays["Model"]),
        "log_type": _dict_codes(arrays["Log Type"]),
    }
    if v2:
        cols["session"], cols["session_labels"] = _session_ids(arrays["Session ID"])
        cols["elapsed"] = pc.fill_null(arrays["Elapsed time"], np.nan).to_numpy(zero_copy_only=False)
    # BurstGPT timestamps are seconds from 0:00 of the first day: the time axis is kept as is.
    return _finish(path, "burstgpt-v2" if v2 else "burstgpt-v1", cols, bad, clock_offset_s=0.0)


def _read_azure(path: Path, skip_bad_rows: bool) -> Trace:
    spec = [_Col("TIMESTAMP", "timestamp"), _Col("ContextTokens", "int"), _Col("GeneratedTokens", "int")]
    arrays, _, bad = _read_csv_columns(path, spec, skip_bad_rows)
    arrival, origin = _parse_timestamps(arrays["TIMESTAMP"], path)
    cols = {
        "arrival": arrival,
        "request": _np(arrays["ContextTokens"], np.int64),
        "response": _np(arrays["GeneratedTokens"], np.int64),
    }
    return _finish(path, "azure", cols, bad, origin=origin, clock_offset_s=_clock_offset(origin))


def _read_generic(path: Path, cm: ColumnMap, skip_bad_rows: bool) -> Trace:
    if cm.time_unit not in (*TIME_UNITS, "datetime"):
        raise BurstpilotError(f"unknown time unit {cm.time_unit!r} (s, ms, us, ns or datetime)")
    spec = [
        _Col(cm.time, "timestamp" if cm.time_unit == "datetime" else "float"),
        _Col(cm.request, "int"),
        _Col(cm.response, "int"),
    ]
    optional = {
        "model": "dict",
        "log_type": "dict",
        "session": "session",
        "elapsed": "float",
        "failed": "int",
    }
    for field_name, kind in optional.items():
        name = getattr(cm, field_name)
        if name is not None:
            spec.append(_Col(name, kind, required=True))
    arrays, _, bad = _read_csv_columns(path, spec, skip_bad_rows)
    meta = {}
    if cm.time_unit == "datetime":
        arrival, origin = _parse_timestamps(arrays[cm.time], path)
        meta = {"origin": origin, "clock_offset_s": _clock_offset(origin)}
    else:
        arrival = _np(arrays[cm.time], np.float64) * TIME_UNITS[cm.time_unit]
    cols = {
        "arrival": arrival,
        "request": _np(arrays[cm.request], np.int64),
        "response": _np(arrays[cm.response], np.int64),
    }
    if cm.model:
        cols["model"] = _dict_codes(arrays[cm.model])
    if cm.log_type:
        cols["log_type"] = _dict_codes(arrays[cm.log_type])
    if cm.session:
        cols["session"], cols["session_labels"] = _session_ids(arrays[cm.session])
    if cm.elapsed:
        cols["elapsed"] = _np(arrays[cm.elapsed], np.float64)
    if cm.failed:
        cols["failed"] = _np(arrays[cm.failed], np.int64) != 0
    return _finish(path, "csv", cols, bad, **meta)


def _read_mooncake(path: Path, skip_bad_rows: bool) -> Trace:
    bad = _BadRows(path, skip_bad_rows)
    ts = req = resp = None
    try:
        import pyarrow.json as pajson

        table = pajson.read_json(path)
        names = set(table.column_names)
        if {"timestamp", "input_length", "output_length"} <= names:
            cols = [table.column(c).combine_chunks() for c in ("timestamp", "input_length", "output_length")]
            if all(pa.types.is_integer(c.type) or pa.types.is_floating(c.type) for c in cols) and not any(
                c.null_count for c in cols
            ):
                ts, req, resp = (c.to_numpy(zero_copy_only=False) for c in cols)
                if (req < 0).any() or (resp < 0).any() or not np.isfinite(ts).all():
                    ts = None
    except (pa.ArrowInvalid, OSError):
        ts = None
    if ts is None:
        ts, req, resp = _read_mooncake_slow(path, bad)
    cols = {
        "arrival": np.asarray(ts, np.float64) / 1000.0,
        "request": np.asarray(req, np.int64),
        "response": np.asarray(resp, np.int64),
    }
    return _finish(path, "mooncake", cols, bad)


def _read_mooncake_slow(path: Path, bad: _BadRows):
    ts, req, resp, bad_lines = [], [], [], {}
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                t, i, o = rec["timestamp"], rec["input_length"], rec["output_length"]
                if isinstance(t, bool) or not isinstance(t, int | float) or not np.isfinite(t):
                    raise ValueError(f"'timestamp' is not a number ({t!r})")
                for key, v in (("input_length", i), ("output_length", o)):
                    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                        raise ValueError(f"{key!r} is not a non-negative integer ({v!r})")
            except json.JSONDecodeError as exc:
                bad_lines.setdefault(f"not valid JSON ({exc.msg})", []).append(lineno)
                continue
            except KeyError as exc:
                bad_lines.setdefault(f"missing key {exc}", []).append(lineno)
                continue
            except (ValueError, TypeError) as exc:
                bad_lines.setdefault(str(exc), []).append(lineno)
                continue
            ts.append(t)
            req.append(i)
            resp.append(o)
    for reason, lines in sorted(bad_lines.items(), key=lambda kv: kv[1][0]):
        bad.add(np.array(lines, np.int64), reason)
    return np.array(ts, np.float64), np.array(req, np.int64), np.array(resp, np.int64)
