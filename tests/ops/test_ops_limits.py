"""Every configurable limit has a behaviour, shown against a real daemon: message size,
nesting depth, clients per socket and in total, the listen backlog (1,000 clients connecting
at once), the unnegotiated-connection timeout, output buffered per session; and the modes of
the socket files and their directories."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_support import Client, Sevd, short_tmpdir, spawn


@pytest.fixture
def base() -> Iterator[Path]:
    b = short_tmpdir()
    yield b
    shutil.rmtree(b, ignore_errors=True)


@pytest.fixture
def running(base: Path, request: pytest.FixtureRequest) -> Iterator[Sevd]:
    """A daemon started with the test's `@pytest.mark.sevd_args(...)`."""
    marker = request.node.get_closest_marker("sevd_args")
    d = spawn(base, *(marker.args if marker else ()))
    yield d
    code = d.stop()
    assert code == 0, d.log()


def until_reply(c: Client, reply_id: str) -> list[dict[str, object]]:
    """Every message up to and including the reply with `reply_id`."""
    out = []
    while True:
        msg = c.message()
        out.append(msg)
        if msg.get("id") == reply_id:
            return out


@pytest.mark.sevd_args("--set", "qmp.max_message=1024")
def test_message_size(running: Sevd) -> None:
    with Client.negotiated(running.control) as c:
        # Just under the limit: served.
        ok = b'{"execute":"query-version","id":[' + b"1," * 480 + b'1]}'
        assert len(ok) < 1024
        c.send(ok)
        assert "return" in c.message()
        # Over it: QEMU's error, and the stream recovers for the next command.
        c.send(b'{"execute":"query-version","id":[' + b"1," * 600 + b'1]}')
        c.send(b'{"execute":"query-version","id":"after"}')
        msgs = until_reply(c, "after")
        assert msgs[0] == {"error": {"class": "GenericError",
                                     "desc": "JSON token size limit exceeded"}}
        assert "return" in msgs[-1]


@pytest.mark.sevd_args("--set", "qmp.max_nesting=4")
def test_nesting_depth(running: Sevd) -> None:
    with Client.negotiated(running.control) as c:
        c.send(b'{"execute":"query-version","id":[[[1]]]}')  # depth 4
        assert c.message()["id"] == [[[1]]]
        c.send(b'{"execute":"query-version","id":[[[[1]]]]}')  # depth 5
        c.send(b'{"execute":"query-version","id":"after"}')
        msgs = until_reply(c, "after")
        assert msgs[0] == {"error": {"class": "GenericError",
                                     "desc": "JSON nesting depth limit exceeded"}}


