"""SEV cryptographic primitives: KDF, ECDH Z, AES-128-CTR, HMAC and the SEV integer encodings.

Everything both sides of SEV compute with: the NIST SP 800-108 KDF exactly as the firmware
runs it (reference/sev-firmware.md §6.1), the transport-key derivation (§6.3), the ECDH
shared secret (§6.2), AES-128-CTR with a full 16-byte counter block (§6.4), HMAC-SHA-256,
and the little-endian integer encodings that SEV structures use for big numbers (§0, §16.3).

Pure and synchronous; imports only the standard library and ``cryptography``. Must not
import anything from ``sevd`` (see ``sevd/formats/__init__.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "KEY_LEN",
    "LABEL_CEK",
    "LABEL_KEK",
    "LABEL_KIK",
    "LABEL_MASTER_SECRET",
    "aes128_ctr",
    "derive_kek",
    "derive_kik",
    "derive_master_secret",
    "ecdh_z",
    "ecdsa_sign_le",
    "ecdsa_verify_le",
    "hmac_sha256",
    "int_from_le",
    "int_to_le",
    "kdf",
    "le32",
    "mac_equal",
    "rsa_pss_sign_le",
    "rsa_pss_verify_le",
]

#: Length of every SEV transport key (TEK, TIK, KEK, KIK, master secret): 128 bits.
KEY_LEN = 16

# Labels: ASCII, no terminator (the 0x00 after the label is the KDF separator) — §6.1.
LABEL_MASTER_SECRET = b"sev-master-secret"
LABEL_KEK = b"sev-kek"
LABEL_KIK = b"sev-kik"
LABEL_CEK = b"sev-chip-endorsement-key"

_SHA256_LEN = 32


def kdf(key: bytes, label: bytes, length: int, context: bytes = b"") -> bytes:
    """NIST SP 800-108 KDF in counter mode with HMAC-SHA-256, as SEV firmware runs it.

    Block i (from 1) is ``HMAC(key, LE32(i) || label || 0x00 || context || LE32(8*length))``
    and the output is the first ``length`` bytes of the concatenated blocks.

    Pitfall (§16.1): both counters are *little-endian* 32-bit values and ``L`` is in bits.
    """
    if length <= 0:
        raise ValueError(f"KDF output length must be positive, not {length}")
    if 8 * length >= 1 << 32:
        raise ValueError(f"KDF output length {length} does not fit the 32-bit bit count")
    lbits = struct.pack("<I", 8 * length)
    out = bytearray()
    counter = 1
    while len(out) < length:
        out += hmac_sha256(key, struct.pack("<I", counter), label, b"\x00", context, lbits)
        counter += 1
    return bytes(out[:length])


def derive_master_secret(z: bytes, nonce: bytes) -> bytes:
    """``master = KDF(Z, "sev-master-secret", nonce, 16)`` (§6.3)."""
    if len(nonce) != 16:
        raise ValueError(f"session nonce must be 16 bytes, not {len(nonce)}")
    return kdf(z, LABEL_MASTER_SECRET, KEY_LEN, nonce)


def derive_kek(master: bytes) -> bytes:
    """``KEK = KDF(master, "sev-kek", "", 16)`` — the key that wraps TEK‖TIK (§6.3)."""
    return kdf(master, LABEL_KEK, KEY_LEN)


def derive_kik(master: bytes) -> bytes:
    """``KIK = KDF(master, "sev-kik", "", 16)`` — the key of ``wrap_mac`` (§6.3)."""
    return kdf(master, LABEL_KIK, KEY_LEN)


def ecdh_z(private_key: ec.EllipticCurvePrivateKey, peer: ec.EllipticCurvePublicKey) -> bytes:
    """The ECDH shared secret Z: the big-endian X coordinate of d·Q (48 bytes on P-384).

    Pitfall (§6.2, §16.2): Z is big-endian X — not little-endian like the certificate fields,
    not X‖Y, not hashed. ``cryptography``'s ``exchange`` returns exactly this.
    """
    if private_key.curve.name != peer.curve.name:
        raise ValueError(
            f"ECDH curve mismatch: private key on {private_key.curve.name}, "
            f"peer on {peer.curve.name}"
        )
    return private_key.exchange(ec.ECDH(), peer)


def aes128_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128-CTR; ``iv`` is the whole initial 16-byte counter block (§6.4).

    The counter is incremented as one 128-bit big-endian integer (OpenSSL semantics), and
    encryption and decryption are the same operation.
    """
    if len(key) != KEY_LEN:
        raise ValueError(f"AES-128 key must be 16 bytes, not {len(key)}")
    if len(iv) != 16:
        raise ValueError(f"AES-CTR IV must be 16 bytes, not {len(iv)}")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def hmac_sha256(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA-256 of the concatenation of ``parts``."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.digest()


def mac_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two MACs."""
    return hmac.compare_digest(a, b)


def int_to_le(value: int, size: int) -> bytes:
    """An unsigned integer as a little-endian, zero-padded ``size``-byte field (§0 "LEn")."""
    if value < 0:
        raise ValueError("SEV integers are unsigned")
    try:
        return value.to_bytes(size, "little")
    except OverflowError:
        raise ValueError(f"integer does not fit in {size} bytes") from None


def le32(value: int) -> bytes:
    """``LE32(value)``: a u32 as 4 little-endian bytes (``ValueError`` outside 0..2**32-1)."""
    if not 0 <= value <= 0xFFFF_FFFF:
        raise ValueError(f"{value} does not fit in an unsigned 32-bit field")
    return struct.pack("<I", value)


def int_from_le(data: bytes) -> int:
    """The unsigned integer stored least-significant byte first in ``data``."""
    return int.from_bytes(data, "little")


def _hash_for(hash_alg: hashes.HashAlgorithm | None) -> hashes.HashAlgorithm:
    return hash_alg if hash_alg is not None else hashes.SHA256()


def ecdsa_sign_le(
    key: ec.EllipticCurvePrivateKey,
    data: bytes,
    hash_alg: hashes.HashAlgorithm | None = None,
    size: int = 72,
) -> tuple[bytes, bytes]:
    """ECDSA-sign ``data``; return ``(r, s)`` as little-endian ``size``-byte fields (§6.5).

    The hash defaults to SHA-256: in SEV the hash follows the algorithm code (0x002 =
    ECDSA-SHA256), not the curve, so P-384 keys sign SHA-256 digests (§16.5).
    """
    der = key.sign(data, ec.ECDSA(_hash_for(hash_alg)))
    r, s = decode_dss_signature(der)
    return int_to_le(r, size), int_to_le(s, size)


def ecdsa_verify_le(
    public_key: ec.EllipticCurvePublicKey,
    r: bytes,
    s: bytes,
    data: bytes,
    hash_alg: hashes.HashAlgorithm | None = None,
) -> bool:
    """Verify an ECDSA signature whose r and s are stored as little-endian integers."""
    r_int, s_int = int_from_le(r), int_from_le(s)
    if r_int == 0 or s_int == 0:
        return False
    try:
        public_key.verify(encode_dss_signature(r_int, s_int), data, ec.ECDSA(_hash_for(hash_alg)))
    except InvalidSignature:
        return False
    return True


def _pss(hash_alg: hashes.HashAlgorithm) -> padding.PSS:
    # RSASSA-PSS, MGF1 with the same hash, salt length = digest length (§6.5; virtee
    # crypto.rs sets RsaPssSaltlen::DIGEST_LENGTH for both signing and verifying).
    return padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)


def rsa_pss_sign_le(key: rsa.RSAPrivateKey, data: bytes, hash_alg: hashes.HashAlgorithm) -> bytes:
    """RSA-PSS-sign ``data``; return the signature byte-reversed (little-endian).

    The result is exactly ``key_size / 8`` bytes, the way AMD stores RSA signatures in ARK/ASK
    certificates and in the CEK's signature slot (§6.5, §16.3).
    """
    return key.sign(data, _pss(hash_alg), hash_alg)[::-1]


def rsa_pss_verify_le(
    public_key: rsa.RSAPublicKey, signature_le: bytes, data: bytes, hash_alg: hashes.HashAlgorithm
) -> bool:
    """Verify a little-endian-stored RSA-PSS signature (any zero padding above the modulus
    size is allowed, as in a 512-byte SEV signature slot holding a 2048-bit signature)."""
    size = (public_key.key_size + 7) // 8
    value = int_from_le(signature_le)
    if value >= 1 << (8 * size):
        return False
    try:
        public_key.verify(value.to_bytes(size, "big"), data, _pss(hash_alg), hash_alg)
    except InvalidSignature:
        return False
    return True
