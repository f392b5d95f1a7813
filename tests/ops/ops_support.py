"""Helpers of the operations tests: a sevd process with its logs in a file, a blocking QMP
client, a datagram listener standing in for systemd's notify socket, and privilege dropping
for clients that must be refused.

Logs go to a file rather than a pipe so that a test can read them at any moment and a chatty
daemon never blocks on a full pipe.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOBODY = 65534
ROOT = Path(__file__).resolve().parents[2]


def short_tmpdir() -> Path:
    """Unix socket paths are limited to 107 bytes: keep test directories short."""
    return Path(tempfile.mkdtemp(prefix="so", dir="/tmp"))


def drop_privileges(uid: int = NOBODY, gid: int = NOBODY) -> None:
    """In a forked child: become `uid`/`gid` with no supplementary groups."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


@dataclass
class Sevd:
    """A `python -m sevd` process on short temporary paths."""

    base: Path
    proc: subprocess.Popen[bytes]
    args: list[str]
    logs: str = "sevd"  # stem of this process's <logs>.stdout / <logs>.stderr files

    @property
    def run_dir(self) -> Path:
        return self.base / "run"

    @property
    def control(self) -> str:
        return str(self.run_dir / "sevd.sock")

    def guest_socket(self, name: str) -> str:
        return str(self.run_dir / "guests" / f"{name}.qmp")

    def log(self) -> str:
        return (self.base / f"{self.logs}.stderr").read_text(errors="replace")

    def stdout(self) -> str:
        return (self.base / f"{self.logs}.stdout").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def wait_log(self, text: str, timeout: float = 5) -> str:
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged; log:\n{log}")
            time.sleep(0.01)


_IDENTITY_CACHE = ROOT / ".pytest_cache" / "sevd-identities"  # shared with tests/conftest.py


def identity(profile: str = "milan") -> bytes:
    """A platform identity generated once and cached (RSA-4096 roots cost seconds)."""
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


def seed_state(state: Path, profile: str = "milan") -> None:
    """Give a state directory the cached identity, as a daemon that ran before would have."""
    ident = state / f"platform-{profile}.identity"
    if not ident.exists():
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        ident.write_bytes(identity(profile))
        ident.chmod(0o600)


def spawn(base: Path, *extra: str, env: dict[str, str] | None = None, wait: bool = True,
          dirs: bool = True, cmd: list[str] | None = None, pyflags: tuple[str, ...] = (),
          logs: str | None = None, **popen: Any) -> Sevd:
    """Start sevd with its runtime/state dirs under `base`; wait until it listens.

    `cmd` goes before the interpreter (e.g. systemd-socket-activate and its options). Each
    process logs to its own `<logs>.stdout`/`<logs>.stderr` in `base` (default: a new name),
    so a daemon started again on the same directories is not mistaken for its predecessor.
    """
    if logs is None:
        n = 0
        while (base / f"sevd{n}.stderr").exists():
            n += 1
        logs = f"sevd{n}"
    args = [*(cmd or []), sys.executable, *pyflags, "-m", "sevd"]
    seed_state(base / "state")
    if dirs:
        args += ["--runtime-dir", str(base / "run"), "--state-dir", str(base / "state")]
    args += list(extra)
    with open(base / f"{logs}.stdout", "ab") as out, open(base / f"{logs}.stderr", "ab") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=str(base),
                                env={**os.environ, **(env or {})}, **popen)
    d = Sevd(base, proc, args, logs)
    if wait:
        wait_for(lambda: os.path.exists(d.control) and "listening on" in d.stdout(), proc,
                 d.log)
    return d


def wait_for(cond: Any, proc: subprocess.Popen[bytes] | None = None, log: Any = None,
             timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"sevd exited with {proc.returncode}: {log() if log else ''}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout} s: {log() if log else ''}")
        time.sleep(0.01)


@contextmanager
def daemon(*extra: str, env: dict[str, str] | None = None) -> Iterator[Sevd]:
    """A daemon that must stop cleanly (exit 0) at the end of the block."""
    base = short_tmpdir()
    d = spawn(base, *extra, env=env)
    try:
        yield d
    finally:
        code = d.stop()
        log = d.log()
        shutil.rmtree(base, ignore_errors=True)
    assert code == 0, f"sevd exited with {code}:\n{log}"


class Client:
    """A blocking byte-level QMP client."""

    def __init__(self, path: str, timeout: float = 10) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    @classmethod
    def negotiated(cls, path: str) -> Client:
        c = cls(path)
        greeting = c.message()
        assert "QMP" in greeting, greeting
        assert c.cmd("qmp_capabilities") == {"return": {}}
        return c

    def line(self) -> bytes:
        """One line, b"" at end of stream."""
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def message(self) -> dict[str, Any]:
        line = self.line()
        assert line, "connection closed"
        msg: dict[str, Any] = json.loads(line)
        return msg

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, name: str, args: dict[str, Any] | None = None, **extra: Any
            ) -> dict[str, Any]:
        """Execute and return the reply, skipping events."""
        msg: dict[str, Any] = {"execute": name, **extra}
        if args is not None:
            msg["arguments"] = args
        self.send(json.dumps(msg).encode())
        while True:
            reply = self.message()
            if "event" not in reply:
                return reply

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NotifyListener:
    """What systemd does for Type=notify: a datagram socket that collects messages."""

    def __init__(self, address: str) -> None:
        self.address = address  # a path or "@abstract"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def collect(self, until: Any, timeout: float = 10) -> None:
        """Read messages until `until(messages)` holds."""
        deadline = time.monotonic() + timeout
        while not until(self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"notify messages so far: {self.messages}")
            self.sock.settimeout(left)
            data = self.sock.recv(4096)
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.messages.append((time.monotonic(), fields))

    def seen(self, key: str, value: str | None = None) -> bool:
        return any(key in m and (value is None or m[key] == value) for _, m in self.messages)

    def close(self) -> None:
        self.sock.close()
