"""Real GNU gdb against a real daemon's gdb stub, started through HMP `gdbserver`.

Proves, for guests launched through the owner's flow and booted: gdb connects with
`target remote` over a unix socket and over loopback TCP, reads the heartbeat structure
the guest workload wrote and the owner's injected secret in plaintext (NODBG clear),
writes a value into private memory that then reads back through `xp` over QMP while the
hypervisor view stays ciphertext, writes into the shared window in plaintext, and shows the
vCPU's long-mode registers; gdb's `monitor` runs HMP's `xp` in the guest. With NODBG,
and with `security-policy: {"debug": false}`, gdb's memory reads and writes fail with
`Cannot access memory` (registers still read).
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest
from debug_support import (
    GDB,
    HEARTBEAT,
    SECRET,
    SHARED_WINDOW,
    Qmp,
    dump_bytes,
    free_port,
    heartbeat_record,
    hmp,
    launched,
    qmp,
    short_tmpdir,
    view,
)

pytestmark = pytest.mark.skipif(GDB is None, reason="gdb is not installed")


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


async def test_gdb_reads_and_writes_a_debuggable_guest_over_unix(control: Qmp) -> None:
    work = short_tmpdir()
    sock = str(work / "gdb.sock")
    secret_file = work / "secret.bin"
    value = 0x1122334455667788
    async with launched(control, "milan", policy=0x0) as guest, qmp(guest.socket) as g:
        assert await hmp(g, f"gdbserver unix:{sock}") == (
            f"Waiting for gdb connection on device 'unix:{sock}'\r\n")
        _, beats, _ = heartbeat_record(dump_bytes(await hmp(g, f"xp /3xg {HEARTBEAT:#x}"), 8))
        n = len(guest.secret_table)
        out = await run_gdb(
            sock,
            f"x/3gx {HEARTBEAT:#x}",
            f"x/s {HEARTBEAT:#x}",
            f"dump binary memory {secret_file} {guest.secret_gpa:#x} "
            f"{guest.secret_gpa + n:#x}",
            f"set {{long}}{HEARTBEAT + 24:#x} = {value:#x}",
            f"set {{int}}{SHARED_WINDOW[0] + 0x100:#x} = 0x600dcafe",
            "info registers rip rsp cr0 cr3 efer",
            f"monitor xp /1xg {HEARTBEAT:#x}",
            "detach")
        assert f"{HEARTBEAT:#x}:\t0x3130424844564553\t{beats:#018x}" in out, out
        assert f"{HEARTBEAT + 16:#x}:\t0x0000000000000001" in out, out
        assert f'{HEARTBEAT:#x}:\t"SEVDHB01' in out, out
        assert secret_file.read_bytes() == guest.secret_table and SECRET in guest.secret_table
        for line in ("rip            0x101000", "rsp            0x80000",
                     "cr3            0x8000000009000", "[ SCE LME LMA NXE ]"):
            assert line in out, (line, out)
        # gdb's `monitor` runs HMP in the guest's monitor: the same plaintext
        assert f"\n{HEARTBEAT:016x}: 0x3130424844564553\r\n" in out, out
        assert "[Inferior 1 (process 1) detached]" in out, out

        # The write went through DBG_ENCRYPT: plaintext to the monitor, ciphertext stored.
        assert await hmp(g, f"xp /1xg {HEARTBEAT + 24:#x}") == (
            f"{HEARTBEAT + 24:016x}: {value:#018x}\r\n")
        stored = await view(g, HEARTBEAT, 4096)
        assert struct.pack("<Q", value) not in stored and b"SEVDHB01" not in stored
        # The shared window is written as is: the hypervisor sees the value.
        assert await view(g, SHARED_WINDOW[0] + 0x100, 4) == struct.pack("<I", 0x600DCAFE)


async def test_gdb_over_loopback_tcp(control: Qmp, dumps: Path) -> None:
    async with launched(control, "milan", policy=0x0) as guest, qmp(guest.socket) as g:
        port = free_port()
        assert await hmp(g, f"gdbserver tcp::{port}") == (
            f"Waiting for gdb connection on device 'tcp::{port}'\r\n")
        big = short_tmpdir() / "big.bin"
        out = await run_gdb(f"127.0.0.1:{port}", f"x/2gx {HEARTBEAT:#x}", "p/x $pc",
                            f"x/s {guest.secret_gpa + 0x28:#x}",
                            f"dump binary memory {big} {HEARTBEAT:#x} {HEARTBEAT + 0x80000:#x}",
                            f"x/2gx {(256 << 20) - 8:#x}", "detach")
        # 512 KiB through many m packets: the same bytes as a physical dump
        await g.execute("pmemsave", {"val": HEARTBEAT, "size": 0x80000, "filename": "gb.bin"})
        assert big.read_bytes() == (dumps / "gb.bin").read_bytes()
        # the last mapped giant, then the end of the identity map
        assert "Cannot access memory at address 0x10000000" in out, out
        assert f"{HEARTBEAT:#x}:\t0x3130424844564553" in out, out
        assert "= 0x101000" in out, out
        secret_at = guest.secret_table.index(SECRET)
        assert secret_at == 0x28  # GUIDed table header (16+4) + entry header (16+4)
        assert f'"{SECRET[:-1].decode()}"' in out, out
        assert "[Inferior 1 (process 1) detached]" in out, out


@pytest.mark.parametrize("case", ["nodbg", "debug-off"])
async def test_gdb_memory_access_fails_without_debug(control: Qmp, case: str) -> None:
    sock = str(short_tmpdir() / "gdb.sock")
    policy, debug = (0x1, True) if case == "nodbg" else (0x0, False)
    async with launched(control, "milan", policy=policy, debug=debug) as guest, \
            qmp(guest.socket) as g:
        before = await view(g, HEARTBEAT, 4096)
        assert "Waiting for gdb connection" in await hmp(g, f"gdbserver unix:{sock}")
        out = await run_gdb(sock, f"x/gx {HEARTBEAT:#x}",
                            f"set {{long}}{HEARTBEAT:#x} = 1", "p/x $rip", "detach")
        assert f"Cannot access memory at address {HEARTBEAT:#x}" in out, out
        assert out.count("Cannot access memory") >= 2, out
        assert "= 0x101000" in out, out
        assert await view(g, HEARTBEAT, 4096) == before  # nothing was written
    Path(sock).unlink(missing_ok=True)
