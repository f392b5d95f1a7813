"""The HTTP side of a real daemon: configured by flag, on a unix socket or loopback TCP, event
stream received by a real HTTP client while guests change state over QMP, metrics scraped
during a load test, and a clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from http_support import ROOT, check, free_port, short_tmpdir, start_daemon
from prometheus_client.parser import text_string_to_metric_families
from qemu.qmp import ExecuteError, QMPClient

SEV = {"policy": 0, "cbitpos": 51, "reduced-phys-bits": 1}


@pytest.fixture
def base() -> Iterator[Path]:
    b = short_tmpdir()
    yield b
    shutil.rmtree(b, ignore_errors=True)


def wait_for(cond: Any, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@asynccontextmanager
async def http(address: str) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """A session and base URL for `unix:PATH` or `http://HOST:PORT`."""
    if address.startswith("unix:"):
        conn: aiohttp.BaseConnector = aiohttp.UnixConnector(path=address[5:])
        url = "http://localhost"
    else:
        conn, url = aiohttp.TCPConnector(), address
    async with aiohttp.ClientSession(connector=conn) as s:
        yield s, url


@asynccontextmanager
async def qmp(path: str) -> AsyncIterator[QMPClient]:
    c = QMPClient("test")
    await c.connect(path)
    try:
        yield c
    finally:
        await c.disconnect()


async def sse_events(resp: aiohttp.ClientResponse, n: int = 1 << 30, timeout: float = 10,
                     until: str | None = None) -> list[dict[str, Any]]:
    """Events from the stream: `n` of them, or up to the first `until` event, or its end."""
    out: list[dict[str, Any]] = []
    while len(out) < n and not (until and out and out[-1]["event"] == until):
        raw = await asyncio.wait_for(resp.content.readline(), timeout)
        if not raw:
            break
        line = raw.decode().rstrip("\n")
        if line.startswith("data: "):
            out.append(json.loads(line[6:]))
    return out


async def test_unix_socket_events_while_guests_change_state(base: Path) -> None:
    d = start_daemon(base, "--http", "unix:http.sock")
    sock = base / "run" / "http.sock"
    wait_for(sock.exists, "the HTTP socket")
    assert oct(sock.stat().st_mode & 0o777) == "0o660"
    try:
        async with http(f"unix:{sock}") as (s, url):
            for _ in range(100):  # the socket exists a moment before the start completes
                async with s.get(url + "/readyz") as r:
                    body = check("Health", await r.json())
                    if r.status == 200:
                        break
                    assert r.status == 503 and body["status"] == "not-ready"
                await asyncio.sleep(0.02)
            assert body["status"] == "ok"
            async with s.get(url + "/api/v1/events") as stream, qmp(d.control) as ctl:
                await ctl.execute("guest-add", {"name": "ev1", "sev-guest": SEV})
                async with qmp(d.guest_socket("ev1")) as g:
                    await g.execute("cont")
                    await g.execute("stop")
                await ctl.execute("guest-remove", {"name": "ev1"})
                events = await sse_events(stream, until="SEVD_GUEST_REMOVED")
            seen = [(e["scope"], e["event"], e["guest"]) for e in events]
            assert ("host", "SEVD_GUEST_ADDED", "ev1") in seen
            assert ("guest", "RESUME", "ev1") in seen and ("guest", "STOP", "ev1") in seen
            assert seen[-1] == ("host", "SEVD_GUEST_REMOVED", "ev1")
            states = [e["data"]["state"] for e in events
                      if e["event"] == "SEVD_SEV_STATE_CHANGE" and e["scope"] == "host"]
            assert states[-2:] == ["running", "uninit"]  # LAUNCH_FINISH, then removal
            for e in events:
                check("SseEvent", e)

            # A stop with a guest present: the stream carries its SHUTDOWN, then ends.
            async with qmp(d.control) as ctl:
                await ctl.execute("guest-add", {"name": "ev2"})
            async with s.get(url + "/api/v1/events?guest=ev2") as stream:
                await stream.content.readline()  # retry: the stream is up
                d.proc.send_signal(signal.SIGTERM)
                tail = await sse_events(stream)
            assert [e["event"] for e in tail][:1] == ["SHUTDOWN"]
            assert tail[0]["data"] == {"guest": False, "reason": "host-signal"}
            # The stream ends before the process does: wait, rather than signal it again
            # while asyncio.run() is closing its loop (no handler then: SIGTERM kills).
            assert d.proc.wait(15) == 0, d.proc.stderr.read().decode()
    finally:
        assert d.stop() == 0, d.proc.stderr.read().decode()
    assert not sock.exists()


async def test_tcp_loopback(base: Path) -> None:
    port = free_port()
    d = start_daemon(base, "--http", f"tcp:127.0.0.1:{port}")
    try:
        url = f"http://127.0.0.1:{port}"
        async with http(url) as (s, _):
            deadline = time.monotonic() + 15
            while True:
                try:
                    async with s.get(url + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            async with s.get(url + "/api/v1/host") as r:
                host = check("HostInfo", await r.json())
            assert host["platform"]["profile"] == "milan"
            async with s.get(url + "/api/v1/host", headers={"Host": "sevd.attacker.example"}
                             ) as r:
                assert r.status == 403
            async with s.delete(url + "/api/v1/guests/x") as r:
                assert r.status == 405
        assert "HTTP (read-only) on http://127.0.0.1:" in _stderr_so_far(d)
    finally:
        assert d.stop() == 0


def _stderr_so_far(d: Any) -> str:
    os.set_blocking(d.proc.stderr.fileno(), False)
    try:
        return (d.proc.stderr.read() or b"").decode()
    finally:
        os.set_blocking(d.proc.stderr.fileno(), True)


@pytest.mark.parametrize(("listen", "reason"), [
    ("tcp:0.0.0.0:8080", "must listen on a loopback address"),
    ("tcp:192.168.1.1:80", "must listen on a loopback address"),
    ("tcp:sevd.example:80", "must listen on a loopback address"),
    ("tcp:127.0.0.1:x", "must end with a port number"),
    ("http://127.0.0.1:80", 'must be "", "unix:PATH" or "tcp:127.0.0.1:PORT"'),
])
def test_listen_refused(listen: str, reason: str) -> None:
    r = subprocess.run([sys.executable, "-m", "sevd", "--http", listen, "--check-config"],
                       capture_output=True, text=True, cwd=str(ROOT))
    assert r.returncode == 2
    assert "http.listen" in r.stderr and reason in r.stderr


def test_port_in_use_stops_the_start(base: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        d = start_daemon(base, "--http", f"tcp:127.0.0.1:{port}", wait=False)
        code = d.proc.wait(20)
    assert code == 1
    assert f"cannot listen for HTTP on tcp:127.0.0.1:{port}" in d.proc.stderr.read().decode()


def metrics_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_metrics_during_a_load_test(base: Path) -> None:
    """Clients hammer the daemon over QMP while a scraper polls /metrics: every scrape is
    consistent (counters only grow), and the final numbers are exactly what the load did."""
    d = start_daemon(base, "--http", "unix:http.sock")
    sock = base / "run" / "http.sock"
    wait_for(sock.exists, "the HTTP socket")
    guests, clients, rounds = 6, 8, 60
    try:
        async with qmp(d.control) as ctl:
            for i in range(guests):
                await ctl.execute("guest-add", {"name": f"l{i}", "sev-guest": SEV})
        stop = asyncio.Event()
        scrapes: list[dict[Any, float]] = []

        async def scraper() -> None:
            async with http(f"unix:{sock}") as (s, url):
                while not stop.is_set():
                    async with s.get(url + "/metrics") as r:
                        scrapes.append(metrics_of(await r.text()))
                    await asyncio.sleep(0.01)

        async def worker(k: int) -> None:
            async with qmp(d.guest_socket(f"l{k % guests}")) as g:
                for _ in range(rounds):
                    await g.execute("query-status")
                    with pytest.raises(ExecuteError):  # the firmware refuses a short header
                        await g.execute("sev-inject-launch-secret",
                                        {"packet-header": "AAAA", "secret": "AAAA"})

        task = asyncio.ensure_future(scraper())
        await asyncio.gather(*(worker(k) for k in range(clients)))
        async with qmp(d.guest_socket("l0")) as g:
            await g.execute("cont")
            await asyncio.sleep(0.3)  # the workload ticks: the firmware encrypts more
        stop.set()
        await task
        async with http(f"unix:{sock}") as (s, url), s.get(url + "/metrics") as r:
            final = metrics_of(await r.text())
    finally:
        assert d.stop() == 0

    def v(m: dict[Any, float], name: str, **labels: str) -> float:
        return m.get((name, tuple(sorted(labels.items()))), 0.0)

    total = clients * rounds
    assert v(final, "sevd_qmp_commands_total", command="query-status", result="ok") == total
    assert v(final, "sevd_qmp_commands_total", command="sev-inject-launch-secret",
             result="error") == total
    assert v(final, "sevd_qmp_commands_total", command="guest-add", result="ok") == guests
    assert v(final, "sevd_qmp_command_duration_seconds_count",
             command="query-status") == total
    assert v(final, "sevd_firmware_commands_total", command="LAUNCH_START") == guests
    assert v(final, "sevd_firmware_commands_total", command="LAUNCH_SECRET") == total
    fails = sum(val for (name, labels), val in final.items()
                if name == "sevd_firmware_command_failures_total"
                and dict(labels)["command"] == "LAUNCH_SECRET")
    assert fails == total
    assert v(final, "sevd_guests", run_state="running", sev_state="running") == 1
    assert v(final, "sevd_guests", run_state="prelaunch", sev_state="launch-secret") == \
        guests - 1
    assert v(final, "sevd_asids", range="sev", state="used") == guests
    assert v(final, "sevd_firmware_bytes_encrypted_total") > 0
    # Scrapes taken during the load saw it progress, and never more than happened.
    assert len(scrapes) >= 3
    seen = [v(m, "sevd_qmp_commands_total", command="query-status", result="ok")
            for m in scrapes]
    assert seen == sorted(seen) and seen[-1] <= total
    assert any(0 < x < total for x in seen), seen
    assert any(v(m, "sevd_qmp_sessions", socket="guest") > 0 for m in scrapes)
