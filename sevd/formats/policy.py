"""The 32-bit SEV guest policy word.

Bit layout (reference/sev-firmware.md §5; Linux ``SEV_POLICY_MASK_*``, ASPFW ``sev_guest.h``):

======= ========= =================================================================
bits    name      meaning
======= ========= =================================================================
0       NODBG     DBG_DECRYPT / DBG_ENCRYPT forbidden
1       NOKS      key sharing with other guests forbidden
2       ES        SEV-ES required
3       NOSEND    SEND_START forbidden
4       DOMAIN    may only be sent to a platform with the same OCA
5       SEV       may only be sent to a genuine AMD SEV platform
15:6    reserved  must be zero (``0xFFC0``): firmware answers POLICY_FAILURE
23:16   API_MAJOR minimum firmware API major
31:24   API_MINOR minimum firmware API minor
======= ========= =================================================================

The word is hashed as 4 little-endian bytes in ``policy_mac`` and in the measurement.

Pure and synchronous; standard library only. Must not import anything else from ``sevd``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

__all__ = ["FLAGS_MASK", "RESERVED_MASK", "GuestPolicy", "PolicyFlag"]


class PolicyFlag(IntFlag):
    """The policy's flag bits (bits 0–5)."""

    NODBG = 0x01
    NOKS = 0x02
    ES = 0x04
    NOSEND = 0x08
    DOMAIN = 0x10
    SEV = 0x20


FLAGS_MASK = 0x3F
_NO_FLAGS = PolicyFlag(0)
#: Bits 6–15: reserved, must be zero (``SEV_GUEST_POLICY_RESERVED_MASK = 0xFFC0``).
RESERVED_MASK = 0xFFC0


@dataclass(frozen=True)
class GuestPolicy:
    """A decoded policy word; ``GuestPolicy.from_int(p).to_int() == p`` for every u32 ``p``."""

    flags: PolicyFlag = _NO_FLAGS
    api_major: int = 0
    api_minor: int = 0
    #: the reserved bits 6–15, in place (so ``reserved & ~RESERVED_MASK == 0``)
    reserved: int = 0

    def __post_init__(self) -> None:
        if int(self.flags) & ~FLAGS_MASK:
            raise ValueError(f"policy flags 0x{int(self.flags):x} outside bits 0-5")
        for name in ("api_major", "api_minor"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise ValueError(f"policy {name} must fit in one byte, not {value}")
        if self.reserved & ~RESERVED_MASK:
            raise ValueError(
                f"policy reserved bits 0x{self.reserved:x} outside the reserved mask 0xffc0"
            )

    @classmethod
    def from_int(cls, value: int) -> GuestPolicy:
        """Decode a 32-bit policy word (every u32 is representable)."""
        if not 0 <= value <= 0xFFFF_FFFF:
            raise ValueError(f"a guest policy is an unsigned 32-bit value, not {value}")
        return cls(
            flags=PolicyFlag(value & FLAGS_MASK),
            api_major=(value >> 16) & 0xFF,
            api_minor=(value >> 24) & 0xFF,
            reserved=value & RESERVED_MASK,
        )

    def to_int(self) -> int:
        return int(self.flags) | self.reserved | (self.api_major << 16) | (self.api_minor << 24)

    def __int__(self) -> int:
        return self.to_int()

    @property
    def has_reserved_bits(self) -> bool:
        """Reserved bits set: firmware refuses the policy with POLICY_FAILURE (§5)."""
        return self.reserved != 0

    @property
    def debug_allowed(self) -> bool:
        return PolicyFlag.NODBG not in self.flags

    @property
    def key_sharing_allowed(self) -> bool:
        return PolicyFlag.NOKS not in self.flags

    @property
    def es_required(self) -> bool:
        return PolicyFlag.ES in self.flags

    @property
    def send_allowed(self) -> bool:
        return PolicyFlag.NOSEND not in self.flags

    def api_satisfied_by(self, api_major: int, api_minor: int) -> bool:
        """True if firmware API ``api_major.api_minor`` is at least the policy's minimum."""
        return (api_major, api_minor) >= (self.api_major, self.api_minor)

    def describe(self) -> dict[str, bool | int]:
        """A JSON-friendly view (kebab-case keys, as sevd's wire names are)."""
        return {
            "nodbg": PolicyFlag.NODBG in self.flags,
            "noks": PolicyFlag.NOKS in self.flags,
            "es": PolicyFlag.ES in self.flags,
            "nosend": PolicyFlag.NOSEND in self.flags,
            "domain": PolicyFlag.DOMAIN in self.flags,
            "sev": PolicyFlag.SEV in self.flags,
            "api-major": self.api_major,
            "api-minor": self.api_minor,
            "reserved": self.reserved,
        }
