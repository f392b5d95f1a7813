"""The legacy SEV attestation report (ATTESTATION, API >= 0.23): 208 bytes signed by the PEK.

Layout (reference/sev-firmware.md §9; ASPFW ``sev_mcmd_attestation_report_t``, sev-tool
``attestation_report``, virtee ``LegacyAttestationReport``):

====== ==== ==========================================================
offset size field
====== ==== ==========================================================
0x00   16   mnonce (copied from the command)
0x10   32   launch_digest (the raw SHA-256 LD, not the HMAC)
0x30   4    policy
0x34   4    sig_usage = 0x1002 (PEK)
0x38   4    sig_algo  = 0x002 (ECDSA-SHA256)
0x3C   4    reserved (0)
0x40   72   r (LE72)
0x88   72   s (LE72)
====== ==== ==========================================================

The signature is ECDSA P-384 with SHA-256 over bytes ``[0x00, 0x34)`` only (§16.17); r and
s are *not* followed by the 368 padding bytes of a certificate slot.

Pure and synchronous; imports only the standard library, ``cryptography`` and
``sevd.formats`` modules. Must not import anything else from ``sevd``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from sevd.formats.crypto import ecdsa_sign_le, ecdsa_verify_le
from sevd.formats.sevcert import ECC_FIELD_LEN, Algo, Usage

__all__ = ["REPORT_LEN", "SIGNED_LEN", "AttestationReport"]

REPORT_LEN = 0xD0  # 208
SIGNED_LEN = 0x34  # mnonce ‖ launch_digest ‖ policy
_LAYOUT = struct.Struct("<16s32sIIII72s72s")


@dataclass(frozen=True)
class AttestationReport:
    """A parsed report; ``sig_usage``/``sig_algo`` stay plain ints so that any 208 bytes
    parse (a verifier then rejects what is wrong)."""

    mnonce: bytes
    launch_digest: bytes
    policy: int
    sig_usage: int = Usage.PEK
    sig_algo: int = Algo.ECDSA_SHA256
    reserved: int = 0
    r: bytes = bytes(ECC_FIELD_LEN)
    s: bytes = bytes(ECC_FIELD_LEN)

    def __post_init__(self) -> None:
        if len(self.mnonce) != 16:
            raise ValueError("attestation report: mnonce must be 16 bytes")
        if len(self.launch_digest) != 32:
            raise ValueError("attestation report: launch_digest must be 32 bytes")
        if len(self.r) != ECC_FIELD_LEN or len(self.s) != ECC_FIELD_LEN:
            raise ValueError("attestation report: r and s are 72 bytes each")
        for name in ("policy", "sig_usage", "sig_algo", "reserved"):
            if not 0 <= getattr(self, name) <= 0xFFFF_FFFF:
                raise ValueError(f"attestation report: {name} is a u32")

    @classmethod
    def from_bytes(cls, data: bytes) -> AttestationReport:
        if len(data) != REPORT_LEN:
            raise ValueError(f"attestation report must be {REPORT_LEN} bytes, got {len(data)}")
        return cls(*_LAYOUT.unpack(data))

    def to_bytes(self) -> bytes:
        return _LAYOUT.pack(
            self.mnonce,
            self.launch_digest,
            self.policy,
            self.sig_usage,
            self.sig_algo,
            self.reserved,
            self.r,
            self.s,
        )

    def signed_region(self) -> bytes:
        """Bytes ``[0x00, 0x34)``: what the PEK signs."""
        return self.to_bytes()[:SIGNED_LEN]

    @classmethod
    def create(
        cls, pek: ec.EllipticCurvePrivateKey, mnonce: bytes, launch_digest: bytes, policy: int
    ) -> AttestationReport:
        """The report firmware returns: signed by the PEK, ECDSA-SHA256, usage PEK."""
        unsigned = cls(mnonce, launch_digest, policy)
        r, s = ecdsa_sign_le(pek, unsigned.signed_region(), Algo.ECDSA_SHA256.hash_algorithm)
        return cls(mnonce, launch_digest, policy, r=r, s=s)

    def verify(self, pek: ec.EllipticCurvePublicKey) -> bool:
        """True if the report is as firmware writes it (usage PEK, an ECDSA algo, reserved 0)
        and its signature over bytes 0x00–0x33 verifies with ``pek``."""
        if self.sig_usage != Usage.PEK or self.reserved != 0:
            return False
        if self.sig_algo not in (Algo.ECDSA_SHA256, Algo.ECDSA_SHA384):
            return False
        return ecdsa_verify_le(
            pek, self.r, self.s, self.signed_region(), Algo(self.sig_algo).hash_algorithm
        )
