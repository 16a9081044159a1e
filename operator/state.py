"""The decision core's state between ticks and across restarts: one ConfigMap per ServingPool, written as deltas.

The state (``burstpilot.policy``'s, the forecaster's calibration ring inside) is 30 to 230 KiB of JSON, too large
to rewrite into the ServingPool, or even into a ConfigMap, every tick. It lives in the ConfigMap
``<pool>-burstpilot-state`` of the pool's namespace, owned by the ServingPool (the garbage collector deletes it
with the pool), split so that a tick rewrites only what changed:

- ``policyState``: the document (format 2) with every ring's rows replaced by a placeholder
  ``{"$chunks": C, "n": rows}``: the forecaster's parameters and level, the stabilization window, the last good
  observation, the replicas the operator last set (about 1.5 to 4 KiB);
- ``ring.<path>.<k>``: rows ``k*C .. k*C+C-1`` (absolute push index) of the ring at ``<path>``, JSON. A ring row
  never changes once pushed, so a tick adds to one chunk, and a chunk whose rows have all left the ring is
  deleted (merge patch, ``null``).

A ring is what ``burstpilot.forecasting``'s ring buffer serializes to, ``{"size", "count", "rows"}``; a document
holding none is written whole, so correctness never depends on that shape, only the bytes written do. Every
tick that reached a decision writes its delta (a JSON merge patch of the ConfigMap's data only), so a restarted
operator resumes exactly where the last written tick left off. A document written by earlier versions (format
1: ``policyState`` holding the whole ``{"forecasting", "state"}`` JSON) is read as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

from burstpilot.operator.kube import GROUP, VERSION, Kube

log = logging.getLogger(__name__)

STATE_KEY = "policyState"
RING_PREFIX = "ring."
FORMAT = 2
CHUNK_ROWS = 4
SUFFIX = "-burstpilot-state"
POOL_LABEL = "burstpilot.io/servingpool"
LABELS = {"app.kubernetes.io/managed-by": "burstpilot", "app.kubernetes.io/component": "policy-state"}
MAX_NAME = 253  # a ConfigMap's name is a DNS subdomain
MAX_LABEL_VALUE = 63
_PATH_PART = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class StateFormatError(ValueError):
    """A saved state that cannot be put back together (a missing chunk, not JSON)."""


def configmap_name(pool: str) -> str:
    """``<pool>-burstpilot-state``; a pool name too long for that is cut and told apart by a hash."""
    name = pool + SUFFIX
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(pool.encode()).hexdigest()[:10]
    head = pool[: MAX_NAME - len(SUFFIX) - len(digest) - 1].rstrip(".-")
    return f"{head}-{digest}{SUFFIX}"


def labels(pool: str) -> dict[str, str]:
    """The fixed labels, and the pool's name where it fits a label value (it always is in the annotation)."""
    out = dict(LABELS)
    if len(pool) <= MAX_LABEL_VALUE:
        out[POOL_LABEL] = pool
    return out


def _is_ring(obj: Any) -> bool:
    if not isinstance(obj, dict) or set(obj) != {"size", "count", "rows"}:
        return False
    rows, count = obj["rows"], obj["count"]
    return isinstance(rows, list) and isinstance(count, int) and count >= len(rows)


def _rings(obj: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """The rings inside a JSON document, with their paths (only paths that can name a ConfigMap key)."""
    if _is_ring(obj):
        return [(path, obj)]
    out = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, str) and _PATH_PART.match(key):
                out.extend(_rings(value, (*path, key)))
    return out


