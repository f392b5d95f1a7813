"""Shared state of the simulated SEV firmware, and the helpers every command uses.

:class:`FirmwareBase` holds what the PSP keeps between commands: the platform state and
CONFIG flags, the platform identity (keys and persistent store), the guest table, the ASID
bookkeeping (dirty / allocated / in use, per reference §4 and ASPFW ``sev_mcmd.c``), the
runtime DRBG, the fault injector and the counters. The command families are mixins in
``platform.py``, ``activation.py``, ``launch.py``, ``debug.py`` and ``migration.py``;
``firmware.py`` assembles them.

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sevd.domain.psp.commands import FaultInjector, FirmwareStats
from sevd.domain.psp.drbg import HmacDrbg
from sevd.domain.psp.guest import GuestContext, GuestInfo, PlatformState
from sevd.domain.psp.identity import PlatformIdentity
from sevd.domain.psp.memory import read_private, write_private
from sevd.domain.psp.profiles import HostProfile
from sevd.domain.psp.status import SevError, SevStatus

__all__ = ["DEFAULT_GUEST_MEMORY", "FirmwareBase", "HostConditions"]

#: Guest RAM when LAUNCH_START/RECEIVE_START is not given a memory (DESIGN.md §4: 256 MiB).
DEFAULT_GUEST_MEMORY = 256 << 20

#: ASPFW SEV_SCRATCH_BUF_LEN: the largest LAUNCH_SECRET / SEND/RECEIVE_UPDATE payload.
SCRATCH_LEN = 0x5000


@dataclass
class HostConditions:
    """Hardware conditions outside the firmware that the host can break on purpose."""

    #: SME / memory encryption enabled on every core and UMC; INIT fails with
    #: HWERROR_PLATFORM otherwise (ASPFW ``umc_encryption_enabled``).
    memory_encryption_enabled: bool = True
    #: the memory controllers accept key installs and ASID validation; otherwise
    #: LAUNCH_FINISH / RECEIVE_FINISH of a pending activation and SHUTDOWN fail with
    #: HWERROR_UNSAFE (ASPFW).
    memory_controller_healthy: bool = True


class FirmwareBase:
    """State and helpers shared by the command mixins."""

    def __init__(
        self,
        identity: PlatformIdentity,
        *,
        seed: bytes | None = None,
        profile: HostProfile | None = None,
        host: HostConditions | None = None,
    ) -> None:
        self.profile: HostProfile = profile if profile is not None else identity.host_profile
        if self.profile.amd_root_bits != identity.roots.bits:
            raise ValueError(
                f"identity has RSA-{identity.roots.bits} AMD roots; profile "
                f"{self.profile.name} needs RSA-{self.profile.amd_root_bits}"
            )
        self._identity = identity.copy()
        self._drbg = HmacDrbg(seed, b"sevd psp runtime")
        self.faults = FaultInjector()
        self.stats = FirmwareStats()
        self.host = host if host is not None else HostConditions()
        self._state = PlatformState.UNINIT
        self._config_flags = 0
        self._guests: dict[int, GuestContext] = {}
        # ASID bookkeeping (one CCX): handles bound to each ASID (pending or active),
        # ASIDs that have run since they were last clean, ASIDs needing DF_FLUSH.
        self._asid_users: dict[int, set[int]] = {}
        self._asid_ran: set[int] = set()
        self._dirty: set[int] = set(range(1, self.profile.max_asid + 1))
        self._wbinvd_done = False
        self._next_key_id = 1

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(profile={self.profile.name}, state={self._state.name}, "
            f"guests={len(self._guests)})"
        )

    # -- queries that are not firmware commands ---------------------------------------------

    @property
    def state(self) -> PlatformState:
        return self._state

    @property
    def config_es(self) -> bool:
        return bool(self._config_flags & 1)

    def guest_info(self, handle: int) -> GuestInfo:
        """Read-only view of guest ``handle``; SevError(INVALID_GUEST) if there is none."""
        return self._guest(handle).info()

    def guests(self) -> list[GuestInfo]:
        """Every guest with a handle, by handle."""
        return [self._guests[h].info() for h in sorted(self._guests)]

    def asid_state(self, asid: int) -> str:
        """``"in-use"``, ``"allocated"`` (pending activation), ``"dirty"`` or ``"clean"``."""
        users = self._asid_users.get(asid)
        if users:
            active = any(self._guests[h].active for h in users)
            return "in-use" if active else "allocated"
        return "dirty" if asid in self._dirty else "clean"

    def export_identity(self) -> bytes:
        """The platform identity as bytes (keys, roots, persistent store; no guest keys)."""
        return self._identity.to_bytes()

    # -- helpers for commands ---------------------------------------------------------------

    def _require(self, *allowed: PlatformState) -> None:
        if self._state not in allowed:
            raise SevError(SevStatus.INVALID_PLATFORM_STATE)

    def _guest(self, handle: int) -> GuestContext:
        # Handle 0 and free handles are INVALID_GUEST (ASPFW handle_is_valid).
        guest = self._guests.get(handle)
        if guest is None:
            raise SevError(SevStatus.INVALID_GUEST)
        return guest

    def _random(self, n: int) -> bytes:
        return self._drbg.generate(n)

    def _free_handle(self) -> int:
        # "the firmware allocates the lowest free one" (ASPFW find_free_guest_handle).
        for handle in range(1, self.profile.handle_limit + 1):
            if handle not in self._guests:
                return handle
        raise SevError(SevStatus.RESOURCE_LIMIT)

    def _new_key_id(self) -> int:
        key_id = self._next_key_id
        self._next_key_id += 1
        return key_id

    def _release_asid(self, guest: GuestContext) -> None:
        """Unbind ``guest`` from its ASID (DEACTIVATE, SHUTDOWN)."""
        asid = guest.asid
        users = self._asid_users.get(asid, set())
        users.discard(guest.handle)
        if guest.active:
            # sev_guest_deactivate: "Clear WBINVD_DONE bits ... on the cores of each CCX
            # that was in use for the guest."
            self._wbinvd_done = False
        if not users:
            self._asid_users.pop(asid, None)
            if asid in self._asid_ran:
                # "Has been Running: InUse CCXs Dirty."
                self._asid_ran.discard(asid)
                self._dirty.add(asid)
        guest.asid = 0
        guest.active = False

    def _complete_activation(self, guest: GuestContext) -> None:
        """LAUNCH_FINISH / RECEIVE_FINISH: a pending activation becomes active."""
        if guest.pending:
            if not self.host.memory_controller_healthy:
                # ASPFW: sev_guest_finish_pending_activate failed -> HARDWARE_UNSAFE.
                raise SevError(SevStatus.HWERROR_UNSAFE)
            guest.active = True
            self._asid_ran.add(guest.asid)

    def _read_guest(self, guest: GuestContext, gpa: int, length: int) -> bytes:
        """Plaintext of private guest memory, decrypted with the guest's VEK."""
        data = read_private(guest.memory, guest.cipher, gpa, length)
        self.stats.bytes_decrypted += length
        return data

    def _write_guest(self, guest: GuestContext, gpa: int, plaintext: bytes) -> None:
        """Write plaintext into private guest memory, encrypted with the guest's VEK."""
        write_private(guest.memory, guest.cipher, gpa, plaintext)
        self.stats.bytes_encrypted += len(plaintext)
