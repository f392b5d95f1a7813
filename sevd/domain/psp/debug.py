"""DBG_DECRYPT / DBG_ENCRYPT, and the memory controller's view for the guest's own CPU.

DBG commands (ASPFW ``sev_mcmd_dbg_decrypt/encrypt``, reference §10): WORKING; both
addresses 16-byte aligned (INVALID_ADDRESS); length 16-byte aligned (INVALID_LENGTH; zero
is allowed); a valid handle; a policy without NODBG (POLICY_FAILURE); an ACTIVATEd guest
(INACTIVE). No guest-state check and no length limit. The host-side buffer is the caller's
``bytes``; its address only matters for the alignment rule.

:meth:`DebugCommands.cpu_read` / :meth:`DebugCommands.cpu_write` are not firmware commands:
they model the guest's vCPU touching private memory (C-bit set) once it runs, through the
key the firmware installed in the memory controller. They need an active guest.

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

from sevd.domain.psp.base import FirmwareBase
from sevd.domain.psp.commands import Command, firmware_command
from sevd.domain.psp.guest import GuestContext, PlatformState
from sevd.domain.psp.memory import MemoryRangeError
from sevd.domain.psp.status import SevError, SevStatus
from sevd.formats.policy import PolicyFlag

__all__ = ["DebugCommands"]


class DebugCommands(FirmwareBase):
    """DBG_DECRYPT, DBG_ENCRYPT and the vCPU's private-memory access."""

    def _debug_checks(self, handle: int, src: int, dst: int, length: int) -> GuestContext:
        self._require(PlatformState.WORKING)
        if src % 16 or dst % 16:
            raise SevError(SevStatus.INVALID_ADDRESS)
        if length % 16:
            raise SevError(SevStatus.INVALID_LENGTH)
        guest = self._guest(handle)
        if PolicyFlag.NODBG in guest.policy.flags:
            raise SevError(SevStatus.POLICY_FAILURE)
        if not guest.bound:
            raise SevError(SevStatus.INACTIVE)
        return guest

    @firmware_command(Command.DBG_DECRYPT)
    def dbg_decrypt(self, handle: int, gpa: int, length: int, dst_paddr: int = 0) -> bytes:
        """Plaintext of ``length`` bytes of the guest's private memory at ``gpa``."""
        guest = self._debug_checks(handle, gpa, dst_paddr, length)
        return self._read_guest(guest, gpa, length)

    @firmware_command(Command.DBG_ENCRYPT)
    def dbg_encrypt(self, handle: int, gpa: int, data: bytes, src_paddr: int = 0) -> None:
        """Write ``data`` into the guest's private memory at ``gpa``, encrypted."""
        guest = self._debug_checks(handle, src_paddr, gpa, len(data))
        self._write_guest(guest, gpa, data)

    # -- the guest's own CPU (not firmware commands) ----------------------------------------

    def _running_guest(self, handle: int) -> GuestContext:
        guest = self._guests.get(handle)
        if guest is None:
            raise SevError(SevStatus.INVALID_GUEST, "CPU")
        if not guest.active:
            raise SevError(SevStatus.INACTIVE, "CPU")
        return guest

    def cpu_read(self, handle: int, gpa: int, length: int) -> bytes:
        """What the running guest reads from private memory (C-bit set): plaintext."""
        guest = self._running_guest(handle)
        try:
            return self._read_guest(guest, gpa, length)
        except MemoryRangeError:
            raise SevError(SevStatus.INVALID_ADDRESS, "CPU") from None

    def cpu_write(self, handle: int, gpa: int, data: bytes) -> None:
        """The running guest writes private memory (C-bit set): stored encrypted."""
        guest = self._running_guest(handle)
        try:
            self._write_guest(guest, gpa, data)
        except MemoryRangeError:
            raise SevError(SevStatus.INVALID_ADDRESS, "CPU") from None
