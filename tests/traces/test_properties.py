"""Property tests of every reader (hypothesis, fixed budget: derandomized, N examples each).

Two properties per format: what a valid file holds is read back exactly, and whatever a file
holds, read_trace returns a valid, sorted Trace or raises BurstpilotError, nothing else.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from burstpilot.errors import BurstpilotError
from burstpilot.traces import ColumnMap, make_trace, read_trace, write_burstgpt_csv
from burstpilot.traces.formats.base import MAX_ABS_TIME_S, MAX_TOKENS
from burstpilot.traces.formats.parquet import write_parquet

N = 30  # examples per property (derandomized): the module runs in about 20 s on a quiet 2-core machine
FIXED = settings(
    max_examples=N, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

tokens = st.integers(0, MAX_TOKENS)
times = st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False)
labels = st.sampled_from(["ChatGPT", "GPT-4", "模型", "a,b", 'q"uote', ""])
rows = st.lists(st.tuples(times, tokens, tokens, labels, labels), min_size=1, max_size=40)
junk_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
junk_line = st.text(alphabet='0123456789,.-eE+ \t"abnifINF:', max_size=60)


def _tmp(data: bytes, name: str) -> tuple[TemporaryDirectory, Path]:
    d = TemporaryDirectory()
    p = Path(d.name) / name
    p.write_bytes(data)
    return d, p


def _valid_or_project_error(path: Path, **kw) -> None:
    for skip in (False, True):
        try:
            t = read_trace(path, skip_bad_rows=skip, **kw)
        except BurstpilotError as exc:
            assert str(exc)
            continue
        assert len(t) > 0 and np.isfinite(t.arrival_s).all()
        assert (np.diff(t.arrival_s) >= 0).all()
        assert (t.request_tokens >= 0).all() and (t.request_tokens <= MAX_TOKENS).all()
        assert (t.response_tokens >= 0).all() and (np.abs(t.arrival_s) <= 2 * MAX_ABS_TIME_S).all()


@FIXED
@given(rows, st.booleans())
def test_burstgpt_round_trip(rs, gz):
    t = make_trace(
        [r[0] for r in rs],
        [r[1] for r in rs],
        [r[2] for r in rs],
        model=[r[3] for r in rs],
        log_type=[r[4] for r in rs],
    )
    with TemporaryDirectory() as d:
        back = read_trace(write_burstgpt_csv(t, Path(d) / ("t.csv.gz" if gz else "t.csv")))
    assert back.equals(t)


@FIXED
@given(rows)
def test_parquet_round_trip(rs):
    t = make_trace([r[0] for r in rs], [r[1] for r in rs], [r[2] for r in rs], model=[r[3] for r in rs])
    with TemporaryDirectory() as d:
        write_parquet([t], Path(d) / "t.parquet")
        back = read_trace(Path(d) / "t.parquet")
    assert back.equals(t)


@FIXED
@given(st.lists(st.tuples(st.integers(0, 10**12), tokens, tokens), min_size=1, max_size=40))
def test_mooncake_round_trip(recs):
    text = "\n".join(json.dumps({"timestamp": a, "input_length": b, "output_length": c}) for a, b, c in recs)
    d, p = _tmp((text + "\n").encode(), "m.jsonl")
    with d:
        t = read_trace(p)
    order = np.argsort([r[0] for r in recs], kind="stable")
    assert t.request_tokens.tolist() == [recs[i][1] for i in order]
    assert np.allclose(t.arrival_s, np.sort([r[0] for r in recs]) / 1000.0)


HEADERS = {
    "burstgpt-v1": "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n",
    "burstgpt-v2": "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n",
    "azure": "TIMESTAMP,ContextTokens,GeneratedTokens\n",
    "generic": "t,in,out,m\n",
}


@FIXED
@given(st.sampled_from(sorted(HEADERS)), st.lists(junk_line, max_size=12), st.booleans())
def test_csv_formats_with_random_rows(fmt, lines, gz):
    data = (HEADERS[fmt] + "\n".join(lines) + "\n").encode()
    d, p = _tmp(gzip.compress(data) if gz else data, "r.csv")
    kw = {"columns": ColumnMap(time="t", request="in", response="out", model="m")} if fmt == "generic" else {}
    with d:
        _valid_or_project_error(p, **kw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
mooncake_like = st.fixed_dictionaries(
    {"timestamp": json_values, "input_length": json_values, "output_length": json_values}
)


@FIXED
@given(st.lists(mooncake_like | json_values, min_size=1, max_size=8), st.booleans())
def test_mooncake_with_random_values(recs, gz):
    first = json.dumps({"timestamp": 0, "input_length": 1, "output_length": 1})
    text = first + "\n" + "\n".join(json.dumps(r) for r in recs) + "\n"
    d, p = _tmp(gzip.compress(text.encode()) if gz else text.encode(), "m.jsonl")
    with d:
        _valid_or_project_error(p)


@FIXED
@given(
    st.binary(max_size=400) | junk_text.map(str.encode), st.sampled_from(["x.csv", "x.csv.gz", "x.parquet"])
)
def test_random_bytes(data, name):
    d, p = _tmp(data, name)
    with d:
        _valid_or_project_error(p)
