"""OVMF firmware images: the GUIDed footer table, the kernel-hashes table, the launch digest.

Footer table (reference/sev-firmware.md §12.3; sev-snp-measure ``ovmf.py
_parse_footer_table``, QEMU ``pc_system_ovmf_table_find``): the table ends 32 bytes before
the end of the image. At ``size - 32 - 18`` sits ``LE16 footer_size ‖ GUID 96b582de-…``,
where ``footer_size`` counts these 18 bytes and the table before them. The entries are laid
out backwards before the footer, each ``data ‖ LE16 entry_size ‖ GUID`` with ``entry_size``
counting the 18-byte trailer.

Kernel-hashes table (§12.2; QEMU ``PaddedSevHashTable``, sev-snp-measure ``sev_hashes.py``):
168 bytes (a GUID/LE16 header and three 50-byte entries for cmdline, initrd and kernel, each
``GUID ‖ LE16(50) ‖ SHA-256``) padded with zeros to 176 bytes. The cmdline is hashed with
its trailing NUL (no cmdline hashes ``"\\0"``), a missing initrd hashes the empty string.

Launch digest (§12.1): ``SHA-256(image ‖ [hashes table if a kernel is given] ‖ [VMSAs for
SEV-ES])`` — exactly what the firmware sees through LAUNCH_UPDATE_DATA / _VMSA in QEMU's
order, and what ``sev-snp-measure --mode sev|seves`` and ``sevctl measurement build`` compute.

GUIDs are stored mixed-endian (``uuid.UUID.bytes_le``, §16.15).

Pure and synchronous; imports only the standard library and ``sevd.formats`` modules. Must
not import anything else from ``sevd``.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Sequence

from sevd.formats.vmsa import vmsa_pages

__all__ = [
    "FOOTER_GUID",
    "HASHES_TABLE_LEN",
    "SEV_CMDLINE_ENTRY_GUID",
    "SEV_ES_RESET_BLOCK_GUID",
    "SEV_HASH_TABLE_GUID",
    "SEV_HASH_TABLE_RV_GUID",
    "SEV_INITRD_ENTRY_GUID",
    "SEV_KERNEL_ENTRY_GUID",
    "SEV_METADATA_GUID",
    "SEV_SECRET_GUID",
    "build_footer_table",
    "build_hashes_table",
    "launch_digest",
    "parse_footer_table",
    "sev_es_reset_eip",
    "sev_hashes_table_area",
    "sev_metadata",
    "sev_secret_area",
    "seves_digest",
]

FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d")
#: SEV-ES reset block: ``LE32`` AP reset address.
SEV_ES_RESET_BLOCK_GUID = uuid.UUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
#: Where QEMU writes the kernel-hashes table: ``LE32 base, LE32 size``.
SEV_HASH_TABLE_RV_GUID = uuid.UUID("7255371f-3a3b-4b04-927b-1da6efa8d454")
#: The SEV secret area (LAUNCH_SECRET's default GPA): ``LE32 base, LE32 size``.
SEV_SECRET_GUID = uuid.UUID("4c2eb361-7d9b-4cc3-8081-127c90d3d294")
#: OVMF SEV metadata (SNP only): ``LE32`` offset from the end of the image.
SEV_METADATA_GUID = uuid.UUID("dc886566-984a-4798-a75e-5585a7bf67cc")

SEV_HASH_TABLE_GUID = uuid.UUID("9438d606-4f22-4cc9-b479-a793d411fd21")
SEV_CMDLINE_ENTRY_GUID = uuid.UUID("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")
SEV_INITRD_ENTRY_GUID = uuid.UUID("44baf731-3a2f-4bd7-9af1-41e29169781d")
SEV_KERNEL_ENTRY_GUID = uuid.UUID("4de79437-abd2-427f-b835-d5b172d2045b")

_TRAILER = struct.Struct("<H16s")  # LE16 size ‖ GUID, after each entry's data
_TAIL_LEN = 32  # the footer table ends this many bytes before the end of the image
_HASH_ENTRY = struct.Struct("<16sH32s")  # 50 bytes
_HASH_TABLE_HEADER = struct.Struct("<16sH")
_HASH_TABLE_BODY_LEN = _HASH_TABLE_HEADER.size + 3 * _HASH_ENTRY.size  # 168
HASHES_TABLE_LEN = (_HASH_TABLE_BODY_LEN + 15) & ~15  # 176

_NO_HASHES = "Kernel specified but OVMF doesn't support kernel/initrd/cmdline measurement"


def parse_footer_table(image: bytes) -> dict[uuid.UUID, bytes]:
    """The footer table's entries (GUID → data); empty if the image has no table.

    Raises ``ValueError`` for a table that is present but malformed.
    """
    start = len(image) - _TAIL_LEN - _TRAILER.size
    if start < 0:
        return {}
    footer_size, footer_guid = _TRAILER.unpack_from(image, start)
    if uuid.UUID(bytes_le=footer_guid) != FOOTER_GUID:
        return {}
    table_size = footer_size - _TRAILER.size
    if table_size < 0:
        return {}
    if table_size > start:
        raise ValueError(f"OVMF footer table size {footer_size} runs past the start of the image")
    table = image[start - table_size : start]
    entries: dict[uuid.UUID, bytes] = {}
    while len(table) >= _TRAILER.size:
        size, guid_bytes = _TRAILER.unpack_from(table, len(table) - _TRAILER.size)
        guid = uuid.UUID(bytes_le=guid_bytes)
        if size < _TRAILER.size or size > len(table):
            raise ValueError(f"OVMF footer table: entry {guid} has invalid size {size}")
        # Walking from the footer backwards, the first match wins (as QEMU's lookup does).
        entries.setdefault(guid, bytes(table[len(table) - size : len(table) - _TRAILER.size]))
        table = table[: len(table) - size]
    return entries


def build_footer_table(entries: Sequence[tuple[uuid.UUID, bytes]]) -> bytes:
    """Encode a footer table (entries in file order, then the footer entry).

    The result must be placed so that it ends 32 bytes before the end of the image.
    """
    body = b"".join(
        data + _TRAILER.pack(len(data) + _TRAILER.size, g.bytes_le) for g, data in entries
    )
    size = len(body) + _TRAILER.size
    if size > 0xFFFF:
        raise ValueError("OVMF footer table larger than 64 KiB")
    return body + _TRAILER.pack(size, FOOTER_GUID.bytes_le)


def _area(image: bytes, guid: uuid.UUID) -> tuple[int, int] | None:
    data = parse_footer_table(image).get(guid)
    if data is None:
        return None
    if len(data) < 8:
        raise ValueError(f"OVMF footer entry {guid} is {len(data)} bytes, expected base and size")
    base, size = struct.unpack_from("<II", data, 0)
    return base, size


def sev_secret_area(image: bytes) -> tuple[int, int] | None:
    """``(base, size)`` of the SEV secret area, or None if the image declares none."""
    return _area(image, SEV_SECRET_GUID)


def sev_hashes_table_area(image: bytes) -> tuple[int, int] | None:
    """``(base, size)`` where QEMU puts the kernel-hashes table, or None."""
    return _area(image, SEV_HASH_TABLE_RV_GUID)


def sev_es_reset_eip(image: bytes) -> int | None:
    """The SEV-ES AP reset address, or None if the image has no reset block."""
    data = parse_footer_table(image).get(SEV_ES_RESET_BLOCK_GUID)
    if data is None:
        return None
    if len(data) < 4:
        raise ValueError("OVMF SEV-ES reset block entry shorter than 4 bytes")
    (eip,) = struct.unpack_from("<I", data, 0)
    return int(eip)


_METADATA_HEADER = struct.Struct("<4sIII")  # "ASEV", size, version, number of sections
_METADATA_SECTION = struct.Struct("<III")  # gpa, size, type


def sev_metadata(image: bytes) -> list[tuple[int, int, int]]:
    """The OVMF SEV metadata sections ``(gpa, size, type)`` (SNP only: 1 SEC memory,
    2 secrets page, 3 CPUID page, 4 SVSM CAA, 0x10 kernel hashes); empty if the image has
    none. Layout as edk2 ``OvmfSevMetadata.asm`` and sev-snp-measure ``ovmf.py`` read it."""
    entry = parse_footer_table(image).get(SEV_METADATA_GUID)
    if entry is None:
        return []
    if len(entry) < 4:
        raise ValueError("OVMF SEV metadata entry shorter than 4 bytes")
    (offset_from_end,) = struct.unpack_from("<I", entry, 0)
    start = len(image) - offset_from_end
    if not 0 <= start <= len(image) - _METADATA_HEADER.size:
        raise ValueError(f"OVMF SEV metadata offset {offset_from_end} is outside the image")
    signature, size, version, count = _METADATA_HEADER.unpack_from(image, start)
    if signature != b"ASEV" or version != 1:
        raise ValueError("OVMF SEV metadata: wrong signature or version")
    end = start + _METADATA_HEADER.size + count * _METADATA_SECTION.size
    if end > len(image) or end > start + size:
        raise ValueError("OVMF SEV metadata: sections run past the table")
    return [
        _METADATA_SECTION.unpack_from(image, start + _METADATA_HEADER.size + i * 12)
        for i in range(count)
    ]


def _cmdline_bytes(cmdline: str | bytes | None) -> bytes:
    # QEMU hashes the command line with its terminating NUL; no -append hashes "\0" alone.
    if not cmdline:
        return b"\x00"
    raw = cmdline.encode() if isinstance(cmdline, str) else cmdline
    return raw + b"\x00"


def build_hashes_table(
    kernel: bytes, initrd: bytes | None = None, cmdline: str | bytes | None = None
) -> bytes:
    """QEMU's ``PaddedSevHashTable``: 176 bytes (§12.2)."""

    def entry(guid: uuid.UUID, data: bytes) -> bytes:
        return _HASH_ENTRY.pack(guid.bytes_le, _HASH_ENTRY.size, hashlib.sha256(data).digest())

    body = (
        entry(SEV_CMDLINE_ENTRY_GUID, _cmdline_bytes(cmdline))
        + entry(SEV_INITRD_ENTRY_GUID, initrd or b"")
        + entry(SEV_KERNEL_ENTRY_GUID, kernel)
    )
    table = _HASH_TABLE_HEADER.pack(SEV_HASH_TABLE_GUID.bytes_le, _HASH_TABLE_BODY_LEN) + body
    return table + bytes(HASHES_TABLE_LEN - len(table))


