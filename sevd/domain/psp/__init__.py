"""The simulated AMD SEV firmware (PSP): platform and guest state machines, keys,
certificates, launch, attestation, debug and migration commands.

Public names are re-exported here; see ``firmware.py`` for the command methods.
Domain code: pure and synchronous. Must not import anything from ``sevd`` outside this
package and ``sevd.formats``.
"""

from sevd.domain.psp.base import DEFAULT_GUEST_MEMORY, HostConditions
from sevd.domain.psp.commands import Command, FaultRule, FirmwareStats
from sevd.domain.psp.firmware import SevFirmware
from sevd.domain.psp.guest import (
    GuestInfo,
    GuestState,
    GuestStatus,
    PlatformState,
    PlatformStatus,
)
from sevd.domain.psp.identity import AmdRoots, PlatformIdentity, generate, generate_roots
from sevd.domain.psp.memory import (
    PAGE_SIZE,
    GuestMemory,
    MemoryRangeError,
    PageCipher,
    SparsePageStore,
)
from sevd.domain.psp.migration import SendStart
from sevd.domain.psp.platform import InitFlag
from sevd.domain.psp.profiles import (
    DEFAULT_PROFILE,
    PROFILES,
    CpuidFn8000001F,
    HostProfile,
    get_profile,
)
from sevd.domain.psp.status import SevError, SevStatus, status_text

__all__ = [
    "DEFAULT_GUEST_MEMORY",
    "DEFAULT_PROFILE",
    "PAGE_SIZE",
    "PROFILES",
    "AmdRoots",
    "Command",
    "CpuidFn8000001F",
    "FaultRule",
    "FirmwareStats",
    "GuestInfo",
    "GuestMemory",
    "GuestState",
    "GuestStatus",
    "HostConditions",
    "HostProfile",
    "InitFlag",
    "MemoryRangeError",
    "PageCipher",
    "PlatformIdentity",
    "PlatformState",
    "PlatformStatus",
    "SendStart",
    "SevError",
    "SevFirmware",
    "SevStatus",
    "SparsePageStore",
    "generate",
    "generate_roots",
    "get_profile",
    "status_text",
]