def refused(path: str) -> bytes:
    """Connect and read until the daemon closes; returns everything received."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    return data


@pytest.mark.sevd_args("--set", "qmp.max_clients_per_socket=2", "--set",
                       "qmp.max_clients_total=3")
def test_clients_per_socket_and_in_total(running: Sevd) -> None:
    a = Client.negotiated(running.control)
    b = Client.negotiated(running.control)
    assert refused(running.control) == (b'{"error": {"class": "GenericError", "desc": '
                                         b'"Too many clients on this socket (limit 2)"}}\r\n')
    a.cmd("guest-add", {"name": "vm1"})
    g = Client.negotiated(running.guest_socket("vm1"))  # the third client in total
    assert refused(running.guest_socket("vm1")) == (
        b'{"error": {"class": "GenericError", "desc": "Too many clients (limit 3)"}}\r\n')
    # A client leaving frees its place.
    b.close()
    time.sleep(0.2)
    with Client.negotiated(running.guest_socket("vm1")) as again:
        assert "return" in again.cmd("query-status")
    log = running.log()
    assert "clients (limit)" in log and "clients in total (limit)" in log
    a.close()
    g.close()


def connect_all(path: str, n: int) -> tuple[list[socket.socket], int]:
    """n non-blocking connects: (connected sockets, how many the kernel turned away)."""
    ok, refused = [], 0
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:  # EAGAIN: the listen queue is full
            refused += 1
            s.close()
            continue
        ok.append(s)
    return ok, refused


def test_backlog_takes_1000_simultaneous_connects(running: Sevd) -> None:
    # While the daemon is frozen nothing is accepted: all 1,000 connections must fit in the
    # listen queue (qmp.backlog, 2048 by default), then each gets its greeting.
    running.proc.send_signal(signal.SIGSTOP)
    try:
        socks, turned_away = connect_all(running.control, 1000)
    finally:
        running.proc.send_signal(signal.SIGCONT)
    assert turned_away == 0
    greeted = 0
    for s in socks:
        s.setblocking(True)
        s.settimeout(10)
        data = b""
        while not data.endswith(b"\n"):
            data += s.recv(4096)
        greeted += b'"QMP"' in data
    for s in socks:
        s.close()
    assert greeted == 1000


@pytest.mark.sevd_args("--set", "qmp.backlog=16")
def test_a_small_backlog_turns_connects_away(running: Sevd) -> None:
    # The counter-test: the backlog setting is what made the 1,000 fit.
    running.proc.send_signal(signal.SIGSTOP)
    try:
        socks, turned_away = connect_all(running.control, 100)
    finally:
        running.proc.send_signal(signal.SIGCONT)
    for s in socks:
        s.close()
    assert turned_away > 0 and len(socks) <= 17


def test_no_negotiation_timeout_by_default(running: Sevd) -> None:
    with Client(running.control) as c:
        c.message()
        time.sleep(1.0)
        assert c.cmd("qmp_capabilities") == {"return": {}}


@pytest.mark.sevd_args("--set", "qmp.negotiation_timeout=0.3")
def test_negotiation_timeout(running: Sevd) -> None:
    with Client(running.control) as idle, Client.negotiated(running.control) as busy:
        idle.message()
        t0 = time.monotonic()
        assert idle.line() == b""  # closed without a word, as QEMU closes
        assert 0.25 < time.monotonic() - t0 < 3
        time.sleep(0.3)
        assert "return" in busy.cmd("query-version")  # negotiated in time: stays
    assert "capabilities not negotiated in time" in running.log()


@pytest.mark.sevd_args("--set", "qmp.max_output=65536")
def test_a_client_that_does_not_read_its_replies(running: Sevd) -> None:
    flooder = Client.negotiated(running.control)
    other = Client.negotiated(running.control)
    outcome: list[BaseException] = []

    def flood() -> None:
        chunk = b'{"execute":"query-version"}' * 2000
        try:
            for _ in range(2000):  # ~100 MB: far more than any buffer
                flooder.send(chunk)
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=flood)
    t.start()
    worst = 0.0
    try:
        while t.is_alive() and worst < 1:
            t0 = time.monotonic()
            assert "return" in other.cmd("query-version")
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.01)
    finally:
        t.join(15)
    assert outcome and isinstance(outcome[0], (ConnectionResetError, BrokenPipeError)), outcome
    assert worst < 1, f"the other client waited {worst:.2f} s"
    assert "return" in other.cmd("query-version")
    running.wait_log("bytes of output unread")
    flooder.close()
    other.close()


@pytest.mark.sevd_args("--set", "qmp.max_output=65536")
def test_a_client_that_does_not_read_its_events(running: Sevd) -> None:
    with Client.negotiated(running.control) as c:
        c.cmd("guest-add", {"name": "vm1", "start": True})
    lazy = Client.negotiated(running.guest_socket("vm1"))  # never reads again
    driver = Client.negotiated(running.guest_socket("vm1"))
    worst = 0.0
    for i in range(4000):
        t0 = time.monotonic()
        assert driver.cmd("stop" if i % 2 == 0 else "cont") == {"return": {}}
        worst = max(worst, time.monotonic() - t0)
        if i % 200 == 199 and "bytes of output unread" in running.log():
            break
    running.wait_log("bytes of output unread")
    assert worst < 1
    # What the kernel already held can still be read; then the connection is closed (a
    # timeout here would mean the daemon kept it open).
    lazy.sock.settimeout(5)
    while lazy.sock.recv(1 << 20):
        pass
    lazy.close()
    driver.close()


def test_socket_and_directory_modes(running: Sevd) -> None:
    with Client.negotiated(running.control) as c:
        c.cmd("guest-add", {"name": "vm1"})

        def mode(p: str | Path) -> int:
            return stat.S_IMODE(os.stat(p).st_mode)

        assert mode(running.control) == 0o660
        assert mode(running.guest_socket("vm1")) == 0o660
        assert mode(running.run_dir) == 0o750
        assert mode(running.run_dir / "guests") == 0o750
        assert mode(running.base / "state") == 0o700
        assert stat.S_ISSOCK(os.stat(running.control).st_mode)


def test_socket_mode_is_configurable_and_umask_proof(base: Path) -> None:
    d = spawn(base, "--set", "qmp.socket_mode=0600", preexec_fn=lambda: os.umask(0o077))
    try:
        with Client.negotiated(d.control) as c:
            c.cmd("guest-add", {"name": "vm1"})
        assert stat.S_IMODE(os.stat(d.control).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(d.guest_socket("vm1")).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(d.run_dir).st_mode) == 0o750  # not 0700 from the umask
    finally:
        assert d.stop() == 0


def test_limits_are_printed(base: Path) -> None:
    # --print-config documents every limit with its default.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "sevd", "--print-config"], capture_output=True,
                         text=True, timeout=30).stdout
    for line in ("max_message = 67108864", "max_nesting = 1024", "max_output = 67108864",
                 "negotiation_timeout = 0.0", "max_clients_per_socket = 1024",
                 "max_clients_total = 4096", "backlog = 2048", 'socket_mode = "0660"'):
        assert line in out
