"""Type=notify against a real daemon: READY=1 only once the control socket answers, STATUS=
lines, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM; cold start to READY; and
that a started daemon imports no optional feature (aiohttp)."""

from __future__ import annotations

import itertools
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_support import Client, NotifyListener, Sevd, short_tmpdir, spawn

# The cold-start bound asserted here is loose (shared CI machines); the measured value is
# printed (pytest -s) and the target of the issue (<= 500 ms) is tracked in the report.
COLD_START_BOUND = 3.0


@pytest.fixture
def base() -> Iterator[Path]:
    b = short_tmpdir()
    yield b
    shutil.rmtree(b, ignore_errors=True)


def ready(msgs: list[tuple[float, dict[str, str]]]) -> bool:
    return any(m.get("READY") == "1" for _, m in msgs)


def start_notified(base: Path, address: str, env: dict[str, str] | None = None
                   ) -> tuple[Sevd, NotifyListener]:
    listener = NotifyListener(address)
    d = spawn(base, env={"NOTIFY_SOCKET": address, **(env or {})}, wait=False)
    return d, listener


def test_ready_status_watchdog_stopping(base: Path) -> None:
    d, n = start_notified(base, str(base / "notify"), {"WATCHDOG_USEC": "300000"})
    try:
        n.collect(ready)
        # READY=1 means "serving": the control socket must answer at that moment.
        with Client.negotiated(d.control) as c:
            assert "return" in c.cmd("query-version")
        first = next(m for _, m in n.messages if m.get("READY") == "1")
        assert first["STATUS"] == "0 guests, 0 clients"
        # WATCHDOG=1 every 150 ms (half of 300 ms), from the running event loop.
        n.collect(lambda ms: sum("WATCHDOG" in m for _, m in ms) >= 4)
        pings = [t for t, m in n.messages if m.get("WATCHDOG") == "1"]
        gaps = sorted(b - a for a, b in itertools.pairwise(pings))
        # Never faster than the period; the median near it (a loaded CI box may delay one).
        assert gaps[0] > 0.1 and 0.12 < gaps[len(gaps) // 2] < 0.3, gaps
        # STATUS= follows what the daemon holds.
        with Client.negotiated(d.control) as c:
            assert "return" in c.cmd("guest-add", {"name": "vm1"})
            n.collect(lambda ms: any(m.get("STATUS") == "1 guest, 1 client" for _, m in ms))
        n.collect(lambda ms: any(m.get("STATUS") == "1 guest, 0 clients" for _, m in ms))
        d.proc.send_signal(signal.SIGTERM)
        n.collect(lambda ms: any(m.get("STOPPING") == "1" for _, m in ms))
        assert d.proc.wait(10) == 0
        stopping = next(m for _, m in n.messages if m.get("STOPPING") == "1")
        assert stopping["STATUS"] == "Shutting down"
    finally:
        d.stop()
        n.close()


def test_abstract_notify_socket_and_no_watchdog(base: Path) -> None:
    address = f"@sevd-test-{base.name}"
    d, n = start_notified(base, address)
    try:
        n.collect(ready)
        time.sleep(0.4)
        n.sock.settimeout(0.01)
        n.collect(lambda ms: True)
        assert not n.seen("WATCHDOG")  # no WATCHDOG_USEC: no pings
        assert d.stop() == 0
    finally:
        d.stop()
        n.close()


def test_watchdog_for_another_pid_is_ignored(base: Path) -> None:
    # WATCHDOG_PID names the process meant to ping; an inherited one is not ours.
    d, n = start_notified(base, str(base / "notify"),
                          {"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
    try:
        n.collect(ready)
        with pytest.raises(TimeoutError):
            n.collect(lambda ms: n.seen("WATCHDOG"), timeout=0.5)
    finally:
        assert d.stop() == 0
        n.close()


def test_without_notify_socket_nothing_is_sent(base: Path) -> None:
    # The common case outside systemd: no NOTIFY_SOCKET, no datagrams, a normal start.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    probe.bind(str(base / "notify"))
    probe.settimeout(0.3)
    d = spawn(base)
    try:
        with pytest.raises(TimeoutError):
            probe.recv(100)
    finally:
        assert d.stop() == 0
        probe.close()


def test_cold_start_to_ready_with_existing_state(base: Path) -> None:
    d, n = start_notified(base, str(base / "notify"))
    n.collect(ready)
    assert d.stop() == 0
    n.close()
    times = []
    for i in range(3):
        addr = str(base / f"notify{i}")
        listener = NotifyListener(addr)
        t0 = time.monotonic()
        d = spawn(base, env={"NOTIFY_SOCKET": addr}, wait=False)
        try:
            listener.collect(ready)
            times.append(next(t for t, m in listener.messages if "READY" in m) - t0)
        finally:
            assert d.stop() == 0
            listener.close()
    best = min(times)
    print(f"\ncold start to READY=1 (existing state dir): best {best * 1000:.0f} ms, "
          f"runs {[round(t * 1000) for t in times]} ms")
    assert best < COLD_START_BOUND


def test_started_daemon_does_not_import_aiohttp(base: Path) -> None:
    d = spawn(base, pyflags=("-X", "importtime"))
    try:
        with Client.negotiated(d.control) as c:
            c.cmd("query-version")
    finally:
        assert d.stop() == 0
    modules = {line.split("|")[-1].strip() for line in d.log().splitlines()
               if line.startswith("import time:")}
    assert "sevd.daemon" in modules  # the probe works
    assert not {m for m in modules if m.split(".")[0] == "aiohttp"}
