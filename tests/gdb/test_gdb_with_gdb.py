"""Real GNU gdb as the client of sevd's gdb stub (a fake in-memory target behind it).

gdb connects over a unix socket and over loopback TCP, reads a known structure, writes a
value (gdb picks the binary ``X`` packet, escapes included) and reads it back, reads
registers, steps, fails cleanly on unmapped or refused memory, and detaches. Runs where
``gdb`` is installed (Debian's package on the development machines).
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from gdb_fakes import FakeTarget, RunControlTarget

from sevd.transports.gdb import serve_gdb

GDB = shutil.which("gdb")
pytestmark = pytest.mark.skipif(GDB is None, reason="gdb is not installed")

HEARTBEAT = 0x100000
# The workload's heartbeat record (sevd.domain.boot): magic, beats, boots.
RECORD = struct.pack("<8sQQQ", b"SEVDHB01", 41, 2, 0)


async def run_gdb(remote: str, *commands: str, timeout: float = 60) -> str:
    assert GDB is not None
    argv = [GDB, "-batch", "-nx", "-ex", "set architecture i386:x86-64",
            "-ex", "set pagination off", "-ex", f"target remote {remote}"]
    for c in commands:
        argv += ["-ex", c]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return out.decode(errors="replace")


def make_target(cls: type[FakeTarget] = FakeTarget) -> FakeTarget:
    t = cls()
    t.map(HEARTBEAT, RECORD)
    t.regs[0].update(rax=0x1111, rbx=0x2222, rip=0x101000, rsp=0x80000,
                     fs_base=0x7F0000001000, xmm2=(1 << 128) - 1)
    return t


@pytest.fixture
def short_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="sg", dir="/tmp"))


async def test_gdb_reads_writes_and_detaches_over_unix(short_dir: Path) -> None:
    target = make_target(RunControlTarget)
    path = str(short_dir / "gdb.sock")
    value = 0x2A7D24232A7D2423  # bytes '#', '$', '}', '*': every X escape
    async with await serve_gdb(f"unix:{path}", lambda: target):
        out = await run_gdb(
            path,
            f"x/4gx {HEARTBEAT:#x}",
            f"x/s {HEARTBEAT:#x}",
            f"set {{long}}{HEARTBEAT + 8:#x} = 42",
            f"set {{long}}{HEARTBEAT + 24:#x} = {value:#x}",
            f"x/gx {HEARTBEAT + 8:#x}",
            f"x/gx {HEARTBEAT + 24:#x}",
            "info registers rip rsp rax eflags cs ss fs_base cr0 efer",
            "p/x $xmm2.uint128",
            "set $rbx = 0x5555",
            "stepi",
            "x/gx 0x5000",
            "detach",
        )
    assert "0x0000000000101000 in ?? ()" in out, out  # connected, stopped at RIP
    # the structure as stored, as the workload wrote it
    assert f"{HEARTBEAT:#x}:\t0x3130424844564553\t0x0000000000000029" in out, out
    assert f"{HEARTBEAT + 0x10:#x}:\t0x0000000000000002\t0x0000000000000000" in out, out
    assert f'{HEARTBEAT:#x}:\t"SEVDHB01)"' in out, out
    # the writes went through the target and read back
    assert f"{HEARTBEAT + 8:#x}:\t0x000000000000002a" in out, out
    assert f"{HEARTBEAT + 24:#x}:\t{value:#018x}" in out, out
    stored = b"".join(target.pages[HEARTBEAT][8 * i:8 * i + 8] for i in range(4))
    assert struct.unpack("<8sQQQ", stored) == (b"SEVDHB01", 42, 2, value)
    assert any(c[0] == "write" and c[1] == (HEARTBEAT + 24, struct.pack("<Q", value), 0)
               for c in target.calls)
    # registers, in the long-mode state sevd's boot leaves
    for line in ("rip            0x101000", "rsp            0x80000",
                 "rax            0x1111", "eflags         0x246               [ PF ZF IF ]",
                 "cs             0x38", "ss             0x30",
                 "fs_base        0x7f0000001000", "efer           0xd01",
                 # the target description's flag types decode, as with QEMU's
                 "[ PE MP ET NE WP AM PG ]", "[ SCE LME LMA NXE ]"):
        assert line in out, (line, out)
    assert "0xffffffffffffffffffffffffffffffff" in out, out
    assert target.regs[0]["rbx"] == 0x5555
    assert "Cannot access memory at address 0x5000" in out, out
    assert "[Inferior 1 (process 1) detached]" in out, out
    # connected -> paused; stepi is a step of a CPU that does not run; detach -> resumed
    assert target.paused >= 1 and target.resumed == 1


async def test_gdb_over_loopback_tcp() -> None:
    target = make_target()
    async with await serve_gdb("tcp::0", lambda: target) as server:
        out = await run_gdb(f"127.0.0.1:{server.device.port}",
                            f"x/3gx {HEARTBEAT:#x}", "info threads", "detach")
    assert f"{HEARTBEAT:#x}:\t0x3130424844564553\t0x0000000000000029" in out, out
    assert "Thread 1.1" in out, out
    assert "[Inferior 1 (process 1) detached]" in out, out


async def test_gdb_sees_refused_debug_access_as_an_error(short_dir: Path) -> None:
    target = make_target()
    target.refuse = True  # an SEV guest with NODBG, as the lead's adapter reports it
    path = str(short_dir / "nodbg.sock")
    async with await serve_gdb(f"unix:{path}", lambda: target):
        out = await run_gdb(path, f"x/gx {HEARTBEAT:#x}",
                            f"set {{long}}{HEARTBEAT:#x} = 1", "p/x $rip", "detach")
    assert f"Cannot access memory at address {HEARTBEAT:#x}" in out, out
    assert "= 0x101000" in out, out
    assert target.pages[HEARTBEAT][:8] == b"SEVDHB01"


async def test_gdb_with_several_vcpus(short_dir: Path) -> None:
    target = FakeTarget(cpus=2)
    target.regs[1]["rip"] = 0x102000
    path = str(short_dir / "smp.sock")
    async with await serve_gdb(f"unix:{path}", lambda: target):
        out = await run_gdb(path, "info threads", "thread 2", "p/x $pc", "detach")
    assert "Thread 1.2" in out, out
    assert "= 0x102000" in out, out
