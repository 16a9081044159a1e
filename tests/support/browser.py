"""Open a page in Debian's headless Chromium and look at it as a reader would: DOM checks and a screenshot.

Talks to Chromium over the DevTools protocol (a WebSocket, through aiohttp): load a file:// page, wait for it,
evaluate JavaScript in it, capture a PNG. ``make browser`` (scripts/install-browser.sh) installs Chromium.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)

# What a reader would notice first: images that did not load, and whether the verdict is on screen.
PAGE_CHECK = """(() => {
  const imgs = [...document.images];
  const v = document.getElementById('verdict');
  const r = v ? v.getBoundingClientRect() : null;
  return {
    images: imgs.length,
    broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt || i.src.slice(0, 60)),
    verdict: v ? v.innerText : null,
    verdictVisible: !!(r && r.width > 0 && r.height > 0 && r.top >= 0 && r.top < window.innerHeight
                       && getComputedStyle(v).visibility !== 'hidden'),
    title: document.title,
    tables: document.querySelectorAll('table').length,
    text: document.body.innerText.length,
  };
})()"""


def chromium() -> str | None:
    for c in (os.environ.get("BURSTPILOT_CHROMIUM"), "chromium", "chromium-browser"):
        if c and shutil.which(c):
            return shutil.which(c)
    return None


# `make test` sets BURSTPILOT_REQUIRE_BROWSER=1 (after `make browser`): there a missing Chromium fails the tests
# instead of skipping them. A plain pytest run on a machine without Chromium skips them and says why.
needs_browser = pytest.mark.skipif(
    chromium() is None and not os.environ.get("BURSTPILOT_REQUIRE_BROWSER"),
    reason="chromium not installed: run `make browser` (scripts/install-browser.sh)",
)


@dataclass
class PageView:
    checks: dict
    screenshot: bytes  # PNG


async def _view(binary: str, url: str, width: int, height: int, timeout_s: float) -> PageView:
    profile = tempfile.mkdtemp(prefix="bp-chromium-")
    proc = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit {proc.poll()})")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                pages = [t for t in await r.json() if t.get("type") == "page"]
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=1 << 28) as ws:
                ids = iter(range(1, 1 << 30))

                async def call(method: str, **params):
                    mid = next(ids)
                    await ws.send_str(json.dumps({"id": mid, "method": method, "params": params}))
                    async for msg in ws:
                        data = json.loads(msg.data)
                        if data.get("id") == mid:
                            if "error" in data:
                                raise RuntimeError(f"{method}: {data['error']}")
                            return data["result"]
                    raise RuntimeError("chromium closed the DevTools connection")

                await call("Page.navigate", url=url)
                while True:  # events are not read; the page is ready when its readyState says so
                    state = await call(
                        "Runtime.evaluate", expression="document.readyState", returnByValue=True
                    )
                    if state["result"]["value"] == "complete":
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{url} did not load within {timeout_s:.0f} s")
                    await asyncio.sleep(0.05)
                res = await call("Runtime.evaluate", expression=PAGE_CHECK, returnByValue=True)
                shot = await call("Page.captureScreenshot", format="png")
                return PageView(res["result"]["value"], base64.b64decode(shot["data"]))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def view(path: Path, width: int = 1280, height: int = 900, timeout_s: float = 60.0) -> PageView:
    """Load the local HTML file ``path`` in headless Chromium; its checks (PAGE_CHECK) and a screenshot."""
    binary = chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed: run `make browser` (scripts/install-browser.sh)")
    return asyncio.run(_view(binary, Path(path).resolve().as_uri(), width, height, timeout_s))
