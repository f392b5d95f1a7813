"""Helpers of the proof tests (fuzzing, load): a sevd process whose logs go to files, its
memory as the kernel counts it, and an independent check that a server line is QMP as QEMU
writes it.

The checker does not use sevd's writer: it re-encodes the parsed line by the rules of
QEMU's json-writer.c (`", "` and `": "` separators, ASCII, `\\uXXXX` in upper case for
control characters and code points >= 0x7F, short escapes for `\\b \\f \\n \\r \\t \\" \\\\`,
`/` unescaped) with every number kept as the text it was sent as, and compares byte for
byte.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_IDENTITY_CACHE = ROOT / ".pytest_cache" / "sevd-identities"  # shared with tests/conftest.py

ERROR_CLASSES = frozenset({"GenericError", "CommandNotFound", "DeviceNotActive",
                           "DeviceNotFound", "KVMMissingCap"})


def short_tmpdir() -> Path:
    """Unix socket paths are limited to 107 bytes: keep test directories short."""
    return Path(tempfile.mkdtemp(prefix="svpf", dir="/tmp"))


def identity(profile: str = "milan") -> bytes:
    """The platform identity the whole suite shares (RSA-4096 roots cost seconds)."""
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


@dataclass
class Sevd:
    """`python -m sevd` on short temporary paths, stdout/stderr in files (a chatty daemon
    never blocks on a full pipe, and the log can be read at any moment)."""

    base: Path
    proc: subprocess.Popen[bytes]

    @property
    def control(self) -> str:
        return str(self.base / "run" / "sevd.sock")

    def guest_socket(self, name: str) -> str:
        return str(self.base / "run" / "guests" / f"{name}.qmp")

    def log(self) -> str:
        return (self.base / "sevd.stderr").read_text(errors="replace")

    def rss_kib(self, field: str = "VmRSS") -> int:
        """VmRSS (or another field, e.g. VmHWM, the peak) from /proc/<pid>/status, in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} line")

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current VmRSS (Linux 4.0+, needs the right to write there)."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def cpu_seconds(self) -> float:
        """User + system CPU time the daemon has used."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def spawn(*extra: str) -> Sevd:
    """Start sevd with the cached identity in its state dir; wait until it listens."""
    base = short_tmpdir()
    state = base / "state"
    state.mkdir(mode=0o700)
    ident = state / "platform-milan.identity"
    ident.write_bytes(identity())
    ident.chmod(0o600)
    args = [sys.executable, "-m", "sevd", "--runtime-dir", str(base / "run"),
            "--state-dir", str(state), *extra]
    with open(base / "sevd.stdout", "wb") as out, open(base / "sevd.stderr", "wb") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=str(base),
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    d = Sevd(base, proc)
    deadline = time.monotonic() + 30
    while not os.path.exists(d.control):
        if proc.poll() is not None or time.monotonic() > deadline:
            d.stop()
            raise RuntimeError(f"sevd did not start:\n{d.log()}")
        time.sleep(0.01)
    return d


_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ", re.M)


def tracebacks(log: str) -> dict[str, str]:
    """The log records of a daemon that carry a traceback: {signature: record}. The
    signature is the record's message (after `logger: `) and the last line of the
    traceback (the final exception of a chain), e.g. `command x failed / ValueError: bad`.
    """
    found: dict[str, str] = {}
    starts = [m.start() for m in _RECORD.finditer(log)]
    for a, b in zip(starts, [*starts[1:], len(log)], strict=True):
        record = log[a:b].rstrip("\n")
        if "\nTraceback (most recent call last):" not in record:
            continue
        lines = record.splitlines()
        message = _RECORD.sub("", lines[0]).split(": ", 1)[-1]
        found.setdefault(f"{message} / {lines[-1]}", record)
    return found


# -- QEMU's form of a server line -------------------------------------------------------------

class _Num(str):
    """A number as the text it was written as."""


_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n",
          "\r": "\\r", "\t": "\\t"}
# What json-writer.c does not copy as is: quote, backslash, controls, DEL and beyond ASCII.
_SPECIAL = re.compile(r'["\\\x00-\x1f\x7f-\U0010ffff]')


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    short = _SHORT.get(ch)
    if short is not None:
        return short
    cp = ord(ch)
    if cp <= 0xFFFF:
        return f"\\u{cp:04X}"
    cp -= 0x10000
    return f"\\u{0xD800 | (cp >> 10):04X}\\u{0xDC00 | (cp & 0x3FF):04X}"


def _qemu_string(s: str) -> str:
    return '"' + _SPECIAL.sub(_escape, s) + '"'


def _qemu_encode(v: Any) -> str:
    if isinstance(v, _Num):
        return str.__str__(v)
    if isinstance(v, str):
        return _qemu_string(v)
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, _Pairs):
        return "{" + ", ".join(_qemu_string(k) + ": " + _qemu_encode(x) for k, x in v) + "}"
    return "[" + ", ".join(_qemu_encode(x) for x in v) + "]"


class _Pairs(list[tuple[str, Any]]):
    """An object's members in the order written (duplicates kept)."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_Pairs, parse_int=_Num, parse_float=_Num,
                            parse_constant=_no_constant)


