"""memsave / pmemsave on a real daemon: where dumps go, what they hold, what is refused.

Proves, over QMP and HMP (`human-monitor-command`), that dumps are written only under the
configured dump directory (`paths.dump_dir`): relative names resolve there (sub-folders
that exist included), absolute names inside it are honoured, `..`, absolute paths outside
and symlinks leading out are refused and nothing is written outside; files have mode 0640.
Sizes: negative or over the limit are errors (QEMU 7.2 segfaults there), 0 creates an
empty file, `pmemsave` beyond RAM writes zeros as QEMU does, a 256 MiB dump is streamed
(the daemon's peak memory grows by far less than the dump), `memsave` of an unmapped
virtual range is QEMU's `Invalid addr …` error with no file left, the QMP `cpu-index` is
checked. A bad file name is reported before a bad address, as QEMU opens the file first (but a
failed dump leaves no file, where QEMU leaves it empty). HMP's argument parsing is QEMU's:
an unquoted absolute path is a division (reference/qmp.md §8.5), and the error texts of
these forms are compared with a real QEMU 7.2 where `qemu-system-x86_64` is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debug_support import (
    BUILTIN,
    HEARTBEAT,
    QEMU,
    SHARED_WINDOW,
    Qmp,
    debug_daemon,
    dump_bytes,
    error_of,
    hmp,
    launched,
    qmp,
    short_tmpdir,
    stop_daemon,
    view,
)

RAM = 256 << 20
TRY = 'Try "help {}" for more information\r\n'


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


async def test_names_resolve_in_the_dump_directory(control: Qmp, dumps: Path) -> None:
    async with launched(control, "milan", policy=0x0) as guest, qmp(guest.socket) as g:
        page = dump_bytes(await hmp(g, f"xp /512xg {HEARTBEAT:#x}"), 8)
        (dumps / "sub").mkdir(exist_ok=True)
        await g.execute("pmemsave", {"val": HEARTBEAT, "size": 4096, "filename": "q-p.bin"})
        await g.execute("memsave", {"val": HEARTBEAT, "size": 4096,
                                    "filename": "sub/q-v.bin"})
        await g.execute("pmemsave", {"val": HEARTBEAT, "size": 4096,
                                     "filename": str(dumps / "q-abs.bin")})
        await g.execute("pmemsave", {"val": HEARTBEAT, "size": 4096,
                                     "filename": "./q-dot.bin"})
        for line in (f'pmemsave {HEARTBEAT:#x} 4096 "h p.bin"',
                     f"pmemsave {HEARTBEAT:#x} 4096 h-unquoted.bin",
                     f'memsave {HEARTBEAT:#x} 4096 "sub/h-v.bin"',
                     f'memsave {HEARTBEAT:#x} 4096 "{dumps}/h-abs.bin"'):
            assert await hmp(g, line) == "", line
        names = ["q-p.bin", "sub/q-v.bin", "q-abs.bin", "q-dot.bin", "h p.bin",
                 "h-unquoted.bin", "sub/h-v.bin", "h-abs.bin"]
        for name in names:
            assert (dumps / name).read_bytes() == page, name
            assert mode(dumps / name) == 0o640, name
        # A second dump to the same name replaces the file.
        await g.execute("pmemsave", {"val": HEARTBEAT, "size": 8, "filename": "q-p.bin"})
        assert (dumps / "q-p.bin").read_bytes() == b"SEVDHB01"


async def test_qemus_own_example_before_paging(control: Qmp, dumps: Path) -> None:
    """`memsave 0 16 "file"` (reference/qmp.md §8.5) on a paused guest whose firmware has
    not built page tables yet: virtual is physical, plaintext of what the loader copied."""
    async with launched(control, "milan", policy=0x0, boot=False) as guest, \
            qmp(guest.socket) as g:
        assert await hmp(g, "info mem") == "PG disabled\r\n"
        assert await hmp(g, 'memsave 0 16 "m0.bin"') == ""
        assert await hmp(g, 'pmemsave 0xfffffff0 16 "reset.bin"') == ""
        assert (dumps / "m0.bin").read_bytes() == dump_bytes(await hmp(g, "xp /16xb 0"), 1)
        reset = (dumps / "reset.bin").read_bytes()
        assert reset == BUILTIN.read_bytes()[-16:]  # the image, as the loader copied it
        assert reset == dump_bytes(await hmp(g, "x /16xb 0xfffffff0"), 1)
        assert reset != await view(g, 0xFFFFFFF0, 16)  # the firmware is stored encrypted
        assert await hmp(g, "gva2gpa 0xfffffff0") == "gpa: 0xfffffff0\r\n"


async def test_names_outside_are_refused(control: Qmp, dumps: Path) -> None:
    outside = short_tmpdir()
    (dumps / "out").unlink(missing_ok=True)
    (dumps / "out").symlink_to(outside)
    try:
        async with launched(control, "milan", policy=None) as guest, qmp(guest.socket) as g:
            for name, text in (
                    ("../escape.bin", "File name '../escape.bin' must not contain '..'"),
                    ("sub/../../escape.bin",
                     "File name 'sub/../../escape.bin' must not contain '..'"),
                    (str(outside / "x.bin"),
                     f"File '{outside}/x.bin' is outside the dump directory ({dumps})"),
                    ("out/x.bin", f"File 'out/x.bin' is outside the dump directory ({dumps})"),
                    ("nodir/x.bin", "Could not open 'nodir/x.bin': No such file or directory"),
                    ("", "File name must not be empty")):
                for cmd in ("memsave", "pmemsave"):
                    args = {"val": HEARTBEAT, "size": 16, "filename": name}
                    assert await error_of(g, cmd, args) == text, (cmd, name)
                    assert await hmp(g, f'{cmd} {HEARTBEAT:#x} 16 "{name}"') == (
                        f"Error: {text}\r\n"), (cmd, name)
            assert list(outside.iterdir()) == []
            assert not (dumps.parent / "escape.bin").exists()
    finally:
        (dumps / "out").unlink()
        outside.rmdir()


async def test_sizes(control: Qmp, dumps: Path) -> None:
    async with launched(control, "milan", policy=None, memory=RAM) as guest, \
            qmp(guest.socket) as g:
        limit = 4 << 30
        for cmd in ("memsave", "pmemsave"):
            for size in (-1, -4096, limit + 1, (1 << 63) - 1):
                args = {"val": HEARTBEAT, "size": size, "filename": f"{cmd}-bad.bin"}
                assert await error_of(g, cmd, args) == (
                    f"Invalid size {size}: it must be 0 to {limit} bytes"), (cmd, size)
            assert not (dumps / f"{cmd}-bad.bin").exists()
            # size 0: an empty file, even where nothing is mapped
            await g.execute(cmd, {"val": 0, "size": 0, "filename": f"{cmd}-0.bin"})
            assert (dumps / f"{cmd}-0.bin").read_bytes() == b""
            assert await hmp(g, f'{cmd} 0 0 "{cmd}-h0.bin"') == ""
            assert (dumps / f"{cmd}-h0.bin").read_bytes() == b""
        # HMP sizes are 32-bit (QEMU's 'i' argument type).
        assert await hmp(g, 'pmemsave 0 (-1) "f"') == (
            "'pmemsave' has failed: integer is for 32-bit values\r\n" + TRY.format("pmemsave"))
        assert await hmp(g, 'pmemsave 0 0x100000000 "f"') == (
            "'pmemsave' has failed: integer is for 32-bit values\r\n" + TRY.format("pmemsave"))
        assert not (dumps / "f").exists()

        # pmemsave beyond RAM writes zeros (QEMU's address_space_read of unassigned memory)
        await g.execute("pmemsave", {"val": 0x7FFFFFFF0000, "size": 16, "filename": "z.bin"})
        assert (dumps / "z.bin").read_bytes() == bytes(16)
        # ... and wraps at 2^64 as QEMU's does (observed on 7.2: zeros, then RAM at 0)
        size = 16 + HEARTBEAT + 8
        await g.execute("pmemsave", {"val": (1 << 64) - 16, "size": size, "filename": "w.bin"})
        wrapped = (dumps / "w.bin").read_bytes()
        assert wrapped == bytes(16) + await view(g, 0, HEARTBEAT + 8)
        assert wrapped[-8:] == b"SEVDHB01"
        # ... and across the end of RAM: RAM, then zeros up to the firmware, then the ROM.
        start = RAM - 4096
        await g.execute("pmemsave", {"val": start, "size": 8192, "filename": "edge.bin"})
        assert (dumps / "edge.bin").read_bytes() == await view(g, start, 4096) + bytes(4096)
        rom = await view(g, 0xFFFE0000, 0x20000)
        await g.execute("pmemsave", {"val": 0xFFFE0000 - 16, "size": 0x20010,
                                     "filename": "rom.bin"})
        assert (dumps / "rom.bin").read_bytes() == bytes(16) + rom

        # memsave of unmapped virtual memory: QEMU's error, and no file.
        for addr in (0x7FFFFFFF0000, 0, RAM - 8):
            text = f"Invalid addr 0x{addr:016x}/size 16 specified"
            assert await error_of(g, "memsave", {"val": addr, "size": 16,
                                                 "filename": "v.bin"}) == text
            assert await hmp(g, f'memsave {addr:#x} 16 "v.bin"') == f"Error: {text}\r\n"
        assert not (dumps / "v.bin").exists()
        # A virtual range that ends exactly at the end of the identity map is fine.
        await g.execute("memsave", {"val": RAM - 16, "size": 16, "filename": "v-end.bin"})
        assert (dumps / "v-end.bin").read_bytes() == await view(g, RAM - 16, 16)


async def test_a_bad_file_is_reported_before_a_bad_address(control: Qmp, dumps: Path) -> None:
    """QEMU opens the file before it reads memory; sevd checks in the same order (and
    removes the file when the read then fails)."""
    async with launched(control, "milan", policy=0x0) as guest, qmp(guest.socket) as g:
        for name, text in (("nodir/x.bin", "Could not open 'nodir/x.bin': No such file or "
                                           "directory"),
                           ("../x.bin", "File name '../x.bin' must not contain '..'")):
            assert await error_of(g, "memsave", {"val": 0x7FFFFFFF0000, "size": 16,
                                                 "filename": name}) == text
        assert await error_of(g, "memsave", {"val": 0x7FFFFFFF0000, "size": 16,
                                             "filename": "late.bin"}) == (
            "Invalid addr 0x00007fffffff0000/size 16 specified")
        assert not (dumps / "late.bin").exists()
        # A dump whose second MiB is unmapped: the partial file is removed too.
        (dumps / "late.bin").write_bytes(b"old")
        assert await error_of(g, "memsave", {"val": (256 << 20) - (1 << 20),
                                             "size": 2 << 20, "filename": "late.bin"}) == (
            f"Invalid addr 0x{(256 << 20) - (1 << 20):016x}/size {2 << 20} specified")
        assert not (dumps / "late.bin").exists()


async def test_a_firmware_failure_mid_dump_leaves_no_file(control: Qmp, dumps: Path) -> None:
    """DBG_DECRYPT failing (an injected HWERROR_PLATFORM) in the middle of a pmemsave: the
    shared window (2 MiB, no firmware call) is written, then the private MiB after it
    fails. QEMU's address_space_read has no such failure; sevd reports it and removes the
    partial file."""
    async with launched(control, "milan", policy=0x0) as guest, qmp(guest.socket) as g:
        await control.execute("sev-fault-inject", {"command": "dbg-decrypt", "status": 19,
                                                   "guest": guest.name})
        args = {"val": SHARED_WINDOW[0], "size": 4 << 20, "filename": "f.bin"}
        assert await error_of(g, "pmemsave", args) == (
            f"Debug read of guest '{guest.name}' memory at {SHARED_WINDOW[1]:#x} failed in "
            "the firmware")
        assert not (dumps / "f.bin").exists()
        assert await control.execute("query-sev-faults") == []
        await g.execute("pmemsave", args)
        assert (dumps / "f.bin").read_bytes()[:8] == b"SEVDHB01"


async def test_cpu_index(control: Qmp, dumps: Path) -> None:
    async with launched(control, "milan", policy=0x0, cpus=2) as guest, \
            qmp(guest.socket) as g:
        for index in (2, 7, -1):
            assert await error_of(g, "memsave", {
                "val": HEARTBEAT, "size": 16, "filename": "cpu.bin", "cpu-index": index}
            ) == "Parameter 'cpu-index' expects a CPU number"
        assert not (dumps / "cpu.bin").exists()
        await g.execute("memsave", {"val": HEARTBEAT, "size": 8, "filename": "cpu1.bin",
                                    "cpu-index": 1})
        assert (dumps / "cpu1.bin").read_bytes() == b"SEVDHB01"


async def test_unquoted_absolute_path_is_a_division(control: Qmp, dumps: Path) -> None:
    target = short_tmpdir() / "t.bin"
    async with launched(control, "milan", policy=0x0) as guest, qmp(guest.socket) as g:
        for cmd in ("memsave", "pmemsave"):
            assert await hmp(g, f"{cmd} {HEARTBEAT:#x} 16 {target}") == (
                "invalid char 't' in expression\r\n" + TRY.format(cmd))
            # 16 / 2 = 8, and then there is no file name left
            assert await hmp(g, f"{cmd} {HEARTBEAT:#x} 16 /2") == (
                f"{cmd}: string expected\r\n" + TRY.format(cmd))
        assert not target.exists()
        # quoted, the same path inside the dump directory is a file name
        assert await hmp(g, f'pmemsave {HEARTBEAT:#x} 8 "{dumps}/t.bin"') == ""
        assert (dumps / "t.bin").read_bytes() == b"SEVDHB01"


# -- the same error texts from a real QEMU ---------------------------------------------------

LINES = [
    "memsave 0 16 /tmp/never-written.bin",
    "pmemsave 0 4096 /tmp/never-written.bin",
    "memsave 0 16 /2",
    'pmemsave 0 -1 "f"',
    'pmemsave 0 (-1) "f"',
    'pmemsave 0 0x100000000 "f"',
    "memsave 0 16",
    "pmemsave 0",
    "pmemsave 0 16 a.bin extra",
    "memsave",
    # the file is opened before memory is read: its error comes first
    'memsave 0x7fffffff0000 16 "nodir/x.bin"',
    'pmemsave 0 16 "nodir/x.bin"',
    # an unmapped virtual range (QEMU -S: paging off; sevd: beyond the identity map)
    'memsave 0x7fffffff0000 16 "v.bin"',
]


class _Qemu:
    """A minimal synchronous QMP client of a real QEMU."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(20)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb")
        json.loads(self.file.readline())
        self.execute("qmp_capabilities")

    def execute(self, name: str, **arguments: Any) -> Any:
        self.file.write(json.dumps({"execute": name, "arguments": arguments}).encode() + b"\n")
        self.file.flush()
        while True:
            msg = json.loads(self.file.readline())
            if "event" not in msg:
                return msg["return"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextlib.contextmanager
def real_qemu() -> Iterator[tuple[_Qemu, Path]]:
    assert QEMU is not None
    work = short_tmpdir()
    sock = str(work / "q.sock")
    proc = subprocess.Popen(
        [QEMU, "-machine", "q35,accel=tcg", "-m", "256", "-display", "none", "-nodefaults",
         "-nic", "none", "-S", "-qmp", f"unix:{sock},server=on,wait=off"],
        cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        client = None
        while client is None:
            try:
                client = _Qemu(sock)
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.02)
        yield client, work
        client.close()
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
async def test_argument_errors_match_real_qemu(control: Qmp, dumps: Path) -> None:
    before = set(os.listdir(dumps))
    async with launched(control, "milan", policy=0x0) as guest, qmp(guest.socket) as g:
        ours = [await hmp(g, line) for line in LINES]
    with real_qemu() as (q, work):
        theirs = [q.execute("human-monitor-command", **{"command-line": line})
                  for line in LINES]
        written = {p.name: p.stat().st_size for p in work.iterdir() if p.name != "q.sock"}
    assert ours == theirs
    assert all(text for text in ours)  # every line is an error
    # QEMU leaves the file of a failed memsave behind, empty; sevd removes it.
    assert written == {"v.bin": 0}
    assert set(os.listdir(dumps)) == before
    assert not Path("/tmp/never-written.bin").exists()


async def test_a_large_dump_is_streamed_not_held_in_memory() -> None:
    """A 256 MiB pmemsave raises the daemon's peak memory (VmHWM) by far less than 256 MiB:
    the dump is written chunk by chunk (it was first held whole, then written)."""
    d, dumps = debug_daemon()
    try:
        async with qmp(d.control) as c, launched(c, "milan", policy=None, memory=RAM) as guest, \
                qmp(guest.socket) as g:
            await g.execute("pmemsave", {"val": 0, "size": 1 << 20, "filename": "warm.bin"})
            before = peak_kib(d.proc.pid)
            await g.execute("pmemsave", {"val": 0, "size": RAM, "filename": "all.bin"})
            grown = (peak_kib(d.proc.pid) - before) >> 10
            assert (dumps / "all.bin").stat().st_size == RAM
            with (dumps / "all.bin").open("rb") as f:
                f.seek(HEARTBEAT)
                assert f.read(8) == b"SEVDHB01"
            (dumps / "all.bin").unlink()
            assert grown < 64, f"peak memory grew by {grown} MiB"
    finally:
        stop_daemon(d)


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")
