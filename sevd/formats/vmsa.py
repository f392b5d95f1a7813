"""The SEV-ES initial VMSA (4096-byte save area) as QEMU/KVM set it up, for SEV-ES digests.

For an SEV-ES guest QEMU issues LAUNCH_UPDATE_VMSA once per vCPU, after the firmware and the
kernel-hashes table, so the launch digest covers each vCPU's initial register state
(reference/sev-firmware.md §12.4). This module builds those pages exactly as
``sev-snp-measure`` does for ``--mode seves --vmm-type QEMU`` (``sevsnpmeasure/vmsa.py``,
``SevEsSaveArea`` laid out after Linux ``struct sev_es_save_area``; offsets below): the BSP
starts at the reset vector 0xFFFFFFF0, the APs at the OVMF SEV-ES reset block address, RDX
holds the vCPU's CPUID signature, ``sev_features`` is 0 for SEV-ES.

Caveat (§12.4): real VMSA contents depend on the QEMU and KVM versions (e.g. KVM skips the
FPU/AVX setup to keep old measurements stable); ``sevctl measurement build`` therefore takes
real VMSA dumps instead, which :func:`sevd.formats.ovmf.launch_digest` accepts as well. The EC2
and GCE variants of sev-snp-measure are not modelled.

Pure and synchronous; standard library only. Must not import anything else from ``sevd``.
"""

from __future__ import annotations

import struct

__all__ = [
    "BSP_EIP",
    "CPU_SIGNATURES",
    "VMSA_LEN",
    "build_vmsa",
    "cpu_signature",
    "vmsa_pages",
]

VMSA_LEN = 4096
BSP_EIP = 0xFFFF_FFF0

# Offsets in the save area (AMD APM vol. 2 table B-4; Linux struct sev_es_save_area).
_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr")  # 16 bytes each
_OFF_EFER = 0x0D0
_OFF_CR4 = 0x148
_OFF_CR0 = 0x158
_OFF_DR7 = 0x160
_OFF_DR6 = 0x168
_OFF_RFLAGS = 0x170
_OFF_RIP = 0x178
_OFF_G_PAT = 0x268
_OFF_RDX = 0x310
_OFF_SEV_FEATURES = 0x3B0
_OFF_XCR0 = 0x3E8
_OFF_MXCSR = 0x408
_OFF_X87_FCW = 0x410

_SEG = struct.Struct("<HHIQ")  # selector, attrib, limit, base


def cpu_signature(family: int, model: int, stepping: int) -> int:
    """The CPUID Fn0000_0001 EAX signature of a CPU (AMD CPUID spec #25481)."""
    if family > 0xF:
        family_low, family_high = 0xF, (family - 0xF) & 0xFF
    else:
        family_low, family_high = family, 0
    return (
        (family_high << 20)
        | (((model >> 4) & 0xF) << 16)
        | (family_low << 8)
        | ((model & 0xF) << 4)
        | (stepping & 0xF)
    )


#: Signatures of QEMU's built-in EPYC CPU models (family, model, stepping from QEMU's
#: ``builtin_x86_defs``, as sev-snp-measure lists them).
CPU_SIGNATURES: dict[str, int] = {
    "EPYC": cpu_signature(23, 1, 2),
    "EPYC-v4": cpu_signature(23, 1, 2),
    "EPYC-Rome": cpu_signature(23, 49, 0),
    "EPYC-Milan": cpu_signature(25, 1, 1),
    "EPYC-Genoa": cpu_signature(25, 17, 0),
    "EPYC-Turin": cpu_signature(26, 0, 0),
}


def build_vmsa(eip: int, vcpu_sig: int, sev_features: int = 0) -> bytes:
    """One vCPU's initial VMSA as QEMU/KVM create it (sev-snp-measure, VMM type QEMU)."""
    page = bytearray(VMSA_LEN)
    segments = {
        "es": (0, 0x93, 0xFFFF, 0),
        "cs": (0xF000, 0x9B, 0xFFFF, eip & 0xFFFF_0000),
        "ss": (0, 0x93, 0xFFFF, 0),
        "ds": (0, 0x93, 0xFFFF, 0),
        "fs": (0, 0x93, 0xFFFF, 0),
        "gs": (0, 0x93, 0xFFFF, 0),
        "gdtr": (0, 0, 0xFFFF, 0),
        "ldtr": (0, 0x82, 0xFFFF, 0),
        "idtr": (0, 0, 0xFFFF, 0),
        "tr": (0, 0x8B, 0xFFFF, 0),
    }
    for index, name in enumerate(_SEGMENTS):
        _SEG.pack_into(page, 16 * index, *segments[name])
    for offset, value in (
        (_OFF_EFER, 0x1000),  # KVM enables EFER.SVME
        (_OFF_CR4, 0x40),  # KVM enables CR4.MCE
        (_OFF_CR0, 0x10),
        (_OFF_DR7, 0x400),
        (_OFF_DR6, 0xFFFF0FF0),
        (_OFF_RFLAGS, 0x2),
        (_OFF_RIP, eip & 0xFFFF),
        (_OFF_G_PAT, 0x0007040600070406),  # PAT MSR reset value (AMD APM vol. 2 §A.3)
        (_OFF_RDX, vcpu_sig),
        (_OFF_SEV_FEATURES, sev_features),
        (_OFF_XCR0, 0x1),
    ):
        struct.pack_into("<Q", page, offset, value)
    struct.pack_into("<I", page, _OFF_MXCSR, 0x1F80)
    struct.pack_into("<H", page, _OFF_X87_FCW, 0x37F)
    return bytes(page)


def vmsa_pages(vcpus: int, ap_eip: int, vcpu_sig: int, sev_features: int = 0) -> list[bytes]:
    """The VMSAs QEMU measures: the BSP's, then one per AP (starting at ``ap_eip``)."""
    if vcpus < 1:
        raise ValueError(f"a guest has at least one vCPU, not {vcpus}")
    bsp = build_vmsa(BSP_EIP, vcpu_sig, sev_features)
    if vcpus == 1:
        return [bsp]
    if not ap_eip:
        raise ValueError("APs need the SEV-ES reset block address from the OVMF footer table")
    ap = build_vmsa(ap_eip, vcpu_sig, sev_features)
    return [bsp] + [ap] * (vcpus - 1)
