"""Shared fixtures: a real sevd process on short temporary paths, and a raw QMP client.

Integration tests talk to the daemon as clients do: over its unix sockets, with qemu.qmp or
with `RawQmp` when the exact bytes matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class DaemonProc:
    """A running `python -m sevd` with its directories."""

    base: Path
    proc: subprocess.Popen[bytes]
    args: list[str] = field(default_factory=list)

    @property
    def control(self) -> str:
        return str(self.base / "run" / "sevd.sock")

    def guest_socket(self, name: str) -> str:
        return str(self.base / "run" / "guests" / f"{name}.qmp")

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def short_tmpdir() -> Path:
    """Unix socket paths are limited to 107 bytes: keep test directories short."""
    return Path(tempfile.mkdtemp(prefix="sv", dir="/tmp"))


_IDENTITY_CACHE = ROOT / ".pytest_cache" / "sevd-identities"


def test_identity(profile: str = "milan") -> bytes:
    """A platform identity for `profile`, generated once and cached across runs.

    Generating one costs seconds (RSA-4096 simulated AMD roots), so daemons under test start
    with a pre-generated identity in their state directory, as DESIGN §6 suggests.
    """
    path = _IDENTITY_CACHE / f"{profile}.identity"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    from sevd.domain.psp import generate

    data = generate(profile, b"sevd integration tests " + profile.encode()).to_bytes()
    _IDENTITY_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data


def start_daemon(base: Path, *extra: str, env: dict[str, str] | None = None,
                 wait: bool = True, profile: str | None = None) -> DaemonProc:
    """Start `python -m sevd` on `base`, with a cached platform identity unless one exists."""
    if profile is None:
        profile = extra[extra.index("--profile") + 1] if "--profile" in extra else "milan"
    state = base / "state"
    ident = state / f"platform-{profile}.identity"
    if profile != "none" and not ident.exists():
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        ident.write_bytes(test_identity(profile))
        ident.chmod(0o600)
    args = [sys.executable, "-m", "sevd", "--runtime-dir", str(base / "run"),
            "--state-dir", str(base / "state"), "--validate-returns", *extra]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})}, cwd=str(base))
    d = DaemonProc(base, proc, args)
    if wait:
        deadline = time.monotonic() + 15
        # Ready means listening, not merely "the file exists": a stale file from a crash
        # exists before the daemon has bound its socket.
        while not _listening(d.control):
            if proc.poll() is not None:
                raise RuntimeError("sevd exited: " + (proc.stderr.read().decode()
                                                      if proc.stderr else ""))
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("sevd did not start listening on its control socket")
            time.sleep(0.02)
    return d


def _listening(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        return False
    finally:
        s.close()
    return True


@pytest.fixture
def daemon() -> Iterator[DaemonProc]:
    base = short_tmpdir()
    d = start_daemon(base)
    try:
        yield d
    finally:
        code = d.stop()
        shutil.rmtree(base, ignore_errors=True)
        assert code == 0, f"sevd exited with {code}: {d.proc.stderr.read().decode()}"


class RawQmp:
    """A byte-level QMP client: send exactly these bytes, read exactly those lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting = b""

    @classmethod
    async def connect(cls, path: str, negotiate: bool = False) -> RawQmp:
        reader, writer = await asyncio.open_unix_connection(path, limit=64 << 20)
        c = cls(reader, writer)
        c.greeting = await c.line()
        if negotiate:
            await c.send(b'{"execute":"qmp_capabilities"}')
            assert await c.line() == b'{"return": {}}\r\n'
        return c

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self, timeout: float = 10) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), timeout)

    async def lines(self, n: int, timeout: float = 10) -> list[bytes]:
        return [await self.line(timeout) for _ in range(n)]

    async def cmd(self, data: bytes) -> bytes:
        await self.send(data)
        return await self.line()

    async def silent(self, wait: float = 0.2) -> bool:
        """True if nothing arrives within `wait` seconds."""
        try:
            await asyncio.wait_for(self.reader.readline(), wait)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, BrokenPipeError):
            await self.writer.wait_closed()


@pytest.fixture
async def raw_control(daemon: DaemonProc) -> AsyncIterator[RawQmp]:
    c = await RawQmp.connect(daemon.control)
    yield c
    await c.close()


async def add_guest(daemon: DaemonProc, name: str = "vm1", **args: Any) -> str:
    """guest-add through qemu.qmp; returns the guest's socket path."""
    from qemu.qmp import QMPClient

    c = QMPClient("fixture")
    await c.connect(daemon.control)
    try:
        info = await c.execute("guest-add", {"name": name, **args})
    finally:
        await c.disconnect()
    return str(info["socket"])


# -- Shared and custom daemons, and RawQmp for modules that cannot import this file ----------
# (Several conftest.py files exist under tests/, so `import conftest` is ambiguous.)


def _finish(d: DaemonProc) -> tuple[int, str]:
    """Stop a daemon this suite started (SIGKILL if SIGTERM is not enough), drop its dirs;
    return its exit code and what it wrote to stderr."""
    try:
        code = d.stop(timeout=10)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        code = d.proc.wait(10)
    err = d.proc.stderr.read().decode(errors="replace") if d.proc.stderr else ""
    for pipe in (d.proc.stdout, d.proc.stderr):
        if pipe is not None:
            pipe.close()
    shutil.rmtree(d.base, ignore_errors=True)
    return code, err


@pytest.fixture(scope="module")
def module_daemon() -> Iterator[DaemonProc]:
    """One daemon for a whole test module (table-driven tests would otherwise start hundreds).

    Tests must leave it as they found it (remove the guests they add). Logs at warning level
    so that nothing fills the undrained stderr pipe over hundreds of tests.
    """
    d = start_daemon(short_tmpdir(), "--log-level", "warning")
    yield d
    code, err = _finish(d)
    assert code == 0, f"sevd exited with {code}: {err}"


@pytest.fixture
def spawn_daemon() -> Iterator[Any]:
    """`spawn(*flags, base=None, wait=True, env=None) -> DaemonProc`: daemons for one test.

    Each runs on `base` (default: a fresh short directory) and is stopped at the end of the
    test whatever state it is in; its directory is removed.
    """
    started: list[DaemonProc] = []

    def spawn(*extra: str, base: Path | None = None, wait: bool = True,
              env: dict[str, str] | None = None) -> DaemonProc:
        d = start_daemon(base or short_tmpdir(), *extra, wait=wait, env=env)
        started.append(d)
        return d

    yield spawn
    for d in started:
        _finish(d)


@pytest.fixture
def raw_qmp() -> type[RawQmp]:
    """The `RawQmp` class itself."""
    return RawQmp
