"""The evaluation's self-contained HTML report, rendered by headless Chromium (Debian's `chromium` package,
`make chromium`): every image decodes, the verdict is visible at the top, the screenshot is not blank.

The browser is driven over the DevTools protocol (aiohttp's websocket client); nothing leaves 127.0.0.1."""

import asyncio
import base64
import io
import json
import re
import shutil
import subprocess
import time

import aiohttp
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

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed here: run `make chromium` (CI installs it)"
)


async def _cdp(ws_url: str, calls: list[tuple[str, dict]]) -> list[dict]:
    out = []
    async with aiohttp.ClientSession() as s, s.ws_connect(ws_url, max_msg_size=0) as ws:
        for i, (method, params) in enumerate(calls, start=1):
            await ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
            while True:
                msg = json.loads((await ws.receive()).data)
                if msg.get("id") == i:
                    if "error" in msg:
                        raise AssertionError(f"{method}: {msg['error']}")
                    out.append(msg["result"])
                    break
    return out


def _evaluate_js(expr: str) -> tuple[str, dict]:
    return "Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True}


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


def test_report_renders_in_headless_chromium(page, tmp_path):
    res, html = page
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={tmp_path / 'ud'}",
         "--window-size=1200,900", html.as_uri()],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
            elif not line and proc.poll() is not None:
                break
        assert port, "chromium did not start its DevTools endpoint"

        async def run():
            async with aiohttp.ClientSession() as s:
                for _ in range(100):
                    async with s.get(f"http://127.0.0.1:{port}/json/list") as r:
                        pages = [p for p in await r.json() if p.get("type") == "page"]
                    if pages:
                        break
                    await asyncio.sleep(0.1)
            ws = pages[0]["webSocketDebuggerUrl"]
            wait_loaded = (
                "new Promise(r => { const f = () => document.readyState === 'complete' ? r(true) : "
                "setTimeout(f, 50); f(); })"
            )
            images = "Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth}))"
            verdict = (
                "(() => { const e = document.getElementById('verdict'); const b = e.getBoundingClientRect();"
                " const st = getComputedStyle(e); return {text: e.innerText, top: b.top, h: b.height,"
                " first: document.body.firstElementChild === e, vis: st.visibility, disp: st.display}; })()"
            )
            return await _cdp(ws, [_evaluate_js(wait_loaded), _evaluate_js(images), _evaluate_js(verdict),
                                   ("Page.captureScreenshot", {"format": "png"})])  # fmt: skip

        _, imgs, verdict, shot = asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    imgs = imgs["result"]["value"]
    assert len(imgs) == 2 and all(i["ok"] and i["w"] > 500 for i in imgs), imgs  # no broken image
    v = verdict["result"]["value"]
    assert v["first"] and v["text"] == report.verdict(res) and v["h"] > 0 and 0 <= v["top"] < 200
    assert v["vis"] == "visible" and v["disp"] != "none"
    png = matplotlib.image.imread(io.BytesIO(base64.b64decode(shot["data"])), format="png")
    assert png.shape[0] > 500 and png.shape[1] > 800
    assert float(np.std(png[..., :3])) > 0.02  # not a blank page
