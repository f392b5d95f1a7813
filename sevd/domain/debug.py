"""The monitor's access to guest memory: the 2016 RFC's debug path (DESIGN §5).

Every monitor read or write of guest memory comes here. For an SEV guest, private memory
goes through the firmware's DBG_DECRYPT / DBG_ENCRYPT, so the monitor sees plaintext when
the guest policy allows debugging; with NODBG the firmware refuses (POLICY_FAILURE) and the
monitor shows what the hypervisor really has: the stored ciphertext. Pages the guest has
made shared (the range it reported to the hypervisor, as Linux guests do with
KVM_HC_MAP_GPA_RANGE) and every page of a non-SEV guest are read as stored. When the RFC's
security-policy object says `debug: false`, debug access is refused outright.

Virtual addresses are translated by walking the guest's page tables through the same path,
with the C-bit cleared from CR3 and every entry.
"""

from __future__ import annotations

from sevd.domain.errors import DomainError
from sevd.domain.guest import Guest
from sevd.domain.paging import Leaf, PageWalker
from sevd.domain.psp import SevError, SevStatus

PAGE = 4096
_M64 = (1 << 64) - 1


class DebugRefused(DomainError):
    """The RFC's security policy forbids debug access to this guest."""


class _Unreadable(Exception):
    """The firmware failed a debug read for another reason than the guest's policy."""


