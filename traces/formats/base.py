"""What every trace format shares: the opened source, the read options, the bad-row ledger, the
limits on plausible values, and the step from decoded columns to a :class:`Trace` chunk.

A format reads a file as a stream of chunks (each a ``Trace`` of at most a few hundred thousand
rows, in file order); ``read_trace`` concatenates them, the streaming analysis consumes them one
at a time.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from burstpilot.errors import BurstpilotError
from burstpilot.traces.table import NO_SESSION, Trace

log = logging.getLogger(__name__)

MAX_LISTED_BAD_LINES = 20
# Plausibility limits: a value beyond them is a bad row like a non-numeric one.
MAX_TOKENS = 2**31 - 1  # no model has a context of two billion tokens; keeps every sum in int64
MAX_ABS_TIME_S = 1e11  # about 3,000 years: a finite timestamp beyond that is a corrupt field
BATCH_BYTES = 4 << 20  # CSV block size: big enough for the parser's threads, small for memory

GZIP_MAGIC = b"\x1f\x8b"


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


@dataclass(frozen=True)
class ReadOptions:
    skip_bad_rows: bool = False
    columns: ColumnMap | None = None
    whole_file: bool = False  # every chunk is kept (read_trace): a format may parse all at once


class Source:
    """A trace file (or a Parquet folder) opened for reading: compression by content, not name."""

    def __init__(self, path: Path):
        self.path = path
        self.is_dir = path.is_dir()
        self.compression: str | None = None
        self.magic = b""
        if not self.is_dir:
            try:
                with open(path, "rb") as fh:
                    self.magic = fh.read(4)
            except OSError as exc:
                raise BurstpilotError(f"{path}: cannot read ({exc.strerror or exc})") from exc
            if self.magic[:2] == GZIP_MAGIC:
                self.compression = "gzip"
            elif path.suffix == ".gz" and self.magic:
                raise BurstpilotError(f"{path}: named .gz but is not gzip data (it starts {self.magic!r})")
        self._head: str | None = None

    def __str__(self) -> str:
        return str(self.path)

    def arrow_stream(self):
        """A pyarrow input stream of the decompressed bytes."""
        return pa.input_stream(str(self.path), compression=self.compression)

    def open_binary(self):
        return gzip.open(self.path, "rb") if self.compression else open(self.path, "rb")

    def open_text(self):
        return io.TextIOWrapper(self.open_binary(), encoding="utf-8", errors="replace")

    @property
    def head(self) -> str:
        """The first non-blank line (without a byte-order mark)."""
        if self._head is None:
            try:
                with self.open_text() as fh:
                    for line in fh:
                        if line.strip():
                            self._head = line.strip().lstrip("\ufeff")
                            break
            except (OSError, EOFError, zlib.error) as exc:
                raise self.read_error(exc) from exc
            if self._head is None:
                raise BurstpilotError(f"{self.path}: file is empty")
        return self._head

    def read_error(self, exc: BaseException) -> BurstpilotError:
        """A clear error for a failure of the byte stream itself (not of a row)."""
        msg = str(exc) or type(exc).__name__
        if self.compression and any(
            w in msg.lower() for w in ("compressed", "zlib", "gzip", "end-of-stream", "crc", "inflate")
        ):
            return BurstpilotError(f"{self.path}: truncated or corrupt gzip data ({msg})")
        if isinstance(exc, EOFError):
            return BurstpilotError(f"{self.path}: truncated or corrupt gzip data ({msg})")
        return BurstpilotError(f"{self.path}: cannot read ({msg})")


def header_fields(head: str) -> list[str]:
    return [f.strip().strip('"') for f in head.split(",")]


@dataclass(frozen=True)
class TraceFormat:
    """One trace format: how it is recognised and read. The registry (``formats.REGISTRY``)
    lists them; the CLI's ``--format`` choices, auto-detection and the docs table come from it."""

    name: str
    title: str  # the formats table: what the format is
    detected_by: str  # the formats table: how auto-detection recognises it
    time_axis: str  # the formats table: what arrival_s means
    sniff: Callable[[Source], bool]  # True when this source is in this format (auto-detection)
    chunks: Callable[[Source, ReadOptions], Iterator[Trace]]  # the file as Trace chunks, in file order
    needs_columns: bool = False


