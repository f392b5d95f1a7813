"""What the QMP benchmarks share: servers to measure and one low-level client for all of them.

Three kinds of server, each in its own process so that every one gets a core of its own:

* ``Sevd``: ``python -m sevd`` on a temporary runtime directory, with the test suite's cached
  platform identity in its state directory (an existing state dir, as after a first start);
* ``Responder``: the trivial asyncio server of this file (greeting, then one fixed reply per
  input line, nothing parsed): the ceiling of a Python asyncio server on this machine;
* ``Qemu``: a real ``qemu-system-x86_64`` with one ``-qmp`` unix socket per client, since a
  QEMU chardev serves one client at a time.

``Client`` is deliberately small: blocking connect and negotiation, then non-blocking sockets
driven by ``selectors`` with compact, pre-encoded commands, counting reply lines. It costs
a few microseconds per message, the same for every server, so the server is what is
measured (qemu.qmp costs about 100 µs per message of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEGOTIATE = b'{"execute":"qmp_capabilities"}\n'


def pct(values: list[float], q: float) -> float:
    """The q-quantile by the nearest-rank method."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(len(s) * q) - 1))] if s else float("nan")


def identity(profile: str = "milan") -> bytes:
    """The test suite's cached platform identity, generated (seconds, once) if missing."""
    cache = ROOT / ".pytest_cache" / "sevd-identities" / f"{profile}.identity"
    if cache.exists():
        return cache.read_bytes()
    from sevd.domain.psp import generate

    print(f"generating a {profile} platform identity (once)...", file=sys.stderr)
    data = generate(profile, b"sevd integration tests " + profile.encode()).to_bytes()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, cache)
    return data


def machine_facts() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    qemu = "absent"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                              text=True, timeout=10).stdout.splitlines()[0]
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "python": sys.version.split()[0],
            "qemu": qemu}


def wait_for_path(path: str, proc: subprocess.Popen[bytes], what: str,
                  timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not create {path}")
        time.sleep(0.005)


# -- servers ----------------------------------------------------------------------------------

@dataclass
class Server:
    """A server process and the socket paths its clients use (one per client for QEMU)."""

    name: str
    proc: subprocess.Popen[bytes]
    base: Path
    sockets: list[str] = field(default_factory=list)

    def socket_for(self, i: int) -> str:
        return self.sockets[i % len(self.sockets)]

    def pin(self, cpus: set[int]) -> None:
        """Run every thread of the server on `cpus` (QEMU has several)."""
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), cpus)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def seed_state(state: Path, profile: str = "milan") -> None:
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    ident = state / f"platform-{profile}.identity"
    if not ident.exists():
        ident.write_bytes(identity(profile))
        ident.chmod(0o600)


def sevd_command(base: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sevd", "--runtime-dir", str(base / "run"),
            "--state-dir", str(base / "state"), "--log-level", "warning", *extra]


def start_sevd(guest: str = "b0", *extra: str, root: Path = ROOT,
               name: str = "sevd") -> Server:
    """sevd with one paused SEV guest (QEMU's ``-S``); its guest socket is what is measured.
    `root` is the source tree to run it from (another checkout, for a before/after)."""
    base = Path(tempfile.mkdtemp(prefix="svq", dir="/tmp"))
    seed_state(base / "state")
    log = open(base / "sevd.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(sevd_command(base, *extra), stdout=log, stderr=log, cwd=base,
                            env={**os.environ, "PYTHONPATH": str(root)})
    server = Server(name, proc, base)
    control = str(base / "run" / "sevd.sock")
    wait_for_path(control, proc, "sevd")
    c = Client.connect(control)
    reply = c.call(b'{"execute":"guest-add","arguments":{"name":"%s","sev-guest":'
                   b'{"policy":1,"cbitpos":51,"reduced-phys-bits":1}}}\n' % guest.encode())
    c.close()
    if b'"return"' not in reply:
        raise SystemExit(f"guest-add failed: {reply!r}")
    server.sockets = [str(base / "run" / "guests" / f"{guest}.qmp")]
    return server


def start_responder() -> Server:
    base = Path(tempfile.mkdtemp(prefix="svr", dir="/tmp"))
    path = str(base / "r.sock")
    proc = subprocess.Popen([sys.executable, str(Path(__file__)), "responder", path],
                            cwd=base)
    wait_for_path(path, proc, "the responder")
    return Server("ceiling", proc, base, [path])


