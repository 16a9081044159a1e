"""Bad input: errors name the file and line; --skip-bad-rows counts and lists them."""

from __future__ import annotations

import gzip
import json
import logging

import pytest

from burstpilot.cli import main
from burstpilot.errors import BurstpilotError
from burstpilot.traces import read_trace

HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
GOOD = "".join(f"{i},ChatGPT,{100 + i},{10 + i},{110 + 2 * i},API log\n" for i in range(10))
FIRST3 = "".join(GOOD.splitlines(keepends=True)[:3])


def _write(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("12,ChatGPT,abc,3,4,API log\n", "'Request tokens' is not a number ('abc')"),
        ("12,ChatGPT,5,-3,2,API log\n", "'Response tokens' is negative ('-3')"),
        ("12,ChatGPT,5\n", "expected 6 fields, got 3"),
        ("x12,ChatGPT,5,3,8,API log\n", "'Timestamp' is not a number ('x12')"),
        ("12,ChatGPT,,3,3,API log\n", "empty 'Request tokens'"),
        ("nan,ChatGPT,1,3,4,API log\n", "'Timestamp' is not a number ('nan')"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, bad_row, message):
    p = _write(tmp_path, HEADER + FIRST3 + bad_row + GOOD)
    line = 5
    with pytest.raises(BurstpilotError) as err:
        read_trace(p)
    assert f"{p}:{line}: {message}" in str(err.value)
    t = read_trace(p, skip_bad_rows=True)
    assert t.bad_rows == 1 and t.bad_lines == [line] and len(t) == 13


def test_skip_counts_many_and_keeps_line_numbers_across_blank_lines(tmp_path, caplog):
    text = (
        HEADER
        + "1,ChatGPT,1,1,2,API log\n\n"
        + "2,ChatGPT,x,1,2,API log\n" * 30
        + "3,ChatGPT,1,1,2,API log\n"
    )
    p = _write(tmp_path, text)
    with pytest.raises(BurstpilotError, match=":4: "):  # the blank line 3 is not a bad row
        read_trace(p)
    with caplog.at_level(logging.WARNING):
        t = read_trace(p, skip_bad_rows=True)
    assert t.bad_rows == 30 and t.bad_lines == list(range(4, 24)) and len(t) == 2
    assert "skipped 30 bad rows" in caplog.text


def test_unsorted_timestamps_sorted_with_warning(tmp_path, caplog):
    p = _write(tmp_path, HEADER + "5,ChatGPT,1,1,2,API log\n3,GPT-4,2,2,4,API log\n4,ChatGPT,3,3,6,API log\n")
    with caplog.at_level(logging.WARNING):
        t = read_trace(p)
    assert t.arrival_s.tolist() == [3, 4, 5]
    assert t.request_tokens.tolist() == [2, 3, 1] and t.model.tolist() == ["GPT-4", "ChatGPT", "ChatGPT"]
    assert "not sorted" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "file is empty"),
        ("\n\n", "file is empty"),
        (HEADER, "no valid rows"),
        ("a,b,c\n1,2,3\n", "unrecognized trace format"),
        ('{"foo": 1}\n', "unrecognized JSON lines"),
        ("Timestamp,Model,Request tokens\n1,ChatGPT,3\n", "unrecognized trace format"),
    ],
)
def test_empty_or_unknown_file(tmp_path, content, message):
    p = _write(tmp_path, content)
    with pytest.raises(BurstpilotError, match=message):
        read_trace(p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(BurstpilotError, match="no such file"):
        read_trace(tmp_path / "nope.csv")
    with pytest.raises(BurstpilotError, match="is a directory"):
        read_trace(tmp_path)


def test_azure_bad_timestamp(tmp_path):
    p = _write(
        tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,1,2\nyesterday,1,2\n"
    )
    with pytest.raises(BurstpilotError, match=r":3: 'TIMESTAMP' is not a date-time \('yesterday'\)"):
        read_trace(p)
    assert len(read_trace(p, skip_bad_rows=True)) == 1


def test_mooncake_bad_lines(tmp_path):
    good = json.dumps({"timestamp": 0, "input_length": 5, "output_length": 1})
    lines = [good, "{not json", json.dumps({"timestamp": 5, "input_length": -1, "output_length": 1}), good]
    p = _write(tmp_path, "\n".join(lines) + "\n", "m.jsonl")
    with pytest.raises(BurstpilotError, match=r"m.jsonl:2: not valid JSON"):
        read_trace(p)
    t = read_trace(p, skip_bad_rows=True)
    assert t.bad_rows == 2 and t.bad_lines == [2, 3] and len(t) == 2


def test_gzip_bad_row_line_number(tmp_path):
    p = tmp_path / "b.csv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(HEADER + GOOD + "99,ChatGPT,1,oops,2,API log\n")
    with pytest.raises(BurstpilotError, match=r"b.csv.gz:12: 'Response tokens' is not a number"):
        read_trace(p)


def test_generic_csv_needs_mapping_and_columns(tmp_path):
    p = _write(tmp_path, "t,a,b\n1,2,3\n")
    with pytest.raises(BurstpilotError, match="column mapping"):
        read_trace(p, fmt="csv")
    assert (
        main(["trace", "info", str(p), "--time-col", "t", "--request-col", "a", "--response-col", "zz"]) == 2
    )


def test_cli_exit_codes_and_messages(tmp_path, capsys):
    bad = _write(tmp_path, HEADER + GOOD + "12,ChatGPT,abc,3,4,API log\n")
    assert main(["trace", "analyze", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:12:" in err and "Traceback" not in err and "--skip-bad-rows" in err
    empty = _write(tmp_path, "", "e.csv")
    assert main(["trace", "info", str(empty)]) == 2
    assert "file is empty" in capsys.readouterr().err
    assert main(["trace", "info", str(bad), "--skip-bad-rows"]) == 0
    assert json.loads(capsys.readouterr().out)["bad_rows"] == 1


def test_analyze_lists_bad_lines_in_report(tmp_path):
    rows = "".join(f"{i * 2},ChatGPT,{100 + i},{10 + i},{110 + 2 * i},API log\n" for i in range(60))
    lines = rows.splitlines(keepends=True)
    p = _write(tmp_path, HEADER + "".join(lines[:7]) + "7,ChatGPT,-1,3,2,API log\n" + "".join(lines[7:]))
    out = tmp_path / "rep"
    assert main(["trace", "analyze", str(p), "--out", str(out), "--skip-bad-rows", "--no-figures"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    line = 9
    assert summary["bad_rows"] == 1 and summary["bad_lines"] == [line]
    assert f"first bad lines: {line}" in (out / "report.md").read_text()
