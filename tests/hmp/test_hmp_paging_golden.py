"""``info mem`` / ``info tlb`` / the walk's inputs, against a real QEMU in long mode.

The strings were captured from qemu-system-x86_64 7.2.22 running a 64 KiB test "BIOS"
that builds these 4-level page tables at 0x10000 and enables paging with EFER.LME|NXE
(its entries are listed below as the walker sees them: PML4 -> PDPT -> PD -> PT):

    PML4[0]=0x11007  PML4[511]=0x12003
    PDPT_A[0]=0x13007  PDPT_A[1]=0x400000e7 (1 GiB, U W A D)
    PD_A[0]=0x14007  PD_A[1]=0x200187 (2 MiB, G U W)  PD_A[2]=NX|0x400081 (2 MiB, r/o)
    PT_A[0]=0x3  PT_A[1]=0x101b (PWT PCD)  PT_A[2]=0x2007  PT_A[5]=NX|0x5001
    PT_A[0xf0..0xff]=identity|0x1 (the CPU set A on 0xf0)  PT_A[0x100]=0x1000e3 (PAT)
    PDPT_B[510]=0x15003  PD_B[0]=0x183 (2 MiB, G)  PD_B[1]=NX|0x200083

The page-table walker is not part of sevd.hmp; these are the records it must hand over.
"""

from __future__ import annotations

from sevd.hmp.dump import (
    PTE_ADDR_MASK_1G,
    PTE_ADDR_MASK_2M,
    PTE_ADDR_MASK_4K,
    MemRange,
    TlbEntry,
    format_info_mem,
    format_info_tlb,
)

NX = 1 << 63
UPPER = (511 << 39) + (510 << 30)  # as tlb_info_la48 computes it: not sign-extended

TLB = (
    [
        TlbEntry(0x0, 0x3),
        TlbEntry(0x1000, 0x101B),
        TlbEntry(0x2000, 0x2007),
        TlbEntry(0x5000, NX | 0x5001),
        TlbEntry(0xF0000, 0xF0021),
    ]
    + [TlbEntry(page << 12, page << 12 | 1) for page in range(0xF1, 0x100)]
    + [
        TlbEntry(0x100000, 0x1000E3 & ~0x80, PTE_ADDR_MASK_4K),  # bit 7 is PAT in a PTE
        TlbEntry(0x200000, 0x200187, PTE_ADDR_MASK_2M),
        TlbEntry(0x400000, NX | 0x400081, PTE_ADDR_MASK_2M),
        TlbEntry(0x40000000, 0x400000E7, PTE_ADDR_MASK_1G),
        TlbEntry(UPPER, 0x183, PTE_ADDR_MASK_2M),
        TlbEntry(UPPER + 0x200000, NX | 0x200083, PTE_ADDR_MASK_2M),
    ]
)

QEMU_INFO_TLB = (
    "0000000000000000: 0000000000000000 --------W\n"
    "0000000000001000: 0000000000001000 -----CT-W\n"
    "0000000000002000: 0000000000002000 -------UW\n"
    "0000000000005000: 0000000000005000 X--------\n"
    "00000000000f0000: 00000000000f0000 ----A----\n"
    + "".join(f"{p << 12:016x}: {p << 12:016x} ---------\n" for p in range(0xF1, 0x100))
    + "0000000000100000: 0000000000100000 ---DA---W\n"
    "0000000000200000: 0000000000200000 -GP----UW\n"
    "0000000000400000: 0000000000400000 X-P------\n"
    "0000000040000000: 0000000040000000 --PDA--UW\n"
    "ffffffff80000000: 0000000000000000 -GP-----W\n"
    "ffffffff80200000: 0000000000200000 X-P-----W\n"
)

# Effective protections (entry & upper levels, U|W|P) per leaf, in walk order.
MEM = (
    [MemRange(0x0, 0x1000, 3), MemRange(0x1000, 0x1000, 3), MemRange(0x2000, 0x1000, 7),
     MemRange(0x5000, 0x1000, 1)]
    + [MemRange(page << 12, 0x1000, 1) for page in range(0xF0, 0x100)]
    + [MemRange(0x100000, 0x1000, 3), MemRange(0x200000, 0x200000, 7),
       MemRange(0x400000, 0x200000, 1), MemRange(0x40000000, 0x40000000, 7),
       MemRange(UPPER, 0x200000, 3), MemRange(UPPER + 0x200000, 0x200000, 3)]
)

QEMU_INFO_MEM = (
    "0000000000000000-0000000000002000 0000000000002000 -rw\n"
    "0000000000002000-0000000000003000 0000000000001000 urw\n"
    "0000000000005000-0000000000006000 0000000000001000 -r-\n"
    "00000000000f0000-0000000000100000 0000000000010000 -r-\n"
    "0000000000100000-0000000000101000 0000000000001000 -rw\n"
    "0000000000200000-0000000000400000 0000000000200000 urw\n"
    "0000000000400000-0000000000600000 0000000000200000 -r-\n"
    "0000000040000000-0000000080000000 0000000040000000 urw\n"
    "ffffffff80000000-ffffffff80400000 0000000000400000 -rw\n"
)


def test_info_tlb_matches_qemu() -> None:
    assert format_info_tlb(TLB) == QEMU_INFO_TLB


def test_info_mem_matches_qemu() -> None:
    assert format_info_mem(MEM) == QEMU_INFO_MEM


def test_info_mem_accepts_sign_extended_addresses() -> None:
    canonical = [MemRange(r.vaddr | (0xFFFF << 48) if r.vaddr >> 47 else r.vaddr, r.size,
                          r.prot) for r in MEM]
    assert format_info_mem(canonical) == QEMU_INFO_MEM
