"""Launch commands: LAUNCH_START, LAUNCH_UPDATE_DATA, LAUNCH_UPDATE_VMSA, LAUNCH_MEASURE,
LAUNCH_SECRET, LAUNCH_FINISH, and ATTESTATION.

Check order, transitions and formulas follow ASPFW ``sev_mcmd.c`` and reference §8–§9:
the launch digest is SHA-256 over the plaintext of every LAUNCH_UPDATE_DATA/VMSA in call
order, the range then being encrypted in place with the VEK; LAUNCH_MEASURE returns
``MEASURE ‖ MNONCE``; LAUNCH_SECRET checks the MAC (including MEASURE) before decrypting
with the TEK and writing into guest memory under the VEK; LAUNCH_FINISH destroys TEK/TIK.

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

from sevd.domain.psp.base import SCRATCH_LEN
from sevd.domain.psp.certs import ecdsa_sign_det
from sevd.domain.psp.channel import ChannelMixin
from sevd.domain.psp.commands import Command, firmware_command
from sevd.domain.psp.guest import GuestState, PlatformState
from sevd.domain.psp.memory import GuestMemory
from sevd.domain.psp.status import SevError, SevStatus
from sevd.formats.attestation import REPORT_LEN, AttestationReport
from sevd.formats.crypto import aes128_ctr, mac_equal
from sevd.formats.measure import MEASUREMENT_LEN, launch_measure_mac
from sevd.formats.secret import SECRET_HEADER_LEN, SecretHeader, secret_mac
from sevd.formats.sevcert import SEV_CERT_LEN, SevCert

__all__ = ["LaunchCommands"]

_VMSA_LEN = 4096
_ATTESTATION_STATES = (
    GuestState.LSECRET,
    GuestState.RUNNING,
    GuestState.SUPDATE,
    GuestState.SENT,
)


class LaunchCommands(ChannelMixin):
    """The launch flow and ATTESTATION."""

    @firmware_command(Command.LAUNCH_START)
    def launch_start(
        self,
        policy: int,
        *,
        handle: int = 0,
        dh_cert: bytes | None = None,
        session: bytes | None = None,
        memory: GuestMemory | None = None,
    ) -> int:
        """INIT or WORKING → WORKING; a new guest in LUPDATE; returns its handle.

        ``handle`` non-zero shares that guest's VEK. With the guest owner's ``dh_cert``
        (GODH) the ``session`` blob is opened and checked; without it TEK = TIK = zeros and
        the session is ignored (ASPFW: ``dh_cert_paddr == 0``). ``memory`` is the guest's
        RAM (default: a fresh 256 MiB sparse store).
        """
        self._require(PlatformState.INIT, PlatformState.WORKING)
        tek = tik = bytes(16)
        if dh_cert is not None:
            if session is None or len(session) != 128:
                raise SevError(SevStatus.INVALID_LENGTH)
            if len(dh_cert) != SEV_CERT_LEN:
                raise SevError(SevStatus.INVALID_LENGTH)
            tek, tik = self._open_server_channel(dh_cert, session, policy)
        return self._create_guest(policy, handle, GuestState.LUPDATE, memory, tek, tik)

    def _launch_update(self, handle: int, gpa: int, length: int, vmsa: bool) -> None:
        self._require(PlatformState.WORKING)
        guest = self._guest(handle)
        if guest.state is not GuestState.LUPDATE:
            raise SevError(SevStatus.INVALID_GUEST_STATE)
        if vmsa and not guest.es:
            raise SevError(SevStatus.UNSUPPORTED)
        if not guest.bound:
            raise SevError(SevStatus.INACTIVE)
        if gpa % 16:
            raise SevError(SevStatus.INVALID_ADDRESS)
        if length % 16 or length == 0:
            raise SevError(SevStatus.INVALID_LENGTH)
        # "Measure the (unaltered) guest data", then "Encrypt the data using the UMC".
        plaintext = guest.memory.read(gpa, length)
        assert guest.ld is not None
        guest.ld.update(plaintext)
        self._write_guest(guest, gpa, plaintext)
        if vmsa:
            guest.vmsas.add(gpa)

    @firmware_command(Command.LAUNCH_UPDATE_DATA)
    def launch_update_data(self, handle: int, gpa: int, length: int) -> None:
        """Measure ``[gpa, gpa+length)`` as it is, then encrypt it in place with the VEK."""
        self._launch_update(handle, gpa, length, vmsa=False)

    @firmware_command(Command.LAUNCH_UPDATE_VMSA)
    def launch_update_vmsa(self, handle: int, gpa: int, length: int = _VMSA_LEN) -> None:
        """As LAUNCH_UPDATE_DATA for one 4096-byte VMSA of an SEV-ES guest."""
        if length != _VMSA_LEN:  # checked before anything else (ASPFW)
            raise SevError(SevStatus.INVALID_LENGTH)
        self._launch_update(handle, gpa, length, vmsa=True)

    @firmware_command(Command.LAUNCH_MEASURE)
    def launch_measure(self, handle: int, length: int = MEASUREMENT_LEN) -> bytes:
        """LUPDATE → LSECRET: the 48-byte ``MEASURE ‖ MNONCE``."""
        self._require(PlatformState.WORKING)
        guest = self._guest(handle)
        if guest.state is not GuestState.LUPDATE:
            raise SevError(SevStatus.INVALID_GUEST_STATE)
        if length < MEASUREMENT_LEN:
            raise SevError(SevStatus.INVALID_LENGTH, required_length=MEASUREMENT_LEN)
        assert guest.ld is not None
        digest = guest.ld.digest()
        mnonce = self._random(16)
        profile = self.profile
        measure = launch_measure_mac(
            guest.tik,
            profile.api_major,
            profile.api_minor,
            profile.build,
            guest.policy.to_int(),
            digest,
            mnonce,
        )
        guest.measure = measure
        guest.launch_digest = digest
        guest.measurement = measure + mnonce
        guest.state = GuestState.LSECRET
        return guest.measurement

    @firmware_command(Command.LAUNCH_SECRET)
    def launch_secret(
        self,
        handle: int,
        header: bytes,
        gpa: int,
        payload: bytes,
        guest_len: int | None = None,
    ) -> None:
        """Inject a secret: check the packet's MAC (which covers the measurement), decrypt
        it with the TEK, and write it into guest memory at ``gpa`` under the VEK.
        ``guest_len`` defaults to ``len(payload)`` (what QEMU passes)."""
        self._require(PlatformState.WORKING)
        guest = self._guest(handle)
        trans_len = len(payload)
        glen = trans_len if guest_len is None else guest_len
        if gpa % 16:
            raise SevError(SevStatus.INVALID_ADDRESS)
        if (
            len(header) != SECRET_HEADER_LEN
            or glen % 16
            or glen == 0
            or glen > SCRATCH_LEN
            or glen != trans_len
        ):
            raise SevError(SevStatus.INVALID_LENGTH)
        if guest.state is not GuestState.LSECRET:
            raise SevError(SevStatus.INVALID_GUEST_STATE)
        if not guest.bound:
            raise SevError(SevStatus.INACTIVE)
        hdr = SecretHeader.from_bytes(header)
        assert guest.measure is not None
        expected = secret_mac(guest.tik, hdr.flags, hdr.iv, glen, trans_len, payload, guest.measure)
        if not mac_equal(expected, hdr.mac):
            raise SevError(SevStatus.BAD_MEASUREMENT)
        if hdr.compressed:
            raise SevError(SevStatus.UNSUPPORTED)
        self._write_guest(guest, gpa, aes128_ctr(guest.tek, hdr.iv, payload))

    @firmware_command(Command.LAUNCH_FINISH)
    def launch_finish(self, handle: int) -> None:
        """LSECRET → RUNNING: complete a pending activation, destroy TEK/TIK and the
        launch-digest context (the digest itself is kept for ATTESTATION)."""
        self._require(PlatformState.WORKING)
        guest = self._guest(handle)
        if guest.state is not GuestState.LSECRET:
            raise SevError(SevStatus.INVALID_GUEST_STATE)
        self._complete_activation(guest)
        guest.close_channel()
        guest.ld = None
        guest.state = GuestState.RUNNING

    @firmware_command(Command.ATTESTATION)
    def attestation(self, handle: int, mnonce: bytes, length: int = REPORT_LEN) -> bytes:
        """The 208-byte report: ``mnonce ‖ LD ‖ policy`` signed by the PEK (ECDSA P-384,
        SHA-256, over bytes 0x00–0x33). Firmware before API 0.23 has no such command."""
        if not self.profile.attestation:
            raise SevError(SevStatus.INVALID_COMMAND)
        self._require(PlatformState.WORKING)
        guest = self._guest(handle)
        if guest.state not in _ATTESTATION_STATES:
            raise SevError(SevStatus.INVALID_GUEST_STATE)
        if length < REPORT_LEN:
            raise SevError(SevStatus.INVALID_LENGTH, required_length=REPORT_LEN)
        if len(mnonce) != 16:
            raise SevError(SevStatus.INVALID_PARAM)
        store = self._identity.store
        assert store.pek_key is not None and store.pek_cert is not None
        pek = SevCert.from_bytes(store.pek_cert)
        unsigned = AttestationReport(
            mnonce,
            guest.launch_digest if guest.launch_digest is not None else bytes(32),
            guest.policy.to_int(),
            sig_usage=pek.pubkey_usage,
            sig_algo=pek.pubkey_algo,
        )
        r, s = ecdsa_sign_det(store.pek_key, unsigned.signed_region())
        return AttestationReport(
            unsigned.mnonce,
            unsigned.launch_digest,
            unsigned.policy,
            unsigned.sig_usage,
            unsigned.sig_algo,
            r=r,
            s=s,
        ).to_bytes()
