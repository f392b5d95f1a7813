"""The guest owner's check of a legacy SEV attestation report (ATTESTATION, API >= 0.23).

QEMU's ``query-sev-attestation-report`` returns base64 of the 208-byte report for a 16-byte
mnonce of the owner's choosing. The report is signed by the platform's PEK (ECDSA P-384 with
SHA-256 over bytes 0x00–0x33); the PEK is trusted through the certificate chain
(:mod:`sevowner.chain`). The report then vouches for the launch digest and policy, and the
mnonce proves it is fresh (reference/sev-firmware.md §9, §15.7).

Imports only ``sevd.formats`` and ``cryptography``; must not import daemon code.
"""

from __future__ import annotations

import hmac

from sevd.formats.attestation import REPORT_LEN, AttestationReport
from sevd.formats.sevcert import SevCert, Usage

__all__ = ["AttestationError", "verify_attestation_report"]


class AttestationError(ValueError):
    """The report is not valid for the expectations given; the message names the check."""


def verify_attestation_report(
    report: bytes,
    pek: SevCert | bytes,
    *,
    mnonce: bytes | None = None,
    launch_digest: bytes | None = None,
    policy: int | None = None,
) -> AttestationReport:
    """Verify ``report`` against the platform's PEK certificate and, when given, the
    mnonce the owner sent, the expected launch digest and policy. Returns the parsed report
    or raises :class:`AttestationError`."""
    if len(report) != REPORT_LEN:
        raise AttestationError(
            f"Unexpected report size encountered: {len(report)} bytes, expected {REPORT_LEN}"
        )
    pek_cert = SevCert.from_bytes(pek) if isinstance(pek, bytes | bytearray) else pek
    if pek_cert.pubkey_usage is not Usage.PEK:
        raise AttestationError(
            f"the report must be checked with the PEK, not the {pek_cert.pubkey_usage.name}"
        )
    parsed = AttestationReport.from_bytes(report)
    if parsed.sig_usage != Usage.PEK:
        raise AttestationError(f"report signature usage is 0x{parsed.sig_usage:x}, not PEK")
    if not parsed.verify(pek_cert.public_key):
        raise AttestationError("report signature does not verify with the PEK")
    if mnonce is not None and not hmac.compare_digest(parsed.mnonce, mnonce):
        raise AttestationError("report mnonce is not the one sent (stale or replayed report)")
    if launch_digest is not None and not hmac.compare_digest(parsed.launch_digest, launch_digest):
        raise AttestationError(
            f"launch digest {parsed.launch_digest.hex()} is not the expected {launch_digest.hex()}"
        )
    if policy is not None and parsed.policy != policy:
        raise AttestationError(f"report policy 0x{parsed.policy:x} is not 0x{policy:x}")
    return parsed
