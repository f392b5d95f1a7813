"""SEV transport packets: the LAUNCH_SECRET header and MAC, SEND/RECEIVE_UPDATE packets,
and the OVMF/EFI secret table that ``sevctl secret build`` puts in the plaintext.

Packet header (52 bytes; reference/sev-firmware.md §8.5, ASPFW ``sev_packet_header_t``,
virtee ``launch::sev::Header``): ``LE32 flags ‖ IV(16) ‖ MAC(32)``. Flag bit 0 is
COMPRESSED, which firmware refuses (UNSUPPORTED) after a valid MAC.

MAC (ASPFW ``sev_channel_hmac``; virtee ``Session::secret``; sevctl ``secret.rs``)::

    MAC = HMAC-SHA256(TIK, ctx ‖ LE32(flags) ‖ IV ‖ LE32(guest_len) ‖ LE32(trans_len)
                           ‖ ciphertext ‖ trailer)

with ``ctx`` 0x01 and ``trailer`` = the 32-byte MEASURE for LAUNCH_SECRET (§16.11), and ctx
0x02 with no trailer for SEND_UPDATE_* / RECEIVE_UPDATE_* (§11, §16.24). The ciphertext is
AES-128-CTR(TEK, IV)(plaintext).

Secret table (sevctl ``build_secrets_table``; OVMF ``SecretsTable``)::

    entry = GUID_le ‖ LE32(16 + 4 + len(data)) ‖ data
    table = GUID_le(1e74f542-71dd-4d66-963e-ef4287ff173b) ‖ LE32(20 + Σ len(entry)) ‖ entries
    plaintext = table zero-padded to a multiple of 16

Pure and synchronous; imports only the standard library, ``cryptography`` and
``sevd.formats.crypto``. Must not import anything else from ``sevd``.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sevd.formats.crypto import KEY_LEN, aes128_ctr, hmac_sha256, le32, mac_equal

__all__ = [
    "CONTEXT_DATA",
    "CONTEXT_SECRET",
    "CONTEXT_VMSA",
    "FLAG_COMPRESSED",
    "SECRET_HEADER_LEN",
    "SECRET_TABLE_GUID",
    "SecretHeader",
    "build_secret_table",
    "decrypt_packet",
    "encrypt_packet",
    "encrypt_secret",
    "open_secret",
    "packet_mac",
    "parse_secret_table",
    "secret_mac",
]

SECRET_HEADER_LEN = 52
FLAG_COMPRESSED = 0x1
CONTEXT_SECRET = 0x01
CONTEXT_DATA = 0x02
#: Defined by the firmware's channel enum but not used on the SEND_UPDATE_VMSA path, which
#: MACs with CONTEXT_DATA as well (ASPFW; §11).
CONTEXT_VMSA = 0x03
MEASURE_LEN = 32

SECRET_TABLE_GUID = uuid.UUID("1e74f542-71dd-4d66-963e-ef4287ff173b")
_HEADER = struct.Struct("<I16s32s")
_GUID_LEN = 16
_ENTRY_HEADER_LEN = _GUID_LEN + 4


@dataclass(frozen=True)
class SecretHeader:
    """The 52-byte packet header: flags, IV, MAC."""

    flags: int
    iv: bytes
    mac: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= 0xFFFF_FFFF:
            raise ValueError("packet header flags are a u32")
        if len(self.iv) != 16:
            raise ValueError("packet header IV must be 16 bytes")
        if len(self.mac) != 32:
            raise ValueError("packet header MAC must be 32 bytes")

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_COMPRESSED)

    @classmethod
    def from_bytes(cls, data: bytes) -> SecretHeader:
        if len(data) != SECRET_HEADER_LEN:
            raise ValueError(f"packet header must be {SECRET_HEADER_LEN} bytes, got {len(data)}")
        return cls(*_HEADER.unpack(data))

    def to_bytes(self) -> bytes:
        return _HEADER.pack(self.flags, self.iv, self.mac)


def packet_mac(
    tik: bytes,
    context: int,
    flags: int,
    iv: bytes,
    guest_length: int,
    trans_length: int,
    ciphertext: bytes,
    trailer: bytes = b"",
) -> bytes:
    """The transport-channel MAC (see the module docstring)."""
    if len(iv) != 16:
        raise ValueError("packet IV must be 16 bytes")
    return hmac_sha256(
        tik,
        bytes([context]),
        le32(flags),
        iv,
        le32(guest_length),
        le32(trans_length),
        ciphertext,
        trailer,
    )


def secret_mac(
    tik: bytes,
    flags: int,
    iv: bytes,
    guest_length: int,
    trans_length: int,
    ciphertext: bytes,
    measurement: bytes,
) -> bytes:
    """The LAUNCH_SECRET MAC: context 0x01, both lengths, the ciphertext, and the 32-byte
    MEASURE from LAUNCH_MEASURE — not the 48-byte blob (§8.5, §16.11)."""
    if len(measurement) != MEASURE_LEN:
        raise ValueError(
            f"the LAUNCH_SECRET MAC takes the {MEASURE_LEN}-byte MEASURE, not {len(measurement)} "
            "bytes (strip the mnonce from the 48-byte blob)"
        )
    return packet_mac(
        tik, CONTEXT_SECRET, flags, iv, guest_length, trans_length, ciphertext, measurement
    )


def encrypt_secret(
    tek: bytes,
    tik: bytes,
    iv: bytes,
    plaintext: bytes,
    measurement: bytes,
    flags: int = 0,
) -> tuple[SecretHeader, bytes]:
    """Encrypt and MAC a LAUNCH_SECRET payload: ``(header, ciphertext)``; ``guest_len`` and
    ``trans_len`` are both the ciphertext length, as every tool sends them."""
    if len(tek) != KEY_LEN:
        raise ValueError("TEK must be 16 bytes")
    ciphertext = aes128_ctr(tek, iv, plaintext)
    n = len(ciphertext)
    mac = secret_mac(tik, flags, iv, n, n, ciphertext, measurement)
    return SecretHeader(flags, iv, mac), ciphertext


def open_secret(
    tek: bytes,
    tik: bytes,
    header: SecretHeader,
    ciphertext: bytes,
    measurement: bytes,
    guest_length: int | None = None,
) -> bytes:
    """The firmware side of LAUNCH_SECRET: check the MAC, then decrypt.

    ``guest_length`` defaults to the ciphertext length (firmware requires them equal).
    Raises ``ValueError("mac")`` on mismatch (firmware: BAD_MEASUREMENT).
    """
    glen = len(ciphertext) if guest_length is None else guest_length
    expected = secret_mac(
        tik, header.flags, header.iv, glen, len(ciphertext), ciphertext, measurement
    )
    if not mac_equal(expected, header.mac):
        raise ValueError("mac")
    return aes128_ctr(tek, header.iv, ciphertext)


def encrypt_packet(
    tek: bytes, tik: bytes, iv: bytes, plaintext: bytes, context: int = CONTEXT_DATA, flags: int = 0
) -> tuple[SecretHeader, bytes]:
    """SEND_UPDATE_*: encrypt ``plaintext`` and MAC it with context 0x02, no trailer, both
    lengths equal to the plaintext length (§11)."""
    if len(tek) != KEY_LEN:
        raise ValueError("TEK must be 16 bytes")
    ciphertext = aes128_ctr(tek, iv, plaintext)
    n = len(ciphertext)
    return SecretHeader(
        flags, iv, packet_mac(tik, context, flags, iv, n, n, ciphertext)
    ), ciphertext


def decrypt_packet(
    tek: bytes,
    tik: bytes,
    header: SecretHeader,
    ciphertext: bytes,
    context: int = CONTEXT_DATA,
    guest_length: int | None = None,
) -> bytes:
    """RECEIVE_UPDATE_*: check the context-0x02 MAC (no trailer), then decrypt.
    Raises ``ValueError("mac")`` on mismatch."""
    glen = len(ciphertext) if guest_length is None else guest_length
    expected = packet_mac(tik, context, header.flags, header.iv, glen, len(ciphertext), ciphertext)
    if not mac_equal(expected, header.mac):
        raise ValueError("mac")
    return aes128_ctr(tek, header.iv, ciphertext)


def build_secret_table(secrets: Mapping[uuid.UUID, bytes]) -> bytes:
    """The OVMF secret table of ``secrets`` (in mapping order), zero-padded to 16 bytes."""
    entries = b"".join(
        guid.bytes_le + le32(_ENTRY_HEADER_LEN + len(data)) + data for guid, data in secrets.items()
    )
    table = SECRET_TABLE_GUID.bytes_le + le32(_ENTRY_HEADER_LEN + len(entries)) + entries
    # Firmware requires a 16-byte-aligned guest_len (§8.5); sevctl pads with zeros.
    return table + bytes(-len(table) % 16)


def parse_secret_table(data: bytes) -> dict[uuid.UUID, bytes]:
    """Parse a secret table (trailing padding ignored); ``ValueError`` if malformed."""
    if len(data) < _ENTRY_HEADER_LEN:
        raise ValueError("secret table shorter than its 20-byte header")
    guid = uuid.UUID(bytes_le=bytes(data[:_GUID_LEN]))
    if guid != SECRET_TABLE_GUID:
        raise ValueError(f"secret table: header GUID {guid} is not {SECRET_TABLE_GUID}")
    (total,) = struct.unpack_from("<I", data, _GUID_LEN)
    if not _ENTRY_HEADER_LEN <= total <= len(data):
        raise ValueError(f"secret table: length {total} does not fit the {len(data)} bytes")
    out: dict[uuid.UUID, bytes] = {}
    off = _ENTRY_HEADER_LEN
    while off < total:
        if total - off < _ENTRY_HEADER_LEN:
            raise ValueError(f"secret table: truncated entry header at offset {off}")
        entry_guid = uuid.UUID(bytes_le=bytes(data[off : off + _GUID_LEN]))
        (size,) = struct.unpack_from("<I", data, off + _GUID_LEN)
        if size < _ENTRY_HEADER_LEN or off + size > total:
            raise ValueError(f"secret table: entry {entry_guid} has invalid length {size}")
        out[entry_guid] = bytes(data[off + _ENTRY_HEADER_LEN : off + size])
        off += size
    return out
