"""Hostile input to the readers: every failure is a BurstpilotError naming the file (and line),
never a traceback; impossible numbers are bad rows like any other."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from burstpilot.cli import main
from burstpilot.errors import BurstpilotError
from burstpilot.traces import read_trace, write_burstgpt_csv
from burstpilot.traces.formats.base import MAX_TOKENS
from tests.traces.conftest import small_trace

V1 = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
GOOD = "".join(f"{i},ChatGPT,{100 + i},{10 + i},{110 + 2 * i},API log\n" for i in range(10))
AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
AZ_GOOD = "".join(f"2023-11-16 18:15:{10 + i:02d}.5,{i + 1},{i}\n" for i in range(5))


def _mc(**kw):
    rec = {"timestamp": 0, "input_length": 5, "output_length": 1} | kw
    return json.dumps(rec)


def _write(tmp_path, data, name="t.csv"):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("12,ChatGPT,99999999999999999999,3,4,API log\n", "'Request tokens' is out of range"),
        (f"12,ChatGPT,{2**63 - 1},3,4,API log\n", "'Request tokens' is out of range"),
        (f"12,ChatGPT,{MAX_TOKENS + 1},3,4,API log\n", "'Request tokens' is out of range"),
        ("inf,ChatGPT,1,3,4,API log\n", "'Timestamp' is not a number ('inf')"),
        ("1e300,ChatGPT,1,3,4,API log\n", "'Timestamp' is out of range ('1e300')"),
        ("1e400,ChatGPT,1,3,4,API log\n", "'Timestamp' is out of range ('1e400')"),
    ],
)
def test_impossible_numbers_are_bad_rows(tmp_path, bad_row, message):
    p = _write(tmp_path, V1 + GOOD[:40].rsplit("\n", 1)[0] + "\n" + bad_row + GOOD)
    line = GOOD[:40].count("\n") + 2
    with pytest.raises(BurstpilotError) as err:
        read_trace(p)
    assert f"{p}:{line}: {message}" in str(err.value)
    t = read_trace(p, skip_bad_rows=True)
    assert t.bad_lines == [line] and np.isfinite(t.arrival_s).all() and t.request_tokens.max() <= MAX_TOKENS


def test_huge_tokens_exit_2_without_traceback(tmp_path, capsys):
    p = _write(tmp_path, V1 + GOOD + "12,ChatGPT,99999999999999999999,3,4,API log\n")
    for extra in ([], ["--skip-bad-rows"]):
        rc = main(["trace", "convert", str(p), "--out", str(tmp_path / "o.csv"), *extra])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert rc == (0 if extra else 2)
    back = read_trace(tmp_path / "o.csv")
    assert (back.request_tokens + back.response_tokens >= 0).all()  # no wrapped totals


def test_gzip_by_content_truncated_and_fake(tmp_path, capsys):
    body = (V1 + GOOD * 2000).encode()
    nosuffix = _write(tmp_path, gzip.compress(body), "gz_without_suffix.csv")
    assert len(read_trace(nosuffix)) == 20000  # compression is read from the content, not the name
    whole = gzip.compress(body)
    trunc = _write(tmp_path, whole[: len(whole) // 2], "trunc.csv.gz")
    with pytest.raises(BurstpilotError, match=r"trunc.csv.gz: truncated or corrupt gzip data"):
        read_trace(trunc)
    fake = _write(tmp_path, body, "fake.csv.gz")
    with pytest.raises(BurstpilotError, match=r"fake.csv.gz: named .gz but is not gzip data"):
        read_trace(fake)
    for p in (trunc, fake):
        assert main(["trace", "info", str(p)]) == 2
        err = capsys.readouterr().err
        assert str(p) in err and "Traceback" not in err
    tiny = _write(tmp_path, whole[:15], "tiny.csv.gz")  # truncated inside the first line
    with pytest.raises(BurstpilotError, match="truncated or corrupt gzip data"):
        read_trace(tiny)


def test_non_utf8_bad_row_is_skippable(tmp_path, capsys):
    p = _write(tmp_path, V1.encode() + GOOD.encode() + b"12,ChatGPT,\xff\xfe,3,4,API log\n" + GOOD.encode())
    with pytest.raises(BurstpilotError, match=r":12: 'Request tokens' is not a number \('\ufffd\ufffd'\)"):
        read_trace(p)
    t = read_trace(p, skip_bad_rows=True)
    assert len(t) == 20 and t.bad_lines == [12]
    assert main(["trace", "info", str(p), "--skip-bad-rows"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    # a model name that is not UTF-8 is a label, not a bad row
    q = _write(tmp_path, V1.encode() + b"1,Chat\xffGPT,1,1,2,API log\n" + GOOD.encode(), "m.csv")
    assert "Chat\ufffdGPT" in read_trace(q).models


def test_azure_timestamp_errors_name_the_line(tmp_path):
    p = _write(tmp_path, AZ + AZ_GOOD + "2023-13-45 18:15:46.1,1,2\n" + AZ_GOOD)
    with pytest.raises(
        BurstpilotError, match=r":7: 'TIMESTAMP' is not a valid date-time \('2023-13-45 18:15:46.1'\)"
    ):
        read_trace(p)
    t = read_trace(p, skip_bad_rows=True)
    assert len(t) == 10 and t.bad_lines == [7]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2, 3]", "not a JSON object (a list)"),
        ('"text"', "not a JSON object (a str)"),
        (_mc(input_length=2**64), "'input_length' is out of range"),
        (_mc(output_length=3.5), "'output_length' is not a non-negative integer (3.5)"),
        (_mc(timestamp=1e300), "'timestamp' is out of range"),
        ('{"timestamp": Infinity, "input_length": 1, "output_length": 1}', "'timestamp' is out of range"),
        (_mc(input_length=-2), "'input_length' is negative"),
        ("[" * 100000, "not valid JSON"),
    ],
)
def test_mooncake_bad_lines(tmp_path, line, message):
    good = "\n".join(_mc(timestamp=i * 1000) for i in range(5))
    p = _write(tmp_path, good + "\n" + line + "\n" + good + "\n", "m.jsonl")
    with pytest.raises(BurstpilotError) as err:
        read_trace(p)
    assert f"m.jsonl:6: {message}" in str(err.value)
    t = read_trace(p, skip_bad_rows=True)
    assert len(t) == 10 and t.bad_lines == [6]


def test_round_trip_of_extreme_but_valid_values(tmp_path):
    t = small_trace(50)
    t.request_tokens[0] = MAX_TOKENS
    back = read_trace(write_burstgpt_csv(t, tmp_path / "x.csv"))
    assert back.equals(t)


# ---------------------------------------------------------------------------------------------
# a bounded fuzz: random bytes, and random rows behind each format's header, plain and gzipped

HEADERS = [
    V1,
    "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n",
    AZ,
    "",  # Mooncake (JSON lines) and random bytes
]
ALPHABET = np.frombuffer(b'0123456789,,,,..--eE+ \n\n"{}[]:abcnaifINF\xff\x00\t', np.uint8)


def _fuzz_inputs(rng, n):
    for i in range(n):
        kind = i % 5
        if kind == 0:
            data = rng.integers(0, 256, rng.integers(0, 400), dtype=np.uint8).tobytes()
        elif kind == 4:
            recs = []
            for _ in range(rng.integers(1, 8)):
                vals = [rng.choice([0, 1, -1, 2**63, 1.5, "x", None, 1e308, True]) for _ in range(3)]
                keys = ["timestamp", "input_length", "output_length"]
                recs.append(
                    json.dumps(
                        dict(
                            zip(
                                keys,
                                [v if v is None else (v.item() if hasattr(v, "item") else v) for v in vals],
                                strict=True,
                            )
                        )
                    )
                )
            data = ("\n".join(recs) + "\n").encode()
            if rng.random() < 0.3:
                data = data[: rng.integers(1, len(data))]
        else:
            body = ALPHABET[rng.integers(0, len(ALPHABET), rng.integers(0, 600))].tobytes()
            data = HEADERS[kind - 1].encode() + body
        if rng.random() < 0.4:
            data = gzip.compress(data)
            if rng.random() < 0.3:
                data = data[: rng.integers(1, len(data) + 1)]
        yield i, data


def test_fuzz_read_trace_raises_only_project_errors(tmp_path):
    """600 inputs (about 10 s): success or BurstpilotError, nothing else."""
    rng = np.random.default_rng(20261201)
    for i, data in _fuzz_inputs(rng, 600):
        p = _write(tmp_path, data, f"f{i}.csv" + (".gz" if i % 7 == 0 else ""))
        for skip in (False, True):
            try:
                t = read_trace(p, skip_bad_rows=skip)
            except BurstpilotError as exc:
                assert str(p) in str(exc) or "unknown" in str(exc)
                continue
            assert np.isfinite(t.arrival_s).all() and (t.request_tokens >= 0).all()
            assert (np.diff(t.arrival_s) >= 0).all()