def _replace_at(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with ``value`` at ``path``, copying only the dictionaries along the path."""
    out = dict(doc)
    if len(path) == 1:
        out[path[0]] = value
    else:
        out[path[0]] = _replace_at(doc[path[0]], path[1:], value)
    return out


def _get_at(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def encode(document: dict[str, Any], previous: dict[str, str] | None = None) -> dict[str, str]:
    """The ConfigMap data of ``document``. Chunks equal to those in ``previous`` keep their text (no write)."""
    previous = previous or {}
    data: dict[str, str] = {}
    head = document
    for path, ring in _rings(document):
        rows, count = ring["rows"], ring["count"]
        start = count - len(rows)
        prefix = RING_PREFIX + ".".join(path) + "."
        for k in range(start // CHUNK_ROWS, (count - 1) // CHUNK_ROWS + 1 if rows else 0):
            lo, hi = max(start, k * CHUNK_ROWS), min(count, (k + 1) * CHUNK_ROWS)
            wanted = rows[lo - start : hi - start]
            key = f"{prefix}{k:010d}"
            old = previous.get(key)
            if old is not None and _covers(old, wanted, lo - k * CHUNK_ROWS):
                data[key] = old
            else:
                data[key] = _dump(wanted if lo == k * CHUNK_ROWS else [None] * (lo - k * CHUNK_ROWS) + wanted)
        placeholder = {"size": ring["size"], "count": count, "rows": {"$chunks": CHUNK_ROWS, "n": len(rows)}}
        head = _replace_at(head, path, placeholder)
    data[STATE_KEY] = _dump({"format": FORMAT, **head})
    return data


def _covers(text: str, wanted: list[Any], offset: int) -> bool:
    try:
        rows = json.loads(text)
    except ValueError:
        return False
    return isinstance(rows, list) and rows[offset : offset + len(wanted)] == wanted


def decode(data: dict[str, str]) -> dict[str, Any] | None:
    """The document held in a ConfigMap's data; None when it holds none. Raises StateFormatError."""
    raw = data.get(STATE_KEY)
    if raw is None:
        return None
    try:
        head = json.loads(raw)
    except ValueError as exc:
        raise StateFormatError(f"{STATE_KEY} is not JSON: {exc}") from None
    if not isinstance(head, dict):
        raise StateFormatError(f"{STATE_KEY} is not a JSON object")
    if head.get("format") != FORMAT:
        return head  # format 1: the whole document in one key
    doc = {k: v for k, v in head.items() if k != "format"}
    for path, placeholder in _placeholders(doc):
        size, count = placeholder["size"], int(placeholder["count"])
        n = int(placeholder["rows"]["n"])
        chunk = int(placeholder["rows"]["$chunks"])
        start = count - n
        prefix = RING_PREFIX + ".".join(path) + "."
        rows: list[Any] = []
        for k in range(start // chunk, (count - 1) // chunk + 1 if n else 0):
            text = data.get(f"{prefix}{k:010d}")
            if text is None:
                raise StateFormatError(f"chunk {prefix}{k:010d} is missing")
            try:
                part = json.loads(text)
            except ValueError as exc:
                raise StateFormatError(f"chunk {prefix}{k:010d} is not JSON: {exc}") from None
            lo, hi = max(start, k * chunk), min(count, (k + 1) * chunk)
            piece = part[lo - k * chunk : hi - k * chunk] if isinstance(part, list) else []
            if len(piece) != hi - lo:
                raise StateFormatError(f"chunk {prefix}{k:010d} holds {len(part)} rows, not {hi - k * chunk}")
            rows.extend(piece)
        doc = _replace_at(doc, path, {"size": size, "count": count, "rows": rows})
    return doc


def _placeholders(obj: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    if isinstance(obj, dict):
        rows = obj.get("rows")
        if set(obj) == {"size", "count", "rows"} and isinstance(rows, dict) and "$chunks" in rows:
            return [(path, obj)]
        out = []
        for key, value in obj.items():
            out.extend(_placeholders(value, (*path, key)))
        return out
    return []


class StateStore:
    """Reads and writes one pool's state ConfigMap; remembers what it holds, to write only what changed."""

    def __init__(self, kube: Kube, namespace: str, pool: str) -> None:
        self.kube, self.namespace, self.pool = kube, namespace, pool
        self.name = configmap_name(pool)
        self.saved: dict[str, str] | None = None  # the ConfigMap's data as far as this store knows
        self.exists = False
        self.owned = False  # whether the ConfigMap's owner is this ServingPool (else the next write takes it)
        self.bytes_written = 0  # request bodies sent, for the operator's metrics and the scale benchmark

    def load(self, owner_uid: str) -> dict[str, Any] | None:
        """The saved document, or None when there is none for this pool. A ConfigMap owned by another
        ServingPool of the same name (deleted, not yet collected) does not count. Raises StateError; a saved
        state that cannot be read back counts as none (logged), and is overwritten by the next save."""
        cm = self.kube.get_configmap(self.namespace, self.name)
        if cm is None:
            return None
        self.exists = True
        data = dict(cm.get("data") or {})
        owners = (cm.get("metadata") or {}).get("ownerReferences") or []
        self.owned = any(o.get("uid") == owner_uid for o in owners)
        if not self.owned:
            log.warning(
                "%s/%s: ConfigMap %s belongs to an earlier ServingPool of that name; starting afresh",
                self.namespace,
                self.pool,
                self.name,
            )
            self.saved = {k: "" for k in data}  # every key is rewritten or deleted by the next save
            return None
        self.saved = data
        try:
            return decode(data)
        except StateFormatError as exc:
            log.warning(
                "%s/%s: unreadable saved policy state (%s); starting afresh", self.namespace, self.pool, exc
            )
            self.saved = {k: "" for k in data}
            return None

    def save(self, document: dict[str, Any], owner_uid: str) -> bool:
        """Write what changed of ``document``. Returns whether it wrote. Raises StateError."""
        data = encode(document, self.saved)
        if data == self.saved:
            return False
        metadata = {
            "name": self.name,
            "labels": labels(self.pool),
            "annotations": {POOL_LABEL: self.pool},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "ServingPool",
                    "name": self.pool,
                    "uid": owner_uid,
                    "controller": True,
                }
            ],
        }
        full = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
        written = False
        if self.exists:
            delta: dict[str, Any] = {k: v for k, v in data.items() if (self.saved or {}).get(k) != v}
            delta.update({k: None for k in self.saved or {} if k not in data})
            patch: dict[str, Any] = {"data": delta}
            if not self.owned:
                patch["metadata"] = metadata
            body = _dump(patch)
            written = self.kube.patch_configmap(self.namespace, self.name, patch)
            if written:
                self.bytes_written += len(body)
        if not written:
            written = self.kube.create_configmap(self.namespace, full)
            if written:
                self.bytes_written += len(_dump(full))
            else:  # created meanwhile (by an earlier run of this operator): take it over whole
                self.saved, self.exists, self.owned = None, True, False
                cm = self.kube.get_configmap(self.namespace, self.name) or {}
                stale = {k: None for k in (cm.get("data") or {}) if k not in data}
                patch = {"metadata": metadata, "data": {**data, **stale}}
                written = self.kube.patch_configmap(self.namespace, self.name, patch)
                if written:
                    self.bytes_written += len(_dump(patch))
        if written:
            self.exists, self.owned, self.saved = True, True, data
        return written
