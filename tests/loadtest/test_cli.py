"""`burstpilot replay` and `burstpilot replay merge` from the command line, on a BurstGPT CSV."""

import argparse
import asyncio
import json

from burstpilot.cli import main
from burstpilot.traces import make_trace, write_burstgpt_csv
from tests.support.fake_openai import FakeServer


def test_cli_replay_shards_and_merge(tmp_path, capsys):
    trace = make_trace([0.0, 0.02, 0.04, 0.06, 0.08, 0.1], [5, 6, 7, 8, 9, 10], [2, 3, 0, 2, 2, 2])
    csv = write_burstgpt_csv(trace, tmp_path / "w.csv")

    async def go():
        s = await FakeServer().start()
        loop = asyncio.get_running_loop()

        def cli(*args):  # the CLI runs its own event loop, in a thread beside the server's
            return loop.run_in_executor(None, main, [str(a) for a in args])

        try:
            codes = []
            for i in range(2):
                codes.append(await cli("replay", csv, "--target", s.url, "--out", tmp_path / f"s{i}",
                                       "--shard", f"{i}/2", "--slo", "ttft=5s,tpot=1s", "--no-progress"))  # fmt: skip
            return codes
        finally:
            await s.stop()

    assert asyncio.run(go()) == [0, 0]
    capsys.readouterr()
    assert (
        main(["replay", "merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m")])
        == 0
    )
    assert "SLO attainment 1.000" in capsys.readouterr().out
    merged = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert merged["requests"]["completed"] == 5  # the failed row (0 response tokens) is skipped
    assert merged["slo"]["objectives_s"] == {"ttft": 5.0, "tpot": 1.0}
    assert (tmp_path / "m" / "latency.png").is_file() and (tmp_path / "m" / "requests.parquet").is_file()

    assert main(["replay", str(csv), "--target", "http://127.0.0.1:9", "--out", str(tmp_path / "x"),
                 "--slo", "ttft=soon"]) == 2  # fmt: skip
    assert "--slo ttft: 'soon' is not a duration" in capsys.readouterr().err
    assert main(["replay", "merge", "--out", str(tmp_path / "y")]) == 2
    assert "give the shard directories" in capsys.readouterr().err
    assert (
        main(
            [
                "replay",
                str(tmp_path / "nope.csv"),
                "--target",
                "http://127.0.0.1:9",
                "--out",
                str(tmp_path / "z"),
            ]
        )
        == 2
    )
    assert "nope.csv: no such workload file" in capsys.readouterr().err


def _replay_parser():
    from burstpilot.cli import build_parser

    root = build_parser()
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    return root, sub.choices["replay"], sub.choices["trace"]


def test_help_says_each_default_once_and_every_flag_has_help():
    _, replay, _ = _replay_parser()
    text = replay.format_help()
    for wrong in (
        "(default: None)",
        "(default: [])",
        "(default: True)",
        "(default: False)",
        "<function",
        " at 0x",
    ):
        assert wrong not in text, wrong
    for action in replay._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and len(action.help) > 10, f"{name} has no help"
        assert action.help.count("default") <= 1, f"{name} says its default twice: {action.help}"
    assert "--no-stream" in text and "--wait-ready DUR" in text and "Exit codes: 0 done" in text


def test_format_choices_are_the_readers_and_durations_take_units(tmp_path, capsys):
    from burstpilot.traces.readers import FORMATS

    _, replay, trace = _replay_parser()

    def choices(parser, sub=None):
        if sub:
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
                sub
            ]
        return next(a for a in parser._actions if "--format" in a.option_strings).choices

    assert list(choices(replay)) == list(FORMATS) == list(choices(trace, "analyze"))
    csv = write_burstgpt_csv(make_trace([0.0, 1.0], [5, 6], [2, 3]), tmp_path / "w.csv")
    for flag, value in (("--duration", "soon"), ("--wait-ready", "a while")):
        assert (
            main(
                [
                    "replay",
                    str(csv),
                    "--target",
                    "http://127.0.0.1:9",
                    "--out",
                    str(tmp_path / "o"),
                    flag,
                    value,
                ]
            )
            == 2
        )
        assert (
            f"{flag}: {value!r} is not a duration (examples: 2s, 100ms, 10m, 1h)" in capsys.readouterr().err
        )


def test_fail_under_exits_3_and_says_what_it_missed(tmp_path, capsys):
    trace = make_trace([0.01 * i for i in range(10)], [5] * 10, [3] * 10)
    csv = write_burstgpt_csv(trace, tmp_path / "w.csv")

    async def go():
        s = await FakeServer(ttft_s=0.2).start()  # every TTFT misses 100 ms
        loop = asyncio.get_running_loop()

        def cli(out, *extra):
            return loop.run_in_executor(None, main, ["replay", str(csv), "--target", s.url, "--out", str(tmp_path / out),
                                                     "--no-progress", "--no-plot", *extra])  # fmt: skip

        try:
            return [
                await cli("a", "--slo", "ttft=100ms", "--fail-under", "0.99"),
                await cli("b", "--slo", "ttft=10s", "--fail-under", "attainment=0.99,goodput=1e6"),
                await cli("c", "--slo", "ttft=10s", "--fail-under", "attainment=0.99,goodput=1"),
            ]
        finally:
            await s.stop()

    assert asyncio.run(go()) == [3, 3, 0]
    out = capsys.readouterr().out
    assert (
        "verdict: attainment 0.0 % against the goal 99 %, 0 errors — missed; FAILED --fail-under: attainment"
        in out
    )
    assert "goodput" in out and "< 1e+06 req/s" in out
    assert main(["replay", str(csv), "--target", "http://127.0.0.1:9", "--out", str(tmp_path / "d"),
                 "--fail-under", "0.99"]) == 2  # fmt: skip
    assert "--fail-under: needs --slo" in capsys.readouterr().err
    assert main(["replay", str(csv), "--target", "http://127.0.0.1:9", "--out", str(tmp_path / "d"),
                 "--slo", "ttft=1s", "--fail-under", "speed=3"]) == 2  # fmt: skip
    assert "expected ATTAINMENT, attainment=A or goodput=REQ_PER_S" in capsys.readouterr().err


def test_progress_lines_off_a_terminal(tmp_path, capsys):
    from burstpilot.loadtest import ReplayOptions, replay

    w = make_trace([0.05 * i for i in range(30)], [5] * 30, [2] * 30)

    async def go():
        s = await FakeServer().start()
        try:
            opts = ReplayOptions(progress=True, progress_interval_s=0.3, plot=False, report=False)
            return await replay(w, [s.url], tmp_path, opts)
        finally:
            await s.stop()

    asyncio.run(go())
    lines = [ln for ln in capsys.readouterr().err.splitlines() if " replay: requests done " in ln]
    assert len(lines) >= 3  # a plain line at a steady interval (capsys is not a terminal), then a last one
    assert lines[-1].split(" replay: ")[1].startswith("requests done 100% (30/30) | sent 30, in flight 0")