class DebugAccess:
    """Reads and writes of one guest's memory on behalf of the monitor."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        if not guest.config.debug:
            raise DebugRefused(f"Debug access to guest '{guest.name}' is disabled by its "
                               "security policy (debug=off)")
        self.machine = guest.machine
        self.sev = guest.sev

    # -- physical ---------------------------------------------------------------------------

    def _shared(self, gpa: int) -> bool:
        if self.sev is None:
            return True
        return any(lo <= gpa < hi for lo, hi in self.guest.os.shared_ranges())

    def read_phys(self, gpa: int, length: int) -> bytes | None:
        """Plaintext where the firmware allows it, else what is stored; None if unmapped."""
        if length <= 0:
            return b""
        if self.machine.mapped(gpa, length) is None:
            return self._read_regions(gpa, length)
        if self.sev is None:
            return self.machine.store.read(gpa, length)
        try:
            return self._read_private_aware(gpa, length)
        except _Unreadable:
            return None

    def _read_regions(self, gpa: int, length: int) -> bytes | None:
        """A read across adjacent regions (the firmware ends at 4 GiB, where the RAM above
        4 GiB begins), region by region as QEMU's address space reads it; None if any part
        is unmapped."""
        parts = []
        addr, end = gpa, gpa + length
        while addr < end:
            region = self.machine.region_at(addr)
            if region is None:
                return None
            part = self.read_phys(addr, min(region.end, end) - addr)
            if part is None:
                return None
            parts.append(part)
            addr += len(part)
        return b"".join(parts)

    def _read_private_aware(self, gpa: int, length: int) -> bytes:
        end = gpa + length
        # One firmware call per run of private memory (not per page): runs end where the
        # guest's shared ranges begin or end.
        cuts = sorted({b for r in self.guest.os.shared_ranges() for b in r if gpa < b < end})
        if not cuts:
            return self._read_run(gpa, length)  # the common case: no copy of the run
        parts = []
        addr = gpa
        for stop in [*cuts, end]:
            parts.append(self._read_run(addr, stop - addr))
            addr = stop
        return b"".join(parts)

    def _read_run(self, gpa: int, length: int) -> bytes:
        store = self.machine.store
        if self._shared(gpa):
            return store.read(gpa, length)
        assert self.sev is not None
        # DBG_DECRYPT works on 16-byte aligned blocks.
        lo = gpa & ~15
        hi = (gpa + length + 15) & ~15
        try:
            data = self.sev.fw.dbg_decrypt(self.sev.handle, lo, hi - lo)
        except SevError as e:
            if e.status != SevStatus.POLICY_FAILURE:
                # Any other failure (an injected fault, a guest that is gone): the range
                # cannot be read, as a failed memory access in QEMU.
                raise _Unreadable from None
            # NODBG: the firmware refuses, the monitor shows the hypervisor's view.
            return store.read(gpa, length)
        return bytes(data[gpa - lo:gpa - lo + length])

    def read_phys_or_zero(self, gpa: int, length: int) -> bytes:
        """As QEMU's physical read for pmemsave: unmapped parts read as zeros."""
        out: list[bytes] = []
        addr, end = gpa, gpa + length
        while addr < end:
            region = self.machine.region_at(addr)
            if region is None:
                nxt = min((r.start for r in self.machine.regions if r.start > addr),
                          default=end)
                n = min(nxt, end) - addr
                out.append(bytes(n))
            else:
                n = min(region.end, end) - addr
                data = self.read_phys(addr, n)
                if data is None:
                    raise DomainError(f"Debug read of guest '{self.guest.name}' memory at "
                                      f"0x{addr:x} failed in the firmware")
                out.append(data)
            addr += n
        return out[0] if len(out) == 1 else b"".join(out)

    def write_phys(self, gpa: int, data: bytes) -> bool:
        """Write through DBG_ENCRYPT (private) or as is (shared); False if not possible."""
        if not data:
            return True
        if self.machine.mapped(gpa, len(data)) is None:
            return False
        addr, pos = gpa, 0
        while pos < len(data):
            n = min(PAGE - (addr & (PAGE - 1)), len(data) - pos)
            if not self._write_in_page(addr, data[pos:pos + n]):
                return False
            addr += n
            pos += n
        return True

    def _write_in_page(self, gpa: int, chunk: bytes) -> bool:
        store = self.machine.store
        if self._shared(gpa):
            store.write(gpa, chunk)
            return True
        assert self.sev is not None
        fw, handle = self.sev.fw, self.sev.handle
        lo = gpa & ~15
        hi = (gpa + len(chunk) + 15) & ~15
        try:
            block = bytearray(fw.dbg_decrypt(handle, lo, hi - lo))
            block[gpa - lo:gpa - lo + len(chunk)] = chunk
            fw.dbg_encrypt(handle, lo, bytes(block))
        except SevError:
            return False
        return True

    # -- virtual ----------------------------------------------------------------------------

    def walker(self, cpu: int = 0) -> PageWalker:
        r = self.machine.vcpus[cpu].regs
        cbit = self.guest.cbitpos if self.sev is not None else None
        return PageWalker(self.read_phys, r["cr0"], r["cr3"], r["cr4"], r["efer"], cbit)

    def translate(self, vaddr: int, cpu: int = 0) -> int | None:
        t = self.walker(cpu).translate(vaddr)
        return None if t is None else t[0]

    def read_virt(self, vaddr: int, length: int, cpu: int = 0) -> bytes | None:
        """cpu_memory_rw_debug(): page by page through the walk; None on any hole.

        Pages that follow each other in guest-physical memory too (an identity map) are
        read as one run: one DBG_DECRYPT per run of private memory, not one per page. The
        bytes are the same as page by page."""
        walker = self.walker(cpu)
        parts = []
        run_gpa = run_len = 0
        addr, left = vaddr & _M64, length
        while left > 0:
            n = min(PAGE - (addr & (PAGE - 1)), left)
            t = walker.translate(addr)
            if t is None:
                return None
            if run_len and run_gpa + run_len == t[0]:
                run_len += n
            else:
                if run_len:
                    data = self.read_phys(run_gpa, run_len)
                    if data is None:
                        return None
                    parts.append(data)
                run_gpa, run_len = t[0], n
            addr = (addr + n) & _M64
            left -= n
        if run_len:
            data = self.read_phys(run_gpa, run_len)
            if data is None:
                return None
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write_virt(self, vaddr: int, data: bytes, cpu: int = 0) -> bool:
        addr, pos = vaddr & _M64, 0
        while pos < len(data):
            n = min(PAGE - (addr & (PAGE - 1)), len(data) - pos)
            # A fresh walk for every page: the previous page may have been a page table.
            t = self.walker(cpu).translate(addr)
            if t is None or not self.write_phys(t[0], data[pos:pos + n]):
                return False
            addr = (addr + n) & _M64
            pos += n
        return True

    def leaves(self, cpu: int = 0) -> list[Leaf]:
        return list(self.walker(cpu).leaves())


def page_kinds(guest: Guest) -> list[tuple[int, int, str]]:
    """Physical memory by kind, for sevd's own views: runs of (start, end, kind) with kind
    "private" (stored encrypted), "shared" (plaintext) or "untouched" (never written).
    Costs O(resident pages), not O(guest size)."""
    m = guest.machine
    present = sorted(m.store.present_pages())
    shared = guest.os.shared_ranges() if guest.sev is not None else []
    runs: list[tuple[int, int, str]] = []

    def add(start: int, end: int, kind: str) -> None:
        if start >= end:
            return
        if runs and runs[-1][2] == kind and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end, kind)
        else:
            runs.append((start, end, kind))

    for region in m.regions:
        cursor = region.start
        for pfn in present:
            gpa = pfn * PAGE
            if gpa < region.start:
                continue
            if gpa >= region.end:
                break
            add(cursor, gpa, "untouched")
            plain = guest.sev is None or any(lo <= gpa < hi for lo, hi in shared)
            add(gpa, gpa + PAGE, "shared" if plain else "private")
            cursor = gpa + PAGE
        add(cursor, region.end, "untouched")
    return runs
