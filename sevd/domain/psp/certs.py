"""Certificate work the simulated firmware does: signing deterministically, and validating
certificates with exactly the firmware's status codes.

* :func:`sign_cert` / :func:`ecdsa_sign_det`: ECDSA P-384/SHA-256 with RFC 6979
  deterministic nonces, so a seeded platform produces byte-identical certificates and
  reports (DESIGN.md §6). ``sevd.formats`` signs with random nonces; the layouts are still
  the formats' own (``SevCert.set_signature``, ``int_to_le``).
* :func:`rsa_pss_sign_det`: RSASSA-PSS with a caller-chosen salt (from the DRBG), for the
  ASK's signature on the CEK; ``cryptography`` cannot be given a salt.
* :func:`validate_cert`: ASPFW ``sev_cert_validate`` — signature slots first (a slot with
  exactly one of usage/algo INVALID is BAD_SIGNATURE, no slot by the signer is
  INVALID_CERTIFICATE, a failing matching slot BAD_SIGNATURE), then the body, then who may
  sign whom (PDH by PEK, PEK by OCA or CEK, OCA by itself, CEK by ASK).
* :func:`sanity_check_dh_cert`: ASPFW ``sev_cert_sanity_check`` for the guest owner's GODH
  (and the sender's PDH on RECEIVE_START): no signature check.

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sevd.domain.psp.status import SevError, SevStatus
from sevd.formats.amdca import AmdCaCert
from sevd.formats.crypto import ecdsa_verify_le, int_to_le, rsa_pss_verify_le
from sevd.formats.sevcert import ECC_FIELD_LEN, SEV_CERT_LEN, Algo, SevCert, Usage

__all__ = [
    "CertKey",
    "ecdsa_sign_det",
    "parse_cert",
    "rsa_pss_sign_det",
    "sanity_check_dh_cert",
    "sign_cert",
    "validate_cert",
]


def _ecdsa(hash_alg: hashes.HashAlgorithm) -> ec.ECDSA:
    try:
        return ec.ECDSA(hash_alg, deterministic_signing=True)
    except (TypeError, UnsupportedAlgorithm):  # pragma: no cover - cryptography < 43
        return ec.ECDSA(hash_alg)


def ecdsa_sign_det(key: ec.EllipticCurvePrivateKey, data: bytes) -> tuple[bytes, bytes]:
    """ECDSA-SHA256 (RFC 6979) of ``data``; ``(r, s)`` as little-endian 72-byte fields."""
    r, s = decode_dss_signature(key.sign(data, _ecdsa(hashes.SHA256())))
    return int_to_le(r, ECC_FIELD_LEN), int_to_le(s, ECC_FIELD_LEN)


def sign_cert(
    cert: SevCert, key: ec.EllipticCurvePrivateKey, usage: Usage, slot: int | None = None
) -> None:
    """Sign ``cert`` with ``key`` (of ``usage``) into ``slot`` or the first free one,
    algo ECDSA-SHA256, as firmware signs OCA/PEK/PDH (ASPFW ``sev_cert_sign``)."""
    index = cert.free_slot() if slot is None else slot
    if index is None:
        raise ValueError("both signature slots are used")
    r, s = ecdsa_sign_det(key, cert.signed_region())
    cert.set_signature(index, usage, Algo.ECDSA_SHA256, r + s)


def _mgf1(seed: bytes, length: int, hash_name: str) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.new(hash_name, seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:length])


def rsa_pss_sign_det(
    key: rsa.RSAPrivateKey, message: bytes, hash_alg: hashes.HashAlgorithm, salt: bytes
) -> bytes:
    """RSASSA-PSS (RFC 8017 §8.1, MGF1 with the same hash) with the given ``salt``;
    big-endian signature. Checked with ``cryptography`` before it is returned."""
    hname = hash_alg.name
    hlen = hash_alg.digest_size
    if len(salt) != hlen:
        raise ValueError("SEV uses a salt as long as the digest")
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    em_bits = n.bit_length() - 1
    em_len = (em_bits + 7) // 8
    m_hash = hashlib.new(hname, message).digest()
    h = hashlib.new(hname, bytes(8) + m_hash + salt).digest()
    db = bytes(em_len - len(salt) - hlen - 2) + b"\x01" + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1(h, em_len - hlen - 1, hname), strict=True))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    m = int.from_bytes(bytes(masked) + h + b"\xbc", "big")
    # RSA with the Chinese remainder theorem.
    s1 = pow(m, numbers.dmp1, numbers.p)
    s2 = pow(m, numbers.dmq1, numbers.q)
    s = s2 + numbers.q * ((numbers.iqmp * (s1 - s2)) % numbers.p)
    signature = s.to_bytes((n.bit_length() + 7) // 8, "big")
    key.public_key().verify(signature, message, padding.PSS(padding.MGF1(hash_alg), hlen), hash_alg)
    return signature


#: A signer the firmware validates against: an SEV certificate (its key, usage, algo) or
#: an AMD CA certificate (the ASK, for the CEK).
CertKey = SevCert | AmdCaCert


def parse_cert(data: bytes) -> SevCert:
    """Parse a 2084-byte certificate; anything ``SevCert`` refuses is INVALID_CERTIFICATE
    (bad version, unknown usage/algo, a point not on the curve)."""
    if len(data) != SEV_CERT_LEN:
        raise SevError(SevStatus.INVALID_LENGTH)
    try:
        return SevCert.from_bytes(data)
    except ValueError:
        raise SevError(SevStatus.INVALID_CERTIFICATE) from None


def _signer_usage_algo(signer: CertKey) -> tuple[Usage, Algo]:
    if isinstance(signer, AmdCaCert):
        return signer.key_usage, signer.sev_algo
    return signer.pubkey_usage, signer.pubkey_algo


def _signer_valid(signer: CertKey) -> bool:
    # ASPFW pubkey_is_valid: a known usage and a signature algorithm over a valid key
    # (SevCert/AmdCaCert parsing already proved the point / modulus).
    usage, algo = _signer_usage_algo(signer)
    return (
        usage in (Usage.ARK, Usage.ASK, Usage.OCA, Usage.PEK, Usage.PDH, Usage.CEK)
        and algo is not Algo.INVALID
    )


def _slot_verifies(cert: SevCert, signer: CertKey, signature: bytes, algo: Algo) -> bool:
    region = cert.signed_region()
    if isinstance(signer, AmdCaCert):
        return rsa_pss_verify_le(signer.public_key, signature, region, algo.hash_algorithm)
    if not algo.is_ecdsa:
        return False
    r, s = signature[:ECC_FIELD_LEN], signature[ECC_FIELD_LEN : 2 * ECC_FIELD_LEN]
    return ecdsa_verify_le(signer.public_key, r, s, region, algo.hash_algorithm)


# Which signer usages may sign a certificate of a given usage (ASPFW sev_cert_validate).
_ALLOWED_SIGNERS: dict[Usage, tuple[Usage, ...]] = {
    Usage.PDH: (Usage.PEK,),
    Usage.PEK: (Usage.OCA, Usage.CEK),
    Usage.OCA: (Usage.OCA,),
    Usage.CEK: (Usage.ASK,),
}


def validate_cert(cert: SevCert, signer: CertKey) -> None:
    """ASPFW ``sev_cert_validate(cert, signing_key)``; raises :class:`SevError`."""
    if not _signer_valid(signer):
        raise SevError(SevStatus.INVALID_CERTIFICATE)
    usage, algo = _signer_usage_algo(signer)
    # The default when no slot names the signer's usage and algorithm.
    status = SevStatus.INVALID_CERTIFICATE
    for slot in cert.slots():
        # "Check if sig is malformed": exactly one of algo/usage INVALID.
        if slot.is_malformed:
            raise SevError(SevStatus.BAD_SIGNATURE)
        if slot.algo is not algo or slot.usage != usage:
            continue
        # A failing slot leaves BAD_SIGNATURE unless a later slot by the same key verifies.
        ok = _slot_verifies(cert, signer, slot.signature, algo)
        status = SevStatus.SUCCESS if ok else SevStatus.BAD_SIGNATURE
    if status is not SevStatus.SUCCESS:
        raise SevError(status)
    # Body: version 1 and a valid public key (parsing proved the point and the codes).
    if cert.version != 1:
        raise SevError(SevStatus.INVALID_CERTIFICATE)
    allowed = _ALLOWED_SIGNERS.get(cert.pubkey_usage)
    if allowed is not None and usage not in allowed:
        raise SevError(SevStatus.INVALID_CERTIFICATE)


def sanity_check_dh_cert(cert: SevCert, platform_curve: ec.EllipticCurve) -> None:
    """The GODH / sender-PDH check of LAUNCH_START and RECEIVE_START (§8.1 step 3):
    version 1, usage PDH, algo ECDH-SHA256, a valid point on the platform PDH's curve.
    Signatures are not checked (ASPFW ``sev_cert_sanity_check``)."""
    if (
        cert.version != 1
        or cert.pubkey_usage != Usage.PDH
        or cert.pubkey_algo is not Algo.ECDH_SHA256
        or cert.public_key.curve.name != platform_curve.name
    ):
        raise SevError(SevStatus.INVALID_CERTIFICATE)
