"""Lifecycle of the daemon process: graceful SIGTERM/SIGINT (in-flight replies written,
SHUTDOWN events, sockets removed, exit 0 within a bound), SIGHUP reload, a second daemon
refused, recovery after SIGKILL, and log lines shaped for journald (that no secret reaches
the log at any level is test_ops_log_secrets.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ops_support import Client, seed_state, short_tmpdir, spawn

from sevd.config import load
from sevd.daemon import Daemon


@pytest.fixture
def base() -> Iterator[Path]:
    b = short_tmpdir()
    yield b
    shutil.rmtree(b, ignore_errors=True)


def read_to_eof(c: Client) -> list[dict[str, Any]]:
    out = []
    while line := c.line():
        out.append(json.loads(line))
    return out


# -- SIGTERM / SIGINT ------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop(base: Path, sig: int) -> None:
    d = spawn(base)
    control = Client.negotiated(d.control)
    info = control.cmd("guest-add", {"name": "vm1"})["return"]
    assert info["socket"] == d.guest_socket("vm1")
    guest = Client.negotiated(d.guest_socket("vm1"))
    unnegotiated = Client(d.guest_socket("vm1"))
    assert "QMP" in unnegotiated.message()
    t0 = time.monotonic()
    d.proc.send_signal(sig)
    # Negotiated guest sessions hear SHUTDOWN (QEMU's "host-signal"), then the end.
    events = read_to_eof(guest)
    assert [e["event"] for e in events] == ["SHUTDOWN"]
    assert events[0]["data"] == {"guest": False, "reason": "host-signal"}
    assert read_to_eof(unnegotiated) == []  # events go to negotiated sessions only
    control_msgs = read_to_eof(control)
    assert {m.get("event") for m in control_msgs} <= {"SEVD_GUEST_REMOVED"}
    assert d.proc.wait(10) == 0
    assert time.monotonic() - t0 < 5
    assert not os.path.exists(d.control)
    assert not os.path.exists(d.guest_socket("vm1"))
    assert "shutting down" in d.log()
    # Nobody listens any more: a client gets a clear connection error, not a hang.
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        Client(d.control)


async def _serve(config_base: Path, **overrides: Any) -> tuple[Daemon, asyncio.Task[int]]:
    seed_state(config_base / "state")
    config = load(env={}, overrides={"paths.runtime_dir": str(config_base / "run"),
                                     "paths.state_dir": str(config_base / "state"),
                                     **overrides})
    daemon = Daemon(config)
    task = asyncio.get_running_loop().create_task(daemon.run())
    for _ in range(500):
        if daemon.control is not None and daemon.control.server is not None:
            break
        await asyncio.sleep(0.01)
    return daemon, task


def _slow_query_version(daemon: Daemon, seconds: float) -> None:
    """Make query-version take `seconds` (an in-flight command at shutdown)."""
    schema, _ = daemon.app.tables["host"]["query-version"]

    async def slow(ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return daemon.app.version_info()

    daemon.app.tables["host"]["query-version"] = (schema, slow)


async def _open(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(path)
    await reader.readline()
    writer.write(b'{"execute":"qmp_capabilities"}')
    assert await reader.readline() == b'{"return": {}}\r\n'
    return reader, writer


async def test_in_flight_reply_is_written_before_the_end(base: Path) -> None:
    daemon, task = await _serve(base)
    _slow_query_version(daemon, 0.5)
    reader, writer = await _open(daemon.config.control_socket)
    writer.write(b'{"execute":"query-version","id":"slow"}')
    await writer.drain()
    await asyncio.sleep(0.1)  # the command is running now
    daemon.stopping.set()
    reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
    assert reply["id"] == "slow" and reply["return"]["qemu"]["major"] == 9
    assert await asyncio.wait_for(reader.read(), 5) == b""  # then the session closes
    assert await asyncio.wait_for(task, 5) == 0
    writer.close()


async def test_shutdown_is_bounded_when_a_command_hangs(base: Path) -> None:
    daemon, task = await _serve(base, **{"daemon.shutdown_timeout": 0.3})
    _slow_query_version(daemon, 3600)
    reader, writer = await _open(daemon.config.control_socket)
    writer.write(b'{"execute":"query-version","id":"hangs"}')
    await writer.drain()
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    daemon.stopping.set()
    assert await asyncio.wait_for(task, 5) == 0
    assert time.monotonic() - t0 < 2
    assert await asyncio.wait_for(reader.read(), 5) == b""  # no reply: it never finished
    writer.close()


# -- SIGHUP ----------------------------------------------------------------------------------


def test_sighup_reloads_what_is_safe(base: Path) -> None:
    cfg = base / "sevd.toml"
    cfg.write_text('[log]\nlevel = "info"\n')
    d = spawn(base, "--config", str(cfg))
    try:
        first = Client.negotiated(d.control)
        cfg.write_text('[log]\nlevel = "info"\n[qmp]\nmax_clients_per_socket = 1\n'
                       '[platform]\nprofile = "rome"\n')
        d.proc.send_signal(signal.SIGHUP)
        d.wait_log(f"SIGHUP: reloaded {cfg}: qmp.max_clients_per_socket; needs a restart "
                   "(not applied): platform.profile")
        # Applied to new connections: a second client is now one too many.
        with Client(d.control) as second:
            reply = second.message()
            assert reply == {"error": {"class": "GenericError",
                                       "desc": "Too many clients on this socket (limit 1)"}}
            assert second.line() == b""
        assert "return" in first.cmd("query-version")  # the existing session goes on
        # A broken file is reported and the running configuration kept.
        cfg.write_text("[qmp]\nmax_clients_per_socket = 0\n")
        d.proc.send_signal(signal.SIGHUP)
        d.wait_log("SIGHUP: configuration not reloaded, keeping the running one: "
                   f"{cfg}: qmp.max_clients_per_socket: 0 must be positive")
        assert "return" in first.cmd("query-version")
        first.close()
    finally:
        assert d.stop() == 0


# -- one daemon per runtime directory; crashes ----------------------------------------------


def test_second_daemon_refuses(base: Path) -> None:
    d = spawn(base)
    try:
        second = spawn(base, wait=False)
        assert second.proc.wait(15) == 1
        run = base / "run"
        assert (f"sevd: cannot start: another sevd is running on {run} (it holds "
                f"{run}/sevd.lock); refusing to take over its sockets") in second.log()
        # Another runtime dir but the same control socket: the live socket is not stolen.
        other = spawn(base, "--runtime-dir", str(base / "run2"), "--socket", d.control,
                      wait=False)
        assert other.proc.wait(15) == 1
        assert f"'{d.control}' is in use by another process" in other.log()
        with Client.negotiated(d.control) as c:  # the first one never noticed
            assert "return" in c.cmd("query-version")
    finally:
        assert d.stop() == 0


def test_recovers_after_sigkill(base: Path) -> None:
    d = spawn(base)
    with Client.negotiated(d.control) as c:
        c.cmd("guest-add", {"name": "vm1"})
    d.proc.kill()
    d.proc.wait()
    # What a crash leaves: the socket files with nobody listening, and the lock file.
    assert os.path.exists(d.control) and os.path.exists(d.guest_socket("vm1"))
    with pytest.raises(ConnectionRefusedError):
        Client(d.control)
    again = spawn(base)
    try:
        with Client.negotiated(again.control) as c:
            assert c.cmd("query-guests")["return"] == []
        assert not os.path.exists(again.guest_socket("vm1"))  # not persistent: gone
        assert f"removed stale socket {d.control}" in again.log()
    finally:
        assert again.stop() == 0


def test_a_file_in_the_way_is_not_removed(base: Path) -> None:
    (base / "run").mkdir()
    (base / "run" / "sevd.sock").write_text("not a socket")
    d = spawn(base, wait=False)
    assert d.proc.wait(15) == 1
    assert f"'{base}/run/sevd.sock' exists and is not a socket" in d.log()
    assert (base / "run" / "sevd.sock").read_text() == "not a socket"


def test_socket_path_too_long(base: Path) -> None:
    long_dir = base / ("d" * 100)
    r = subprocess.run([*spawn_args(), "--runtime-dir", str(long_dir), "--check-config"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "over the 107-byte limit of unix socket paths" in r.stderr


def spawn_args() -> list[str]:
    import sys

    return [sys.executable, "-m", "sevd"]


# -- logging ---------------------------------------------------------------------------------


def test_logs_for_the_journal_have_priorities_and_no_timestamps(base: Path) -> None:
    # journald sets JOURNAL_STREAM to the device:inode of the stream it reads stderr from.
    stderr = base / "journal.stderr"
    stderr.touch()
    st = os.stat(stderr)
    d = spawn(base, "--log-level", "debug", logs="journal",
              env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert d.stop() == 0
    lines = [line for line in d.log().splitlines() if line]
    assert lines
    for line in lines:
        assert re.fullmatch(r"<[2-7]>[\w.]+: .*", line), line
    assert "<6>sevd: shutting down" in lines
    assert any(line.startswith("<7>") for line in lines)  # debug level is on


def test_logs_elsewhere_have_timestamps_and_honour_the_level(base: Path) -> None:
    # A JOURNAL_STREAM inherited from a parent (stderr now a file) does not count.
    d = spawn(base, "--log-level", "warning", env={"JOURNAL_STREAM": "1:1"})
    with Client.negotiated(d.control):
        pass
    assert d.stop() == 0
    assert "shutting down" not in d.log()  # info is below warning
    d = spawn(base)
    assert d.stop() == 0
    line = next(x for x in d.log().splitlines() if "shutting down" in x)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO sevd: shutting down", line)


def test_refusal_closes_without_hanging(base: Path) -> None:
    # A client over the per-socket limit gets one error line and the end, promptly.
    d = spawn(base, "--max-clients", "1")
    try:
        with Client(d.control) as first:
            first.message()
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(d.control)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            s.close()
            assert data == (b'{"error": {"class": "GenericError", "desc": "Too many clients '
                            b'on this socket (limit 1)"}}\r\n')
        assert "refused connection on" in d.log()
    finally:
        assert d.stop() == 0