def start_qemu(monitors: int = 16) -> Server:
    """QEMU 7.2 as the issue describes it: q35/TCG, ``-S``, no devices, ``monitors`` QMP
    sockets (one client each: a chardev serves one client at a time)."""
    base = Path(tempfile.mkdtemp(prefix="svm", dir="/tmp"))
    paths = [str(base / f"m{i}.sock") for i in range(monitors)]
    args = ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-S", "-nodefaults",
            "-display", "none", "-nic", "none"]
    for p in paths:
        args += ["-qmp", f"unix:{p},server=on,wait=off"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for p in paths:
        wait_for_path(p, proc, "QEMU")
    return Server("qemu", proc, base, paths)


# -- the trivial responder (the ceiling) -------------------------------------------------------

GREETING = (b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 9}, '
            b'"package": ""}, "capabilities": ["oob"]}}\r\n')
FIXED_REPLY = b'{"return": {"running": false, "singlestep": false, "status": "prelaunch"}}\r\n'


class _Responder(asyncio.Protocol):
    """Greeting, then one fixed reply per newline received: no parsing, no dispatch."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(GREETING)

    def data_received(self, data: bytes) -> None:
        n = data.count(b"\n")
        if n:
            self.transport.write(FIXED_REPLY * n)


async def _serve_responder(path: str) -> None:
    # asyncio reads into a fresh 256 KiB buffer per recv(). Until glibc has seen a block of
    # that size freed, it serves each one with mmap (then mremap, munmap): three system
    # calls per message that sevd, a long-running process with a warm heap, does not pay.
    # One large block freed here raises glibc's dynamic mmap threshold the same way, so the
    # ceiling is what asyncio itself costs.
    warm = bytearray(1 << 20)
    del warm
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await loop.create_unix_server(_Responder, path, backlog=1024)
    async with server:
        await stop.wait()


# -- the client -------------------------------------------------------------------------------

class Client:
    """One QMP connection: blocking while connecting, then driven by ``run`` below."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    @classmethod
    def connect(cls, path: str, negotiate: bool = True) -> Client:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        c = cls(s)
        greeting = c.readline()
        if not greeting.startswith(b'{"QMP"'):
            raise SystemExit(f"no greeting on {path}: {greeting!r}")
        if negotiate:
            reply = c.call(NEGOTIATE)
            if b'"return"' not in reply:
                raise SystemExit(f"negotiation failed on {path}: {reply!r}")
        return c

    def readline(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def call(self, command: bytes) -> bytes:
        """One command, its reply line (events are skipped)."""
        self.sock.sendall(command)
        while True:
            line = self.readline()
            if not line.startswith(b'{"timestamp"'):
                return line

    def close(self) -> None:
        self.sock.close()


@dataclass
class Result:
    seconds: float
    commands: int
    latencies: list[float]  # seconds per round trip (closed loop only)
    last_line: bytes

    @property
    def rate(self) -> float:
        return self.commands / self.seconds


def run(clients: list[Client], commands: list[list[bytes]], window: int) -> Result:
    """Send ``commands[i]`` on ``clients[i]`` with at most ``window`` unanswered per client
    (1 = closed loop: each reply triggers the next command); return when every reply is in.

    Replies are counted as lines (the measured commands emit no events); the buffer is
    never parsed, which keeps the client's cost per message at a few microseconds.
    """
    sel = selectors.DefaultSelector()
    n = len(clients)
    sent = [0] * n
    answered = [0] * n
    pending_out = [b""] * n
    started = [0.0] * n
    latencies: list[float] = []
    last = b""
    remaining = sum(len(c) for c in commands)
    total = remaining
    clock = time.perf_counter
    for i, c in enumerate(clients):
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, i)

    def send_more(i: int) -> None:
        cmds = commands[i]
        k = min(len(cmds), answered[i] + window)
        if k > sent[i]:
            pending_out[i] += b"".join(cmds[sent[i]:k])
            sent[i] = k
            started[i] = clock() if window == 1 else started[i]
        if pending_out[i]:
            try:
                m = clients[i].sock.send(pending_out[i])
            except BlockingIOError:
                m = 0
            pending_out[i] = pending_out[i][m:]
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending_out[i] else 0)
            sel.modify(clients[i].sock, events, i)

    t0 = clock()
    for i in range(n):
        send_more(i)
    while remaining:
        for key, mask in sel.select():
            i = key.data
            if mask & selectors.EVENT_READ:
                try:
                    data = clients[i].sock.recv(1 << 18)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError("a server closed a benchmark connection")
                got = data.count(b"\n")
                if got:
                    if window == 1:
                        latencies.append(clock() - started[i])
                    answered[i] += got
                    remaining -= got
                    last = data
            send_more(i)
    seconds = clock() - t0
    sel.close()
    for c in clients:
        c.sock.setblocking(True)
    return Result(seconds, total, latencies, last.rsplit(b"\n", 2)[-2] if last else b"")


if __name__ == "__main__" and sys.argv[1:2] == ["responder"]:
    asyncio.run(_serve_responder(sys.argv[2]))
