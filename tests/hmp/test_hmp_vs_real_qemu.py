"""The same command lines on a real QEMU and on sevd's HMP, compared byte for byte.

Runs only where ``qemu-system-x86_64`` is installed (Debian's package on the development
machines). QEMU is started paused (``-S``, as in reference/qmp.md §8.0); the memory the
fake guest serves is copied out of that QEMU with QMP ``pmemsave`` first, so both sides
dump identical bytes (SeaBIOS's shadow at 0xf0000 and its ROM below 4 GiB).

Deliberate differences are left out of the comparison: ``/i`` (QEMU 7.2 has a
disassembler, sevd prints QEMU's "Asm output not supported" line), and the output of
commands the fake handlers do not implement (``sum``, ``info registers``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hmp_fakes import RAM_SIZE, FakeGuest, build_monitor

from sevd.hmp import HmpMonitor
from sevd.hmp import qemu_rows as rows

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")

ROM_BASE = 0xFFFC0000  # the top 256 KiB below 4 GiB: SeaBIOS's ROM


class Qmp:
    """A minimal synchronous QMP client: enough for human-monitor-command and pmemsave."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(20)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb")
        json.loads(self.file.readline())  # greeting
        self.execute("qmp_capabilities")

    def execute(self, name: str, **arguments: Any) -> Any:
        self.file.write(json.dumps({"execute": name, "arguments": arguments}).encode() + b"\n")
        self.file.flush()
        while True:
            msg = json.loads(self.file.readline())
            if "event" in msg:
                continue
            if "error" in msg:
                raise RuntimeError(msg["error"])
            return msg["return"]

    def hmp(self, line: str) -> str:
        return str(self.execute("human-monitor-command", **{"command-line": line}))

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture(scope="module")
def qemu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Qmp, Path]]:
    assert QEMU is not None
    work = tmp_path_factory.mktemp("qemu")
    sock = str(work / "q.sock")
    proc = subprocess.Popen(
        [QEMU, "-machine", "q35,accel=tcg", "-m", "256", "-display", "none", "-nodefaults",
         "-nic", "none", "-S", "-qmp", f"unix:{sock},server=on,wait=off"],
        cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            assert proc.poll() is None, "QEMU exited at start-up"
            assert time.monotonic() < deadline, "QEMU did not create its QMP socket"
            time.sleep(0.02)
        qmp = Qmp(sock)
        try:
            yield qmp, work
        finally:
            qmp.close()
    finally:
        proc.kill()
        proc.wait()


class SnapshotGuest(FakeGuest):
    """Serves RAM and SeaBIOS's ROM as copied out of the real QEMU."""

    rom: bytes = b""

    def read(self, addr: int, length: int) -> bytes | None:
        if addr >= ROM_BASE and addr + length <= 1 << 32:
            return self.rom[addr - ROM_BASE : addr - ROM_BASE + length]
        return super().read(addr, length)


def _guest_like(qmp: Qmp, work: Path) -> SnapshotGuest:
    low, shadow, rom = work / "low.bin", work / "shadow.bin", work / "rom.bin"
    qmp.execute("pmemsave", val=0, size=0x1000, filename=str(low))
    qmp.execute("pmemsave", val=0xF0000, size=0x10000, filename=str(shadow))
    qmp.execute("pmemsave", val=ROM_BASE, size=(1 << 32) - ROM_BASE, filename=str(rom))
    guest = SnapshotGuest(memory={0: low.read_bytes(), 0xF0000: shadow.read_bytes()})
    guest.rom = rom.read_bytes()
    assert guest.read(0xFFFF0, 5) == bytes.fromhex("ea5be000f0")  # the reset vector
    return guest


LINES = [
    # memory dumps in every format and size, with the sticky defaults carried along
    "xp /8xb 0xffff0", "xp /16xb 0xffff0", "xp /4dh 0xffff0", "xp /3dg 0xffff0",
    "xp /4ob 0xffff0", "xp /4oh 0xffff0", "xp /4ow 0xffff0", "xp /4og 0xffff0",
    "xp /4ub 0xffff0", "xp /16c 0xffff0", "xp /2xL 0xffff0", "xp /x 0xffff0", "xp /2 0xffff0",
    "xp / 0xffff0", "xp /b 0xffff0", "xp /xbx 0xffff0", "xp /3cw 0xffff0", "xp /3cg 0xffff0",
    "xp 0xffff0", "xp /9xg 0xffff0", "xp /17xb 0xfffe0", "xp /5uw 0xfffe4", "xp /3dg 0xffff8",
    "x /4xw 0xffff0", "x /2c 0xffff0", "xp /16xb 0xfffffff0", "xp /4xw 0xfffffffc",
    "xp /4xw 0x100000", "xp /4dw 0", "xp /2xg 0x100000", "xp /0xw 0",
    "xp /4294967297xb 0xffff0", "xp /2147483648xb 0", "xp /4xw 0xffffffffffff",
    "xp /4xb 0x10000000", "xp /1xw -4", "xp /8xw 0xffffff8",
    "xp /1xw 0xffff0+4", "xp /1xw (0xffff0+4)", "xp /1xw 0xffff0 - 4*4", "xp/1xw 0xffff0",
    # parse errors
    "x", "x /4xw", "xp /4xq 0", "xp /4xw zz", "xp /1xw 1k", "xp /1xw 0x", "xp /1xw 0y10",
    "xp /1xw 0 extra", "xp /1xw 0 0", "xp /-1xb 0", "xp /1xb0", "xp /s 0", "xp /t 0",
    "x (1", "x ((1)", "x 'a", "x 'ab'", "x ''", "x $zz", "x 1/0", "x 99999999999999999999",
    "  xp zz", "x /2x  ", "xp é", "xp /é 0",
    # print and the expression evaluator
    "p 0x100+4", "p (0x100+4)", "p/x -1", "p/d -1", "p/u -1", "p/o 8", "p/c 65", "p/c 10",
    "p/c 300", "p/c -1", "p/c 0x27", "p/c 92", "p/c 13", "p 'a'", "p ~0", "p 7%3", "p -7/2",
    "p -7%2", "p 1|2^3&4", "p 2*3+4*5", "p $eip", "p $pc", "p $cs", "p $nosuch", "p $",
    "p $ eip", "p 18446744073709551615", "p 010", "p 08", "p 0x", "p 1k", "p 3 4", "p",
    "p/2xg 5", "p 16/2", "p - 4", "p ' '", "p '''", "p/x 0", "p/o 0", "p/d 0x7fffffffffffffff+1",
    "p 5/-2", "p 5%-2", "p 1%0", "p 2+", "p ~", "p --1", "p +1", "p )", "p ,", "p 1)",
    "p 'é'", "print/x 255",
    # other argument types
    "memsave 0 16 /tmp/hm.bin", "pmemsave 0 4096 /tmp/hm.bin", "memsave 0 16",
    'pmemsave 0 (-1) "f"', 'pmemsave 0 -1 "f"', 'memsave 0 16 "abc', 'memsave 0 16 "a\\qb"',
    "memsave 0 16 hm.bin", 'pmemsave 0xffff0 16 "hm2.bin"',
    "sum 0 -1", "sum 0 0x100000000", "cpu 0x100000000", "cpu 1", "cpu 0",
    "gva2gpa 0", "gva2gpa 0x1000", "gva2gpa 0xffff5", "gva2gpa zz",
    "info registers -x", "info registers 5 6",
    # commands, sub-tables, help
    "info status", "info status extra", "info  status  extra", "info kvm", "info mem",
    "info tlb", "info name", "info status ", "\tinfo status", "stop extra", "c extra",
    "nosuchcommand", "  nosuch", "nosuch/x", "info nosuch", "info  nosuch", "info nosuch extra",
    "info/x", "info /x", "", "   ", "é",
    "help x", "help xp", "? xp", "help print", "help p", "help memsave", "help pmemsave",
    "help cont", "help c", "help stop", "help info status", "help  info  status",
    'help info "status"', "help info registers", "help info nosuch", "help nosuch",
    "help nosuch foo", "help x y", 'help "x y"', "help /x", 'help "x', "help help", "? ?",
    "help 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
    "help 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17",
]


def test_same_text_as_qemu(qemu: tuple[Qmp, Path]) -> None:
    qmp, work = qemu
    guest = _guest_like(qmp, work)
    monitor = build_monitor()
    mismatches = []
    for line in LINES:
        want, got = qmp.hmp(line), monitor.run(line, guest)
        if want != got:
            mismatches.append((line, want, got))
    assert mismatches == []
    assert (work / "hm.bin").stat().st_size == 16  # QEMU really ran the valid ones


def test_qemu_rows_match_qemus_help(qemu: tuple[Qmp, Path]) -> None:
    # Every row sevd borrows prints exactly QEMU's params and help.
    qmp, _ = qemu
    everything = HmpMonitor(
        [rows.command(name, None) for name in rows.COMMANDS if name != "info"]
        + [rows.command("info", None, [rows.info_command(n, None)
                                       for n in rows.INFO_COMMANDS])]
    )
    lines = [f"help {name.split('|')[0]}" for name in rows.COMMANDS if name != "info"]
    lines += [f"help info {name}" for name in rows.INFO_COMMANDS]
    got = {line: everything.run(line) for line in lines}
    want = {line: qmp.hmp(line) for line in lines}
    assert got == want
    # "help info" lists the sub-table; the row itself shows in the full list.
    info_line = "info [subcommand] -- show various information about the system state\r\n"
    assert info_line in qmp.hmp("help") and info_line in everything.run("help")


def test_fake_memory_is_what_qemu_has(qemu: tuple[Qmp, Path]) -> None:
    # Guard for the comparison above: beyond RAM the fake guest refuses, as QEMU does.
    qmp, work = qemu
    guest = _guest_like(qmp, work)
    assert guest.read(RAM_SIZE, 4) is None
    assert qmp.hmp("xp /1xw 0x10000000") == "0000000010000000: Cannot access memory\r\n"
