"""`burstpilot replay` and `burstpilot replay merge` from the command line, on a BurstGPT CSV."""

import asyncio
import json
import sys

from fake_openai import FakeServer

from burstpilot.traces import make_trace, write_burstgpt_csv


async def _cli(*args):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "burstpilot.cli",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


def test_cli_replay_shards_and_merge(tmp_path):
    trace = make_trace([0.0, 0.02, 0.04, 0.06, 0.08, 0.1], [5, 6, 7, 8, 9, 10], [2, 3, 0, 2, 2, 2])
    csv = write_burstgpt_csv(trace, tmp_path / "w.csv")

    async def go():
        s = await FakeServer().start()
        try:
            results = []
            for i in range(2):
                results.append(
                    await _cli(
                        "replay",
                        csv,
                        "--target",
                        s.url,
                        "--out",
                        tmp_path / f"s{i}",
                        "--shard",
                        f"{i}/2",
                        "--slo",
                        "ttft=5s,tpot=1s",
                        "--no-progress",
                    )
                )
            results.append(
                await _cli("replay", "merge", tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "m")
            )
            results.append(
                await _cli("replay", csv, "--target", s.url, "--out", tmp_path / "x", "--slo", "ttft=soon")
            )
            results.append(await _cli("replay", "merge", "--out", tmp_path / "y"))
            return results
        finally:
            await s.stop()

    (rc0, _, err0), (rc1, _, _), (rc_m, out_m, _), (rc_bad, _, err_bad), (rc_nodirs, _, err_nodirs) = (
        asyncio.run(go())
    )
    assert rc0 == 0, err0
    assert rc1 == 0 and rc_m == 0
    assert "SLO attainment 1.000" in out_m
    merged = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert merged["requests"]["completed"] == 5  # the failed row (0 response tokens) is skipped
    assert merged["slo"]["objectives_s"] == {"ttft": 5.0, "tpot": 1.0}
    assert (tmp_path / "m" / "latency.png").is_file() and (tmp_path / "m" / "requests.parquet").is_file()
    assert rc_bad == 2 and "--slo ttft: 'soon' is not a duration" in err_bad
    assert rc_nodirs == 2 and "give the shard directories" in err_nodirs
