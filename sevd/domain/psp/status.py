"""SEV firmware status codes and the one exception every failing firmware command raises.

The numbers are AMD's (reference/sev-firmware.md §2; ASPFW ``sev_status.h``, Linux uapi
``sev_ret_code``), and :attr:`SevStatus.text` is exactly the string QEMU prints for a code
(QEMU ``target/i386/sev.c sev_fw_errlist``; reference/qmp.md), so that the daemon can
render ``fw_error=%d '%s'`` as QEMU does.

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

__all__ = ["SevError", "SevStatus", "status_name", "status_text"]


class SevStatus(IntEnum):
    """Legacy SEV firmware status codes 0x00-0x18 (the SNP-era codes above are never
    produced by the legacy SEV commands, §2)."""

    SUCCESS = 0x00
    INVALID_PLATFORM_STATE = 0x01
    INVALID_GUEST_STATE = 0x02
    INVALID_CONFIG = 0x03
    INVALID_LENGTH = 0x04
    ALREADY_OWNED = 0x05
    INVALID_CERTIFICATE = 0x06
    POLICY_FAILURE = 0x07
    INACTIVE = 0x08
    INVALID_ADDRESS = 0x09
    BAD_SIGNATURE = 0x0A
    BAD_MEASUREMENT = 0x0B
    ASID_OWNED = 0x0C
    INVALID_ASID = 0x0D
    WBINVD_REQUIRED = 0x0E
    DFFLUSH_REQUIRED = 0x0F
    INVALID_GUEST = 0x10
    INVALID_COMMAND = 0x11
    ACTIVE = 0x12
    HWERROR_PLATFORM = 0x13
    HWERROR_UNSAFE = 0x14
    UNSUPPORTED = 0x15
    INVALID_PARAM = 0x16
    RESOURCE_LIMIT = 0x17
    SECURE_DATA_INVALID = 0x18

    @property
    def text(self) -> str:
        """The string QEMU prints for this code (``sev_fw_errlist``)."""
        return _QEMU_TEXT[self.value]


# QEMU target/i386/sev.c sev_fw_errlist, indexed by the firmware status.
_QEMU_TEXT: tuple[str, ...] = (
    "",
    "Platform state is invalid",
    "Guest state is invalid",
    "Platform configuration is invalid",
    "Buffer too small",
    "Platform is already owned",
    "Certificate is invalid",
    "Policy is not allowed",
    "Guest is not active",
    "Invalid address",
    "Bad signature",
    "Bad measurement",
    "ASID is already owned",
    "Invalid ASID",
    "WBINVD is required",
    "DF_FLUSH is required",
    "Guest handle is invalid",
    "Invalid command",
    "Guest is active",
    "Hardware error",
    "Hardware unsafe",
    "Feature not supported",
    "Invalid parameter",
    "Required firmware resource depleted",
    "Part-specific integrity check failure",
)
assert len(_QEMU_TEXT) == len(SevStatus)


def status_text(code: int) -> str:
    """QEMU's text for any numeric status; ``"unknown error"`` outside its table."""
    if 0 <= code < len(_QEMU_TEXT):
        return _QEMU_TEXT[code]
    return "unknown error"


def status_name(code: int) -> str:
    """The AMD name of a status (``"BAD_MEASUREMENT"``), or ``"0x27"`` for other codes."""
    try:
        return SevStatus(code).name
    except ValueError:
        return f"0x{code:02x}"


class SevError(Exception):
    """A firmware command failed with a non-zero status.

    ``status`` is the numeric code (a :class:`SevStatus` for the legacy codes; fault
    injection may use any code). For the length-query convention (§1, §16.13)
    ``required_length`` carries the length the firmware wrote back into the command buffer,
    and ``lengths`` every length it wrote back by field name (PDH_CERT_EXPORT writes two).

    The message never contains key material: it is built from the command name and the
    status only.
    """

    def __init__(
        self,
        status: int,
        command: str | None = None,
        *,
        required_length: int | None = None,
        lengths: Mapping[str, int] | None = None,
    ) -> None:
        if status == SevStatus.SUCCESS:
            raise ValueError("SevError needs a failing status")
        try:
            self.status: int = SevStatus(status)
        except ValueError:
            self.status = status
        self.command = command
        self.required_length = required_length
        self.lengths: dict[str, int] = dict(lengths or {})
        if required_length is not None and not self.lengths:
            self.lengths["len"] = required_length
        super().__init__(str(self))

    @property
    def name(self) -> str:
        return status_name(self.status)

    @property
    def text(self) -> str:
        return status_text(self.status)

    def __str__(self) -> str:
        where = f"{self.command}: " if self.command else ""
        return f"{where}{self.name} (fw_error={self.status} '{self.text}')"

    def __repr__(self) -> str:
        return f"SevError({self.name}, command={self.command!r})"
