"""Platform commands: INIT, SHUTDOWN, PLATFORM_RESET, PLATFORM_STATUS, PEK_GEN, PEK_CSR,
PEK_CERT_IMPORT, PDH_GEN, PDH_CERT_EXPORT, GET_ID, DF_FLUSH (and the host's WBINVD).

Allowed platform states and check order follow ASPFW ``sev_mcmd.c`` (reference §3, §7.5).

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

from enum import IntFlag

from sevd.domain.psp.base import FirmwareBase
from sevd.domain.psp.certs import parse_cert, validate_cert
from sevd.domain.psp.commands import Command, firmware_command
from sevd.domain.psp.guest import GuestState, PlatformState, PlatformStatus
from sevd.domain.psp.identity import PersistentStore, fresh_store, new_oca, new_pdh, new_pek
from sevd.domain.psp.status import SevError, SevStatus
from sevd.formats.sevcert import SEV_CERT_LEN, SIGNED_REGION_LEN, Algo, SevCert, Usage

__all__ = ["InitFlag", "PlatformCommands"]

_GET_ID_LEN = 64
_CHAIN_LEN = 3 * SEV_CERT_LEN


class InitFlag(IntFlag):
    """INIT ``flags`` (bit 0 = CONFIG.ES; every other bit must be zero)."""

    ES = 0x1


class PlatformCommands(FirmwareBase):
    """The platform-management commands."""

    # -- host operations (not firmware commands) --------------------------------------------

    def wbinvd(self) -> None:
        """The hypervisor ran WBINVD on every core (what DF_FLUSH requires first)."""
        self._wbinvd_done = True

    def kds_cek(self) -> bytes:
        """The CEK certificate signed by the simulated ASK: what AMD's key server returns
        for this chip's GET_ID (DESIGN.md §6 full-chain export)."""
        return self._identity.cek_cert

    def amd_root_chain(self) -> bytes:
        """``ASK ‖ ARK`` of the simulated AMD root (guest owners pin this ARK)."""
        return self._identity.roots.chain()

    # -- commands ---------------------------------------------------------------------------

    @firmware_command(Command.INIT)
    def init(self, flags: int = 0) -> None:
        """UNINIT → INIT: load the persistent store, create missing OCA/PEK/PDH, mark every
        ASID dirty (a WBINVD + DF_FLUSH is needed before the first ACTIVATE)."""
        self._require(PlatformState.UNINIT)
        if not self.host.memory_encryption_enabled:
            raise SevError(SevStatus.HWERROR_PLATFORM)
        # init_cmd_buf_valid: every flag bit but CONFIG.ES must be zero; firmware without
        # SEV-ES (Naples) knows no flag at all.
        allowed = int(InitFlag.ES) if self.profile.es else 0
        if flags & ~allowed:
            raise SevError(SevStatus.INVALID_CONFIG)
        identity = self._identity
        if identity.store_corrupt:
            # SECURE_DATA_INVALID: "Before returning that error, erase the area."
            identity.store_corrupt = False
            identity.store = PersistentStore()
            raise SevError(SevStatus.SECURE_DATA_INVALID)
        store = identity.store
        api = self.profile.api_version
        cek = identity.cek_key
        if store.oca_cert is None or (store.pek_cert is None and store.oca_key is None):
            # No OCA: a new self-signed one, and force a new PEK.
            store.owner_external = False
            store.oca_key, store.oca_cert = new_oca(self._drbg, api)
            store.pek_key = store.pek_cert = None
        if store.pek_cert is None and store.oca_key is not None:
            store.pek_key, store.pek_cert = new_pek(self._drbg, api, store.oca_key, cek)
            store.pdh_key = store.pdh_cert = None
        if store.pdh_cert is None and store.pek_key is not None:
            store.pdh_key, store.pdh_cert = new_pdh(self._drbg, api, store.pek_key)
        # "Init state of all ASIDs/CCXs to 'dirty'" and clear WBINVD_DONE.
        self._dirty = set(range(1, self.profile.max_asid + 1))
        self._asid_ran.clear()
        self._wbinvd_done = False
        self._config_flags = flags
        self._state = PlatformState.INIT

    @firmware_command(Command.SHUTDOWN)
    def shutdown(self) -> None:
        """Any state → UNINIT; every guest is decommissioned, non-persistent state cleared."""
        self._state = PlatformState.UNINIT
        self._config_flags = 0
        for guest in self._guests.values():
            guest.close_channel()
            guest.state = GuestState.UNINIT
        self._guests.clear()
        self._asid_users.clear()
        if not self.host.memory_controller_healthy:
            raise SevError(SevStatus.HWERROR_UNSAFE)

    @firmware_command(Command.PLATFORM_RESET)
    def platform_reset(self) -> None:
        """UNINIT only: erase the persistent OCA/PEK/PDH; the next INIT recreates them and
        the platform is self-owned again."""
        self._require(PlatformState.UNINIT)
        self._identity.store = PersistentStore()
        self._identity.store_corrupt = False

    @firmware_command(Command.PLATFORM_STATUS)
    def platform_status(self) -> PlatformStatus:
        """Any state. In UNINIT owner, ES and guest count read 0 (ASPFW)."""
        initialized = self._state is not PlatformState.UNINIT
        return PlatformStatus(
            api_major=self.profile.api_major,
            api_minor=self.profile.api_minor,
            state=self._state,
            owner=initialized and self._identity.store.owner_external,
            config_es=initialized and self.config_es,
            build=self.profile.build,
            guest_count=len(self._guests) if initialized else 0,
        )

    @firmware_command(Command.PEK_GEN)
    def pek_gen(self) -> None:
        """INIT only: new OCA (self-owned again), PEK and PDH."""
        self._require(PlatformState.INIT)
        self._identity.store = fresh_store(
            self._drbg, self.profile.api_version, self._identity.cek_key
        )

    @firmware_command(Command.PEK_CSR)
    def pek_csr(self, length: int = SEV_CERT_LEN) -> bytes:
        """INIT or WORKING: the current PEK body with both signature slots empty."""
        self._require(PlatformState.INIT, PlatformState.WORKING)
        if length < SEV_CERT_LEN:
            raise SevError(SevStatus.INVALID_LENGTH, required_length=SEV_CERT_LEN)
        pek = self._pek_cert()
        csr = SevCert.from_bytes(pek)
        csr.clear_signature(1)
        csr.clear_signature(2)
        return csr.to_bytes()

    @firmware_command(Command.PEK_CERT_IMPORT)
    def pek_cert_import(self, pek_cert: bytes, oca_cert: bytes) -> None:
        """INIT only: take ownership with the owner's OCA and the PEK it signed."""
        self._require(PlatformState.INIT)
        store = self._identity.store
        if store.owner_external:
            raise SevError(SevStatus.ALREADY_OWNED)
        if len(pek_cert) != SEV_CERT_LEN or len(oca_cert) != SEV_CERT_LEN:
            raise SevError(SevStatus.INVALID_LENGTH)
        pek, oca = parse_cert(pek_cert), parse_cert(oca_cert)
        validate_cert(oca, oca)
        validate_cert(pek, oca)
        current = self._pek_cert()
        # "Ensure that the PEK wasn't altered outside of the firmware": body identical.
        if pek_cert[:SIGNED_REGION_LEN] != current[:SIGNED_REGION_LEN]:
            raise SevError(SevStatus.INVALID_CERTIFICATE)
        # Transfer the CEK signature into the first slot whose usage is INVALID.
        cek_slots = [s for s in SevCert.from_bytes(current).slots() if s.usage == Usage.CEK]
        free = [i for i, s in enumerate(pek.slots(), 1) if s.usage == Usage.INVALID]
        if not cek_slots or not free:
            raise SevError(SevStatus.INVALID_CERTIFICATE)
        pek.set_signature(free[0], Usage.CEK, cek_slots[0].algo, cek_slots[0].signature)
        store.pek_cert = pek.to_bytes()
        store.oca_cert = bytes(oca_cert)
        store.oca_key = None
        store.owner_external = True
        # "Regenerate the PDH and sign with the new certificates."
        assert store.pek_key is not None
        store.pdh_key, store.pdh_cert = new_pdh(self._drbg, self.profile.api_version, store.pek_key)

    @firmware_command(Command.PDH_GEN)
    def pdh_gen(self) -> None:
        """INIT or WORKING: a new PDH signed by the PEK."""
        self._require(PlatformState.INIT, PlatformState.WORKING)
        store = self._identity.store
        assert store.pek_key is not None
        store.pdh_key, store.pdh_cert = new_pdh(self._drbg, self.profile.api_version, store.pek_key)

    @firmware_command(Command.PDH_CERT_EXPORT)
    def pdh_cert_export(
        self, pdh_len: int = SEV_CERT_LEN, certs_len: int = _CHAIN_LEN
    ) -> tuple[bytes, bytes]:
        """INIT or WORKING: ``(PDH, PEK ‖ OCA ‖ CEK)`` — the CEK **unsigned**, as AMD's
        firmware exports it ("dummy CEK certificate without a signature")."""
        self._require(PlatformState.INIT, PlatformState.WORKING)
        if pdh_len < SEV_CERT_LEN or certs_len < _CHAIN_LEN:
            raise SevError(
                SevStatus.INVALID_LENGTH,
                required_length=SEV_CERT_LEN,
                lengths={"pdh_cert_len": SEV_CERT_LEN, "certs_len": _CHAIN_LEN},
            )
        store = self._identity.store
        assert store.pdh_cert is not None and store.oca_cert is not None
        cek = SevCert.new(
            Usage.CEK,
            Algo.ECDSA_SHA256,
            self._identity.cek_key.public_key(),
            *self.profile.api_version,
        )
        return store.pdh_cert, self._pek_cert() + store.oca_cert + cek.to_bytes()

    @firmware_command(Command.GET_ID)
    def get_id(self, length: int = _GET_ID_LEN) -> bytes:
        """Any state: 64 bytes per socket (X ‖ Y of the chip's secp256k1 key)."""
        if length < _GET_ID_LEN:
            raise SevError(SevStatus.INVALID_LENGTH, required_length=_GET_ID_LEN)
        return self._identity.chip_id()

    @firmware_command(Command.DF_FLUSH)
    def df_flush(self) -> None:
        """Any state: dirty ASIDs become clean once every core ran WBINVD."""
        if not self._wbinvd_done:
            raise SevError(SevStatus.WBINVD_REQUIRED)
        self._dirty.clear()

    def _pek_cert(self) -> bytes:
        pek = self._identity.store.pek_cert
        assert pek is not None, "INIT always leaves a PEK"
        return pek
