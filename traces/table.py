"""The columnar trace table every reader returns and every consumer reads.

One numpy array per column, never a Python object per row. Strings with few distinct values
(model, log type) are dictionary-encoded: an integer code per row plus a small array of
categories. Session ids are integers (-1 where a row has none); when a source file uses
non-integer session ids they are dictionary-encoded and the labels kept for writing back.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

NO_SESSION = -1


@dataclass(eq=False)
class Trace:
    """A request trace: arrival times, token counts and the metadata columns.

    ``arrival_s`` is seconds from the trace's own start on the format's time axis: BurstGPT
    timestamps are seconds from 0:00 of the first day and are kept as they are; formats with
    absolute timestamps (Azure) are made relative to the first request and keep the absolute
    time of ``arrival_s == 0`` in ``origin``. A subset keeps arrival times unchanged, so replay
    tools should schedule ``arrival_s - arrival_s[0]``.
    """

    arrival_s: np.ndarray  # float64, sorted ascending
    request_tokens: np.ndarray  # int64
    response_tokens: np.ndarray  # int64, 0 for a failed BurstGPT row
    failed: np.ndarray  # bool
    model_codes: np.ndarray  # int32 index into models, -1 = unknown
    models: np.ndarray  # str categories
    log_type_codes: np.ndarray  # int32 index into log_types, -1 = unknown
    log_types: np.ndarray  # str categories
    session_id: np.ndarray  # int64, NO_SESSION where a row has none
    elapsed_s: np.ndarray  # float64, NaN where unknown
    origin: datetime | None = None
    clock_offset_s: float | None = None  # seconds from local midnight of day 0 to arrival_s == 0
    source: str = ""
    format: str = ""
    bad_rows: int = 0
    bad_lines: list[int] = field(default_factory=list)  # first line numbers of skipped rows
    session_labels: np.ndarray | None = None  # str labels when session ids were not integers
    has_sessions: bool = False

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        for name in (
            "request_tokens",
            "response_tokens",
            "failed",
            "model_codes",
            "log_type_codes",
            "session_id",
            "elapsed_s",
        ):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name} has {len(getattr(self, name))} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        """Span from the first to the last arrival, seconds."""
        if len(self.arrival_s) < 2:
            return 0.0
        return float(self.arrival_s[-1] - self.arrival_s[0])

    @property
    def mean_rps(self) -> float:
        """Requests per second: rows over the span from the first to the last arrival."""
        d = self.duration_s
        return len(self) / d if d > 0 else 0.0

    @property
    def model(self) -> np.ndarray:
        """Model name per row (decoded; allocates one string per row, use codes in hot paths)."""
        return _decode(self.model_codes, self.models)

    @property
    def log_type(self) -> np.ndarray:
        return _decode(self.log_type_codes, self.log_types)

    def subset(self, mask_or_index) -> Trace:
        """Rows selected by a boolean mask or an index array; arrival times unchanged."""
        idx = np.asarray(mask_or_index)
        if idx.dtype == bool:
            if len(idx) != len(self):
                raise ValueError(f"mask has {len(idx)} rows, trace has {len(self)}")
            idx = np.flatnonzero(idx)
        return self._take(np.sort(idx))

    def _take(self, idx: np.ndarray) -> Trace:
        return replace(
            self,
            arrival_s=self.arrival_s[idx],
            request_tokens=self.request_tokens[idx],
            response_tokens=self.response_tokens[idx],
            failed=self.failed[idx],
            model_codes=self.model_codes[idx],
            log_type_codes=self.log_type_codes[idx],
            session_id=self.session_id[idx],
            elapsed_s=self.elapsed_s[idx],
            bad_lines=list(self.bad_lines),
        )

    def _slice(self, lo: int, hi: int) -> Trace:
        """Rows lo:hi as views (no copy)."""
        return replace(
            self,
            arrival_s=self.arrival_s[lo:hi],
            request_tokens=self.request_tokens[lo:hi],
            response_tokens=self.response_tokens[lo:hi],
            failed=self.failed[lo:hi],
            model_codes=self.model_codes[lo:hi],
            log_type_codes=self.log_type_codes[lo:hi],
            session_id=self.session_id[lo:hi],
            elapsed_s=self.elapsed_s[lo:hi],
        )

    def shifted(self, offset_s: float) -> Trace:
        """The same trace with ``offset_s`` added to every arrival time."""
        return replace(self, arrival_s=self.arrival_s + offset_s, bad_lines=list(self.bad_lines))

    def groups(self) -> list[tuple[str, str, np.ndarray]]:
        """(model, log type, row mask) for each combination present, most rows first."""
        if len(self) == 0:
            return []
        nl = max(len(self.log_types), 1)
        key = (self.model_codes.astype(np.int64) + 1) * (nl + 1) + (self.log_type_codes + 1)
        counts = np.bincount(key)  # few categories: a count per key, no sort
        keys = np.flatnonzero(counts)
        counts = counts[keys]
        out = []
        for k in keys[np.argsort(-counts, kind="stable")]:
            mc, lc = divmod(int(k), nl + 1)
            mc, lc = mc - 1, lc - 1
            out.append(
                (
                    str(self.models[mc]) if mc >= 0 else "",
                    str(self.log_types[lc]) if lc >= 0 else "",
                    key == k,
                )
            )
        return out

    def equals(self, other: Trace) -> bool:
        """Row-for-row equality of every column (decoded strings, not codes)."""
        if len(self) != len(other):
            return False
        same = (
            np.array_equal(self.arrival_s, other.arrival_s)
            and np.array_equal(self.request_tokens, other.request_tokens)
            and np.array_equal(self.response_tokens, other.response_tokens)
            and np.array_equal(self.failed, other.failed)
            and np.array_equal(self.model, other.model)
            and np.array_equal(self.log_type, other.log_type)
            and np.array_equal(self.elapsed_s, other.elapsed_s, equal_nan=True)
        )
        return same and np.array_equal(self.session_id >= 0, other.session_id >= 0)


def _decode(codes: np.ndarray, categories: np.ndarray) -> np.ndarray:
    cats = np.append(np.asarray(categories, dtype=object), "")
    return cats[np.where(codes >= 0, codes, len(cats) - 1)]


def make_trace(
    arrival_s,
    request_tokens,
    response_tokens,
    *,
    failed=None,
    model=None,
    log_type=None,
    session_id=None,
    elapsed_s=None,
    **meta,
) -> Trace:
    """Build a Trace from plain arrays (tests, generators). ``model``/``log_type`` may be a
    sequence of strings per row, or a (codes, categories) pair. Rows are sorted by arrival."""
    arrival = np.asarray(arrival_s, dtype=np.float64)
    n = len(arrival)
    req = np.asarray(request_tokens, dtype=np.int64)
    resp = np.asarray(response_tokens, dtype=np.int64)
    fail = resp == 0 if failed is None else np.asarray(failed, dtype=bool)
    mcodes, mcats = _encode(model, n)
    lcodes, lcats = _encode(log_type, n)
    sess = np.full(n, NO_SESSION, np.int64) if session_id is None else np.asarray(session_id, np.int64)
    el = np.full(n, np.nan) if elapsed_s is None else np.asarray(elapsed_s, dtype=np.float64)
    meta.setdefault("has_sessions", session_id is not None)
    t = Trace(arrival, req, resp, fail, mcodes, mcats, lcodes, lcats, sess, el, **meta)
    if n > 1 and np.any(np.diff(arrival) < 0):
        t = t._take(np.argsort(arrival, kind="stable"))
    return t


def _encode(values, n: int) -> tuple[np.ndarray, np.ndarray]:
    if values is None:
        return np.full(n, -1, np.int32), np.array([], dtype=object)
    if isinstance(values, tuple) and len(values) == 2:
        return np.asarray(values[0], np.int32), np.asarray(values[1], dtype=object)
    cats, codes = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    return codes.astype(np.int32), cats.astype(object)


_PARALLEL_CONCAT_ROWS = 1_000_000  # below this a thread costs more than it saves


def _unify(chunks_codes: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate dictionary-encoded columns whose categories differ per chunk (by name)."""
    names = sorted({str(c) for _, cats in chunks_codes for c in cats})
    index = {n: i for i, n in enumerate(names)}
    out = []
    for codes, cats in chunks_codes:
        remap = np.array([index[str(c)] for c in cats] + [-1], np.int32)
        out.append(remap[np.where(codes >= 0, codes, len(cats))])
    return (np.concatenate(out) if out else np.zeros(0, np.int32)), np.array(names, dtype=object)


