"""The status page rendered by a real browser: headless Chromium (Debian's `chromium`)
loads it from a daemon on loopback TCP; the rendered DOM shows the guests, their states,
ASID usage and memory maps (with the live-events script run), and a screenshot is taken
into the test's temporary folder."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from http_support import free_port, short_tmpdir, start_daemon
from qemu.qmp import QMPClient

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(scripts/test-deps.sh installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium(profile: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def page_daemon() -> Iterator[tuple[Any, str]]:
    base = short_tmpdir()
    port = free_port()
    d = start_daemon(base, "--http", f"tcp:127.0.0.1:{port}")
    try:
        yield d, f"http://127.0.0.1:{port}/"
    finally:
        code = d.stop()
        shutil.rmtree(base, ignore_errors=True)
        assert code == 0


async def _setup_guests(control: str) -> None:
    c = QMPClient("page-test")
    await c.connect(control)
    try:
        sev = {"policy": 0, "cbitpos": 51, "reduced-phys-bits": 1}
        await c.execute("guest-add", {"name": "web-run", "sev-guest": sev,
                                      "memory": 128 << 20})
        await c.execute("guest-add", {"name": "web-wait", "sev-guest": sev})
        await c.execute("guest-add", {"name": "web-plain", "start": True, "memory": 64 << 20})
        g = QMPClient("page-test-guest")
        await g.connect(control.replace("sevd.sock", "guests/web-run.qmp"))
        try:
            await g.execute("cont")
        finally:
            await g.disconnect()
    finally:
        await c.disconnect()


def _wait_http(url: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(url + "readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, "HTTP side did not come up"
        time.sleep(0.05)


def test_status_page_in_headless_chromium(page_daemon: tuple[Any, str], tmp_path: Path) -> None:
    d, url = page_daemon
    _wait_http(url)
    asyncio.run(_setup_guests(d.control))

    # No --virtual-time-budget: the page's open EventSource would keep virtual time from
    # ever running out. The dump follows the load event, after the deferred script ran.
    r = chromium(tmp_path / "profile", "--dump-dom", url)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert 'data-js="on"' in dom, "status.js did not run (CSP, path or syntax)"
    # The guests and their states, as rendered.
    rows = dict(re.findall(r'<tr class="guest" data-name="([^"]+)" data-status="([^"]+)"', dom))
    assert rows == {"web-run": "running", "web-wait": "prelaunch", "web-plain": "running"}
    assert re.search(r'data-name="web-wait"[^>]*data-sev-state="launch-secret"', dom)
    assert re.search(r'data-name="web-plain"[^>]*data-sev-state="none"', dom)
    # ASID usage: two SEV guests on Milan's SEV range (100–509).
    assert re.search(r'<tr data-range="sev">.*?data-used="2">', dom, re.S)
    assert re.search(r'<tr data-range="es">.*?data-used="0">', dom, re.S)
    # Memory maps: the running SEV guest has private and shared cells; the waiting one has
    # only its encrypted firmware (private), the plain one no private memory at all.
    maps = {m.group(1): m.group(2) for m in re.finditer(
        r'<section class="guest-map" id="guest-([^"]+)"[^>]*>(.*?)</section>', dom, re.S)}
    assert set(maps) == {"web-run", "web-wait", "web-plain"}
    assert 'class="cell private"' in maps["web-run"] and 'class="cell shared"' in maps["web-run"]
    assert 'class="cell private"' in maps["web-wait"]
    assert 'class="cell shared"' not in maps["web-wait"]
    assert 'class="cell private"' not in maps["web-plain"]
    assert maps["web-run"].count('class="cell') > 100

    shot = tmp_path / "status.png"
    r = chromium(tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,900", url)
    assert r.returncode == 0, r.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 900)
    assert len(data) > 10_000  # a rendered page, not a blank image
