"""Guest-binding commands: ACTIVATE, DEACTIVATE, DECOMMISSION, GUEST_STATUS.

The ASID model is ASPFW's (``sev_mcmd.c`` ``mcmd_activate_common``/``activate_common``,
``sev_guest.c sev_guest_activate``) for one CCX: an ASID is clean, dirty (ran, then was
deactivated: needs WBINVD + DF_FLUSH), allocated (a guest's activation is pending until
LAUNCH_FINISH / RECEIVE_FINISH) or in use. SEV-ES guests take ASIDs ``1..EDX-1``, SEV
guests ``EDX..ECX`` (reference §4, §13).

sevd addition (DESIGN.md §6): guests that share a VEK (LAUNCH_START with a handle) may
also share its ASID — ACTIVATE accepts an ASID owned only by guests with the same VEK.
Guests with different VEKs never share one (ASID_OWNED).

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

from sevd.domain.psp.base import FirmwareBase
from sevd.domain.psp.commands import Command, firmware_command
from sevd.domain.psp.guest import GuestState, GuestStatus, PlatformState
from sevd.domain.psp.status import SevError, SevStatus

__all__ = ["ActivationCommands"]


class ActivationCommands(FirmwareBase):
    """ACTIVATE, DEACTIVATE, DECOMMISSION, GUEST_STATUS."""

    @firmware_command(Command.ACTIVATE)
    def activate(self, handle: int, asid: int) -> None:
        """Bind guest ``handle`` to ``asid`` (the host chooses it). Before LAUNCH_FINISH /
        RECEIVE_FINISH the activation is pending; a RUNNING guest becomes active at once."""
        self._require(PlatformState.WORKING)
        guest = self._guest(handle)
        # "Check that the ASID is valid"
        if asid <= 0 or asid > self.profile.max_asid:
            raise SevError(SevStatus.INVALID_ASID)
        # "Check that no guest has this ASID" (sevd: unless every owner shares this VEK).
        owners = self._asid_users.get(asid, set())
        if any(self._guests[h].key_id != guest.key_id for h in owners):
            raise SevError(SevStatus.ASID_OWNED)
        # "Check if this guest is already active"
        if guest.bound:
            raise SevError(SevStatus.ACTIVE)
        # "Do not allow activate/activate-ex for SENT state"
        if guest.state is GuestState.SENT:
            raise SevError(SevStatus.INVALID_GUEST_STATE)
        if not owners and asid in self._dirty:
            raise SevError(SevStatus.DFFLUSH_REQUIRED)
        # sev_es_validate_asid: ES guests below MIN_SEV_ASID, SEV guests from it on.
        if guest.es != (asid < self.profile.min_sev_asid):
            raise SevError(SevStatus.INVALID_ASID)
        guest.asid = asid
        self._asid_users.setdefault(asid, set()).add(handle)
        # "If guest already Running, enable ... If not, remain Pending."
        if guest.state in (GuestState.RUNNING, GuestState.SUPDATE):
            guest.active = True
            self._asid_ran.add(asid)

    @firmware_command(Command.DEACTIVATE)
    def deactivate(self, handle: int) -> None:
        """Unbind the guest; an ASID that ran becomes dirty once its last user leaves."""
        self._require(PlatformState.WORKING)
        guest = self._guest(handle)
        if not guest.bound:
            raise SevError(SevStatus.INACTIVE)
        self._release_asid(guest)

    @firmware_command(Command.DECOMMISSION)
    def decommission(self, handle: int) -> None:
        """Free the handle and destroy the guest's keys; the last one takes the platform
        back to INIT. A bound guest must be DEACTIVATEd first (ACTIVE)."""
        self._require(PlatformState.WORKING)
        guest = self._guest(handle)
        if guest.bound:
            raise SevError(SevStatus.ACTIVE)
        guest.close_channel()
        guest.state = GuestState.UNINIT
        del self._guests[handle]
        if not self._guests:
            self._state = PlatformState.INIT

    @firmware_command(Command.GUEST_STATUS)
    def guest_status(self, handle: int) -> GuestStatus:
        """INIT or WORKING. An invalid handle is SUCCESS with state 0 (ASPFW)."""
        self._require(PlatformState.INIT, PlatformState.WORKING)
        guest = self._guests.get(handle)
        if guest is None:
            return GuestStatus(handle, 0, 0, GuestState.UNINIT)
        return GuestStatus(handle, guest.policy.to_int(), guest.asid, guest.state)
