"""Migration commands: SEND_START, SEND_UPDATE_DATA/VMSA, SEND_FINISH, SEND_CANCEL,
RECEIVE_START, RECEIVE_UPDATE_DATA/VMSA, RECEIVE_FINISH.

The channel is LAUNCH_START's with the sending platform's PDH in the guest owner's role
(reference §11; ASPFW ``sev_mcmd_send_*``, ``sev_channel_open_client``): SEND_START makes
TEK/TIK and a session blob for the target PDH; the receiver opens it with RECEIVE_START
given the *sender's* PDH. Packets are AES-128-CTR under the TEK with an HMAC (context 0x02)
under the TIK. Policy: NOSEND refuses SEND_START; SEV requires the target's full chain to a
genuine (here: this simulation's) ARK and a target PEK API version >= the policy's; DOMAIN
requires the target's OCA to be byte-identical to ours.

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sevd.domain.psp.base import SCRATCH_LEN
from sevd.domain.psp.certs import parse_cert, sanity_check_dh_cert, validate_cert
from sevd.domain.psp.channel import ChannelMixin
from sevd.domain.psp.commands import Command, firmware_command
from sevd.domain.psp.guest import GuestContext, GuestState, PlatformState
from sevd.domain.psp.memory import GuestMemory
from sevd.domain.psp.status import SevError, SevStatus
from sevd.formats.amdca import AmdCaCert
from sevd.formats.crypto import ecdh_z
from sevd.formats.policy import PolicyFlag
from sevd.formats.secret import (
    CONTEXT_DATA,
    SECRET_HEADER_LEN,
    SecretHeader,
    decrypt_packet,
    encrypt_packet,
)
from sevd.formats.session import SESSION_LEN, build_session
from sevd.formats.sevcert import SEV_CERT_LEN, SevCert, Usage

__all__ = ["MigrationCommands", "SendStart"]

_PLAT_CERTS_LEN = 3 * SEV_CERT_LEN
# amd_cert_chain_length_is_valid: the four ASK/ARK 2K/4K combinations, computed exactly as
# ASPFW's macros compute them.
_K2, _K4 = 2048 // 8, 4096 // 8
_AMD_CHAIN_LENS = frozenset(
    2 * 0x40 + 2 * ask + 4 * ark for ask in (_K2, _K4) for ark in (_K2, _K4)
)


@dataclass(frozen=True)
class SendStart:
    """SEND_START output: the session blob for the target and the guest's policy."""

    session: bytes
    policy: int


