"""The format registry: one list drives --format, auto-detection and the docs; Parquet round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from burstpilot.cli import build_parser, main
from burstpilot.traces import formats, iter_trace, read_trace, write_burstgpt_csv
from burstpilot.traces.formats.parquet import write_parquet
from burstpilot.traces.generate import generate_preset
from tests.traces.conftest import small_trace

DOCS = Path(__file__).resolve().parents[2] / "docs" / "traces.md"


def _format_choices(argv):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["trace"]
    action = sub._subparsers._group_actions[0].choices[argv]
    return next(a.choices for a in action._actions if a.dest == "format")


@pytest.mark.parametrize("command", ["analyze", "generate", "info", "convert"])
def test_cli_format_choices_come_from_the_registry(command):
    assert list(_format_choices(command)) == formats.choices()
    assert formats.choices()[0] == "auto" and set(formats.names()) == {f.name for f in formats.REGISTRY}


def test_docs_table_is_the_registry():
    assert formats.markdown_table() in DOCS.read_text()


def test_every_format_autodetects_its_own_files(tmp_path):
    t = small_trace(300)
    csv = write_burstgpt_csv(t, tmp_path / "t.csv")
    (tmp_path / "a.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,1,2\n")
    (tmp_path / "m.jsonl").write_text('{"timestamp": 0, "input_length": 3, "output_length": 1}\n')
    write_parquet([t], tmp_path / "t.parquet")
    found = {formats.detect(formats.Source(p)).name for p in (csv, tmp_path / "a.csv", tmp_path / "m.jsonl")}
    found.add(formats.detect(formats.Source(tmp_path / "t.parquet")).name)
    assert found == set(formats.names()) - {"csv"}  # generic CSV is chosen, never detected


def test_parquet_round_trip_partitioned_by_day(tmp_path):
    t = generate_preset("burstgpt", duration_s=3 * 86400, rps=0.05, seed=3)
    rows, days = write_parquet([t.subset(np.arange(0, len(t) // 2)), t.subset(np.arange(len(t) // 2, len(t)))],
                               tmp_path / "p.parquet")  # fmt: skip
    assert rows == len(t) and days == 3
    assert sorted(p.name for p in (tmp_path / "p.parquet").iterdir()) == [
        "day=00000",
        "day=00001",
        "day=00002",
    ]
    back = read_trace(tmp_path / "p.parquet")
    assert back.equals(t) and back.has_sessions and back.clock_offset_s == 0.0
    assert sum(len(c) for c in iter_trace(tmp_path / "p.parquet")) == len(t)


def test_convert_to_parquet_keeps_origin_and_filters(tmp_path, azure_path, capsys):
    out = tmp_path / "az.parquet"
    assert main(["trace", "convert", str(azure_path), "--out", str(out), "--end", "600"]) == 0
    assert "day partitions" in capsys.readouterr().out
    src = read_trace(azure_path, end_s=600)
    back = read_trace(out)
    assert back.equals(src) and back.origin == src.origin and back.clock_offset_s == src.clock_offset_s
    assert main(["trace", "info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == len(src)


def test_streaming_chunks_equal_the_whole_file(tmp_path):
    t = generate_preset("burstgpt", duration_s=86400, rps=8, seed=5, round_timestamps=True)
    p = write_burstgpt_csv(t, tmp_path / "big.csv")
    chunks = list(iter_trace(p))
    assert len(chunks) > 1  # more than one record batch
    assert np.array_equal(np.concatenate([c.arrival_s for c in chunks]), read_trace(p).arrival_s)