def _plain(v: Any) -> Any:
    if isinstance(v, _Pairs):
        return {k: _plain(x) for k, x in v}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def qmp_line(line: bytes) -> dict[str, Any]:
    """Check that `line` is one server message as QEMU writes it; return it as a dict.

    Raises AssertionError saying what is wrong. The message must be the greeting, a reply
    (`return` or `error` with exactly `class` and `desc` of a QAPI error class, each with an
    optional `id`, in sevd's key order, DESIGN §8) or an event (`timestamp` with `seconds`
    and `microseconds`, `event`, optional `data`).
    """
    assert line.endswith(b"\r\n"), f"not CRLF-terminated: {line[-200:]!r}"
    body = line[:-2]
    assert b"\r" not in body and b"\n" not in body, f"line break inside: {line[:200]!r}"
    assert body.isascii(), f"not ASCII: {line[:200]!r}"
    text = body.decode("ascii")
    pairs = _DECODER.decode(text)
    assert isinstance(pairs, _Pairs), f"not an object: {line[:200]!r}"
    assert _qemu_encode(pairs) == text, f"not in QEMU's writer form: {line[:300]!r}"
    keys = [k for k, _ in pairs]
    assert len(set(keys)) == len(keys), f"duplicate member: {line[:200]!r}"
    msg: dict[str, Any] = _plain(pairs)
    if keys == ["QMP"]:
        qmp = msg["QMP"]
        assert isinstance(qmp, dict) and list(qmp) == ["version", "capabilities"], qmp
        assert list(qmp["version"]) == ["qemu", "package"], qmp
        assert list(qmp["version"]["qemu"]) == ["major", "minor", "micro"], qmp
        assert isinstance(qmp["capabilities"], list), qmp
        return msg
    if "event" in msg:
        assert keys in (["timestamp", "event"], ["timestamp", "event", "data"]), keys
        ts = msg["timestamp"]
        assert isinstance(ts, dict) and list(ts) == ["seconds", "microseconds"], ts
        assert all(isinstance(x, _Num) and x.isdigit() for x in ts.values()), ts
        assert isinstance(msg["event"], str) and msg["event"], msg
        assert "data" not in msg or isinstance(msg["data"], dict), msg
        return msg
    assert keys in (["return"], ["return", "id"], ["error"], ["error", "id"]), \
        f"not a reply: {line[:200]!r}"
    if "error" in msg:
        err = msg["error"]
        assert isinstance(err, dict) and list(err) == ["class", "desc"], line[:200]
        assert err["class"] in ERROR_CLASSES, err
        assert isinstance(err["desc"], str) and err["desc"], err
    return msg


def internal_failure(msg: dict[str, Any]) -> str | None:
    """The text of an error reply that reports a bug rather than bad input, else None.

    The registry turns an unexpected exception into `Internal error in <command>: <type>`,
    the session into `internal error`, and a reply that breaks the command's schema
    (`--validate-returns`) into `Reply of <command> does not match its schema`.
    """
    err = msg.get("error")
    if not isinstance(err, dict):
        return None
    desc = str(err.get("desc", ""))
    if desc.lower().startswith("internal error") or " does not match its schema" in desc:
        return desc
    return None


# -- a probe client in a process of its own ----------------------------------------------------

def probe_main(path: str, interval: float) -> None:
    """Round trips of `query-status` on `path` every `interval` s, one latency (s) per line
    on stdout, until stdin closes. A process of its own, so that what it measures is the
    daemon's responsiveness, not the load generator's event loop."""
    import select
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    buf = b""

    def reply() -> bytes:
        nonlocal buf
        while True:
            while b"\n" not in buf:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise SystemExit("probe: connection closed")
                buf += chunk
            line, _, buf = buf.partition(b"\n")
            if b'"event"' not in line:
                return line

    reply()  # the greeting
    sock.sendall(b'{"execute":"qmp_capabilities"}')
    reply()
    i = 0
    while not select.select([sys.stdin], [], [], interval)[0]:
        t0 = time.monotonic()
        sock.sendall(b'{"execute":"query-status","id":%d}' % i)
        line = reply()
        if b'"return"' not in line:
            raise SystemExit(f"probe: bad reply {line!r}")
        print(time.monotonic() - t0, flush=True)
        i += 1


class Probe:
    """`probe_main` as a subprocess."""

    def __init__(self, path: str, interval: float = 0.02) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "probe", path, str(interval)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def finish(self) -> list[float]:
        """Stop probing; the round trips measured, in seconds."""
        out, _ = self.proc.communicate(b"", timeout=30)
        assert self.proc.returncode == 0, f"probe failed ({self.proc.returncode})"
        return [float(x) for x in out.split()]


if __name__ == "__main__" and sys.argv[1:2] == ["probe"]:
    probe_main(sys.argv[2], float(sys.argv[3]))
