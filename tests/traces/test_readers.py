"""Every format, auto-detection by header, .gz, filters, and the BurstGPT round trip."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.traces import ColumnMap, detect_format, read_trace, write_burstgpt_csv
from tests.traces.conftest import small_trace

V1 = (
    "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    "5,ChatGPT,472,18,490,Conversation log\n"
    "45,ChatGPT,1087,230,1317,Conversation log\n"
    "118,GPT-4,417,276,693,Conversation log\n"
    "120,ChatGPT,300,0,300,API log\n"
)
V2 = (
    "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    "0.0,17,3.5,ChatGPT,100,20,120,Conversation log\n"
    "1.0,,1.25,GPT-4,200,0,200,API log\n"
    "1.0,17,,ChatGPT,50,60,110,Conversation log\n"
)


def test_burstgpt_v1(tmp_path):
    p = tmp_path / "b1.csv"
    p.write_text(V1)
    t = read_trace(p)
    assert t.format == "burstgpt-v1"
    assert t.arrival_s.tolist() == [5, 45, 118, 120]  # seconds from 0:00 of day 0, kept as is
    assert t.request_tokens.tolist() == [472, 1087, 417, 300]
    assert t.response_tokens.tolist() == [18, 230, 276, 0]
    assert t.failed.tolist() == [False, False, False, True]
    assert t.model.tolist() == ["ChatGPT", "ChatGPT", "GPT-4", "ChatGPT"]
    assert t.log_type.tolist() == ["Conversation log"] * 3 + ["API log"]
    assert t.model_codes.dtype == np.int32 and len(t.models) == 2  # dictionary-encoded
    assert not t.has_sessions and np.isnan(t.elapsed_s).all()
    assert t.duration_s == 115 and t.clock_offset_s == 0.0


def test_burstgpt_v2_sessions_and_elapsed(tmp_path):
    p = tmp_path / "b2.csv"
    p.write_text(V2)
    t = read_trace(p)
    assert t.format == "burstgpt-v2" and t.has_sessions
    assert t.session_id.tolist() == [17, -1, 17]
    assert t.elapsed_s[0] == 3.5 and np.isnan(t.elapsed_s[2])
    assert t.failed.tolist() == [False, True, False]


def test_burstgpt_string_session_ids_round_trip(tmp_path):
    p = tmp_path / "b2s.csv"
    p.write_text(V2.replace(",17,", ",conv-a,", 1).replace("1.0,17,", "1.0,conv-b,"))
    t = read_trace(p)
    assert t.session_id[0] != t.session_id[2] and t.session_id[1] == -1
    out = write_burstgpt_csv(t, tmp_path / "again.csv")
    assert "conv-a" in out.read_text() and "conv-b" in out.read_text()
    assert read_trace(out).equals(t)


def test_azure(tmp_path):
    p = tmp_path / "az.csv"
    p.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:16:00.0000000,10,0\n"
    )
    t = read_trace(p)
    assert t.format == "azure"
    np.testing.assert_allclose(t.arrival_s, [0.0, 4.314579, 13.31941])
    assert t.origin.isoformat() == "2023-11-16T18:15:46.680590"
    assert t.clock_offset_s == pytest.approx(18 * 3600 + 15 * 60 + 46.68059)
    assert not t.failed.any()  # Azure has no failure marker


def test_azure_2024_with_zone(tmp_path):
    p = tmp_path / "az24.csv"
    p.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:00.0099680+00:00,1,2\n"
        "2024-05-10 00:00:01.5099680+00:00,3,4\n"
    )
    t = read_trace(p)
    assert t.arrival_s.tolist() == [0.0, 1.5]
    assert t.origin.utcoffset().total_seconds() == 0


def test_mooncake(tmp_path):
    p = tmp_path / "mc.jsonl"
    rows = [
        {"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [1, 2]},
        {"timestamp": 1500, "input_length": 100, "output_length": 7, "hash_ids": []},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    t = read_trace(p)
    assert t.format == "mooncake"
    assert t.arrival_s.tolist() == [0.0, 1.5]  # milliseconds -> seconds
    assert t.request_tokens.tolist() == [6955, 100] and t.response_tokens.tolist() == [52, 7]


@pytest.mark.parametrize(
    ("unit", "values", "expected"),
    [
        ("s", ["1.5", "3"], [1.5, 3.0]),
        ("ms", ["1500", "3000"], [1.5, 3.0]),
        ("us", ["10", "20"], [1e-5, 2e-5]),
    ],
)
def test_generic_csv_units(tmp_path, unit, values, expected):
    p = tmp_path / "g.csv"
    p.write_text(f"t,in,out,m\n{values[0]},10,5,a\n{values[1]},20,6,b\n")
    cm = ColumnMap(time="t", request="in", response="out", model="m", time_unit=unit)
    assert detect_format(p, columns=cm) == "csv"
    t = read_trace(p, columns=cm)
    np.testing.assert_allclose(t.arrival_s, expected)
    assert t.model.tolist() == ["a", "b"] and t.format == "csv"


def test_generic_csv_datetime_and_failed_column(tmp_path):
    p = tmp_path / "g.csv"
    p.write_text("when,p,g,err\n2024-01-01T10:00:00,1,2,0\n2024-01-01T10:00:02.5,3,4,1\n")
    cm = ColumnMap(time="when", request="p", response="g", failed="err", time_unit="datetime")
    t = read_trace(p, fmt="csv", columns=cm)
    assert t.arrival_s.tolist() == [0.0, 2.5] and t.failed.tolist() == [False, True]
    assert t.clock_offset_s == 36000


def test_gzip_and_autodetect(tmp_path):
    p = tmp_path / "b1.csv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(V1)
    assert detect_format(p) == "burstgpt"
    assert read_trace(p).request_tokens.tolist() == [472, 1087, 417, 300]


def test_filters(tmp_path):
    p = tmp_path / "b1.csv"
    p.write_text(V1)
    assert len(read_trace(p, model="GPT-4")) == 1
    assert len(read_trace(p, model=["gpt-4", "chatgpt"])) == 4  # names match case-insensitively
    assert read_trace(p, log_type="API log").arrival_s.tolist() == [120]
    assert read_trace(p, include_failed=False).failed.sum() == 0
    assert read_trace(p, start_s=45, end_s=120).arrival_s.tolist() == [45, 118]
    with pytest.raises(BurstpilotError, match="no model 'Claude'.*ChatGPT, GPT-4"):
        read_trace(p, model="Claude")


def test_round_trip_identical(tmp_path):
    t = small_trace(500)
    for name in ("rt.csv", "rt.csv.gz"):
        back = read_trace(write_burstgpt_csv(t, tmp_path / name))
        assert back.equals(t)
        np.testing.assert_array_equal(back.session_id >= 0, t.session_id >= 0)


def test_round_trip_subsecond_floats(tmp_path):
    t = small_trace(50)
    t = t.shifted(0.0)
    t.arrival_s[:] = np.cumsum(np.random.default_rng(3).exponential(0.37, len(t)))
    back = read_trace(write_burstgpt_csv(t, tmp_path / "f.csv"))
    np.testing.assert_array_equal(back.arrival_s, t.arrival_s)  # bit-identical floats


def test_subset_keeps_times(tmp_path):
    t = small_trace(100)
    s = t.subset(t.arrival_s > t.arrival_s[50])
    assert s.arrival_s[0] > t.arrival_s[50] and len(s) < len(t)
    assert s.subset(np.arange(3)).arrival_s.tolist() == s.arrival_s[:3].tolist()


def test_string_session_ids_stay_on_the_fast_path(tmp_path, monkeypatch):
    import burstpilot.traces.formats.csvcore as csvcore

    def no_slow_pass(*args):
        raise AssertionError("the slow, line-numbering pass is only for bad rows")

    p = tmp_path / "s.csv"
    p.write_text(V2.replace(",17,", ",a1b2,"))
    monkeypatch.setattr(csvcore, "_slow", no_slow_pass)
    t = read_trace(p)
    assert t.session_labels is not None and t.session_id[0] == t.session_id[2] >= 0
    bad = tmp_path / "bad.csv"
    bad.write_text(V2.replace("100,20,120", "x,20,120"))
    with pytest.raises(AssertionError, match="slow"):
        read_trace(bad)