class MigrationCommands(ChannelMixin):
    """SEND_* and RECEIVE_*."""

    # -- sending ----------------------------------------------------------------------------

    @firmware_command(Command.SEND_START)
    def send_start(
        self,
        handle: int,
        pdh_cert: bytes,
        plat_certs: bytes | None = None,
        amd_certs: bytes | None = None,
        session_len: int = SESSION_LEN,
    ) -> SendStart:
        """RUNNING → SUPDATE. ``pdh_cert`` is the target's PDH; ``plat_certs`` its
        ``PEK ‖ OCA ‖ CEK`` (CEK signed by the ASK) and ``amd_certs`` ``ASK ‖ ARK``, needed
        when the policy has SEV or DOMAIN."""
        self._require(PlatformState.WORKING)
        guest = self._guest(handle)
        if session_len != SESSION_LEN:
            raise SevError(SevStatus.INVALID_LENGTH, required_length=SESSION_LEN)
        if guest.state is not GuestState.RUNNING:
            raise SevError(SevStatus.INVALID_GUEST_STATE)
        flags = guest.policy.flags
        if PolicyFlag.NOSEND in flags:
            raise SevError(SevStatus.POLICY_FAILURE)
        if PolicyFlag.SEV in flags:
            pek = self._validate_platform(pdh_cert, plat_certs, amd_certs)
            # "Perform version check on receiving platform" from the target PEK's body.
            if (pek.api_major, pek.api_minor) < (guest.policy.api_major, guest.policy.api_minor):
                raise SevError(SevStatus.POLICY_FAILURE)
        if PolicyFlag.DOMAIN in flags:
            self._validate_domain(pdh_cert, plat_certs)
        if len(pdh_cert) != SEV_CERT_LEN:
            raise SevError(SevStatus.INVALID_LENGTH)
        target = parse_cert(pdh_cert)
        store = self._identity.store
        assert store.pdh_key is not None
        sanity_check_dh_cert(target, store.pdh_key.curve)
        # create_channel: fresh TEK, TIK and nonce; create_session: fresh wrap IV.
        tek, tik, nonce, wrap_iv = (self._random(16) for _ in range(4))
        z = ecdh_z(store.pdh_key, target.public_key)
        blob = build_session(z, nonce, wrap_iv, tek, tik, guest.policy.to_int())
        guest.tek, guest.tik = tek, tik
        guest.state = GuestState.SUPDATE
        return SendStart(blob.to_bytes(), guest.policy.to_int())

    def _validate_platform(
        self, pdh_cert: bytes, plat_certs: bytes | None, amd_certs: bytes | None
    ) -> SevCert:
        """ASPFW ``validate_platform``: PDH ← PEK ← CEK ← ASK ← ARK (genuine); the PEK."""
        if plat_certs is None or len(plat_certs) != _PLAT_CERTS_LEN:
            raise SevError(SevStatus.INVALID_LENGTH)
        if len(pdh_cert) != SEV_CERT_LEN:
            raise SevError(SevStatus.INVALID_LENGTH)
        if amd_certs is None or len(amd_certs) not in _AMD_CHAIN_LENS:
            raise SevError(SevStatus.INVALID_LENGTH)
        pek, _oca, cek = self._split_chain(plat_certs)
        pdh = parse_cert(pdh_cert)
        try:
            ask_len = AmdCaCert.encoded_length(amd_certs)
            ask = AmdCaCert.from_bytes(amd_certs[:ask_len])
            ark = AmdCaCert.from_bytes(amd_certs[ask_len:])
        except ValueError:
            raise SevError(SevStatus.INVALID_CERTIFICATE) from None
        roots = self._identity.roots
        # amd_cert_validate_ark: self-signed, the root key id, and the "fused" hash of the
        # genuine ARK (here: this simulation's ARK).
        self._validate_amd(ark, ark, Usage.ARK)
        if (
            ark.key_id != roots.ark.key_id
            or hashlib.sha384(ark.signed_region()).digest() != roots.fused_hash()
        ):
            raise SevError(SevStatus.INVALID_CERTIFICATE)
        self._validate_amd(ask, ark, Usage.ASK)
        validate_cert(cek, ask)
        validate_cert(pek, cek)
        validate_cert(pdh, pek)
        return pek

    @staticmethod
    def _validate_amd(cert: AmdCaCert, parent: AmdCaCert, usage: Usage) -> None:
        # amd_cert_validate: signature first, then version/sizes, usage, certifying id.
        if not cert.verify(parent.public_key):
            raise SevError(SevStatus.BAD_SIGNATURE)
        if cert.certifying_id != parent.key_id or cert.key_usage != usage:
            raise SevError(SevStatus.INVALID_CERTIFICATE)

    def _validate_domain(self, pdh_cert: bytes, plat_certs: bytes | None) -> None:
        """ASPFW ``validate_domain``: OCA self-signed, PEK by OCA, PDH by PEK, and the
        target OCA byte-identical to ours."""
        if plat_certs is None or len(plat_certs) != _PLAT_CERTS_LEN:
            raise SevError(SevStatus.INVALID_LENGTH)
        if len(pdh_cert) != SEV_CERT_LEN:
            raise SevError(SevStatus.INVALID_LENGTH)
        pek, oca, _cek = self._split_chain(plat_certs)
        validate_cert(oca, oca)
        validate_cert(pek, oca)
        validate_cert(parse_cert(pdh_cert), pek)
        if plat_certs[SEV_CERT_LEN : 2 * SEV_CERT_LEN] != self._identity.store.oca_cert:
            raise SevError(SevStatus.POLICY_FAILURE)

    @staticmethod
    def _split_chain(plat_certs: bytes) -> tuple[SevCert, SevCert, SevCert]:
        pek, oca, cek = (
            parse_cert(plat_certs[i : i + SEV_CERT_LEN])
            for i in range(0, _PLAT_CERTS_LEN, SEV_CERT_LEN)
        )
        return pek, oca, cek

    def _send_update(
        self,
        handle: int,
        gpa: int,
        length: int,
        trans_len: int | None,
        hdr_len: int,
        vmsa: bool,
    ) -> tuple[bytes, bytes]:
        self._require(PlatformState.WORKING)
        if hdr_len < SECRET_HEADER_LEN:
            raise SevError(SevStatus.INVALID_LENGTH, required_length=SECRET_HEADER_LEN)
        guest = self._guest(handle)
        if guest.state is not GuestState.SUPDATE:
            raise SevError(SevStatus.INVALID_GUEST_STATE)
        if vmsa and not guest.es:
            raise SevError(SevStatus.UNSUPPORTED)
        if not guest.bound:
            raise SevError(SevStatus.INACTIVE)
        tlen = length if trans_len is None else trans_len
        if length == 0 or length > SCRATCH_LEN or length % 16 or tlen == 0 or tlen < length:
            raise SevError(SevStatus.INVALID_LENGTH)
        if gpa % 16:
            raise SevError(SevStatus.INVALID_ADDRESS)
        plaintext = self._read_guest(guest, gpa, length)
        if vmsa and gpa not in guest.vmsas:
            # sev_es_validate_vmsa failed -> INVALID_PARAM.
            raise SevError(SevStatus.INVALID_PARAM)
        header, trans = encrypt_packet(guest.tek, guest.tik, self._random(16), plaintext)
        return header.to_bytes(), trans

    @firmware_command(Command.SEND_UPDATE_DATA)
    def send_update_data(
        self,
        handle: int,
        gpa: int,
        length: int,
        trans_len: int | None = None,
        hdr_len: int = SECRET_HEADER_LEN,
    ) -> tuple[bytes, bytes]:
        """``(header, packet)`` carrying ``length`` bytes of guest memory at ``gpa``."""
        return self._send_update(handle, gpa, length, trans_len, hdr_len, vmsa=False)

    @firmware_command(Command.SEND_UPDATE_VMSA)
    def send_update_vmsa(
        self, handle: int, gpa: int, length: int = 4096, hdr_len: int = SECRET_HEADER_LEN
    ) -> tuple[bytes, bytes]:
        """As SEND_UPDATE_DATA for one of an SEV-ES guest's VMSAs."""
        return self._send_update(handle, gpa, length, None, hdr_len, vmsa=True)

    def _close_send(self, handle: int, to: GuestState) -> None:
        self._require(PlatformState.WORKING)
        guest = self._guest(handle)
        if guest.state is not GuestState.SUPDATE:
            raise SevError(SevStatus.INVALID_GUEST_STATE)
        guest.close_channel()
        guest.state = to

    @firmware_command(Command.SEND_FINISH)
    def send_finish(self, handle: int) -> None:
        """SUPDATE → SENT; the channel keys are destroyed."""
        self._close_send(handle, GuestState.SENT)

    @firmware_command(Command.SEND_CANCEL)
    def send_cancel(self, handle: int) -> None:
        """SUPDATE → RUNNING; the channel keys are destroyed."""
        self._close_send(handle, GuestState.RUNNING)

    # -- receiving --------------------------------------------------------------------------

    @firmware_command(Command.RECEIVE_START)
    def receive_start(
        self,
        pdh_cert: bytes,
        session: bytes,
        policy: int,
        *,
        handle: int = 0,
        memory: GuestMemory | None = None,
    ) -> int:
        """INIT or WORKING → WORKING; a new guest in RUPDATE; returns its handle.
        ``pdh_cert`` is the *sending* platform's PDH, ``session`` its SEND_START output."""
        self._require(PlatformState.INIT, PlatformState.WORKING)
        if len(session) != SESSION_LEN:
            raise SevError(SevStatus.INVALID_LENGTH)
        if len(pdh_cert) != SEV_CERT_LEN:
            raise SevError(SevStatus.INVALID_LENGTH)
        tek, tik = self._open_server_channel(pdh_cert, session, policy)
        return self._create_guest(policy, handle, GuestState.RUPDATE, memory, tek, tik)

    def _receive_update(
        self,
        handle: int,
        header: bytes,
        gpa: int,
        packet: bytes,
        guest_len: int | None,
        vmsa: bool,
    ) -> None:
        self._require(PlatformState.WORKING)
        guest = self._guest(handle)
        if guest.state is not GuestState.RUPDATE:
            raise SevError(SevStatus.INVALID_GUEST_STATE)
        if vmsa and not guest.es:
            raise SevError(SevStatus.UNSUPPORTED)
        if not guest.bound:
            raise SevError(SevStatus.INACTIVE)
        tlen = len(packet)
        glen = tlen if guest_len is None else guest_len
        if (
            tlen == 0
            or tlen > SCRATCH_LEN
            or glen != tlen
            or glen % 16
            or len(header) < SECRET_HEADER_LEN
        ):
            raise SevError(SevStatus.INVALID_LENGTH)
        if gpa % 16:
            raise SevError(SevStatus.INVALID_ADDRESS)
        hdr = SecretHeader.from_bytes(header[:SECRET_HEADER_LEN])
        if hdr.compressed:
            raise SevError(SevStatus.UNSUPPORTED)
        self._check_range(guest, gpa, glen)
        try:
            plaintext = decrypt_packet(guest.tek, guest.tik, hdr, packet, CONTEXT_DATA)
        except ValueError:
            raise SevError(SevStatus.BAD_MEASUREMENT) from None
        self._write_guest(guest, gpa, plaintext)
        if vmsa:
            guest.vmsas.add(gpa)

    @staticmethod
    def _check_range(guest: GuestContext, gpa: int, length: int) -> None:
        if gpa + length > guest.memory.size:
            raise SevError(SevStatus.INVALID_ADDRESS)

    @firmware_command(Command.RECEIVE_UPDATE_DATA)
    def receive_update_data(
        self,
        handle: int,
        header: bytes,
        gpa: int,
        packet: bytes,
        guest_len: int | None = None,
    ) -> None:
        """Check and decrypt a SEND_UPDATE_DATA packet into guest memory at ``gpa``,
        encrypted with this guest's VEK."""
        self._receive_update(handle, header, gpa, packet, guest_len, vmsa=False)

    @firmware_command(Command.RECEIVE_UPDATE_VMSA)
    def receive_update_vmsa(self, handle: int, header: bytes, gpa: int, packet: bytes) -> None:
        """As RECEIVE_UPDATE_DATA for an SEV-ES guest's VMSA."""
        self._receive_update(handle, header, gpa, packet, None, vmsa=True)

    @firmware_command(Command.RECEIVE_FINISH)
    def receive_finish(self, handle: int) -> None:
        """RUPDATE → RUNNING: complete a pending activation, destroy the channel keys."""
        self._require(PlatformState.WORKING)
        guest = self._guest(handle)
        if guest.state is not GuestState.RUPDATE:
            raise SevError(SevStatus.INVALID_GUEST_STATE)
        self._complete_activation(guest)
        guest.close_channel()
        guest.state = GuestState.RUNNING
