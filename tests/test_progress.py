"""Long work shows progress off a terminal (plain lines at a steady interval) and on one (rich's display)."""

import io
import re
import time

from burstpilot.progress import Reporter


def test_plain_lines_name_each_unfinished_task_and_keep_coming_while_nothing_moves():
    out = io.StringIO()
    with Reporter("evaluate", stream=out, interval_s=0.02) as rep:
        search = rep.add_task("oracle search", unit=" runs")
        run = rep.add_task("burstpilot", total=8640.0, unit=" s")
        rep.update(search, advance=14)
        rep.update(run, completed=3720.0, note="scale 4->6")
        deadline = time.monotonic() + 10.0
        while out.getvalue().count("\n") < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        rep.update(search, done=True)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 4  # at least three beats with no update between them, and the closing line
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d evaluate: oracle search 14 runs \| burstpilot 43% \(3720/8640 s\) scale 4->6 "
        r"\| elapsed \d+s",
        lines[0],
    )
    assert "oracle search" not in lines[-1] and "burstpilot 43%" in lines[-1]  # finished tasks drop out


def test_a_terminal_gets_the_live_display_and_no_plain_lines():
    out = io.StringIO()
    with Reporter("replay", stream=out, interval_s=0.01, live=True) as rep:
        t = rep.add_task("sent", total=10)
        rep.update(t, completed=10)
        time.sleep(0.05)
    assert "sent" in out.getvalue() and "replay:" not in out.getvalue()


def test_disabled_prints_nothing_and_a_closed_stream_does_not_raise():
    out = io.StringIO()
    with Reporter("x", stream=out, enabled=False) as rep:
        rep.update(rep.add_task("a", total=1), completed=1)
    assert out.getvalue() == ""
    closed = io.StringIO()
    rep = Reporter("x", stream=closed, interval_s=0.01)
    rep.start()
    closed.close()
    time.sleep(0.05)
    rep.close()