def launch_digest(
    firmware: bytes,
    kernel: bytes | None = None,
    initrd: bytes | None = None,
    append: str | bytes | None = None,
    vmsas: Sequence[bytes] = (),
) -> bytes:
    """The SEV launch digest LD (raw SHA-256) of a guest booted from ``firmware``.

    With ``kernel`` the image must declare a hashes-table area (base != 0, size >= 176),
    as QEMU requires; the table is measured after the image. ``vmsas`` (SEV-ES) are
    measured last, in order. This is ``sev-snp-measure --mode sev`` when ``vmsas`` is empty.
    """
    if kernel is None and (initrd is not None or append is not None):
        raise ValueError("an initrd or a kernel command line needs a kernel")
    digest = hashlib.sha256(firmware)
    if kernel is not None:
        area = sev_hashes_table_area(firmware)
        if area is None or area[0] == 0:
            raise ValueError(_NO_HASHES)
        if area[1] < HASHES_TABLE_LEN:
            raise ValueError(
                f"OVMF hashes-table area is {area[1]} bytes, smaller than {HASHES_TABLE_LEN}"
            )
        digest.update(build_hashes_table(kernel, initrd, append))
    for page in vmsas:
        digest.update(page)
    return digest.digest()


def seves_digest(
    firmware: bytes,
    vcpus: int,
    vcpu_sig: int,
    kernel: bytes | None = None,
    initrd: bytes | None = None,
    append: str | bytes | None = None,
) -> bytes:
    """The SEV-ES launch digest with QEMU's initial VMSAs (``sev-snp-measure --mode seves``;
    see ``sevd.formats.vmsa`` for what this model does and does not cover)."""
    ap_eip = sev_es_reset_eip(firmware) or 0
    pages = vmsa_pages(vcpus, ap_eip, vcpu_sig)
    return launch_digest(firmware, kernel, initrd, append, pages)
