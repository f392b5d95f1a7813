"""The 2084-byte SEV certificate (OCA, PEK, PDH, CEK, and the guest owner's GODH).

Layout (reference/sev-firmware.md §7.1, sev-tool ``sevapi.h struct sev_cert``, virtee
``src/certs/sev/sev/cert/v1``), all integers little-endian:

====== ===== =====================================================================
offset size  field
====== ===== =====================================================================
0x000  4     version (= 1)
0x004  1     api_major
0x005  1     api_minor
0x006  2     reserved
0x008  4     pubkey_usage
0x00C  4     pubkey_algo
0x010  1028  public key: ``u32 curve || qx LE72 || qy LE72 || 880 bytes`` (ECC)
0x414  4+4   sig1 usage, algo     — the signing key's usage and algorithm
0x41C  512   sig1                 — ECDSA: ``r LE72 || s LE72 || 368 zero bytes``
0x61C  4+4   sig2 usage, algo
0x624  512   sig2
====== ===== =====================================================================

The signed region is exactly bytes ``[0x000, 0x414)`` (§16.4). An empty signature slot is
``(usage 0x1000 INVALID, algo 0)`` — not ``(0, 0)``, since 0 is the ARK's usage (§16.6).

Only ECC public keys are modelled (every key SEV firmware creates is P-384; the RSA variant
of the public-key union is not used by firmware or by virtee's tools). RSA signatures in a
slot (the CEK signed by the AMD ASK) are verified here too; signing with an RSA key is in
``sevd.formats.amdca.sign_sev_cert``.

Pure and synchronous; imports only the standard library, ``cryptography`` and
``sevd.formats.crypto``. Must not import anything else from ``sevd``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sevd.formats.crypto import (
    ecdsa_sign_le,
    ecdsa_verify_le,
    int_from_le,
    int_to_le,
    rsa_pss_verify_le,
)

__all__ = [
    "CURVE_P256",
    "CURVE_P384",
    "ECC_FIELD_LEN",
    "SEV_CERT_LEN",
    "SIGNED_REGION_LEN",
    "SIG_SLOT_LEN",
    "Algo",
    "SevCert",
    "SignatureSlot",
    "Usage",
    "encode_cert_chain",
    "parse_cert_chain",
]

SEV_CERT_LEN = 0x824  # 2084
SIGNED_REGION_LEN = 0x414  # 1044: version .. end of the public key
SIG_SLOT_LEN = 512
ECC_FIELD_LEN = 72  # qx, qy, r, s: little-endian, zero-padded to 72 bytes
_PUBKEY_AREA_LEN = 1028
_KEY_PADDING_LEN = _PUBKEY_AREA_LEN - 4 - 2 * ECC_FIELD_LEN  # 880

_HEADER = struct.Struct("<IBBHII")  # version, api_major, api_minor, reserved, usage, algo
_SLOT_HEADER = struct.Struct("<II")
_OFF_PUBKEY = 0x010
_OFF_SIG1 = 0x414
_OFF_SIG2 = 0x61C

CURVE_P256 = 1
CURVE_P384 = 2
_CURVES: dict[int, type[ec.EllipticCurve]] = {CURVE_P256: ec.SECP256R1, CURVE_P384: ec.SECP384R1}
_CURVE_IDS = {"secp256r1": CURVE_P256, "secp384r1": CURVE_P384}


class Usage(IntEnum):
    """Key usage codes (§7.2; ASPFW ``sev_cert.h``, virtee ``src/certs/sev/mod.rs``)."""

    ARK = 0x0000
    ASK = 0x0013
    INVALID = 0x1000
    OCA = 0x1001
    PEK = 0x1002
    PDH = 0x1003
    CEK = 0x1004
    #: The guest owner's Diffie-Hellman certificate carries the PDH usage (virtee
    #: ``Certificate::generate(Usage::PDH)``; the firmware checks usage == PDH, §8.1 step 3).
    GODH = 0x1003


class Algo(IntEnum):
    """Algorithm codes (§7.2). The hash follows the code, not the key size or curve."""

    INVALID = 0x000
    RSA_SHA256 = 0x001
    ECDSA_SHA256 = 0x002
    ECDH_SHA256 = 0x003
    RSA_SHA384 = 0x101
    ECDSA_SHA384 = 0x102
    ECDH_SHA384 = 0x103

    @property
    def hash_algorithm(self) -> hashes.HashAlgorithm:
        """The digest this algorithm code names (SHA-256 for ``0x00N``, SHA-384 for ``0x10N``)."""
        if self is Algo.INVALID:
            raise ValueError("the INVALID algorithm has no hash")
        return hashes.SHA384() if self.value & 0x100 else hashes.SHA256()

    @property
    def is_ecdsa(self) -> bool:
        return self in (Algo.ECDSA_SHA256, Algo.ECDSA_SHA384)

    @property
    def is_ecdh(self) -> bool:
        return self in (Algo.ECDH_SHA256, Algo.ECDH_SHA384)

    @property
    def is_rsa(self) -> bool:
        return self in (Algo.RSA_SHA256, Algo.RSA_SHA384)

    @property
    def is_signature(self) -> bool:
        return self.is_ecdsa or self.is_rsa


class SignatureSlot(NamedTuple):
    """One of the two signature slots: the signer's usage and algorithm, and 512 bytes."""

    usage: Usage
    algo: Algo
    signature: bytes

    @property
    def is_empty(self) -> bool:
        """True for a slot that holds no signature: usage INVALID and algo INVALID."""
        return self.usage is Usage.INVALID and self.algo is Algo.INVALID

    @property
    def is_malformed(self) -> bool:
        """Exactly one of usage/algo is INVALID: firmware answers BAD_SIGNATURE (§7.1)."""
        return (self.usage is Usage.INVALID) != (self.algo is Algo.INVALID)

    @property
    def is_signed(self) -> bool:
        """A usable signature: a real signer usage and a signature algorithm."""
        return self.usage is not Usage.INVALID and self.algo.is_signature


