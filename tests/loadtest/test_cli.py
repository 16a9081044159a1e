"""`burstpilot replay` and `burstpilot replay merge` from the command line, on a BurstGPT CSV."""

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
