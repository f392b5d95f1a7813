"""HMAC-DRBG (NIST SP 800-90A, HMAC-SHA-256): the simulated PSP's random source.

Real firmware draws keys, nonces and IVs from the PSP's TRNG. sevd draws them from an
HMAC-DRBG so that, given a seed, every EC key, chip id, VEK, TEK/TIK, nonce and IV is
reproducible (DESIGN.md §6 "Determinism"); without a seed the DRBG is seeded from the OS.
Separate streams (identity, runtime) are separated by the personalization string.

Also turns DRBG output into EC private keys the way FIPS 186-4 B.4.1 ("extra random bits")
does, which is how ASPFW derives keys too (``ecc_keypair_from_extra_bits``).

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``. Never uses the ``random`` module.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["HmacDrbg", "ec_key_from_bits"]

_OUTLEN = 32
# SECP384R1 and SECP256K1 group orders (SEC 2).
_ORDERS: dict[str, int] = {
    "secp384r1": int(
        "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
        "581a0db248b0a77aecec196accc52973",
        16,
    ),
    "secp256k1": int("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", 16),
}


class HmacDrbg:
    """HMAC_DRBG with SHA-256 (SP 800-90A §10.1.2), no prediction resistance.

    ``HmacDrbg(seed, personalization)`` is deterministic; ``HmacDrbg(None, ...)`` seeds from
    ``os.urandom``. The internal state is never printed.
    """

    __slots__ = ("_key", "_value")

    def __init__(self, seed: bytes | None, personalization: bytes = b"") -> None:
        entropy = os.urandom(48) if seed is None else bytes(seed)
        self._key = b"\x00" * _OUTLEN
        self._value = b"\x01" * _OUTLEN
        self._update(entropy + personalization)

    def __repr__(self) -> str:
        return "HmacDrbg(<state hidden>)"

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, hashlib.sha256).digest()

    def _update(self, provided: bytes) -> None:
        self._key = self._hmac(self._key, self._value + b"\x00" + provided)
        self._value = self._hmac(self._key, self._value)
        if provided:
            self._key = self._hmac(self._key, self._value + b"\x01" + provided)
            self._value = self._hmac(self._key, self._value)

    def reseed(self, entropy: bytes) -> None:
        """Mix ``entropy`` into the state (SP 800-90A reseed without additional input)."""
        self._update(entropy)

    def generate(self, n: int) -> bytes:
        """``n`` pseudo-random bytes."""
        if n < 0:
            raise ValueError("cannot generate a negative number of bytes")
        out = bytearray()
        value = self._value
        while len(out) < n:
            value = self._hmac(self._key, value)
            out += value
        self._value = value
        self._update(b"")
        return bytes(out[:n])

    def fork(self, label: bytes) -> HmacDrbg:
        """A new, independent DRBG seeded from this one (for a named sub-stream)."""
        return HmacDrbg(self.generate(48), label)


def ec_key_from_bits(
    drbg: HmacDrbg, curve: ec.EllipticCurve | None = None
) -> ec.EllipticCurvePrivateKey:
    """An EC private key from DRBG output: ``d = (c mod (n-1)) + 1`` with 64 extra bits
    (FIPS 186-4 B.4.1). P-384 unless ``curve`` says otherwise."""
    curve = curve if curve is not None else ec.SECP384R1()
    order = _ORDERS[curve.name]
    nbytes = (order.bit_length() + 7) // 8 + 8
    c = int.from_bytes(drbg.generate(nbytes), "big")
    return ec.derive_private_key(c % (order - 1) + 1, curve)


def ec_key_from_secret(
    secret: bytes, curve: ec.EllipticCurve | None = None
) -> ec.EllipticCurvePrivateKey:
    """An EC private key from secret bytes (at least 8 bytes longer than the order):
    ``d = (c mod (n-1)) + 1`` (FIPS 186-4 B.4.1; ASPFW derives the CEK this way)."""
    curve = curve if curve is not None else ec.SECP384R1()
    order = _ORDERS[curve.name]
    if len(secret) < (order.bit_length() + 7) // 8 + 8:
        raise ValueError("not enough secret bytes for an unbiased key")
    return ec.derive_private_key(int.from_bytes(secret, "big") % (order - 1) + 1, curve)
