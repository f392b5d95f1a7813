"""Host profiles: the AMD EPYC generations sevd can pretend to be.

Each profile fixes what a real host reports about itself: the SEV firmware API version and
build (PLATFORM_STATUS, and so every measurement), CPUID Fn8000_001F (C-bit position,
physical-address-bit reduction, ASID ranges, feature bits), whether SEV-ES and ATTESTATION
exist, and the size of the simulated AMD root keys. Values are DESIGN.md §6's table;
CPUID semantics are reference/sev-firmware.md §13.

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_PROFILE",
    "GENOA",
    "MILAN",
    "NAPLES",
    "PROFILES",
    "ROME",
    "CpuidFn8000001F",
    "HostProfile",
    "get_profile",
]

# CPUID Fn8000_001F EAX feature bits (§13; sevctl ok.rs).
EAX_SME = 1 << 0
EAX_SEV = 1 << 1
EAX_PAGE_FLUSH_MSR = 1 << 2
EAX_SEV_ES = 1 << 3
EAX_SEV_SNP = 1 << 4
EAX_VMPL = 1 << 5


@dataclass(frozen=True)
class CpuidFn8000001F:
    """The four registers of CPUID Fn8000_001F as the host reports them."""

    eax: int
    ebx: int
    ecx: int
    edx: int

    @property
    def cbitpos(self) -> int:
        """EBX[5:0]: the page-table bit that marks a page encrypted."""
        return self.ebx & 0x3F

    @property
    def phys_addr_reduction(self) -> int:
        """EBX[11:6]: physical-address bits lost when memory encryption is on."""
        return (self.ebx >> 6) & 0x3F

    @property
    def vmpl_count(self) -> int:
        """EBX[15:12]: number of VMPLs (SNP parts)."""
        return (self.ebx >> 12) & 0xF

    @property
    def max_asid(self) -> int:
        """ECX: number of encrypted guests supported simultaneously = maximum ASID."""
        return self.ecx

    @property
    def min_sev_asid(self) -> int:
        """EDX: lowest ASID for a non-ES guest; ``1..EDX-1`` are the SEV-ES ASIDs."""
        return self.edx


def _ebx(cbitpos: int, reduction: int, vmpls: int = 0) -> int:
    return (cbitpos & 0x3F) | ((reduction & 0x3F) << 6) | ((vmpls & 0xF) << 12)


@dataclass(frozen=True)
class HostProfile:
    """One simulated host: firmware version, CPUID, and what the firmware supports."""

    name: str
    api_major: int
    api_minor: int
    build: int
    cpuid: CpuidFn8000001F
    #: SEV-ES exists in this firmware (INIT accepts CONFIG.ES, ES policies can launch)
    es: bool
    #: bits of the simulated ARK/ASK RSA keys: 2048 on Naples, 4096 from Rome on (§7.4)
    amd_root_bits: int
    #: guest handles 1..handle_limit (ASPFW SEV_GUEST_COUNT_MAX)
    handle_limit: int = 1024

    @property
    def api_version(self) -> tuple[int, int]:
        return (self.api_major, self.api_minor)

    def api_at_least(self, major: int, minor: int) -> bool:
        """Whether this firmware's API version is ``>= major.minor``."""
        return self.api_version >= (major, minor)

    @property
    def attestation(self) -> bool:
        """ATTESTATION exists from API 0.23 on (reference §9)."""
        return self.api_at_least(0, 23)

    @property
    def cbitpos(self) -> int:
        return self.cpuid.cbitpos

    @property
    def phys_addr_reduction(self) -> int:
        return self.cpuid.phys_addr_reduction

    @property
    def max_asid(self) -> int:
        return self.cpuid.max_asid

    @property
    def min_sev_asid(self) -> int:
        return self.cpuid.min_sev_asid

    @property
    def es_asids(self) -> range:
        """ASIDs for SEV-ES guests: ``1 .. EDX-1`` (empty when EDX is 1)."""
        return range(1, self.min_sev_asid)

    @property
    def sev_asids(self) -> range:
        """ASIDs for SEV (non-ES) guests: ``EDX .. ECX``."""
        return range(self.min_sev_asid, self.max_asid + 1)

    @property
    def max_guests(self) -> int:
        """libvirt's maxGuests: ECX - EDX + 1."""
        return len(self.sev_asids)

    @property
    def max_es_guests(self) -> int:
        """libvirt's maxESGuests: EDX - 1."""
        return len(self.es_asids)


# EAX values: Naples reports SME, SEV and the page-flush MSR (no SEV-ES); Rome's is the
# public dump quoted in reference §13 (0x0001000f); Milan's likewise (0x0101fd3f). No public
# Genoa dump is quoted there: Genoa reuses Milan's value (an assumption; it only matters for
# feature bits sevd does not model).
NAPLES = HostProfile(
    name="naples",
    api_major=0,
    api_minor=17,
    build=48,
    cpuid=CpuidFn8000001F(
        eax=EAX_SME | EAX_SEV | EAX_PAGE_FLUSH_MSR, ebx=_ebx(47, 5), ecx=15, edx=1
    ),
    es=False,
    amd_root_bits=2048,
)
ROME = HostProfile(
    name="rome",
    api_major=0,
    api_minor=24,
    build=15,
    cpuid=CpuidFn8000001F(eax=0x0001000F, ebx=_ebx(47, 5), ecx=509, edx=1),
    es=True,
    amd_root_bits=4096,
)
MILAN = HostProfile(
    name="milan",
    api_major=1,
    api_minor=51,
    build=3,
    cpuid=CpuidFn8000001F(eax=0x0101FD3F, ebx=_ebx(51, 5, 4), ecx=509, edx=100),
    es=True,
    amd_root_bits=4096,
)
GENOA = HostProfile(
    name="genoa",
    api_major=1,
    api_minor=55,
    build=21,
    cpuid=CpuidFn8000001F(eax=0x0101FD3F, ebx=_ebx(51, 5, 4), ecx=509, edx=451),
    es=True,
    amd_root_bits=4096,
)

PROFILES: dict[str, HostProfile] = {p.name: p for p in (NAPLES, ROME, MILAN, GENOA)}
DEFAULT_PROFILE = MILAN


def get_profile(name: str) -> HostProfile:
    """The profile called ``name``; ``KeyError`` lists the known names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown host profile {name!r} (known: {', '.join(PROFILES)})") from None
