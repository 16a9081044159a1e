"""`trace analyze` writes a self-contained HTML report a browser shows whole: every figure, the verdict first."""

from burstpilot.cli import main
from burstpilot.traces import write_burstgpt_csv
from burstpilot.traces.generate import generate_preset
from tests.support import browser


@browser.needs_browser
def test_analyze_html_report_opens_with_every_figure_and_the_verdict(tmp_path, capsys):
    src = tmp_path / "w.csv"
    write_burstgpt_csv(generate_preset("burstgpt", duration_s=1800, rps=4, seed=3, start_s=9 * 3600), src)
    assert main(["trace", "analyze", str(src), "--out", str(tmp_path / "a")]) == 0
    said = capsys.readouterr().out.splitlines()[0]
    html = tmp_path / "a" / "report.html"
    for png in (tmp_path / "a").glob("*.png"):
        png.unlink()  # the page must not need the files beside it
    page = browser.view(html, height=1200)
    assert page.checks["images"] >= 4 and page.checks["broken"] == []
    assert page.checks["verdictVisible"] and page.checks["verdict"] == said
    assert page.checks["tables"] >= 2
