"""The trusted channel and guest creation shared by LAUNCH_START and RECEIVE_START.

* :meth:`ChannelMixin._open_server_channel` is ASPFW ``sev_channel_open_server`` +
  ``sev_guest_verify_policy``: sanity-check the peer's DH certificate (GODH, or the sending
  platform's PDH), ECDH with this platform's PDH, KDF, check ``wrap_mac``, unwrap TEK/TIK,
  check ``policy_mac`` — every MAC mismatch is BAD_MEASUREMENT (reference §16.12) — then the
  policy's minimum API version and reserved bits (POLICY_FAILURE).
* :meth:`ChannelMixin._create_guest` is the rest of both commands: key sharing (NOKS,
  identical policy), handle allocation (RESOURCE_LIMIT), the SEV-ES check (UNSUPPORTED),
  the guest and platform state transitions.

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

import hashlib

from sevd.domain.psp.base import DEFAULT_GUEST_MEMORY, FirmwareBase
from sevd.domain.psp.certs import parse_cert, sanity_check_dh_cert
from sevd.domain.psp.guest import GuestContext, GuestState, PlatformState
from sevd.domain.psp.memory import GuestMemory, PageCipher, SparsePageStore
from sevd.domain.psp.status import SevError, SevStatus
from sevd.formats.crypto import derive_kek, derive_kik, derive_master_secret, ecdh_z
from sevd.formats.policy import GuestPolicy, PolicyFlag
from sevd.formats.session import SessionBlob, check_policy_mac, unwrap_keys

__all__ = ["ChannelMixin"]


class ChannelMixin(FirmwareBase):
    """Helpers for the commands that create guests."""

    @staticmethod
    def _policy(policy: int) -> GuestPolicy:
        # The command buffer's policy is a u32; anything else cannot reach real firmware.
        if not 0 <= policy <= 0xFFFF_FFFF:
            raise SevError(SevStatus.INVALID_PARAM)
        return GuestPolicy.from_int(policy)

    def _open_server_channel(
        self, dh_cert: bytes, session: bytes, policy: int
    ) -> tuple[bytes, bytes]:
        """``(TEK, TIK)`` from the peer's DH certificate and session blob, or SevError."""
        decoded = self._policy(policy)
        cert = parse_cert(dh_cert)
        pdh_key = self._identity.store.pdh_key
        if pdh_key is None:
            raise SevError(SevStatus.INVALID_CERTIFICATE)
        sanity_check_dh_cert(cert, pdh_key.curve)
        blob = SessionBlob.from_bytes(session)
        master = derive_master_secret(ecdh_z(pdh_key, cert.public_key), blob.nonce)
        try:
            # "Validate the HMAC for the wrapped keys", then unwrap.
            tek, tik = unwrap_keys(
                derive_kek(master), derive_kik(master), blob.wrap_tk, blob.wrap_iv, blob.wrap_mac
            )
            # "Integrity check the policy with the MAC."
            check_policy_mac(tik, policy, blob.policy_mac)
        except ValueError:
            raise SevError(SevStatus.BAD_MEASUREMENT) from None
        # "Check that the API version is supported"
        if not decoded.api_satisfied_by(self.profile.api_major, self.profile.api_minor):
            raise SevError(SevStatus.POLICY_FAILURE)
        # "Check that the reserved bits are zero"
        if decoded.has_reserved_bits:
            raise SevError(SevStatus.POLICY_FAILURE)
        return tek, tik

    def _create_guest(
        self,
        policy: int,
        share_handle: int,
        state: GuestState,
        memory: GuestMemory | None,
        tek: bytes,
        tik: bytes,
    ) -> int:
        decoded = self._policy(policy)
        if share_handle == 0:
            # "Generate a new VEK seed"
            vek = self._random(16)
            cipher = PageCipher(vek)
            key_id = self._new_key_id()
        else:
            shared = self._guest(share_handle)
            # "(new_policy != shared_policy) || (shared_policy & NOKS) -> POLICY_FAILURE"
            if shared.policy != decoded or PolicyFlag.NOKS in shared.policy.flags:
                raise SevError(SevStatus.POLICY_FAILURE)
            vek, cipher, key_id = shared.vek, shared.cipher, shared.key_id
        handle = self._free_handle()
        es = PolicyFlag.ES in decoded.flags
        if es and not self.config_es:
            # "Check if SEV-ES is enabled for this platform"
            raise SevError(SevStatus.UNSUPPORTED)
        self._guests[handle] = GuestContext(
            handle=handle,
            policy=decoded,
            state=state,
            memory=memory if memory is not None else SparsePageStore(DEFAULT_GUEST_MEMORY),
            vek=vek,
            cipher=cipher,
            key_id=key_id,
            shares_key_with=share_handle,
            tek=tek,
            tik=tik,
            ld=hashlib.sha256() if state is GuestState.LUPDATE else None,
            es=es,
        )
        self._state = PlatformState.WORKING
        return handle
