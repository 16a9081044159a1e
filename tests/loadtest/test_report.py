"""replay's report: the verdict and warnings as a reader gets them, and report.html opened in headless Chromium."""

import asyncio

from burstpilot.loadtest import ReplayOptions, replay
from burstpilot.loadtest.report import verdict, warnings
from burstpilot.slo import SLO
from tests.support import browser
from tests.support.fake_openai import FakeServer
from tests.support.workloads import make_workload


def _summary(att=0.993, goal=0.99, failed=0, errors=None, lag=0.001, interrupted=False):
    return {
        "requests": {
            "scheduled": 1000,
            "recorded": 1000,
            "completed": 1000 - failed,
            "failed": failed,
            "errors": errors or {},
        },  # fmt: skip
        "slo": {
            "attainment": att,
            "attainment_goal": goal,
            "met": int(att * 1000),
            "objectives_s": {"ttft": 2.0},
        },
        "dispatch_lag_s": {"p99": lag},
        "interrupted": interrupted,
    }


def test_verdict_and_warnings_say_what_a_reader_needs():
    assert verdict(_summary()) == "attainment 99.3 % against the goal 99 %, 0 errors — met"
    assert warnings(_summary()) == []
    half = _summary(att=0.492, failed=508, errors={"http_5xx": 508})
    assert verdict(half) == "attainment 49.2 % against the goal 99 %, 508 errors (http_5xx 508) — missed"
    w = warnings(half)
    assert w[0].startswith("508 of 1,000 requests failed (50.8%); most are http_5xx: the target answered 5xx")
    assert "not ready yet" in w[0] and "under the goal 0.99" in w[1]
    assert "dispatch lag p99 200 ms" in warnings(_summary(lag=0.2))[0]
    assert verdict(_summary(interrupted=True)).startswith("interrupted after 1,000 of 1,000 requests: ")
    no_slo = {**_summary(), "slo": None}
    assert verdict(no_slo) == "1,000 of 1,000 requests completed, 0 errors"


@browser.needs_browser
def test_report_html_opens_with_the_verdict_first_and_no_broken_image(tmp_path):
    w = make_workload([0.02 * i for i in range(40)], request_tokens=[8] * 39 + [11], response_tokens=4)

    async def go():
        s = await FakeServer(ttft_s=0.01, itl_s=0.005, modes={11: "http_503"}).start()
        try:
            opts = ReplayOptions(slo=SLO(ttft_s=1.0, tpot_s=0.5), server_metrics_interval_s=0.2)
            return await replay(w, [s.url], tmp_path, opts)
        finally:
            await s.stop()

    summary = asyncio.run(go())
    html = tmp_path / "report.html"
    assert html.is_file() and (tmp_path / "report.md").is_file()
    page = browser.view(html)
    c = page.checks
    assert c["images"] == 1 and c["broken"] == [], c  # latency.png, embedded
    assert c["verdict"] == "attainment 97.5 % against the goal 99 %, 1 error (http_5xx 1) — missed"
    assert c["verdict"] == verdict(summary) and c["verdictVisible"]
    assert c["tables"] >= 3 and c["title"].startswith("burstpilot replay")
    assert page.screenshot[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "screenshot.png").write_bytes(page.screenshot)
    text = html.read_text()
    assert text.index('id="verdict"') < text.index("<table")  # verdict first, tables after
    assert (
        "1 of 40 requests failed" in text and "the target answered 5xx" in text
    )  # the warning, with its cause
