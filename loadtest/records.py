"""Per-request result records: incremental JSONL (crash-safe) and Parquet at the end.

One record is a flat dict (see ``FIELDS``) plus ``itl_s``, the list of gaps between streamed chunks.
Times are seconds in the *schedule frame*: 0 is the scheduled time of the first request of the
(unsharded) workload, so shards and resumed runs line up without translation.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from burstpilot.errors import BurstpilotError

JSONL_NAME = "requests.jsonl"
PARQUET_NAME = "requests.parquet"

# name -> arrow type; the order is the column order of the Parquet file.
FIELDS: dict[str, pa.DataType] = {
    "index": pa.int64(),  # the request's place in the schedule (the trace row when the trace sets the times)
    "row": pa.int64(),  # row of the workload trace whose token counts the request has
    "shard": pa.string(),  # "i/n"
    "worker": pa.int32(),
    "target": pa.string(),
    "scheduled_s": pa.float64(),
    "sent_s": pa.float64(),
    "dispatch_lag_s": pa.float64(),
    "ttft_s": pa.float64(),
    "e2e_s": pa.float64(),
    "tpot_s": pa.float64(),
    "itl_mean_s": pa.float64(),
    "itl_p50_s": pa.float64(),
    "itl_p99_s": pa.float64(),
    "itl_max_s": pa.float64(),
    "chunks": pa.int64(),
    "prompt_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "expected_prompt_tokens": pa.int64(),
    "expected_output_tokens": pa.int64(),
    "usage_reported": pa.bool_(),
    "status": pa.int32(),  # HTTP status, 0 when none was received
    "error": pa.string(),  # "" on success, else an error kind (see ERROR_KINDS)
    "error_detail": pa.string(),
    "itl_s": pa.list_(pa.float64()),
}

ERROR_KINDS = (
    "connect",  # connection refused / unreachable
    "connect_timeout",
    "first_token_timeout",
    "total_timeout",
    "http_4xx",
    "http_5xx",
    "reset",  # connection reset / closed by the server mid-request
    "truncated",  # the stream ended before its end marker ([DONE] or a finish_reason)
    "malformed_sse",  # a line that is not SSE or a data payload that is not JSON
    "malformed_response",  # JSON of the wrong shape (choices, text, usage), or an SSE line over 128 KiB
    "empty_response",  # a complete answer that carried no text
    "cancelled",  # still in flight when an interrupted replay's grace period ended
    "client",  # any other client-side failure
)


class JsonlWriter:
    """Appends records to a JSONL file; a background flush makes them durable within ``flush_s``.

    ``add`` only appends to an in-memory list (cheap on the send path). ``flush`` writes the
    pending lines and flushes them to the kernel, which is what survives a ``kill -9``. A daemon
    thread calls ``flush`` every ``flush_s`` seconds, so a busy or blocked event loop cannot
    delay durability.
    """

    def __init__(self, path: Path, flush_s: float = 0.5):
        self.path = path
        self._fh = open(path, "ab")  # noqa: SIM115 (closed in close())
        self._pending: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flush_s = flush_s
        self._thread = threading.Thread(target=self._loop, name="jsonl-flush", daemon=True)
        self._thread.start()

    def add(self, record: dict) -> None:
        self._pending.append(record)

    def _loop(self) -> None:
        while not self._stop.wait(self._flush_s):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            if pending:
                self._fh.write(b"".join(orjson.dumps(r) + b"\n" for r in pending))
            self._fh.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()
        self._fh.close()


_FLOATS = frozenset(k for k, t in FIELDS.items() if pa.types.is_floating(t))
_INTS = frozenset(k for k, t in FIELDS.items() if pa.types.is_integer(t))


def _float(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _int(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    return v if isinstance(v, int) and -(1 << 63) <= v < (1 << 63) else None


def clean_record(rec: dict) -> dict:
    """A stored record as the summary and the Parquet file expect it, whatever wrote it: a field of the wrong
    type becomes null (a number field that holds text, a list that is not a list of numbers), and a record that
    claims success without timings or text is a failure of its own kind, so it never counts as a success."""
    out = dict(rec)
    for k in _FLOATS:
        if k in out:
            out[k] = _float(out[k])
    for k in _INTS:
        if k in out and k != "index":
            out[k] = _int(out[k])
    for k in ("shard", "target", "error", "error_detail"):
        if k in out and out[k] is not None and not isinstance(out[k], str):
            out[k] = str(out[k])
    if "usage_reported" in out:
        out["usage_reported"] = out["usage_reported"] is True
    itl = out.get("itl_s")
    if itl is not None:
        out["itl_s"] = (
            [x for x in (_float(g) for g in itl) if x is not None] if isinstance(itl, list) else None
        )
    if not out.get("error"):
        if out.get("e2e_s") is None:
            out["error"], out["error_detail"] = "malformed_response", "recorded as answered, without timings"
        elif out.get("ttft_s") is None:
            out["error"], out["error_detail"] = "empty_response", "recorded as answered, without text"
        else:
            out["error"] = ""
    return out


def read_jsonl(path: Path) -> list[dict]:
    """Read a records file. A torn last line (the process was killed mid-write) is dropped."""
    records: list[dict] = []
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise BurstpilotError(f"{path}: cannot read records: {exc}") from exc
    complete = lines[:-1]  # text after the last newline is a torn write (or empty)
    for lineno, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise BurstpilotError(f"{path}:{lineno}: not a JSON record: {exc}") from exc
        if not isinstance(rec, dict) or _int(rec.get("index")) is None:
            raise BurstpilotError(f"{path}:{lineno}: record has no integer 'index' field")
        rec["index"] = _int(rec["index"])
        records.append(clean_record(rec))
    return records


def read_records(out_dir: Path) -> list[dict]:
    """All records of one output directory (every worker's JSONL file), sorted by workload row."""
    files = sorted(out_dir.glob("requests*.jsonl"))
    if not files:
        raise BurstpilotError(f"{out_dir}: no {JSONL_NAME} (not a replay output directory?)")
    records = [r for f in files for r in read_jsonl(f)]
    records.sort(key=lambda r: (r["index"], r["sent_s"] if r.get("sent_s") is not None else 0.0))
    return records


def write_parquet(records: list[dict], path: Path) -> None:
    schema = pa.schema(list(FIELDS.items()))
    columns = {name: [r.get(name) for r in records] for name in FIELDS}
    table = pa.Table.from_pydict(columns, schema=schema)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def write_jsonl(records: list[dict], path: Path, replace_files: list[Path] = ()) -> None:
    """Write ``records`` as one JSONL file that takes the place of ``replace_files`` (all at once)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records), encoding="utf-8")
    for f in replace_files:
        f.unlink()
    tmp.replace(path)


def read_json(path: Path) -> dict:
    """A JSON object file we wrote (run.json, summary.json), or a clear error naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BurstpilotError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise BurstpilotError(f"{path}: not a JSON object")
    return data


def atomic_write_json(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
