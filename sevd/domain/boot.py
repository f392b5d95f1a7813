"""What runs inside a simulated guest: the firmware's boot and a small workload.

After LAUNCH_FINISH (the first `cont`) the simulated firmware "boots" as OVMF would: it
builds x86-64 4-level page tables in guest memory — identity-mapping low RAM, C-bit set on
private mappings and clear on a shared window (a bounce buffer for virtio, as SWIOTLB has)
— and loads CR3 with the C-bit set. Its writes go through the guest's own memory path: a
private page is stored encrypted by the memory controller, a shared page as plaintext. The
workload then changes memory while the guest runs: a heartbeat counter (private, and a
copy in the shared window) and, optionally, a rate of dirtied pages (DESIGN §4, step 4).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sevd.domain.machine import Machine
from sevd.domain.sev import SevGuest

PAGE = 4096
LARGE = 2 << 20
# Page-table pages (guest-physical), below the heartbeat, as a firmware keeps them low.
PML4, PDPT, PD, PT = 0x9000, 0xA000, 0xB000, 0xC000
HEARTBEAT = 0x0010_0000            # private: "SEVDHB01" ‖ LE64 beats ‖ LE64 boots
SHARED_WINDOW = (0x0020_0000, 0x0040_0000)  # one 2 MiB page with the C-bit clear
SHARED_HEARTBEAT = SHARED_WINDOW[0]
DIRTY_AREA = 0x0100_0000           # 16 MiB: pages the workload dirties, round robin
MAP_LIMIT = 1 << 30                # identity-map at most the first GiB

# x86 page-table entry bits.
P, RW, US, PWT, PCD, A, D, PS, G = 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x100
NX = 1 << 63


@dataclass
class Workload:
    """What the guest does while running (configurable per guest)."""

    heartbeat: bool = True
    dirty_pages: int = 0      # pages dirtied per tick
    interval: float = 0.1     # seconds between ticks


class GuestOS:
    """The simulated firmware and workload of one guest."""

    def __init__(self, machine: Machine, sev: SevGuest | None, cbitpos: int,
                 workload: Workload) -> None:
        self.machine = machine
        self.sev = sev
        self.cbit = 1 << cbitpos if sev is not None else 0
        self.workload = workload
        self.booted = False
        self.beats = 0
        self.boots = 0
        self._dirty_next = 0
        low = machine.regions[0].end
        self.mapped_end = min(low, MAP_LIMIT) & ~(LARGE - 1) or min(low, LARGE)

    # -- the guest's own memory path ---------------------------------------------------------

    def write(self, gpa: int, data: bytes, private: bool = True) -> None:
        if private and self.sev is not None:
            self.sev.fw.cpu_write(self.sev.handle, gpa, data)
        else:
            self.machine.store.write(gpa, data)

    def is_shared(self, gpa: int) -> bool:
        return self.sev is not None and SHARED_WINDOW[0] <= gpa < SHARED_WINDOW[1]

    def shared_ranges(self) -> list[tuple[int, int]]:
        if self.sev is None or not self.booted or self.mapped_end <= SHARED_WINDOW[0]:
            return []
        return [SHARED_WINDOW]

    # -- boot -------------------------------------------------------------------------------

    def boot(self) -> None:
        """Build the page tables, set CR3 and the long-mode registers, start the workload."""
        c = self.cbit
        end = self.mapped_end
        # PML4[0] -> PDPT; PDPT[0] -> PD; PD[0] -> PT (4 KiB pages for the first 2 MiB),
        # PD[i>0] -> 2 MiB pages. Table pointers carry the C-bit: the tables are private.
        self.write(PML4, struct.pack("<Q", PDPT | c | P | RW | A) + bytes(PAGE - 8))
        self.write(PDPT, struct.pack("<Q", PD | c | P | RW | A) + bytes(PAGE - 8))
        pd = [PT | c | P | RW | A]
        for i in range(1, 512):
            base = i * LARGE
            if base >= end:
                pd.append(0)
                continue
            shared = self.is_shared(base)
            flags = P | RW | A | PS | (D if shared else 0) | (NX if shared else 0)
            pd.append(base | (0 if shared else c) | flags)
        self.write(PD, struct.pack("<512Q", *pd))
        pt = []
        for i in range(512):
            base = i * PAGE
            if base == 0 or base >= end:
                pt.append(0)  # page 0 unmapped, to catch NULL dereferences
                continue
            flags = P | RW | A | (G if base < 0x10_0000 else 0)
            pt.append(base | c | flags | (D if base >= HEARTBEAT else 0))
        self.write(PT, struct.pack("<512Q", *pt))
        for v in self.machine.vcpus:
            v.reset()
            v.regs.update(cr0=0x80050033, cr3=PML4 | c, cr4=0x668, efer=0xD01,
                          rip=HEARTBEAT + 0x1000, rsp=0x8_0000, rflags=0x246,
                          cs=0x38, cs_base=0, ds=0x30, es=0x30, ss=0x30, fs=0x30, gs=0x30)
        self.boots += 1
        self.booted = True
        self.tick()

    # -- workload ---------------------------------------------------------------------------

    def tick(self) -> None:
        if not self.booted:
            return
        w = self.workload
        if w.heartbeat:
            self.beats += 1
            # Whole pages: the firmware zeroes what it uses, so no stale bytes show.
            beat = struct.pack("<8sQQ", b"SEVDHB01", self.beats, self.boots).ljust(PAGE, b"\0")
            if self.mapped_end >= HEARTBEAT + PAGE:
                self.write(HEARTBEAT, beat)
            if self.shared_ranges():
                self.write(SHARED_HEARTBEAT, beat, private=False)
        top = self.machine.regions[0].end
        for _ in range(w.dirty_pages):
            gpa = DIRTY_AREA + self._dirty_next * PAGE
            if gpa + PAGE > min(top, DIRTY_AREA + (16 << 20)):
                self._dirty_next = 0
                gpa = DIRTY_AREA
            if gpa + PAGE > top:
                break
            self.write(gpa, struct.pack("<QQ", self.beats, self._dirty_next) * (PAGE // 16))
            self._dirty_next += 1
