"""Streaming building blocks of the analysis: each consumes time-ordered chunks and keeps only what
the summary needs, so memory is bounded by the trace's span (per-second, per-minute and per-window
arrays) and by fixed-size samples, never by its row count.

- ``IntHist``: exact counts of non-negative integers (token lengths, tick gaps).
- ``BottomK``: a deterministic sample of rows: those whose hashed row index is among the k smallest
  (the same rows whatever the chunking), for rank correlation and binned medians.
- ``BurstDetector``: 1-second counts against a centered moving-average baseline, resolved behind a
  moving frontier half a window behind the newest arrival.
- ``SessionStats``: turns per session and the gaps between turns.
"""

from __future__ import annotations

import numpy as np

DENSE = 1 << 16  # integers below are counted in a dense array, larger ones sparsely


class IntHist:
    """Exact histogram of non-negative int64 values."""

    def __init__(self):
        self.dense = np.zeros(0, np.int64)
        self.big_v = np.zeros(0, np.int64)
        self.big_c = np.zeros(0, np.int64)

    def add(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        if x.max() < DENSE:  # the common case (token lengths, tick gaps): no split
            c = np.bincount(x)
            if len(c) > len(self.dense):
                self.dense = np.concatenate([self.dense, np.zeros(len(c) - len(self.dense), np.int64)])
            self.dense[: len(c)] += c
            return
        small = x < DENSE
        xs = x[small]
        if len(xs):
            c = np.bincount(xs)
            if len(c) > len(self.dense):
                self.dense = np.concatenate([self.dense, np.zeros(len(c) - len(self.dense), np.int64)])
            self.dense[: len(c)] += c
        if not small.all():
            v, c = np.unique(x[~small], return_counts=True)
            allv = np.concatenate([self.big_v, v])
            allc = np.concatenate([self.big_c, c])
            self.big_v, inv = np.unique(allv, return_inverse=True)
            self.big_c = np.bincount(inv, allc).astype(np.int64)

    def values_counts(self) -> tuple[np.ndarray, np.ndarray]:
        v = np.flatnonzero(self.dense)
        return np.concatenate([v, self.big_v]), np.concatenate([self.dense[v], self.big_c])


def hist_quantiles(values: np.ndarray, counts: np.ndarray, probs) -> np.ndarray:
    """Quantiles of the data a histogram describes (linear interpolation, as numpy's default)."""
    n = int(counts.sum())
    cum = np.cumsum(counts)
    pos = np.asarray(probs, np.float64) * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    vlo = values[np.searchsorted(cum, lo, side="right")].astype(np.float64)
    vhi = values[np.searchsorted(cum, hi, side="right")].astype(np.float64)
    return vlo + (vhi - vlo) * (pos - lo)


def _splitmix(x: np.ndarray) -> np.ndarray:
    # in place on one copy (the same bits as the expression form, without a temporary per step)
    z = x.astype(np.uint64)
    t = np.empty_like(z)
    z += np.uint64(0x9E3779B97F4A7C15)
    for shift, mul in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        np.right_shift(z, np.uint64(shift), out=t)
        z ^= t
        z *= np.uint64(mul)
    np.right_shift(z, np.uint64(31), out=t)
    z ^= t
    return z


class BottomK:
    """The rows whose hashed index (in the stream) is among the k smallest: a uniform random
    sample of at most k rows that does not depend on how the stream is chunked."""

    def __init__(self, k: int, salt: int = 0):
        self.k, self.salt = k, np.uint64(salt)
        self.keys = np.zeros(0, np.uint64)
        self.cols: list[np.ndarray] | None = None
        self.threshold = None
        self.seen = 0

    def add(self, *cols: np.ndarray) -> None:
        n = len(cols[0])
        if n == 0:
            return
        with np.errstate(over="ignore"):
            keys = _splitmix(np.arange(self.seen, self.seen + n, dtype=np.uint64) ^ self.salt)
        self.seen += n
        if self.cols is not None and self.threshold is not None:
            # only rows below the k-th smallest key so far can enter the sample
            keep = keys < self.threshold
            keys, cols = keys[keep], [c[keep] for c in cols]
        if self.cols is None:
            self.keys, self.cols = keys, [np.asarray(c) for c in cols]
        else:
            self.keys = np.concatenate([self.keys, keys])
            self.cols = [np.concatenate([a, b]) for a, b in zip(self.cols, cols, strict=True)]
        if len(self.keys) > 2 * self.k:
            self._trim()
        if len(self.keys) >= self.k and self.threshold is None:
            self._trim()

    def _trim(self) -> None:
        if len(self.keys) > self.k:
            keep = np.argpartition(self.keys, self.k - 1)[: self.k]
            self.keys = self.keys[keep]
            self.cols = [c[keep] for c in self.cols]
        if len(self.keys) >= self.k:
            self.threshold = self.keys.max()

    def sample(self) -> list[np.ndarray]:
        """The (at most) k rows with the smallest keys, in key order (a prefix of it is itself
        a uniform sample, the same whatever the chunking)."""
        if self.cols is None:
            return []
        self._trim()
        order = np.argsort(self.keys, kind="stable")
        return [c[order] for c in self.cols]


class BurstDetector:
    """Burst episodes: 1-second counts at or above max(4 b, b + 5 sqrt(b) + 5), b the centered
    moving average over the window; hot seconds closer than 5 s form one episode. Time-ordered
    chunks; a second is decided once the stream is half a window past it."""

    MERGE_S = 5

    def __init__(self, t0: float, t1: float, window_s: float):
        self.t0 = t0
        self.nb = int(np.floor(t1 - t0)) + 1
        self.half = max(int(window_s), 1) // 2
        self.base = 0  # absolute second of cnt[0]
        self.cnt = np.zeros(0, np.int64)
        self.fail = np.zeros(0, np.int64)
        self.resolved = 0
        self.last_hot = -(10**12)
        self.hot: list[np.ndarray] = []  # rows of (second, count, failures, is_hot)
        self.rows = 0

    def add(self, a: np.ndarray, failed: np.ndarray, sec: np.ndarray | None = None) -> None:
        """A time-ordered chunk (``sec``: whole seconds since t0, when the caller has them)."""
        if len(a) == 0:
            return
        self.rows += len(a)
        sec = (a - self.t0).astype(np.int64) if sec is None else sec
        sec = np.minimum(sec, self.nb - 1)
        need = int(sec[-1]) + 1 - self.base
        if need > len(self.cnt):
            grow = need - len(self.cnt)
            self.cnt = np.concatenate([self.cnt, np.zeros(grow, np.int64)])
            self.fail = np.concatenate([self.fail, np.zeros(grow, np.int64)])
        rel = sec - self.base
        lo = int(rel.min())  # only the seconds the chunk covers
        c = np.bincount(rel - lo)
        self.cnt[lo : lo + len(c)] += c
        rf = rel[np.asarray(failed, bool)]
        if len(rf):
            lf = int(rf.min())
            c = np.bincount(rf - lf)
            self.fail[lf : lf + len(c)] += c
        # seconds before the newest one are complete; a second needs its window's right half
        self._resolve(int(sec[-1]) - self.half - 1)

    def _resolve(self, upto: int) -> None:
        upto = min(upto, self.nb - 1)
        s0 = self.resolved
        if upto < s0:
            return
        top = min(upto + self.half + 1, self.nb) - self.base
        if top > len(self.cnt):  # the end of the trace: the seconds past the last arrival are empty
            grow = top - len(self.cnt)
            self.cnt = np.concatenate([self.cnt, np.zeros(grow, np.int64)])
            self.fail = np.concatenate([self.fail, np.zeros(grow, np.int64)])
        c = self.cnt[s0 - self.base : upto + 1 - self.base]
        # the threshold is never below 5: only seconds with 5 or more arrivals need a baseline
        cand = np.flatnonzero(c >= 5) + s0
        hot = cand[:0]
        if len(cand):
            cum = np.concatenate([[0], np.cumsum(self.cnt)])
            lo = np.maximum(cand - self.half, 0)
            hi = np.minimum(cand + self.half + 1, self.nb)
            b = (cum[hi - self.base] - cum[lo - self.base]) / (hi - lo)
            cc = self.cnt[cand - self.base]
            hot = cand[cc >= np.maximum(4 * b, b + 5 * np.sqrt(b) + 5)]
        # seconds within MERGE_S after a hot second (they may lie inside an episode)
        heads = (
            np.concatenate([np.arange(self.last_hot, self.last_hot + 1), hot]) if self.last_hot >= 0 else hot
        )
        if len(heads):
            near = np.unique((heads[:, None] + np.arange(self.MERGE_S + 1)[None, :]).ravel())
            near = near[(near >= s0) & (near <= upto)]
            cn = self.cnt[near - self.base]
            near = near[cn > 0]
            if len(near):
                is_hot = np.isin(near, hot)
                self.hot.append(
                    np.stack([near, self.cnt[near - self.base], self.fail[near - self.base], is_hot], axis=1)
                )
        if len(hot):
            self.last_hot = int(hot[-1])
        self.resolved = upto + 1
        drop = self.resolved - self.half - self.base
        if drop > 0:
            self.cnt, self.fail = self.cnt[drop:], self.fail[drop:]
            self.base += drop

    def finish(self, total_failed: int, max_listed: int):
        """(episodes of the largest peaks, stats, episodes as (start, end) seconds)."""
        self._resolve(self.nb - 1)
        rows = np.concatenate(self.hot) if self.hot else np.zeros((0, 4), np.int64)
        hot = rows[rows[:, 3] == 1]
        stats = {"count": 0, "fraction_of_requests": 0.0}
        if len(hot) == 0 or self.nb < 3 or self.rows < 2:
            return [], stats | {"inside": (0, 0)}, np.zeros((0, 2), np.int64)
        where = hot[:, 0]
        split = np.flatnonzero(np.diff(where) > self.MERGE_S)
        heads = np.concatenate([[0], split + 1])
        starts = where[heads]
        ends = where[np.concatenate([split, [len(where) - 1]])]
        peaks = np.maximum.reduceat(hot[:, 1], heads).astype(float)
        ep = np.searchsorted(starts, rows[:, 0], side="right") - 1
        inside = (ep >= 0) & (rows[:, 0] <= ends[np.maximum(ep, 0)])
        reqs = np.bincount(ep[inside], rows[inside, 1], minlength=len(starts)).astype(np.int64)
        order = np.argsort(-peaks, kind="stable")[:max_listed]
        order = order[np.argsort(starts[order])]
        eps = [
            {
                "start_s": float(self.t0 + starts[i]),
                "duration_s": float(ends[i] - starts[i] + 1),
                "peak_rps": float(peaks[i]),
                "requests": int(reqs[i]),
            }
            for i in order
        ]
        inside_n, inside_f = int(rows[inside, 1].sum()), int(rows[inside, 2].sum())
        stats = {"count": int(len(starts)), "fraction_of_requests": float(reqs.sum() / self.rows)}
        return eps, stats | {"inside": (inside_n, inside_f)}, np.stack([starts, ends], axis=1)


class Grown:
    """A dense array of per-bin sums that grows with the stream (bins of the trace's span)."""

    def __init__(self, dtype=np.int64):
        self.a = np.zeros(0, dtype)

    def add(self, idx: np.ndarray, weights=None, where: np.ndarray | None = None) -> None:
        """Add ``weights`` (1 by default) at bins ``idx``; with ``where`` (a boolean mask) count only
        those rows, the array still growing to cover every bin in ``idx`` (as zero weights would)."""
        if len(idx) == 0:
            return
        # count only the bins the chunk covers (a time-ordered chunk spans a few of the span's bins)
        lo, top = int(idx.min()), int(idx.max()) + 1
        if top > len(self.a):
            self.a = np.concatenate([self.a, np.zeros(top - len(self.a), self.a.dtype)])
        if where is not None:
            idx = idx[where]
            if len(idx) == 0:
                return
            lo = int(idx.min())
        c = np.bincount(idx - lo if lo else idx, weights)
        self.a[lo : lo + len(c)] += c.astype(self.a.dtype)


class SessionStats:
    """Turns per session and gaps between consecutive turns, over time-ordered chunks."""

    def __init__(self, sample: int):
        self.ids = np.zeros(0, np.int64)
        self.turns = np.zeros(0, np.int64)
        self.last = np.zeros(0, np.float64)
        self.gaps = BottomK(sample, salt=7)
        self.gap_n = 0
        self.gap_sum = 0.0
        self.gap_max = 0.0
        self.rows = 0

    def add(self, sid: np.ndarray, t: np.ndarray) -> None:
        if len(sid) == 0:
            return
        self.rows += len(sid)
        order = np.argsort(sid, kind="stable")  # rows are in time order already
        s, tt = sid[order], t[order]
        same = s[1:] == s[:-1]
        heads = np.concatenate([[0], np.flatnonzero(~same) + 1])
        uniq = s[heads]
        turns = np.diff(np.append(heads, len(s)))
        first_t = tt[heads]
        last_t = tt[np.append(heads[1:], len(s)) - 1]
        gaps = [np.diff(tt)[same]]
        pos = np.searchsorted(self.ids, uniq)
        if len(self.ids):
            known = (pos < len(self.ids)) & (self.ids[np.minimum(pos, len(self.ids) - 1)] == uniq)
        else:
            known = np.zeros(len(uniq), bool)
        if known.any():
            kp = pos[known]
            gaps.append(first_t[known] - self.last[kp])
            self.turns[kp] += turns[known]
            self.last[kp] = last_t[known]
        new = ~known
        if new.any():
            ins = pos[new]
            self.ids = np.insert(self.ids, ins, uniq[new])
            self.turns = np.insert(self.turns, ins, turns[new])
            self.last = np.insert(self.last, ins, last_t[new])
        g = np.concatenate(gaps)
        if len(g):
            self.gap_n += len(g)
            self.gap_sum += float(g.sum())
            self.gap_max = max(self.gap_max, float(g.max()))
            self.gaps.add(g)
