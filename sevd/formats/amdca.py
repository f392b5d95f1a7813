"""AMD CA certificates (ARK, ASK) and the ASK's RSA-PSS signature on a CEK.

Layout (reference/sev-firmware.md §7.4; sev-tool ``sevapi.h struct amd_cert``, virtee
``src/certs/sev/ca/cert/v1.rs``), little-endian, variable length:

====== =============== ===========================================================
offset size            field
====== =============== ===========================================================
0x00   4               version (= 1)
0x04   16              key_id
0x14   16              certifying_id (= key_id for the self-signed ARK)
0x24   4               key_usage (ARK 0x00, ASK 0x13)
0x28   16              reserved
0x38   4               pubexp_size in bits (2048 or 4096)
0x3C   4               modulus_size in bits (2048 or 4096)
0x40   pubexp_size/8   public exponent, little-endian
…      modulus_size/8  modulus, little-endian
…      modulus_size/8  signature, little-endian (RSA-PSS)
====== =============== ===========================================================

The signed region is everything before the signature. RSA-2048 keys (Naples) sign with
SHA-256, RSA-4096 keys (Rome and later) with SHA-384; PSS uses MGF1 with the same hash and
a salt as long as the digest (§6.5). AMD stores RSA signatures byte-reversed, here and in
the CEK's signature slot (§16.3; virtee ``ca/cert/v1.rs`` reverses before verifying).

Pure and synchronous; imports only the standard library, ``cryptography`` and
``sevd.formats`` modules. Must not import anything else from ``sevd``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from sevd.formats.crypto import int_from_le, int_to_le, rsa_pss_sign_le, rsa_pss_verify_le
from sevd.formats.sevcert import Algo, SevCert, Usage

__all__ = [
    "AMD_CA_HEADER_LEN",
    "KNOWN_ARK_KEY_IDS",
    "AmdCaCert",
    "parse_ca_chain",
    "sign_sev_cert",
    "verify_sev_cert",
]

AMD_CA_HEADER_LEN = 0x40
_HEADER = struct.Struct("<I16s16sI16sII")
_SIZES = (2048, 4096)

#: ARK key ids of AMD's real roots (§7.4; sev-tool ``amdcert.h``, ASPFW ``amd_cert.c``).
KNOWN_ARK_KEY_IDS: dict[str, bytes] = {
    "naples": bytes.fromhex("1bb987c359494606b174945601c9ea5b"),
    "rome": bytes.fromhex("e6002122fb58419399d15fee7b131351"),
    "milan": bytes.fromhex("94c38e4177d0479292a7ae671d083fb6"),
    "genoa": bytes.fromhex("9f9d4a8fe761456599f6946c4c010f3a"),
}


def _hash_for_bits(modulus_bits: int) -> hashes.HashAlgorithm:
    # virtee ca/cert/v1.rs: Size::Small (2048) -> SHA-256, Size::Large (4096) -> SHA-384.
    return hashes.SHA256() if modulus_bits <= 2048 else hashes.SHA384()


@dataclass
class AmdCaCert:
    """An ARK or ASK certificate; ``to_bytes(from_bytes(b)) == b`` for every valid ``b``."""

    version: int
    key_id: bytes
    certifying_id: bytes
    key_usage: Usage
    public_key: rsa.RSAPublicKey
    #: the signature exactly as stored: little-endian, ``modulus_bits / 8`` bytes
    signature: bytes
    pubexp_bits: int
    modulus_bits: int
    reserved: bytes = bytes(16)

    def __post_init__(self) -> None:
        for name in ("key_id", "certifying_id", "reserved"):
            if len(getattr(self, name)) != 16:
                raise ValueError(f"AMD CA certificate: {name} must be 16 bytes")
        for name in ("pubexp_bits", "modulus_bits"):
            if getattr(self, name) not in _SIZES:
                raise ValueError(
                    f"AMD CA certificate: {name} must be 2048 or 4096, not {getattr(self, name)}"
                )
        if self.public_key.key_size > self.modulus_bits:
            raise ValueError("AMD CA certificate: the modulus is larger than modulus_bits")
        if len(self.signature) != self.modulus_bits // 8:
            raise ValueError(
                f"AMD CA certificate: signature must be {self.modulus_bits // 8} bytes"
            )

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def new(
        cls,
        key_id: bytes,
        certifying_id: bytes,
        key_usage: Usage,
        public_key: rsa.RSAPublicKey,
        pubexp_bits: int | None = None,
        modulus_bits: int | None = None,
    ) -> AmdCaCert:
        """An unsigned certificate (signature all zeros); AMD makes the exponent field as
        wide as the modulus, which is the default here."""
        mod_bits = public_key.key_size if modulus_bits is None else modulus_bits
        exp_bits = mod_bits if pubexp_bits is None else pubexp_bits
        return cls(
            version=1,
            key_id=key_id,
            certifying_id=certifying_id,
            key_usage=Usage(key_usage),
            public_key=public_key,
            signature=bytes(mod_bits // 8),
            pubexp_bits=exp_bits,
            modulus_bits=mod_bits,
        )

    # -- bytes ----------------------------------------------------------------------------

    @staticmethod
    def encoded_length(data: bytes) -> int:
        """The length of the certificate that starts ``data``, from its header."""
        if len(data) < AMD_CA_HEADER_LEN:
            raise ValueError(
                f"AMD CA certificate: {len(data)} bytes is shorter than the 64-byte header"
            )
        pubexp_bits, modulus_bits = struct.unpack_from("<II", data, 0x38)
        for name, bits in (("pubexp size", pubexp_bits), ("modulus size", modulus_bits)):
            if bits not in _SIZES:
                raise ValueError(f"AMD CA certificate: {name} must be 2048 or 4096, not {bits}")
        return int(AMD_CA_HEADER_LEN + pubexp_bits // 8 + 2 * (modulus_bits // 8))

    @classmethod
    def from_bytes(cls, data: bytes) -> AmdCaCert:
        """Parse exactly one certificate; ``ValueError`` says what is wrong with it."""
        expected = cls.encoded_length(data)
        if len(data) < expected:
            raise ValueError(
                f"AMD CA certificate truncated: {len(data)} bytes, its header announces "
                f"{expected} (signature missing or cut short)"
            )
        if len(data) > expected:
            raise ValueError(
                f"AMD CA certificate: {len(data) - expected} trailing bytes after the "
                f"{expected}-byte certificate (use parse_ca_chain for ASK‖ARK files)"
            )
        version, key_id, cert_id, usage, reserved, exp_bits, mod_bits = _HEADER.unpack_from(data, 0)
        if version != 1:
            raise ValueError(f"AMD CA certificate: unsupported version {version} (expected 1)")
        if usage not in (Usage.ARK, Usage.ASK):
            raise ValueError(f"AMD CA certificate: key usage 0x{usage:x} is neither ARK nor ASK")
        off = AMD_CA_HEADER_LEN
        exponent = int_from_le(data[off : off + exp_bits // 8])
        off += exp_bits // 8
        modulus = int_from_le(data[off : off + mod_bits // 8])
        off += mod_bits // 8
        try:
            public_key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
        except ValueError as exc:
            raise ValueError(f"AMD CA certificate: invalid RSA public key ({exc})") from None
        return cls(
            version=version,
            key_id=key_id,
            certifying_id=cert_id,
            key_usage=Usage(usage),
            public_key=public_key,
            signature=bytes(data[off:expected]),
            pubexp_bits=exp_bits,
            modulus_bits=mod_bits,
            reserved=reserved,
        )

    def signed_region(self) -> bytes:
        """Header, exponent and modulus: what the signature covers."""
        numbers = self.public_key.public_numbers()
        return b"".join(
            (
                _HEADER.pack(
                    self.version,
                    self.key_id,
                    self.certifying_id,
                    self.key_usage,
                    self.reserved,
                    self.pubexp_bits,
                    self.modulus_bits,
                ),
                int_to_le(numbers.e, self.pubexp_bits // 8),
                int_to_le(numbers.n, self.modulus_bits // 8),
            )
        )

    def to_bytes(self) -> bytes:
        return self.signed_region() + self.signature

    # -- signatures -----------------------------------------------------------------------

    @property
    def hash_algorithm(self) -> hashes.HashAlgorithm:
        """SHA-256 for RSA-2048 roots (Naples), SHA-384 for RSA-4096 roots (Rome+)."""
        return _hash_for_bits(self.modulus_bits)

    @property
    def sev_algo(self) -> Algo:
        """The algorithm code this key writes into a SEV signature slot (0x001 / 0x101)."""
        return Algo.RSA_SHA384 if self.hash_algorithm.name == "sha384" else Algo.RSA_SHA256

    def sign(
        self, private_key: rsa.RSAPrivateKey, hash_alg: hashes.HashAlgorithm | None = None
    ) -> None:
        """RSA-PSS-sign the signed region with the issuer's key; stored little-endian."""
        if private_key.key_size > self.modulus_bits:
            raise ValueError("the issuer's key is larger than this certificate's signature")
        digest = self.hash_algorithm if hash_alg is None else hash_alg
        sig = rsa_pss_sign_le(private_key, self.signed_region(), digest)
        self.signature = sig + bytes(self.modulus_bits // 8 - len(sig))

    def verify(
        self,
        issuer_public_key: rsa.RSAPublicKey,
        hash_alg: hashes.HashAlgorithm | None = None,
    ) -> bool:
        """True if the signature is a valid RSA-PSS signature by ``issuer_public_key``."""
        digest = self.hash_algorithm if hash_alg is None else hash_alg
        return rsa_pss_verify_le(issuer_public_key, self.signature, self.signed_region(), digest)

    def verify_issued_by(self, issuer: AmdCaCert) -> bool:
        """Chain check as virtee does it: the issuer is an ARK whose key id is this
        certificate's certifying id, with the same hash size, and the signature verifies."""
        return (
            issuer.key_usage is Usage.ARK
            and issuer.key_id == self.certifying_id
            and issuer.hash_algorithm.name == self.hash_algorithm.name
            and self.verify(issuer.public_key)
        )

    def __repr__(self) -> str:
        return (
            f"AmdCaCert({self.key_usage.name} R{self.modulus_bits} "
            f"key_id={self.key_id.hex()} certifying_id={self.certifying_id.hex()})"
        )


def parse_ca_chain(data: bytes) -> list[AmdCaCert]:
    """Split concatenated AMD CA certificates (``ASK‖ARK`` as AMD and ``sevctl export
    --full`` ship them) into a list, in file order."""
    certs: list[AmdCaCert] = []
    rest = data
    while rest:
        size = AmdCaCert.encoded_length(rest)
        certs.append(AmdCaCert.from_bytes(rest[:size]))
        rest = rest[size:]
    if not certs:
        raise ValueError("AMD CA chain: no certificate")
    return certs


def sign_sev_cert(
    ca_key: rsa.RSAPrivateKey,
    cert: SevCert,
    hash_alg: hashes.HashAlgorithm | None = None,
    *,
    usage: Usage = Usage.ASK,
    slot: int | None = None,
) -> None:
    """Sign a SEV certificate (the CEK) with an AMD CA key (the ASK): RSA-PSS over the
    0x414-byte signed region, stored little-endian in the first free slot with
    ``(usage, RSA_SHA256|RSA_SHA384)`` (§7.3: CEK sig1 = (0x13, 0x001 Naples / 0x101 Rome+)).
    The hash defaults to the one the key size implies."""
    digest = _hash_for_bits(ca_key.key_size) if hash_alg is None else hash_alg
    algo = {"sha256": Algo.RSA_SHA256, "sha384": Algo.RSA_SHA384}.get(digest.name)
    if algo is None:
        raise ValueError(f"SEV signature slots have no RSA algorithm for {digest.name}")
    index = cert.free_slot() if slot is None else slot
    if index is None:
        raise ValueError("SEV certificate: both signature slots are already used")
    cert.set_signature(index, usage, algo, rsa_pss_sign_le(ca_key, cert.signed_region(), digest))


def verify_sev_cert(ca: AmdCaCert, cert: SevCert) -> bool:
    """True if ``cert`` (a CEK) carries a valid signature by the AMD CA certificate ``ca``
    (the ASK): a slot naming the CA's usage with the RSA algorithm of the CA's hash size
    (virtee checks usage, key kind and hash before verifying), and the signature verifies."""
    for entry in cert.slots():
        if entry.usage != ca.key_usage or entry.algo is not ca.sev_algo:
            continue
        if rsa_pss_verify_le(
            ca.public_key, entry.signature, cert.signed_region(), ca.hash_algorithm
        ):
            return True
    return False
