"""The host's SEV platform: the simulated firmware plus what KVM does around it.

KVM, not the firmware, chooses ASIDs: SEV-ES guests from 1..EDX-1, SEV guests from
EDX..ECX (DESIGN §6). When a range is exhausted the launch fails the way QEMU's init fails
when KVM cannot bind an ASID; a dirty ASID is recycled with WBINVD + DF_FLUSH, as KVM's
`sev_flush_asids()` does. Guests sharing a VEK (LAUNCH_START with `handle`) share the ASID.

Pure domain code: the identity goes in and out as bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sevd.domain.psp import (
    HostProfile,
    PlatformIdentity,
    SevError,
    SevFirmware,
    SevStatus,
    get_profile,
)
from sevd.domain.psp.platform import InitFlag


class AsidExhausted(Exception):
    """No free ASID in the guest's range (KVM's sev_asid_new(): -EBUSY)."""

    errno = -16  # -EBUSY, as QEMU prints it in "failed to initialize ret=%d"


@dataclass
class AsidUse:
    asid: int
    handles: set[int]


class SevPlatform:
    """One simulated SEV host: firmware in WORKING/INIT state and ASID bookkeeping."""

    def __init__(self, identity: bytes, *, profile: str | None = None,
                 seed: bytes | None = None) -> None:
        ident = PlatformIdentity.from_bytes(identity)
        prof: HostProfile = get_profile(profile) if profile else ident.host_profile
        self.profile = prof
        self.fw = SevFirmware(ident, seed=seed, profile=prof)
        # KVM initialises the platform with SEV-ES enabled wherever the part has it.
        self.fw.init(int(InitFlag.ES) if prof.es else 0)
        self._asids: dict[int, set[int]] = {}

    def export_identity(self) -> bytes:
        return self.fw.export_identity()

    # -- ASIDs (KVM's job) ------------------------------------------------------------------

    def asid_range(self, es: bool) -> range:
        return self.profile.es_asids if es else self.profile.sev_asids

    def asids_used(self, es: bool) -> int:
        r = self.asid_range(es)
        return sum(1 for a in self._asids if a in r)

    def reserve(self, es: bool) -> int:
        """KVM_SEV_INIT: take the lowest free ASID of the range (AsidExhausted if none)."""
        for asid in self.asid_range(es):
            if asid not in self._asids:
                self._asids[asid] = set()
                return asid
        raise AsidExhausted

    def bind(self, handle: int, asid: int) -> None:
        """ACTIVATE `handle` on `asid` (reserved, or shared with a key-sharing guest)."""
        try:
            self.fw.activate(handle, asid)
        except SevError as e:
            if e.status not in (SevStatus.DFFLUSH_REQUIRED, SevStatus.WBINVD_REQUIRED):
                raise
            # Recycle dirty ASIDs: flush caches, then the data fabric (sev_flush_asids()).
            self.fw.wbinvd()
            self.fw.df_flush()
            self.fw.activate(handle, asid)
        self._asids.setdefault(asid, set()).add(handle)

    def release(self, handle: int, asid: int) -> None:
        """The guest is gone: its ASID is free once no sharing guest uses it."""
        users = self._asids.get(asid)
        if users is not None:
            users.discard(handle)
            if not users:
                del self._asids[asid]