class BadRows:
    """The ledger of malformed rows: raises at the first one unless they are skipped."""

    def __init__(self, path, skip: bool):
        self.path, self.skip = path, skip
        self.count = 0
        self.first_lines: list[int] = []
        self.first_reason: tuple[int, str] | None = None

    def add(self, lines, reason: str) -> None:
        lines = np.unique(np.asarray(lines, np.int64))
        if len(lines) == 0:
            return
        if not self.skip:
            raise BurstpilotError(
                f"{self.path}:{int(lines[0])}: {reason} (use --skip-bad-rows to drop bad rows)"
            )
        if self.first_reason is None or lines[0] < self.first_reason[0]:
            self.first_reason = (int(lines[0]), reason)
        self.count += len(lines)
        self.first_lines = sorted(set(self.first_lines) | set(lines[:MAX_LISTED_BAD_LINES].tolist()))[
            :MAX_LISTED_BAD_LINES
        ]

    def warn(self) -> None:
        if self.count:
            log.warning(
                "%s: skipped %d bad rows (first at line %d: %s)",
                self.path,
                self.count,
                self.first_reason[0],
                self.first_reason[1],
            )


def dict_codes(arr) -> tuple[np.ndarray, np.ndarray]:
    """Arrow (dictionary) string array -> (int32 codes with -1 for null/empty, str categories)."""
    import pyarrow.compute as pc

    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        arr = pc.dictionary_encode(arr)
        cats = [None if c is None else c.decode("utf-8", "replace") for c in arr.dictionary.to_pylist()]
    else:
        if not pa.types.is_dictionary(arr.type):
            arr = pc.dictionary_encode(arr)
        cats = arr.dictionary.to_pylist()
    codes = pc.fill_null(arr.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32)
    names = np.array([("" if c is None else str(c).strip()) for c in cats], dtype=object)
    uniq, inv = np.unique(names, return_inverse=True) if len(names) else (names, np.zeros(0, int))
    remap = inv.astype(np.int32)
    empty = np.flatnonzero(uniq == "")
    if len(empty):
        remap = np.where(remap == empty[0], -1, remap - (remap > empty[0])).astype(np.int32)
        uniq = np.delete(uniq, empty[0])
    out = np.where(codes >= 0, remap[np.maximum(codes, 0)] if len(remap) else -1, -1).astype(np.int32)
    return out, uniq.astype(object)


def session_ids(arr) -> tuple[np.ndarray, np.ndarray | None]:
    """Integer session ids as they are; any other labels dictionary-encoded (codes, labels)."""
    import pyarrow.compute as pc

    if pa.types.is_integer(arr.type):
        return pc.fill_null(arr, NO_SESSION).to_numpy(zero_copy_only=False).astype(np.int64), None
    if pa.types.is_binary(arr.type):
        arr = pa.array(
            [None if v is None else v.decode("utf-8", "replace") for v in arr.to_pylist()], pa.string()
        )
    arr = pc.if_else(pc.equal(pc.utf8_trim_whitespace(arr), ""), pa.scalar(None, pa.string()), arr)
    enc = pc.dictionary_encode(arr)
    codes = pc.fill_null(enc.indices, NO_SESSION).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, np.asarray(enc.dictionary.to_pylist(), dtype=object)


@dataclass
class Chunk:
    """Decoded columns of one batch; ``to_trace`` fills the absent ones."""

    arrival: np.ndarray
    request: np.ndarray
    response: np.ndarray
    failed: np.ndarray | None = None
    model: tuple[np.ndarray, np.ndarray] | None = None
    log_type: tuple[np.ndarray, np.ndarray] | None = None
    session: np.ndarray | None = None
    session_labels: np.ndarray | None = None
    elapsed: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def to_trace(self, source, fmt: str, bad: BadRows) -> Trace:
        n = len(self.arrival)
        none = (np.full(n, -1, np.int32), np.array([], object))
        sess = np.full(n, NO_SESSION, np.int64) if self.session is None else self.session
        return Trace(
            arrival_s=np.asarray(self.arrival, np.float64),
            request_tokens=np.asarray(self.request, np.int64),
            response_tokens=np.asarray(self.response, np.int64),
            failed=np.zeros(n, bool) if self.failed is None else self.failed,
            model_codes=(self.model or none)[0],
            models=(self.model or none)[1],
            log_type_codes=(self.log_type or none)[0],
            log_types=(self.log_type or none)[1],
            session_id=sess,
            elapsed_s=np.full(n, np.nan) if self.elapsed is None else np.asarray(self.elapsed, np.float64),
            source=str(source),
            format=fmt,
            bad_rows=bad.count,
            bad_lines=list(bad.first_lines),
            session_labels=self.session_labels,
            has_sessions=bool(self.session is not None and (sess != NO_SESSION).any()),
            **self.meta,
        )
