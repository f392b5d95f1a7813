"""Helpers for the debug-path tests: daemons with a dump directory, launched guests, HMP.

Guests are launched as a management stack launches them: the guest owner (`sevowner`,
through tests/sev's `Owner`) verifies the platform, opens a session for the policy,
`guest-add` starts the guest paused, the owner checks the launch measurement against the
digest of the built-in firmware computed by `sevowner` (not by sevd) and injects a secret
table, then `cont` boots the simulated firmware. Guests are then stopped (`stop`), so the
heartbeat stays still while a test compares views of the same memory.
"""

from __future__ import annotations

import base64
import itertools
import shutil
import socket
import struct
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tests" / "sev") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "sev"))

from sev_support import (  # noqa: E402  (tests/sev is put on the path just above)
    BUILTIN,
    DaemonProc,
    Owner,
    Qmp,
    error_of,
    qmp,
    sev_daemon,
    short_tmpdir,
    stop_daemon,
)
from sevowner.measurement import expected_launch_digest  # noqa: E402

from sevd.formats.ovmf import sev_secret_area  # noqa: E402

__all__ = [
    "BUILTIN",
    "CBIT",
    "GDB",
    "HEARTBEAT",
    "QEMU",
    "SECRET",
    "SECRET_GUID",
    "SHARED_WINDOW",
    "DaemonProc",
    "Launched",
    "Qmp",
    "debug_daemon",
    "dump_bytes",
    "error_of",
    "free_port",
    "heartbeat_record",
    "hmp",
    "launched",
    "qmp",
    "short_tmpdir",
    "stop_daemon",
    "view",
]

GDB = shutil.which("gdb")
QEMU = shutil.which("qemu-system-x86_64")

HEARTBEAT = 0x100000                  # private page: "SEVDHB01" ‖ LE64 beats ‖ LE64 boots
SHARED_WINDOW = (0x200000, 0x400000)  # one 2 MiB page with the C-bit clear
CBIT = {"milan": 51, "rome": 47}
SECRET_GUID = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")  # KubeVirt's
SECRET = b"the owner's disk passphrase: correct horse battery staple\x00"
SECRET_AREA = sev_secret_area(BUILTIN.read_bytes()) or (0, 0)

_names = itertools.count(1)


def debug_daemon(profile: str = "milan") -> tuple[DaemonProc, Path]:
    """A daemon of `profile` whose dumps go to `<base>/dumps` (returned beside it)."""
    base = short_tmpdir()
    dumps = base / "dumps"
    d = sev_daemon(base, "--set", f'paths.dump_dir="{dumps}"', "--log-level", "warning",
                   profile=profile)
    return d, dumps


async def hmp(g: Qmp, line: str, cpu: int | None = None) -> str:
    """The `return` of human-monitor-command (a string with `\\r\\n` line ends)."""
    args: dict[str, Any] = {"command-line": line}
    if cpu is not None:
        args["cpu-index"] = cpu
    return str(await g.execute("human-monitor-command", args))


async def view(g: Qmp, gpa: int, size: int) -> bytes:
    """The hypervisor's view (what is stored), through x-sevd-query-memory."""
    reply = await g.execute("x-sevd-query-memory", {"gpa": gpa, "size": size})
    return base64.b64decode(reply["data"], validate=True)


def heartbeat_record(data: bytes) -> tuple[bytes, int, int]:
    """(magic, beats, boots) of a heartbeat page's first 24 bytes."""
    magic, beats, boots = struct.unpack_from("<8sQQ", data)
    return magic, beats, boots


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Launched:
    """A guest launched through the owner's flow, booted, then stopped."""

    name: str
    socket: str
    policy: int | None      # None: not an SEV guest
    secret_table: bytes     # the plaintext table the owner injected (b"" without SEV)
    secret_gpa: int


@asynccontextmanager
async def launched(control: Qmp, profile: str, policy: int | None, *, debug: bool = True,
                   prefix: str = "g", memory: int | None = None, boot: bool = True,
                   **extra: Any) -> AsyncIterator[Launched]:
    """guest-add (SEV with `policy`, or plain when None), measure, inject the secret, cont,
    stop; removed at the end. `debug` is the RFC's security-policy object."""
    name = f"{prefix}{next(_names)}"
    args: dict[str, Any] = {"name": name, **extra}
    if not debug:
        args["security-policy"] = {"debug": False}
    if memory is not None:
        args["memory"] = memory
    owner = None
    if policy is not None:
        owner = await Owner.for_host(control, policy=policy, profile=profile)
        args["sev-guest"] = owner.sev_guest(cbitpos=CBIT[profile])
    info = await control.execute("guest-add", args)
    table = b""
    try:
        async with qmp(info["socket"]) as g:
            if owner is not None:
                from sevd.formats.secret import build_secret_table

                sev = await g.execute("query-sev")
                blob = base64.b64decode(
                    (await g.execute("query-sev-launch-measure"))["data"])
                owner.verify(blob, sev, expected_launch_digest(BUILTIN.read_bytes()))
                packet = owner.secret(blob, {SECRET_GUID: SECRET})
                await g.execute("sev-inject-launch-secret", packet.qmp_arguments())
                table = build_secret_table({SECRET_GUID: SECRET})
            if boot:
                await g.execute("cont")
                await g.execute("stop")
        yield Launched(name, info["socket"], policy, table, SECRET_AREA[0])
    finally:
        await control.execute("guest-remove", {"name": name})


def dump_bytes(text: str, size: int) -> bytes:
    """The bytes an `x`/`xp` dump in format `x` shows (items of `size` bytes, LE), checking
    that every line starts at the address where the previous one ended."""
    out = bytearray()
    first: int | None = None
    for line in text.split("\r\n")[:-1]:
        addr = int(line[:16], 16)
        assert line[16] == ":", line
        if first is None:
            first = addr
        assert addr == first + len(out), (hex(addr), line)
        for item in line[17:].split():
            assert item.startswith("0x") and len(item) == 2 + 2 * size, (item, line)
            out += int(item, 16).to_bytes(size, "little")
    assert text.endswith("\r\n") or text == "", text
    return bytes(out)
