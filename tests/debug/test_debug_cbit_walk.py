"""C-bit stripping in the monitor's page-table walk, against the tables the firmware built.

For each host profile (Milan: C-bit 51; Rome: C-bit 47, inside the `0x3fffffffff000` mask
`info tlb` applies, so a walk that kept it would print it), a debuggable SEV guest is
booted; the test reads CR3 from `info registers` and the four table pages (PML4 0x9000,
PDPT 0xA000, PD 0xB000, PT 0xC000) in plaintext through `pmemsave` and `xp`, and decodes
them with its own walker. It proves that:

- CR3 and every entry of a private mapping carry the C-bit, and the shared window's entry
  (0x200000–0x400000) does not;
- `info tlb` lists exactly the decoded leaves with the physical addresses WITHOUT the
  C-bit (and with it, for Rome, the text would differ);
- `gva2gpa` translates 4 KiB and 2 MiB pages, private and shared, to C-bit-free
  addresses and says `Unmapped` for page 0 and beyond the identity map; `info mem` shows
  the one read-write range;
- the tables are ciphertext in the hypervisor's view, while the pages that the shared
  window maps read as the same plaintext in the hypervisor's view and through `x`.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from debug_support import (
    CBIT,
    HEARTBEAT,
    SHARED_WINDOW,
    DaemonProc,
    dump_bytes,
    hmp,
    launched,
    qmp,
    view,
)

P, RW, US, PWT, PCD, A, D, PS, G = 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x100
NX = 1 << 63
ADDR = 0x000F_FFFF_FFFF_F000
MASK = {4096: 0x3FFFFFFFFF000, 2 << 20: 0x3FFFFFFE00000}
TABLES = 0x9000
MEMORY = 256 << 20


def decode(tables: bytes, cr3: int, cbit: int) -> list[tuple[int, int, int]]:
    """(linear address, raw leaf entry, page size) of every present leaf, walking tables
    that live in `tables` (the 16 KiB at TABLES), each pointer with the C-bit cleared."""
    def table(gpa: int) -> tuple[int, ...]:
        off = gpa - TABLES
        assert 0 <= off < len(tables) and off % 4096 == 0, hex(gpa)
        return struct.unpack_from("<512Q", tables, off)

    leaves = []

    def walk(gpa: int, level: int, base: int) -> None:
        shift = (39, 30, 21, 12)[level]
        for i, raw in enumerate(table(gpa)):
            if not raw & P:
                continue
            va = base | i << shift
            if level == 3 or (level in (1, 2) and raw & PS):
                leaves.append((va, raw, 1 << shift))
            else:
                assert raw & (1 << cbit), f"table pointer {raw:#x} without the C-bit"
                walk(raw & ~(1 << cbit) & ADDR, level + 1, va)

    walk(cr3 & ~(1 << cbit) & ADDR, 0, 0)
    return leaves


def tlb_line(va: int, raw: int, size: int, cbit: int) -> str:
    pte = raw & ~(1 << cbit)
    if size == 4096:
        pte &= ~PS  # bit 7 of a PTE is PAT; QEMU prints it cleared
    flags = "".join(letter if pte & bit else "-" for letter, bit in (
        ("X", NX), ("G", G), ("P", PS), ("D", D), ("A", A), ("C", PCD), ("T", PWT),
        ("U", US), ("W", RW)))
    return f"{va:016x}: {pte & MASK[size]:016x} {flags}\r\n"


@pytest.mark.parametrize("profile", ["milan", "rome"])
async def test_walks_clear_the_cbit(request: pytest.FixtureRequest, profile: str) -> None:
    d: DaemonProc
    d, dumps = request.getfixturevalue(f"{profile}_daemon")
    cbit = CBIT[profile]
    c_bit = 1 << cbit
    async with qmp(d.control) as c, launched(c, profile, policy=0x0, memory=MEMORY) as guest, \
            qmp(guest.socket) as g:
        regs = await hmp(g, "info registers")
        cr3 = int(re.search(r"CR3=([0-9a-f]{16})", regs)[1], 16)  # type: ignore[index]
        assert cr3 == TABLES | c_bit

        name = f"tables-{profile}.bin"
        assert await hmp(g, f'pmemsave {TABLES:#x} 0x4000 "{name}"') == ""
        tables = Path(dumps, name).read_bytes()
        assert dump_bytes(await hmp(g, f"xp /2048xg {TABLES:#x}"), 8) == tables
        stored = await view(g, TABLES, 0x4000)
        for off in range(0, 0x4000, 4096):  # every table page is private: ciphertext
            assert stored[off:off + 4096] != tables[off:off + 4096]

        leaves = decode(tables, cr3, cbit)
        small = [leaf for leaf in leaves if leaf[2] == 4096]
        large = [leaf for leaf in leaves if leaf[2] == 2 << 20]
        assert [va for va, _, _ in small] == list(range(0x1000, 0x200000, 0x1000))
        assert [va for va, _, _ in large] == list(range(0x200000, MEMORY, 2 << 20))
        for va, raw, size in leaves:
            identity = raw & ~c_bit & MASK[size]
            assert identity == va, (hex(va), hex(raw))
            shared = SHARED_WINDOW[0] <= va < SHARED_WINDOW[1]
            assert bool(raw & c_bit) is not shared, (hex(va), hex(raw))

        tlb = await hmp(g, "info tlb")
        expected = "".join(tlb_line(va, raw, size, cbit) for va, raw, size in leaves)
        assert tlb == expected
        assert tlb.count("\r\n") == 511 + 127
        if cbit < 50:  # the C-bit lies inside info tlb's mask: keeping it would show
            kept = "".join(f"{va:016x}: {raw & MASK[size]:016x}" for va, raw, size in leaves)
            assert f"{0x1000 | c_bit:016x}" in kept and f"{0x1000 | c_bit:016x}" not in tlb

        def gpa_of(addr: int) -> int:
            for va, raw, size in leaves:
                if va <= addr < va + size:
                    return (raw & ~c_bit & MASK[size]) | (addr & (size - 1))
            raise AssertionError(hex(addr))

        for addr in (0x1000, 0x1234, TABLES + 8, HEARTBEAT + 0x10, SHARED_WINDOW[0] + 0x123,
                     SHARED_WINDOW[1] - 1, 0x400000 + 0x5678, 0x800FFF, MEMORY - 1):
            assert await hmp(g, f"gva2gpa {addr:#x}") == f"gpa: {gpa_of(addr):#x}\r\n"
            assert gpa_of(addr) == addr
        for addr in (0, 0xFFF, MEMORY, 1 << 39, 0xFFFFFFFF80000000):
            assert await hmp(g, f"gva2gpa {addr:#x}") == "Unmapped\r\n"
        # x across the end of the identity map: the readable line, then QEMU's error
        last = dump_bytes(await hmp(g, f"xp /2xg {MEMORY - 16:#x}"), 8)
        assert await hmp(g, f"x /4xg {MEMORY - 16:#x}") == (
            f"{MEMORY - 16:016x}: 0x{int.from_bytes(last[:8], 'little'):016x} "
            f"0x{int.from_bytes(last[8:], 'little'):016x}\r\n"
            f"{MEMORY:016x}: Cannot access memory\r\n")
        assert await hmp(g, "info mem") == (
            f"0000000000001000-{MEMORY:016x} {MEMORY - 0x1000:016x} -rw\r\n")

        # The shared window, mapped without the C-bit, is plaintext to the hypervisor.
        window = await view(g, SHARED_WINDOW[0], 4096)
        assert window[:8] == b"SEVDHB01"
        assert dump_bytes(await hmp(g, f"x /512xg {SHARED_WINDOW[0]:#x}"), 8) == window
        # and a private page is not
        assert (await view(g, HEARTBEAT, 8)) != b"SEVDHB01"
