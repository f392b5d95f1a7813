"""A guest's hardware: its physical memory map, the store behind it, and its vCPUs.

The memory map is q35's: RAM from 0 (up to 2 GiB when the guest has 2.75 GiB or more, the
rest from 4 GiB), the firmware image mapped like pflash so that it ends at 4 GiB, and
nothing else. Memory is a sparse page store (a page costs host memory only once written);
what it holds is what the hypervisor sees: ciphertext for private pages, plaintext for
shared ones (DESIGN §5). SEV-ES VMSAs live in a hidden region after the guest's address
space, as KVM keeps them outside guest RAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sevd.domain.psp import SparsePageStore

GIB = 1 << 30
FOUR_GIB = 4 * GIB
_LOWMEM_LIMIT = 0xB000_0000   # q35: guests with this much RAM or more split at 2 GiB
_LOWMEM_SPLIT = 0x8000_0000


@dataclass
class Region:
    start: int
    end: int
    kind: str  # "ram" or "rom"

    def contains(self, gpa: int, length: int = 1) -> bool:
        return self.start <= gpa and gpa + length <= self.end


@dataclass
class Vcpu:
    """Architectural state of one simulated vCPU (x86-64), as QEMU's cpu_dump shows it."""

    index: int
    regs: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        # The x86 reset state (Intel SDM 9.1.1; QEMU's x86_cpu_reset).
        self.regs = {
            "rax": 0, "rbx": 0, "rcx": 0, "rdx": 0x00A00F11, "rsi": 0, "rdi": 0, "rbp": 0,
            "rsp": 0, **{f"r{i}": 0 for i in range(8, 16)},
            "rip": 0xFFF0, "rflags": 0x2, "cr0": 0x60000010, "cr2": 0, "cr3": 0, "cr4": 0,
            "efer": 0, "cs": 0xF000, "cs_base": 0xFFFF0000, "ds": 0, "es": 0, "ss": 0,
            "fs": 0, "gs": 0, "dr6": 0xFFFF0FF0, "dr7": 0x400,
            # What `info registers` and the gdb stub show besides (sevd.hmp.cpudump names).
            # Segment descriptor caches are left out on purpose: cpudump derives them from
            # the selectors and the mode, so a boot that only loads selectors dumps as a
            # real long-mode guest; set <seg>_base/_limit/_attr to override.
            "dr0": 0, "dr1": 0, "dr2": 0, "dr3": 0, "cr8": 0, "ldt": 0, "tr": 0,
            "gdt_base": 0, "gdt_limit": 0xFFFF, "idt_base": 0, "idt_limit": 0xFFFF,
            "fs_base": 0, "gs_base": 0, "kernel_gs_base": 0,
            "fcw": 0x37F, "fsw": 0, "ftw": 0, "mxcsr": 0x1F80, "xcr0": 0x1,
        }


class Machine:
    """Physical memory and vCPUs of one guest."""

    def __init__(self, ram_size: int, cpus: int, firmware_size: int) -> None:
        self.ram_size = ram_size
        low = _LOWMEM_SPLIT if ram_size >= _LOWMEM_LIMIT else ram_size
        high = ram_size - low
        self.regions = [Region(0, low, "ram")]
        self.firmware_base = FOUR_GIB - firmware_size
        if firmware_size:
            self.regions.append(Region(self.firmware_base, FOUR_GIB, "rom"))
        top = FOUR_GIB
        if high:
            self.regions.append(Region(FOUR_GIB, FOUR_GIB + high, "ram"))
            top = FOUR_GIB + high
        self.vmsa_base = top
        # One page per vCPU for SEV-ES VMSAs, beyond anything the guest can address.
        self.store = SparsePageStore(top + cpus * 4096)
        self.vcpus = [Vcpu(i) for i in range(cpus)]
        for v in self.vcpus:
            v.reset()

    def mapped(self, gpa: int, length: int = 1) -> Region | None:
        """The RAM or ROM region holding all of `[gpa, gpa+length)`, if any."""
        for r in self.regions:
            if r.contains(gpa, length):
                return r
        return None

    def region_at(self, gpa: int) -> Region | None:
        return self.mapped(gpa, 1)
