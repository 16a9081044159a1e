"""Self-contained HTML reports from the markdown reports the tools write.

Every report (``trace analyze``, ``replay``, ``evaluate``, ``demo``) is written as markdown with its figures
beside it; ``write_html`` turns it into one HTML file a browser opens anywhere, the figures embedded as data
URIs, the verdict first in a box of its own (``id="verdict"``), then the markdown's sections and tables.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from pathlib import Path

import markdown

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1f24;
       max-width: 1100px; margin: 2em auto; padding: 0 1.2em; }
h1 { font-size: 1.6em; margin-bottom: .3em; } h2 { font-size: 1.25em; margin-top: 1.6em;
     border-bottom: 1px solid #d0d7de; padding-bottom: .2em; } h3 { font-size: 1.05em; }
.verdict { font-size: 1.12em; background: #eef6ff; border-left: 5px solid #0969da; padding: .7em 1em;
           margin: 1em 0 1.5em; }
table { border-collapse: collapse; margin: .8em 0; font-variant-numeric: tabular-nums; display: block;
        max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: .3em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f6f8fa; }
img { max-width: 100%; height: auto; display: block; margin: .6em 0; }
code, pre { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; background: #f6f8fa; }
pre { padding: .6em; overflow-x: auto; } .missing { color: #cf222e; }
footer { margin-top: 3em; color: #57606a; font-size: .85em; }
"""

_IMG = re.compile(r'<img([^>]*?)src="([^"]+)"([^>]*)>')


def _embed(match: re.Match, base: Path) -> str:
    before, src, after = match.groups()
    if src.startswith(("data:", "http://", "https://")):
        return match.group(0)
    path = (base / html.unescape(src)).resolve()
    if not path.is_file():
        return f'<p class="missing">missing figure: {html.escape(src)}</p>'
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img{before}src="data:{mime};base64,{data}"{after}>'


def render(markdown_text: str, base_dir: Path, title: str, verdict: str | None = None) -> str:
    """The HTML page for ``markdown_text``; relative image paths are read from ``base_dir`` and embedded.

    ``title`` is the page's heading (a leading ``# heading`` of the markdown gives way to it), the verdict
    comes right under it."""
    text = re.sub(r"\A\s*# [^\n]*\n", "", markdown_text)
    if verdict:  # the markdown's own bold verdict line gives way to the box
        for form in (f"**{verdict}.**", f"**{verdict}**"):
            text = text.replace(form + "\n", "", 1)
    body = markdown.markdown(text, extensions=["tables", "fenced_code", "sane_lists"])
    body = _IMG.sub(lambda m: _embed(m, Path(base_dir)), body)
    head = f"<h1>{html.escape(title)}</h1>\n"
    if verdict:
        head += f'<p class="verdict" id="verdict">{html.escape(verdict)}</p>\n'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}'
        f"</title><style>{_STYLE}</style></head>\n<body>\n{head}{body}\n"
        "<footer>written by burstpilot; figures embedded, no network needed</footer>\n</body></html>\n"
    )


def write_html(md_path: Path, title: str, verdict: str | None = None, html_path: Path | None = None) -> Path:
    """Writes the HTML report of the markdown report ``md_path`` (default: beside it, ``.html``)."""
    md_path = Path(md_path)
    out = Path(html_path) if html_path else md_path.with_suffix(".html")
    out.write_text(
        render(md_path.read_text(encoding="utf-8"), md_path.parent, title, verdict), encoding="utf-8"
    )
    return out
