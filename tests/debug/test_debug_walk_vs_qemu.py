"""sevd's walks of its firmware's page tables against a real QEMU walking the same tables.

A 64 KiB test BIOS (GNU as) builds in a real QEMU 7.2 exactly the tables sevd's simulated
firmware builds for a 256 MiB guest (PML4 0x9000 → PDPT 0xA000 → PD 0xB000 → PT 0xC000;
4 KiB pages for the first 2 MiB but page 0, G below 1 MiB, D from 1 MiB; 2 MiB pages up to
256 MiB; the shared window 0x200000 with D and NX), but without any C-bit (QEMU has no SEV
here), enables long-mode paging and halts. Then `info tlb`, `info mem`, `gva2gpa` and `x`
of unmapped and non-canonical addresses must print the same text on:

- a plain sevd guest (whose tables are byte for byte the BIOS's, checked with `xp`; a guest
  without SEV has no shared window, so that BIOS variant leaves PD[1] as a private one);
- debuggable SEV guests on Milan (C-bit 51) and Rome (C-bit 47), whose tables carry the
  C-bit in CR3 and every private entry: the same text as QEMU on C-bit-free tables proves
  the walk strips it everywhere.

Runs where `qemu-system-x86_64` and GNU binutils are installed.
"""

from __future__ import annotations

import functools
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from debug_support import (
    QEMU,
    DaemonProc,
    hmp,
    launched,
    qmp,
    short_tmpdir,
)

BINUTILS = all(shutil.which(tool) for tool in ("as", "ld"))
pytestmark = pytest.mark.skipif(QEMU is None or not BINUTILS,
                                reason="needs qemu-system-x86_64 and GNU binutils")

BIOS = r"""
.macro PTE addr, lo, hi=0
    movl $\lo, \addr
    movl $\hi, \addr+4
.endm
    .code16
    .org 0
start16:
    cli
    lgdtl %cs:gdt_desc
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(start32 + 0xf0000)
    .code32
start32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    PTE 0x9000, 0xa023              /* PML4[0] -> PDPT, P|RW|A */
    PTE 0xa000, 0xb023              /* PDPT[0] -> PD */
    PTE 0xb000, 0xc023              /* PD[0] -> PT */
    movl $1, %ecx                   /* PD[1..127]: 2 MiB, P|RW|A|PS */
1:  movl %ecx, %eax
    shll $21, %eax
    orl $0xa3, %eax
    movl %eax, 0xb000(,%ecx,8)
    incl %ecx
    cmpl $128, %ecx
    jne 1b
.ifndef PLAIN
    PTE 0xb008, 0x2000e3, 0x80000000  /* an SEV guest's shared window: also D and NX */
.endif
    movl $1, %ecx                   /* PT[1..511]: P|RW|A, G below 1 MiB, D above */
2:  movl %ecx, %eax
    shll $12, %eax
    cmpl $0x100, %ecx
    jae 3f
    orl $0x123, %eax
    jmp 4f
3:  orl $0x63, %eax
4:  movl %eax, 0xc000(,%ecx,8)
    incl %ecx
    cmpl $512, %ecx
    jne 2b
    movl $0x9000, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax                 /* PAE */
    movl %eax, %cr4
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x900, %eax                /* EFER.LME | NXE */
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax           /* PG: long mode is active */
    movl %eax, %cr0
5:  hlt
    jmp 5b
    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
gdt_desc:
    .word 23
    .long gdt + 0xf0000
    .org 0xfff0
    .code16
reset:
    ljmp $0xf000, $start16
    .org 0x10000
"""

ADDRESSES = [
    0, 0xFFF, 0x1000, 0x1234, 0x9008, 0xC000, 0xFFFFF, 0x100010, 0x1FF000, 0x200123,
    0x3FFFFF, 0x405678, 0x800FFF, 0xFFFFFFF, 0x10000000, 0x40000000, 0x8000000000,
    0xFFFF800000001000, 0xFFFFFFFFFFFFF000,
    # non-canonical: bits 63..47 not all equal
    0x0000800000001000, 0x1000000000001000, 0xFFFF000000001000, 0x8000000000001000,
    0x0001000000200000,
]
# Lines whose output cannot depend on memory contents (nothing readable there).
UNREADABLE = [0, 0x10000000, 0x8000000000, 0x0000800000001000, 0x1000000000001000,
              0xFFFF000000001000, 0x8000000000001000, 0x0001000000200000]
TABLES = "xp /2048xg 0x9000"


