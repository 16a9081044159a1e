"""The one CSV engine every CSV format uses: a typed, multithreaded fast pass in record batches,
and a text pass that names each bad row by its physical line.

The fast pass is pyarrow's streaming CSV reader with the column types fixed up front; every batch
is checked (no nulls in required columns, token counts in [0, MAX_TOKENS], finite times within
MAX_ABS_TIME_S). The first problem switches to the slow pass, which re-reads the file with every
column as raw bytes (so a row that is not UTF-8 is one bad row, not a crash), validates each field
with a regular expression, and reports or skips the bad rows by line number. Rows the fast pass
already handed out are not handed out again.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from burstpilot.errors import BurstpilotError
from burstpilot.traces.formats.base import (
    BATCH_BYTES,
    MAX_ABS_TIME_S,
    MAX_TOKENS,
    BadRows,
    Source,
    header_fields,
)

_INT_RE = r"^\s*-?[0-9]+\s*$"
_FLOAT_RE = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
_BLANK_RE = r"^\s*$"
_TS_RE = r"^\s*\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?\s*$"
_MAX_INT_DIGITS = 18  # fits int64 whatever the digits


@dataclass(frozen=True)
class Col:
    """A source column: ``kind`` is time (float seconds x ``scale``), tokens (a count), flag (an
    integer, non-zero = true), float (optional measurement), dict (a label), session, datetime."""

    name: str
    kind: str
    required: bool = True
    scale: float = 1.0


class _NeedSlow(Exception):
    pass


UTF8_REPLACE = "burstpilot-utf8-replace"


def _utf8_replace(name: str):
    if name.replace("_", "-") != UTF8_REPLACE:
        return None
    utf8 = codecs.lookup("utf-8")

    class Decoder(codecs.IncrementalDecoder):
        def __init__(self, errors="strict"):
            super().__init__(errors)
            self._inner = utf8.incrementaldecoder("replace")

        def decode(self, data, final=False):
            return self._inner.decode(data, final)

    return codecs.CodecInfo(
        name=UTF8_REPLACE, encode=utf8.encode, decode=lambda b, e="replace": utf8.decode(b, "replace"),
        incrementaldecoder=Decoder,
    )  # fmt: skip


codecs.register(_utf8_replace)


def _arrow_type(kind: str):
    return {
        "time": pa.float64(),
        "float": pa.float64(),
        "tokens": pa.int64(),
        "flag": pa.int64(),
        "dict": pa.dictionary(pa.int32(), pa.string()),
        "session": pa.int64(),
        "datetime": pa.string(),
    }[kind]


def csv_batches(src: Source, cols: list[Col], bad: BadRows, whole: bool = False) -> Iterator[dict]:
    """The file's columns, batch by batch: {name: arrow array}; ``datetime`` columns as
    timestamp[ns] arrays (naive, or UTC when the file gives zones).

    ``whole``: the caller keeps every batch anyway (``read_trace``), so the typed pass parses the
    whole file at once with pyarrow's multithreaded ``read_csv`` (the streaming reader parses one
    block at a time) and checks every batch before handing any out. The batches are the same
    (the same block size cuts the file at the same lines) and so is every array; at the first
    problem nothing has been handed out, and the passes after it (session ids as text, then the
    row-by-row text pass) run as they do for a stream."""
    header = header_fields(src.head)
    missing = [c.name for c in cols if c.required and c.name not in header]
    if missing:
        raise BurstpilotError(f"{src}:1: missing column(s) {', '.join(missing)} in header {header}")
    cols = [c for c in cols if c.name in header]
    handed_out = 0
    mode = "fast"
    while True:
        if mode == "slow":
            rows = _slow(src, cols, bad, len(header))
        else:
            rows = _fast(src, cols, session_text=mode == "fast-text", whole=whole)
        skip = handed_out
        try:
            for batch in rows:
                n = len(next(iter(batch.values())))
                if skip >= n:
                    skip -= n
                    continue
                if skip:
                    batch = {k: v.slice(skip) for k, v in batch.items()}
                    n -= skip
                    skip = 0
                handed_out += n
                yield batch
            return
        except _SessionText:
            mode = "fast-text"
        except _NeedSlow:
            mode = "slow"


class _SessionText(_NeedSlow):
    pass


def _fast(src: Source, cols: list[Col], session_text: bool, whole: bool = False) -> Iterator[dict]:
    """Typed batches; raises _NeedSlow at the first problem (or _SessionText when session ids
    are not integers: they are then read as text, still in the fast pass). ``whole``: the file
    parsed at once and every batch checked before any is handed out."""

    types = {c.name: _arrow_type(c.kind) for c in cols}
    if session_text:
        types |= {c.name: pa.string() for c in cols if c.kind == "session"}
    try:
        if whole:
            batches = pacsv.read_csv(src.arrow_stream(), **_options(cols, types, None, threads=True))
            batches = batches.to_batches()
            checked = []
            while batches:  # each batch's raw arrays are dropped once checked (those not kept as they are)
                checked.append(_checked(batches.pop(0), cols))
            while checked:
                yield checked.pop(0)
            return
        # no invalid-row handler: a row with the wrong number of fields raises, and the text pass
        # takes over (pyarrow's handler would decode a non-UTF-8 row and print a traceback)
        reader = _open(src, cols, types, None, threads=True)
        while True:
            try:
                rb = reader.read_next_batch()
            except StopIteration:
                return
            yield _checked(rb, cols)
    except _NeedSlow:
        raise
    except pa.ArrowInvalid:
        if not session_text and any(c.kind == "session" for c in cols):
            raise _SessionText from None
        raise _NeedSlow from None
    except (OSError, EOFError) as exc:
        raise src.read_error(exc) from exc


def _checked(rb, cols: list[Col]) -> dict:
    """One typed batch as {name: array}; raises _NeedSlow at the first implausible value."""
    out = {}
    for c in cols:
        arr = rb.column(c.name)
        if c.required and c.kind != "dict" and arr.null_count:
            raise _NeedSlow
        if (
            c.kind == "tokens"
            and len(arr)
            and not (pc.min(arr).as_py() >= 0 and pc.max(arr).as_py() <= MAX_TOKENS)
        ):
            raise _NeedSlow
        if c.kind in ("time", "float") and len(arr) and arr.null_count < len(arr):
            # all() skips nulls (at least one value is not null here): the same as filling them
            # with True first, without the slow boolean fill_null (a third of the checks' time)
            if not pc.all(pc.is_finite(arr)).as_py():
                raise _NeedSlow
            if c.kind == "time" and pc.max(pc.abs(arr)).as_py() * c.scale > MAX_ABS_TIME_S:
                raise _NeedSlow
        if c.kind == "datetime":
            if not _regex_ok(arr, _TS_RE).all():
                raise _NeedSlow
            arr, bad_at = _cast_datetimes(arr)
            if len(bad_at):
                raise _NeedSlow
        out[c.name] = arr
    return out


def _open(src: Source, cols, types, on_invalid, threads: bool, keep_blank: bool = False):
    return pacsv.open_csv(src.arrow_stream(), **_options(cols, types, on_invalid, threads, keep_blank))


def _options(cols, types, on_invalid, threads: bool, keep_blank: bool = False) -> dict:
    # the text pass decodes the bytes as UTF-8 with U+FFFD for what is not: a row that is not
    # UTF-8 is then a bad row like any other (and pyarrow's handler can show it)
    encoding = UTF8_REPLACE if keep_blank else "utf8"
    return dict(
        read_options=pacsv.ReadOptions(use_threads=threads, block_size=BATCH_BYTES, encoding=encoding),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=not keep_blank),
        convert_options=pacsv.ConvertOptions(
            include_columns=[c.name for c in cols],
            column_types=types,
            strings_can_be_null=True,
            null_values=[""] if keep_blank else None,
            check_utf8=not keep_blank,
        ),
    )


def _regex_ok(arr, regex) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(arr, regex), False).to_numpy(zero_copy_only=False)


def _show(v) -> str:
    if isinstance(v, bytes):
        try:
            v = v.decode("utf-8")
        except UnicodeDecodeError:
            return repr(v[:60])
    return repr(v[:60] if isinstance(v, str) else v)


def _slow(src: Source, cols: list[Col], bad: BadRows, nfields: int) -> Iterator[dict]:
    invalid: list[tuple[int, str]] = []

    def on_invalid(row) -> str:
        invalid.append((row.number, row.text))
        return "skip"

    next_line = 2
    try:
        reader = _open(
            src, cols, {c.name: pa.binary() for c in cols}, on_invalid, threads=False, keep_blank=True
        )
        while True:
            try:
                rb = reader.read_next_batch()
            except StopIteration:
                break
            n = rb.num_rows
            inv = np.array(
                sorted(num for num, _ in invalid if num is not None and num >= next_line), np.int64
            )
            cand = np.arange(next_line, next_line + n + len(inv), dtype=np.int64)
            lines = np.setdiff1d(cand, inv, assume_unique=True)[:n]
            problems = []
            texts = [
                (num, text)
                for num, text in invalid
                if num is not None and num < (lines[-1] if n else cand[-1] + 1)
            ]
            nonblank = [(num, text) for num, text in texts if text.strip()]
            if nonblank:
                num, text = nonblank[0]
                problems.append(
                    (
                        np.array([x[0] for x in nonblank], np.int64),
                        f"expected {nfields} fields, got {text.count(',') + 1}: {text[:80]!r}",
                    )
                )
            invalid[:] = [(num, text) for num, text in invalid if (num, text) not in texts]
            next_line = int(lines[-1]) + 1 if n else next_line
            out, keep = _validate(rb, cols, lines, problems)
            for lines_bad, reason in sorted(problems, key=lambda p: int(p[0].min())):
                bad.add(lines_bad, reason)
            sel = pa.array(keep)
            yield {k: pc.filter(v, sel) for k, v in out.items()}
        nonblank = [(num, text) for num, text in invalid if text.strip()]
        if nonblank:
            num, text = nonblank[0]
            bad.add(
                [x[0] for x in nonblank],
                f"expected {nfields} fields, got {text.count(',') + 1}: {text[:80]!r}",
            )
    except pa.ArrowInvalid as exc:
        raise BurstpilotError(f"{src}: not a readable CSV file ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise src.read_error(exc) from exc


def _validate(rb, cols: list[Col], lines: np.ndarray, problems: list) -> tuple[dict, np.ndarray]:
    """Check and convert the raw byte columns of one batch; bad rows go to ``problems``."""
    arrays = {c.name: rb.column(c.name) for c in cols}
    blank = {
        name: _regex_ok(arr, _BLANK_RE) | pc.is_null(arr).to_numpy(zero_copy_only=False)
        for name, arr in arrays.items()
    }
    # blank lines read as rows of nulls: dropped silently
    keep = np.logical_or.reduce([~b for b in blank.values()]) if blank else np.zeros(len(lines), bool)

    def report(mask, reason, arr=None):
        mask = mask & keep
        if mask.any():
            if arr is not None:
                reason = f"{reason} ({_show(arr[int(np.flatnonzero(mask)[0])].as_py())})"
            problems.append((lines[mask], reason))
        return mask

    out = {}
    for c in cols:
        arr, empty = arrays[c.name], blank[c.name]
        if c.kind == "dict":
            out[c.name] = arr
            continue
        if c.required:
            keep &= ~report(empty, f"empty {c.name!r}")
        if c.kind == "session":
            present = ~empty
            ints = _regex_ok(arr, _INT_RE) & (
                pc.binary_length(arr).to_numpy(zero_copy_only=False) <= _MAX_INT_DIGITS
            )
            if (ints | ~present).all():
                out[c.name] = _to_number(arr, ints, pa.int64())
            else:
                out[c.name] = arr  # labels, kept as bytes and decoded by the reader
            continue
        if c.kind == "datetime":
            ok = _regex_ok(arr, _TS_RE)
            keep &= ~report(~ok & ~empty, f"{c.name!r} is not a date-time", arr)
            ts, bad_at = _cast_datetimes(pc.if_else(pa.array(ok & keep), arr, pa.scalar(None, pa.binary())))
            wrong = np.zeros(len(lines), bool)
            wrong[bad_at] = True
            keep &= ~report(wrong, f"{c.name!r} is not a valid date-time", arr)
            out[c.name] = ts
            continue
        integer = c.kind in ("tokens", "flag")
        ok = _regex_ok(arr, _INT_RE if integer else _FLOAT_RE)
        keep &= ~report(~ok & ~empty, f"{c.name!r} is not a number", arr)
        valid = ok & ~empty
        if integer:
            stripped = pc.utf8_trim_whitespace(
                pc.if_else(pa.array(valid), arr, pa.scalar(None, pa.binary())).cast(pa.string())
            )
            neg = pc.fill_null(pc.starts_with(stripped, "-"), False).to_numpy(zero_copy_only=False)
            if c.kind == "tokens":
                keep &= ~report(valid & neg, f"{c.name!r} is negative", arr)
            length = pc.fill_null(pc.utf8_length(stripped), 0).to_numpy(zero_copy_only=False)
            huge = valid & (length > _MAX_INT_DIGITS)
            vals = _to_number(stripped, valid & ~huge, pa.int64())
            if c.kind == "tokens":
                big = pc.fill_null(pc.greater(vals, MAX_TOKENS), False).to_numpy(zero_copy_only=False)
                keep &= ~report(huge | big, f"{c.name!r} is out of range (above {MAX_TOKENS:,})", arr)
            else:
                keep &= ~report(huge, f"{c.name!r} is out of range", arr)
            out[c.name] = vals
        else:
            vals = _to_number(arr, valid, pa.float64())
            v = vals.to_numpy(zero_copy_only=False)
            limit = MAX_ABS_TIME_S / c.scale if c.kind == "time" else np.inf
            with np.errstate(invalid="ignore"):
                wild = valid & ~(np.abs(v) <= limit)
            keep &= ~report(wild, f"{c.name!r} is out of range", arr)
            out[c.name] = vals
    return out, keep


def _to_number(arr, valid: np.ndarray, target):
    clean = pc.if_else(pa.array(valid), arr, pa.scalar(None, arr.type))
    if not pa.types.is_string(clean.type):
        clean = clean.cast(pa.string())
    return pc.cast(pc.utf8_trim_whitespace(clean), target)


def _cast_datetimes(arr) -> tuple[pa.Array, np.ndarray]:
    """Date-time strings -> timestamp[ns] (naive, or UTC for zoned strings), and the positions
    that do not parse (found by bisection, so one bad value costs log n casts)."""
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    arr = pc.utf8_trim_whitespace(arr)
    for target in (pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")):
        try:
            return pc.cast(arr, target), np.zeros(0, np.int64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    sample = pc.drop_null(arr)
    target = pa.timestamp("ns")
    for t in (pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")):
        try:
            pc.cast(sample.slice(0, 1), t)
            target = t
            break
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    bad: list[int] = []

    def find(lo: int, hi: int) -> None:
        try:
            pc.cast(arr.slice(lo, hi - lo), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if hi - lo == 1:
                bad.append(lo)
            else:
                mid = (lo + hi) // 2
                find(lo, mid)
                find(mid, hi)

    find(0, len(arr))
    mask = np.zeros(len(arr), bool)
    mask[bad] = True
    return pc.cast(pc.if_else(pa.array(~mask), arr, pa.scalar(None, pa.string())), target), np.array(
        bad, np.int64
    )