def concat_traces(chunks: list[Trace]) -> Trace:
    """One Trace from chunks of the same source (categories and session labels unified by name;
    metadata from the first chunk, bad-row counts from the last)."""
    if len(chunks) == 1:
        return chunks[0]
    first, last = chunks[0], chunks[-1]

    def cat(name):
        return np.concatenate([getattr(c, name) for c in chunks])

    # the copies run on worker threads (numpy releases the GIL), beside the categories' remapping:
    # most of a large concatenation is the kernel mapping fresh pages, which spreads over cores
    names = ("arrival_s", "request_tokens", "response_tokens", "failed", "elapsed_s")
    rows = sum(len(c) for c in chunks)
    workers = min(len(names), os.cpu_count() or 1) if rows >= _PARALLEL_CONCAT_ROWS else 0
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        futures = [pool.submit(cat, n) for n in names] if pool else None
        mcodes, mcats = _unify([(c.model_codes, c.models) for c in chunks])
        lcodes, lcats = _unify([(c.log_type_codes, c.log_types) for c in chunks])
        labels = None
        if any(c.session_labels is not None for c in chunks):
            parts = []
            for c in chunks:
                if c.session_labels is None:  # integer ids beside text labels: their text is the label
                    ids = c.session_id
                    u, inv = np.unique(ids[ids != NO_SESSION], return_inverse=True)
                    codes = np.full(len(ids), -1, np.int64)
                    codes[ids != NO_SESSION] = inv
                    parts.append((codes, np.array([str(x) for x in u], dtype=object)))
                else:
                    parts.append((c.session_id, c.session_labels))
            sess, labels = _unify(parts)
            sess = sess.astype(np.int64)
        else:
            sess = np.concatenate([c.session_id for c in chunks])
        cols = (
            {n: f.result() for n, f in zip(names, futures, strict=True)}
            if pool
            else {n: cat(n) for n in names}
        )
    finally:
        if pool:
            pool.shutdown()
    return replace(
        first,
        arrival_s=cols["arrival_s"],
        request_tokens=cols["request_tokens"],
        response_tokens=cols["response_tokens"],
        failed=cols["failed"],
        model_codes=mcodes,
        models=mcats,
        log_type_codes=lcodes,
        log_types=lcats,
        session_id=sess,
        elapsed_s=cols["elapsed_s"],
        bad_rows=last.bad_rows,
        bad_lines=list(last.bad_lines),
        session_labels=labels,
        has_sessions=any(c.has_sessions for c in chunks),
    )