def differing(ours: str, theirs: str) -> list[tuple[str, str]]:
    """The lines that differ (at most 10)."""
    a, b = ours.split("\r\n"), theirs.split("\r\n")
    out = [(x, y) for x, y in zip(a, b, strict=False) if x != y]
    if len(a) != len(b):
        out.append((f"{len(a)} lines", f"{len(b)} lines"))
    return out[:10]


def lines() -> list[str]:
    return (["info tlb", "info mem"] + [f"gva2gpa {a:#x}" for a in ADDRESSES]
            + [f"x /2xg {a:#x}" for a in UNREADABLE])


class _Qemu:
    def __init__(self, sock: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(20)
        self.sock.connect(sock)
        self.file = self.sock.makefile("rwb")
        json.loads(self.file.readline())
        self.execute("qmp_capabilities")

    def execute(self, name: str, **arguments: Any) -> Any:
        self.file.write(json.dumps({"execute": name, "arguments": arguments}).encode() + b"\n")
        self.file.flush()
        while True:
            msg = json.loads(self.file.readline())
            if "event" not in msg:
                assert "error" not in msg, msg
                return msg["return"]

    def hmp(self, line: str) -> str:
        return str(self.execute("human-monitor-command", **{"command-line": line}))


def run_qemu(variant: str) -> dict[str, str]:
    """What QEMU prints for every line of lines() (and the tables), its BIOS halted: the
    tables of an SEV guest (with the shared window) or of a plain guest (without)."""
    assert QEMU is not None
    work = short_tmpdir()
    src, obj, image = work / "bios.S", work / "bios.o", work / "bios.bin"
    src.write_text(BIOS)
    defsym = ["--defsym", "PLAIN=1"] if variant == "plain" else []
    subprocess.run(["as", "--32", *defsym, "-o", str(obj), str(src)], check=True,
                   capture_output=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0", "--oformat", "binary", "-o",
                    str(image), str(obj)], check=True, capture_output=True)
    sock = str(work / "q.sock")
    proc = subprocess.Popen(
        [QEMU, "-machine", "q35,accel=tcg", "-m", "256", "-display", "none", "-nodefaults",
         "-nic", "none", "-bios", str(image), "-qmp", f"unix:{sock},server=on,wait=off"],
        cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                q = _Qemu(sock)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "no QEMU"
                time.sleep(0.02)
        while q.hmp("info tlb") == "PG disabled\r\n":
            assert time.monotonic() < deadline, "the test BIOS did not enable paging"
            time.sleep(0.02)
        q.execute("stop")
        outputs = {line: q.hmp(line) for line in [*lines(), TABLES]}
        q.file.close()
        q.sock.close()
        return outputs
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def qemu_walk() -> Callable[[str], dict[str, str]]:
    """`qemu_walk("sev" | "plain")`: run_qemu's outputs, each variant run once."""
    return functools.cache(run_qemu)


@pytest.mark.parametrize("variant", ["sev", "plain"])
def test_qemu_walks_what_the_test_bios_built(qemu_walk: Callable[[str], dict[str, str]],
                                             variant: str) -> None:
    """The oracle itself: QEMU sees the tables (so a broken BIOS cannot pass silently)."""
    qemu_outputs = qemu_walk(variant)
    assert qemu_outputs["info tlb"].count("\r\n") == 511 + 127
    assert qemu_outputs["info mem"] == "0000000000001000-0000000010000000 000000000ffff000 -rw\r\n"
    assert qemu_outputs["gva2gpa 0x405678"] == "gpa: 0x405678\r\n"


@pytest.mark.parametrize(("profile", "policy"), [("milan", None), ("milan", 0x0),
                                                 ("rome", 0x0)],
                         ids=["plain", "milan-sev", "rome-sev"])
async def test_same_walk_as_qemu(request: pytest.FixtureRequest,
                                 qemu_walk: Callable[[str], dict[str, str]],
                                 profile: str, policy: int | None) -> None:
    qemu_outputs = qemu_walk("plain" if policy is None else "sev")
    d: DaemonProc = request.getfixturevalue(f"{profile}_daemon")[0]
    async with qmp(d.control) as c, \
            launched(c, profile, policy=policy, memory=256 << 20) as guest, \
            qmp(guest.socket) as g:
        tables = await hmp(g, TABLES)
        if policy is None:  # the plain guest's tables are the BIOS's, byte for byte
            assert differing(tables, qemu_outputs[TABLES]) == []
        else:  # an SEV guest's carry the C-bit
            assert tables != qemu_outputs[TABLES]
        mismatches = []
        for line in lines():
            ours = await hmp(g, line)
            if ours != qemu_outputs[line]:
                mismatches.append((line, ours[:200], qemu_outputs[line][:200]))
        assert mismatches == [], "\n".join(map(repr, mismatches))
