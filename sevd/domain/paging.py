"""The x86-64 page-table walk of the monitor, reading tables through the debug path.

As the 2016 RFC's "clear C-bit in SEV guest page table walk" did, CR3 and every entry are
ANDed with `~(1 << cbitpos)` before their address is used, so the walk follows guest
physical addresses rather than addresses with the encryption bit set. Each table is read
with `read_phys`, which the caller points at DBG_DECRYPT (plaintext when the policy allows
debugging; the stored ciphertext otherwise, so the walk then fails the way QEMU fails on
garbage). Only what the simulated firmware builds is modelled: 4-level long mode, with
4 KiB, 2 MiB and 1 GiB pages (and "PG disabled" before paging is on).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

P, RW, US, PS = 0x1, 0x2, 0x4, 0x80
NX = 1 << 63
ADDR = 0x000F_FFFF_FFFF_F000  # bits 12..51 of an entry (PG_ADDRESS_MASK)
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
EFER_LMA = 1 << 10

ReadPhys = Callable[[int, int], "bytes | None"]


@dataclass(frozen=True)
class Leaf:
    """One mapping: linear address, the leaf entry (C-bit cleared), size, protection."""

    vaddr: int
    pte: int
    size: int
    prot: int          # P|RW|US ANDed over every level (mem_info_la48)
    encrypted: bool    # the C-bit was set in the leaf entry

    @property
    def gpa(self) -> int:
        return self.pte & ADDR & ~(self.size - 1)


class PageWalker:
    """Walks one vCPU's page tables."""

    def __init__(self, read_phys: ReadPhys, cr0: int, cr3: int, cr4: int, efer: int,
                 cbitpos: int | None) -> None:
        self.read_phys = read_phys
        self.paging = bool(cr0 & CR0_PG)
        self.long_mode = bool(efer & EFER_LMA) and bool(cr4 & CR4_PAE)
        self.cbit = 1 << cbitpos if cbitpos is not None else 0
        self.me_mask = ~self.cbit
        self.cr3 = cr3 & self.me_mask
        self._tables: dict[int, tuple[int, ...] | None] = {}

    def _table(self, gpa: int) -> tuple[int, ...] | None:
        # Each table is read (through DBG_DECRYPT) once per walker: a walker serves one
        # monitor operation, during which guest memory does not change, and a read of
        # N pages would otherwise decrypt its tables N times. (Writers take a fresh walker
        # for every page: a write may change a table.)
        gpa &= ADDR
        try:
            return self._tables[gpa]
        except KeyError:
            pass
        data = self.read_phys(gpa, 4096)
        table = None if data is None or len(data) != 4096 else struct.unpack("<512Q", data)
        self._tables[gpa] = table
        return table

    def translate(self, vaddr: int) -> tuple[int, bool] | None:
        """(guest-physical address, encrypted) of `vaddr`, or None when unmapped."""
        if not self.paging:
            return vaddr & ((1 << 64) - 1), False
        if not self.long_mode:
            return None  # 32-bit paging is not built by the simulated firmware
        if vaddr >> 47 not in (0, 0x1FFFF):
            # x86_cpu_get_phys_page_attrs_debug(): "test virtual address sign extension".
            # A non-canonical address has no translation (its low 48 bits would otherwise
            # alias a mapped page).
            return None
        table = self.cr3 & ADDR
        shifts = (39, 30, 21, 12)
        for level, shift in enumerate(shifts):
            entries = self._table(table)
            if entries is None:
                return None
            raw = entries[(vaddr >> shift) & 0x1FF]
            entry = raw & self.me_mask
            if not entry & P:
                return None
            if (level in (1, 2) and entry & PS) or level == 3:
                size = 1 << shift
                base = entry & ADDR & ~(size - 1)
                return base | (vaddr & (size - 1)), bool(raw & self.cbit)
            table = entry & ADDR
        return None

    def leaves(self) -> Iterator[Leaf]:
        """Every present leaf in ascending linear order (mem_info_la48/tlb_info_la48)."""
        if not (self.paging and self.long_mode):
            return
        yield from self._walk(self.cr3 & ADDR, 0, 0, P | RW | US)

    def _walk(self, table: int, level: int, base: int, prot: int) -> Iterator[Leaf]:
        entries = self._table(table)
        if entries is None:
            return
        shift = (39, 30, 21, 12)[level]
        for i, raw in enumerate(entries):
            entry = raw & self.me_mask
            if not entry & P:
                continue
            vaddr = base | (i << shift)
            p = prot & (entry & (P | RW | US))
            if level == 3 or (level in (1, 2) and entry & PS):
                yield Leaf(vaddr, entry, 1 << shift, p, bool(raw & self.cbit))
            else:
                yield from self._walk(entry & ADDR, level + 1, vaddr, p)
