"""The HTML reports open in a real browser: figures embedded and shown, the verdict first and visible."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from burstpilot.htmlreport import render, write_html  # noqa: E402
from tests.support import browser  # noqa: E402


def _report(tmp_path, image="rate.png"):
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 1, 2], [1, 3, 2])
    fig.savefig(tmp_path / "rate.png", dpi=80)
    plt.close(fig)
    md = tmp_path / "report.md"
    md.write_text(
        "# Trace report\n\nA paragraph with *emphasis* & <angle> brackets.\n\n"
        f"## Rate\n\n![arrival rate]({image})\n\n| policy | attainment |\n|---|---|\n| burstpilot | 99.2% |\n"
    )
    return md


def test_render_embeds_figures_and_escapes_the_verdict(tmp_path):
    md = _report(tmp_path)
    page = render(md.read_text(), tmp_path, "Trace report", verdict="burstpilot <won> by 12%")
    assert 'src="data:image/png;base64,' in page and "rate.png" not in page.split("<body>")[1]
    assert "&lt;won&gt;" in page and page.index('id="verdict"') < page.index("<table>")
    assert page.count("<h1>") == 1  # the markdown's own heading gives way to the title
    twice = render("# T\n\n**it worked.**\n\nbody\n", tmp_path, "T", verdict="it worked")
    assert twice.count("it worked") == 1  # ... and its bold verdict line to the box
    missing = render("![gone](nothere.png)", tmp_path, "x")
    assert "missing figure: nothere.png" in missing


@browser.needs_browser
def test_chromium_shows_every_image_and_the_verdict_first(tmp_path):
    html = write_html(
        _report(tmp_path), "Trace report", verdict="burstpilot met the goal at the fewest GPU-hours"
    )
    (tmp_path / "rate.png").unlink()  # self-contained: nothing beside the page is needed any more
    page = browser.view(html)
    assert page.checks["images"] == 1 and page.checks["broken"] == []
    assert page.checks["verdictVisible"] and page.checks["verdict"].startswith("burstpilot met the goal")
    assert page.checks["tables"] == 1 and page.checks["title"] == "Trace report"
    assert page.screenshot[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "shot.png").write_bytes(page.screenshot)


@browser.needs_browser
def test_chromium_notices_a_broken_image(tmp_path):
    page = tmp_path / "p.html"
    page.write_text('<html><body><p id="verdict">v</p><img alt="gone" src="nothere.png"></body></html>')
    assert browser.view(page).checks["broken"] == ["gone"]
