"""The evaluation's self-contained HTML report, rendered by Debian's headless Chromium (tests/support/browser.py):
every image decodes, the verdict is visible at the top, the screenshot is not blank."""

import io

import matplotlib.image
import numpy as np
import pytest

from burstpilot.evaluation import report
from burstpilot.evaluation.cli import pool_spec
from burstpilot.evaluation.harness import Case, evaluate
from burstpilot.evaluation.runner import write_json
from burstpilot.policy import SLO
from burstpilot.sim import load_profile
from burstpilot.traces.generate import generate_preset
from tests.support import browser

pytestmark = browser.needs_browser


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    profile = load_profile("h100-llama3-8b")
    case = Case(
        name="html",
        workload=lambda: generate_preset("burstgpt", duration_s=120, rps=20, seed=3, start_s=10 * 3600),
        profile=profile,
        spec=pool_spec(profile, SLO(ttft_s=2.0, tpot_s=0.1), 60.0, 1, 8),
        cold_start_s=60.0,
    )
    res = evaluate(case, ["burstpilot", "hpa", "static-peak"], seed=1, workers=1)
    write_json(out / "results.json", res)
    report.write_reports(res, out)
    return res, out / "report.html"


def test_report_renders_in_headless_chromium(page):
    res, html = page
    view = browser.view(html, width=1200, height=900)
    assert view.checks["images"] == 2 and view.checks["broken"] == []
    assert view.checks["verdictVisible"] and view.checks["verdict"] == report.verdict(res)
    assert view.checks["tables"] == 1
    png = matplotlib.image.imread(io.BytesIO(view.screenshot), format="png")
    assert png.shape[0] > 500 and png.shape[1] > 800
    assert float(np.std(png[..., :3])) > 0.02  # not a blank page