_EMPTY_SLOT = bytes(SIG_SLOT_LEN)


def _usage(value: int, what: str) -> Usage:
    try:
        return Usage(value)
    except ValueError:
        raise ValueError(f"SEV certificate: unknown {what} 0x{value:x}") from None


def _algo(value: int, what: str) -> Algo:
    try:
        return Algo(value)
    except ValueError:
        raise ValueError(f"SEV certificate: unknown {what} 0x{value:x}") from None


def _u8(value: int, what: str) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"SEV certificate: {what} must fit in one byte, not {value}")


@dataclass
class SevCert:
    """A parsed SEV certificate; ``to_bytes(from_bytes(b)) == b`` for every valid ``b``."""

    version: int
    api_major: int
    api_minor: int
    pubkey_usage: Usage
    pubkey_algo: Algo
    public_key: ec.EllipticCurvePublicKey
    sig1_usage: Usage = Usage.INVALID
    sig1_algo: Algo = Algo.INVALID
    sig1: bytes = _EMPTY_SLOT
    sig2_usage: Usage = Usage.INVALID
    sig2_algo: Algo = Algo.INVALID
    sig2: bytes = _EMPTY_SLOT
    #: bytes 0x006–0x007 (zero in every real certificate)
    reserved: int = 0
    #: the 880 bytes of the public-key area after qy (zero in every real certificate)
    key_padding: bytes = bytes(_KEY_PADDING_LEN)

    def __post_init__(self) -> None:
        _u8(self.api_major, "api_major")
        _u8(self.api_minor, "api_minor")
        if not 0 <= self.reserved <= 0xFFFF:
            raise ValueError("SEV certificate: reserved field must fit in 16 bits")
        for name in ("sig1", "sig2"):
            if len(getattr(self, name)) != SIG_SLOT_LEN:
                raise ValueError(f"SEV certificate: {name} must be {SIG_SLOT_LEN} bytes")
        if len(self.key_padding) != _KEY_PADDING_LEN:
            raise ValueError(f"SEV certificate: key_padding must be {_KEY_PADDING_LEN} bytes")
        if self.public_key.curve.name not in _CURVE_IDS:
            raise ValueError(f"SEV certificate: unsupported curve {self.public_key.curve.name}")

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def new(
        cls,
        usage: Usage,
        algo: Algo,
        public_key: ec.EllipticCurvePublicKey,
        api_major: int = 0,
        api_minor: int = 0,
    ) -> SevCert:
        """A version-1 certificate for ``public_key`` with both signature slots empty."""
        if not (algo.is_ecdsa or algo.is_ecdh):
            raise ValueError(f"SEV certificate: an ECC key needs an ECDSA/ECDH algo, not {algo!r}")
        return cls(1, api_major, api_minor, Usage(usage), Algo(algo), public_key)

    @classmethod
    def new_godh(cls, public_key: ec.EllipticCurvePublicKey) -> SevCert:
        """The guest owner's DH certificate as virtee/sevctl write it (§15.2): version 1,
        API 0.0, usage PDH (0x1003), algo ECDH-SHA256, both slots empty (unsigned)."""
        return cls.new(Usage.PDH, Algo.ECDH_SHA256, public_key)

    # -- bytes ----------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> SevCert:
        """Parse a 2084-byte certificate; ``ValueError`` says what is wrong with it."""
        if len(data) != SEV_CERT_LEN:
            raise ValueError(f"SEV certificate must be {SEV_CERT_LEN} bytes, got {len(data)}")
        version, major, minor, reserved, usage, algo = _HEADER.unpack_from(data, 0)
        if version != 1:
            raise ValueError(f"SEV certificate: unsupported version {version} (expected 1)")
        pub_usage = _usage(usage, "public key usage")
        pub_algo = _algo(algo, "public key algorithm")
        if not (pub_algo.is_ecdsa or pub_algo.is_ecdh):
            raise ValueError(
                f"SEV certificate: public key algorithm {pub_algo.name} is not supported "
                "(only ECDSA/ECDH keys)"
            )
        (curve_id,) = struct.unpack_from("<I", data, _OFF_PUBKEY)
        curve_cls = _CURVES.get(curve_id)
        if curve_cls is None:
            raise ValueError(f"SEV certificate: unknown curve id {curve_id} (1=P-256, 2=P-384)")
        off = _OFF_PUBKEY + 4
        qx = int_from_le(data[off : off + ECC_FIELD_LEN])
        qy = int_from_le(data[off + ECC_FIELD_LEN : off + 2 * ECC_FIELD_LEN])
        try:
            public_key = ec.EllipticCurvePublicNumbers(qx, qy, curve_cls()).public_key()
        except ValueError:
            raise ValueError(
                f"SEV certificate: public key is not a valid point on {curve_cls.name}"
            ) from None
        s1u, s1a = _SLOT_HEADER.unpack_from(data, _OFF_SIG1)
        s2u, s2a = _SLOT_HEADER.unpack_from(data, _OFF_SIG2)
        return cls(
            version=version,
            api_major=major,
            api_minor=minor,
            pubkey_usage=pub_usage,
            pubkey_algo=pub_algo,
            public_key=public_key,
            sig1_usage=_usage(s1u, "sig1 usage"),
            sig1_algo=_algo(s1a, "sig1 algorithm"),
            sig1=bytes(data[_OFF_SIG1 + 8 : _OFF_SIG1 + 8 + SIG_SLOT_LEN]),
            sig2_usage=_usage(s2u, "sig2 usage"),
            sig2_algo=_algo(s2a, "sig2 algorithm"),
            sig2=bytes(data[_OFF_SIG2 + 8 : _OFF_SIG2 + 8 + SIG_SLOT_LEN]),
            reserved=reserved,
            key_padding=bytes(data[off + 2 * ECC_FIELD_LEN : _OFF_SIG1]),
        )

    @property
    def curve_id(self) -> int:
        """1 for P-256, 2 for P-384 (the ``curve`` field of the public-key area)."""
        return _CURVE_IDS[self.public_key.curve.name]

    def signed_region(self) -> bytes:
        """Bytes ``[0x000, 0x414)``: what every signature in the slots covers."""
        numbers = self.public_key.public_numbers()
        return b"".join(
            (
                _HEADER.pack(
                    self.version,
                    self.api_major,
                    self.api_minor,
                    self.reserved,
                    self.pubkey_usage,
                    self.pubkey_algo,
                ),
                struct.pack("<I", self.curve_id),
                int_to_le(numbers.x, ECC_FIELD_LEN),
                int_to_le(numbers.y, ECC_FIELD_LEN),
                self.key_padding,
            )
        )

    def to_bytes(self) -> bytes:
        """The 2084-byte encoding."""
        out = b"".join(
            (
                self.signed_region(),
                _SLOT_HEADER.pack(self.sig1_usage, self.sig1_algo),
                self.sig1,
                _SLOT_HEADER.pack(self.sig2_usage, self.sig2_algo),
                self.sig2,
            )
        )
        assert len(out) == SEV_CERT_LEN
        return out

    # -- signature slots ------------------------------------------------------------------

    def slot(self, index: int) -> SignatureSlot:
        """Signature slot 1 or 2."""
        if index == 1:
            return SignatureSlot(self.sig1_usage, self.sig1_algo, self.sig1)
        if index == 2:
            return SignatureSlot(self.sig2_usage, self.sig2_algo, self.sig2)
        raise ValueError(f"SEV certificates have signature slots 1 and 2, not {index}")

    def slots(self) -> tuple[SignatureSlot, SignatureSlot]:
        return self.slot(1), self.slot(2)

    def set_signature(self, index: int, usage: Usage, algo: Algo, signature: bytes) -> None:
        """Store ``signature`` (zero-padded to 512 bytes) with its signer usage/algo."""
        if len(signature) > SIG_SLOT_LEN:
            raise ValueError(f"a signature slot holds at most {SIG_SLOT_LEN} bytes")
        padded = signature + bytes(SIG_SLOT_LEN - len(signature))
        if index == 1:
            self.sig1_usage, self.sig1_algo, self.sig1 = Usage(usage), Algo(algo), padded
        elif index == 2:
            self.sig2_usage, self.sig2_algo, self.sig2 = Usage(usage), Algo(algo), padded
        else:
            raise ValueError(f"SEV certificates have signature slots 1 and 2, not {index}")

    def clear_signature(self, index: int) -> None:
        """Make slot ``index`` empty: ``(INVALID, INVALID, zeros)``."""
        self.set_signature(index, Usage.INVALID, Algo.INVALID, b"")

    def free_slot(self) -> int | None:
        """The first slot without a usable signature (virtee ``Signer`` fills it), or None."""
        for index in (1, 2):
            if not self.slot(index).is_signed:
                return index
        return None

    def sign(self, key: ec.EllipticCurvePrivateKey, usage: Usage, slot: int | None = None) -> None:
        """ECDSA-sign the signed region with ``key`` (whose usage is ``usage``).

        The algorithm is ECDSA-SHA256 (0x002) whatever the curve, as firmware and virtee
        sign (§6.5, §16.5); r and s are stored LE72 followed by 368 zero bytes. Without
        ``slot`` the first slot without a signature is used (``ValueError`` if none).
        For an RSA signer (the AMD ASK) use ``sevd.formats.amdca.sign_sev_cert``.
        """
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("SevCert.sign takes an EC key; use amdca.sign_sev_cert for RSA")
        index = self.free_slot() if slot is None else slot
        if index is None:
            raise ValueError("SEV certificate: both signature slots are already used")
        r, s = ecdsa_sign_le(key, self.signed_region(), hashes.SHA256(), ECC_FIELD_LEN)
        self.set_signature(index, usage, Algo.ECDSA_SHA256, r + s)

    def verify(
        self,
        issuer_public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        issuer_usage: Usage | None = None,
    ) -> bool:
        """True if either slot holds a valid signature by ``issuer_public_key``.

        Slots are tried in order (the PEK's OCA and CEK signatures may be in either, §16.7).
        With ``issuer_usage`` only slots naming that signer usage count, as firmware
        requires (§7.3). EC keys are checked against ECDSA slots (r, s LE72), RSA keys
        against RSA slots (RSA-PSS, signature stored little-endian — the CEK signed by the
        ASK); the hash is the one the slot's algorithm code names.
        """
        region = self.signed_region()
        for entry in self.slots():
            if not entry.is_signed:
                continue
            if issuer_usage is not None and entry.usage != issuer_usage:
                continue
            if isinstance(issuer_public_key, ec.EllipticCurvePublicKey):
                if not entry.algo.is_ecdsa:
                    continue
                r = entry.signature[:ECC_FIELD_LEN]
                s = entry.signature[ECC_FIELD_LEN : 2 * ECC_FIELD_LEN]
                if ecdsa_verify_le(issuer_public_key, r, s, region, entry.algo.hash_algorithm):
                    return True
            elif isinstance(issuer_public_key, rsa.RSAPublicKey):
                if not entry.algo.is_rsa:
                    continue
                if rsa_pss_verify_le(
                    issuer_public_key, entry.signature, region, entry.algo.hash_algorithm
                ):
                    return True
        return False

    def __repr__(self) -> str:
        return (
            f"SevCert({self.pubkey_usage.name} {self.pubkey_algo.name} "
            f"api={self.api_major}.{self.api_minor} "
            f"sig1={self.sig1_usage.name}/{self.sig1_algo.name} "
            f"sig2={self.sig2_usage.name}/{self.sig2_algo.name})"
        )


def parse_cert_chain(data: bytes) -> list[SevCert]:
    """Split concatenated SEV certificates (e.g. PDH_CERT_EXPORT's ``PEK‖OCA‖CEK``)."""
    if not data or len(data) % SEV_CERT_LEN:
        raise ValueError(
            f"a SEV certificate chain is a multiple of {SEV_CERT_LEN} bytes, got {len(data)}"
        )
    return [
        SevCert.from_bytes(data[i : i + SEV_CERT_LEN]) for i in range(0, len(data), SEV_CERT_LEN)
    ]


def encode_cert_chain(certs: list[SevCert]) -> bytes:
    """Concatenate certificates (the inverse of :func:`parse_cert_chain`)."""
    return b"".join(cert.to_bytes() for cert in certs)
