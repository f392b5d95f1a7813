"""Guest contexts of the simulated firmware, and the read-only views handed out.

:class:`GuestContext` is the firmware's private record of one guest handle: its state,
policy, ASID binding, memory, and keys (VEK, TEK, TIK), which are ``repr=False`` and never
leave the firmware. :class:`GuestInfo` is the read-only view callers get. The state numbers
are AMD's (reference/sev-firmware.md §3, §4; ASPFW ``sev_plat.h``, ``sev_guest.h``).

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NoReturn

from sevd.domain.psp.memory import GuestMemory, PageCipher
from sevd.formats.policy import GuestPolicy

__all__ = [
    "GuestContext",
    "GuestInfo",
    "GuestState",
    "GuestStatus",
    "PlatformState",
    "PlatformStatus",
]


class PlatformState(IntEnum):
    """Platform states (ASPFW ``enum sev_state``)."""

    UNINIT = 0
    INIT = 1
    WORKING = 2


class GuestState(IntEnum):
    """Guest states, as GUEST_STATUS returns them (ASPFW ``enum sev_guest_state``)."""

    UNINIT = 0
    LUPDATE = 1
    LSECRET = 2
    RUNNING = 3
    SUPDATE = 4
    RUPDATE = 5
    SENT = 6


@dataclass(frozen=True)
class PlatformStatus:
    """PLATFORM_STATUS output (§1): every field of the 12-byte buffer."""

    api_major: int
    api_minor: int
    state: PlatformState
    #: platform_flags bit 0: 1 = externally owned (PEK_CERT_IMPORT done)
    owner: bool
    #: config_flags bit 0: INIT was given CONFIG.ES
    config_es: bool
    build: int
    guest_count: int

    def to_bytes(self) -> bytes:
        """The 12-byte PLATFORM_STATUS buffer (owner = byte 3 bit 0, ES = byte 4 bit 0,
        build = byte 7, §16.20)."""
        return (
            bytes([self.api_major, self.api_minor, int(self.state), int(self.owner)])
            + int(self.config_es).to_bytes(2, "little")
            + bytes([0, self.build])
            + (self.guest_count.to_bytes(4, "little"))
        )


@dataclass(frozen=True)
class GuestStatus:
    """GUEST_STATUS output: policy, ASID (0 when unbound) and state."""

    handle: int
    policy: int
    asid: int
    state: GuestState


@dataclass(frozen=True)
class GuestInfo:
    """A read-only snapshot of one guest, for the daemon (no key material)."""

    handle: int
    state: GuestState
    policy: int
    asid: int
    #: ACTIVATEd and running on its ASID
    active: bool
    #: ACTIVATEd before LAUNCH_FINISH/RECEIVE_FINISH: becomes active then
    pending: bool
    es: bool
    #: the 48-byte LAUNCH_MEASURE output (MEASURE ‖ MNONCE), once measured
    measurement: bytes | None
    #: the raw SHA-256 launch digest, once measured
    launch_digest: bytes | None
    #: handle of the guest whose VEK this guest shares (0: its own VEK)
    shares_key_with: int


@dataclass(eq=False)
class GuestContext:
    """The firmware's record of one guest handle. Keys are hidden from ``repr``."""

    handle: int
    policy: GuestPolicy
    state: GuestState
    memory: GuestMemory = field(repr=False)
    vek: bytes = field(repr=False)
    cipher: PageCipher = field(repr=False)
    #: identifies the VEK: guests sharing a VEK (LAUNCH_START with a handle) share the id
    key_id: int
    shares_key_with: int = 0
    tek: bytes = field(default=bytes(16), repr=False)
    tik: bytes = field(default=bytes(16), repr=False)
    ld: hashlib._Hash | None = field(default=None, repr=False)
    launch_digest: bytes | None = None
    #: MEASURE (32 bytes), kept for LAUNCH_SECRET's MAC
    measure: bytes | None = field(default=None, repr=False)
    measurement: bytes | None = None
    asid: int = 0
    active: bool = False
    es: bool = False
    #: guest-physical addresses of this guest's VMSAs (SEV-ES)
    vmsas: set[int] = field(default_factory=set)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a guest context holds guest keys and cannot be pickled or copied")

    @property
    def pending(self) -> bool:
        return self.asid != 0 and not self.active

    @property
    def bound(self) -> bool:
        """ACTIVATEd (active or pending): ASPFW's ``!guest_is_inactive``."""
        return self.asid != 0

    def close_channel(self) -> None:
        """Zero the transport keys (LAUNCH_FINISH, SEND_FINISH/CANCEL, RECEIVE_FINISH)."""
        self.tek = bytes(16)
        self.tik = bytes(16)

    def info(self) -> GuestInfo:
        return GuestInfo(
            handle=self.handle,
            state=self.state,
            policy=self.policy.to_int(),
            asid=self.asid,
            active=self.active,
            pending=self.pending,
            es=self.es,
            measurement=self.measurement,
            launch_digest=self.launch_digest,
            shares_key_with=self.shares_key_with,
        )
