"""The platform identity: every key and certificate a simulated SEV host owns, as bytes.

What real hardware keeps in fuses and in the SPI persistent store, sevd keeps in one
:class:`PlatformIdentity`, exported and restored as bytes (the daemon stores them, mode
0600; DESIGN.md §6):

* the chip-unique key (GET_ID is the secp256k1 public key of it, ASPFW ``sev_get_id``) and
  the CEK derived from it (KDF label ``sev-chip-endorsement-key``, §6.1);
* the simulated AMD roots (:class:`AmdRoots`: ARK and ASK RSA keys and certificates) and
  the CEK certificate signed by the ASK — what AMD's key server hands out for real parts;
* the persistent store (:class:`PersistentStore`): owner flag, OCA, PEK and PDH keys and
  certificates. PLATFORM_RESET empties it; INIT refills it.

Determinism: :func:`generate` draws every EC key and the chip key from an HMAC-DRBG, signs
with RFC 6979 ECDSA and a DRBG-chosen PSS salt, so the same seed and the same roots give
byte-identical identities. RSA keys cannot be seeded in ``cryptography``: :func:`generate_roots`
is slow (RSA-4096) and its result is meant to be generated once and kept (tests share one).

Byte format (version 1, all integers little-endian): ``b"SEVD-PSP-ID\\0" ‖ u16 version``
then records ``u16 tag ‖ u32 length ‖ value``; the persistent store is one record holding
nested records, followed by a SHA-256 of it: a mismatch restores an identity whose store is
marked corrupt (INIT then fails with SECURE_DATA_INVALID and erases it, as ASPFW does).
Guest keys are never part of an identity.

Domain code: pure and synchronous; no json (struct only). Must not import anything from
``sevd`` outside ``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import IntEnum
from functools import cached_property

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sevd.domain.psp.certs import rsa_pss_sign_det, sign_cert
from sevd.domain.psp.drbg import HmacDrbg, ec_key_from_bits, ec_key_from_secret
from sevd.domain.psp.profiles import HostProfile, get_profile
from sevd.formats.amdca import AmdCaCert
from sevd.formats.crypto import LABEL_CEK, kdf
from sevd.formats.sevcert import Algo, SevCert, Usage

__all__ = [
    "AmdRoots",
    "PersistentStore",
    "PlatformIdentity",
    "fresh_store",
    "generate",
    "generate_roots",
    "new_oca",
    "new_pdh",
    "new_pek",
]

_MAGIC = b"SEVD-PSP-ID\x00"
_VERSION = 1
_RECORD = struct.Struct("<HI")
_ROOTS_MAGIC = b"SEVD-AMD-ROOTS\x00\x00"


class _Tag(IntEnum):
    PROFILE = 1
    CHIP_KEY = 2
    ROOTS = 3
    CEK_CERT = 4
    STORE = 5
    STORE_SHA256 = 6


_TAGS = frozenset(int(t) for t in _Tag)


class _StoreTag(IntEnum):
    OWNER = 1
    OCA_KEY = 2
    OCA_CERT = 3
    PEK_KEY = 4
    PEK_CERT = 5
    PDH_KEY = 6
    PDH_CERT = 7


class _RootsTag(IntEnum):
    ARK_KEY = 1
    ASK_KEY = 2
    ARK_CERT = 3
    ASK_CERT = 4


def _records(data: bytes, what: str) -> Iterator[tuple[int, bytes]]:
    off = 0
    while off < len(data):
        if len(data) - off < _RECORD.size:
            raise ValueError(f"{what}: truncated record header at offset {off}")
        tag, length = _RECORD.unpack_from(data, off)
        off += _RECORD.size
        if len(data) - off < length:
            raise ValueError(f"{what}: record {tag} runs past the end")
        yield tag, bytes(data[off : off + length])
        off += length


def _record(tag: int, value: bytes) -> bytes:
    return _RECORD.pack(tag, len(value)) + value


def _ec_private_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_numbers().private_value.to_bytes(48, "big")


def _ec_private_from(data: bytes) -> ec.EllipticCurvePrivateKey:
    if len(data) != 48:
        raise ValueError("identity: an EC private key is a 48-byte P-384 scalar")
    return ec.derive_private_key(int.from_bytes(data, "big"), ec.SECP384R1())


def _rsa_der(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _rsa_from(data: bytes) -> rsa.RSAPrivateKey:
    # The identity is sevd's own state file: skip the (slow) RSA consistency check.
    key = serialization.load_der_private_key(data, None, unsafe_skip_rsa_key_validation=True)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("identity: AMD root key is not an RSA key")
    return key


@dataclass(frozen=True)
class AmdRoots:
    """The simulated AMD root of trust: ARK (self-signed) → ASK. RSA, so not seedable."""

    ark_key: rsa.RSAPrivateKey = field(repr=False)
    ask_key: rsa.RSAPrivateKey = field(repr=False)
    ark_cert: bytes = field(repr=False)
    ask_cert: bytes = field(repr=False)

    @property
    def bits(self) -> int:
        return self.ark_key.key_size

    @property
    def ark(self) -> AmdCaCert:
        return AmdCaCert.from_bytes(self.ark_cert)

    @property
    def ask(self) -> AmdCaCert:
        return AmdCaCert.from_bytes(self.ask_cert)

    def chain(self) -> bytes:
        """``ASK ‖ ARK``, as AMD ships ``ask_ark_<gen>.cert``."""
        return self.ask_cert + self.ark_cert

    def fused_hash(self) -> bytes:
        """SHA-384 of the ARK's header, exponent and modulus: what the firmware compares a
        presented ARK against (ASPFW ``amd_cert_public_key_hash``; reference §7.4
        [sim choice]: a simulator with its own ARK stores "its" fused hash)."""
        return hashlib.sha384(self.ark.signed_region()).digest()

    def to_bytes(self) -> bytes:
        return _ROOTS_MAGIC + b"".join(
            (
                _record(_RootsTag.ARK_KEY, _rsa_der(self.ark_key)),
                _record(_RootsTag.ASK_KEY, _rsa_der(self.ask_key)),
                _record(_RootsTag.ARK_CERT, self.ark_cert),
                _record(_RootsTag.ASK_CERT, self.ask_cert),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> AmdRoots:
        if not data.startswith(_ROOTS_MAGIC):
            raise ValueError("not a sevd AMD roots blob")
        values = dict(_records(data[len(_ROOTS_MAGIC) :], "AMD roots"))
        try:
            return cls(
                ark_key=_rsa_from(values[_RootsTag.ARK_KEY]),
                ask_key=_rsa_from(values[_RootsTag.ASK_KEY]),
                ark_cert=values[_RootsTag.ARK_CERT],
                ask_cert=values[_RootsTag.ASK_CERT],
            )
        except KeyError as exc:
            raise ValueError(f"AMD roots: missing record {exc}") from None


def generate_roots(bits: int, seed: bytes | None = None) -> AmdRoots:
    """A new simulated ARK/ASK pair of ``bits`` (2048 Naples, 4096 Rome+). Slow for 4096:
    generate once and keep it (the key ids come from ``seed`` when given)."""
    drbg = HmacDrbg(seed, b"sevd amd roots")
    ark_key = rsa.generate_private_key(65537, bits)
    ask_key = rsa.generate_private_key(65537, bits)
    ark_id, ask_id = drbg.generate(16), drbg.generate(16)
    ark = AmdCaCert.new(ark_id, ark_id, Usage.ARK, ark_key.public_key())
    ark.sign(ark_key)
    ask = AmdCaCert.new(ask_id, ark_id, Usage.ASK, ask_key.public_key())
    ask.sign(ark_key)
    return AmdRoots(ark_key, ask_key, ark.to_bytes(), ask.to_bytes())


@dataclass
class PersistentStore:
    """The SPI persistent store: OCA, PEK and PDH keys and certificates, owner flag.

    ``oca_key`` is None when the platform is externally owned (the owner keeps the OCA key).
    Every field is None after PLATFORM_RESET, until INIT.
    """

    owner_external: bool = False
    oca_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)
    oca_cert: bytes | None = field(default=None, repr=False)
    pek_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)
    pek_cert: bytes | None = field(default=None, repr=False)
    pdh_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)
    pdh_cert: bytes | None = field(default=None, repr=False)

    def copy(self) -> PersistentStore:
        return replace(self)

    def to_bytes(self) -> bytes:
        parts = [_record(_StoreTag.OWNER, bytes([int(self.owner_external)]))]
        for tag, key in (
            (_StoreTag.OCA_KEY, self.oca_key),
            (_StoreTag.PEK_KEY, self.pek_key),
            (_StoreTag.PDH_KEY, self.pdh_key),
        ):
            if key is not None:
                parts.append(_record(tag, _ec_private_bytes(key)))
        for tag, cert in (
            (_StoreTag.OCA_CERT, self.oca_cert),
            (_StoreTag.PEK_CERT, self.pek_cert),
            (_StoreTag.PDH_CERT, self.pdh_cert),
        ):
            if cert is not None:
                parts.append(_record(tag, cert))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> PersistentStore:
        store = cls()
        for tag, value in _records(data, "persistent store"):
            if tag == _StoreTag.OWNER:
                store.owner_external = value == b"\x01"
            elif tag == _StoreTag.OCA_KEY:
                store.oca_key = _ec_private_from(value)
            elif tag == _StoreTag.PEK_KEY:
                store.pek_key = _ec_private_from(value)
            elif tag == _StoreTag.PDH_KEY:
                store.pdh_key = _ec_private_from(value)
            elif tag == _StoreTag.OCA_CERT:
                store.oca_cert = value
            elif tag == _StoreTag.PEK_CERT:
                store.pek_cert = value
            elif tag == _StoreTag.PDH_CERT:
                store.pdh_cert = value
            else:
                raise ValueError(f"persistent store: unknown record {tag}")
        return store


def new_oca(drbg: HmacDrbg, api: tuple[int, int]) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A new self-signed OCA (ASPFW ``sev_oca_generate``): P-384, ECDSA-SHA256."""
    key = ec_key_from_bits(drbg)
    cert = SevCert.new(Usage.OCA, Algo.ECDSA_SHA256, key.public_key(), *api)
    sign_cert(cert, key, Usage.OCA)
    return key, cert.to_bytes()


def new_pek(
    drbg: HmacDrbg,
    api: tuple[int, int],
    oca_key: ec.EllipticCurvePrivateKey,
    cek_key: ec.EllipticCurvePrivateKey,
) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A new PEK signed by the OCA (slot 1) then the CEK (slot 2), as firmware signs a
    self-owned PEK (§7.3)."""
    key = ec_key_from_bits(drbg)
    cert = SevCert.new(Usage.PEK, Algo.ECDSA_SHA256, key.public_key(), *api)
    sign_cert(cert, oca_key, Usage.OCA)
    sign_cert(cert, cek_key, Usage.CEK)
    return key, cert.to_bytes()


def new_pdh(
    drbg: HmacDrbg, api: tuple[int, int], pek_key: ec.EllipticCurvePrivateKey
) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A new PDH (ECDH-SHA256) signed by the PEK in slot 1 (§7.3)."""
    key = ec_key_from_bits(drbg)
    cert = SevCert.new(Usage.PDH, Algo.ECDH_SHA256, key.public_key(), *api)
    sign_cert(cert, pek_key, Usage.PEK)
    return key, cert.to_bytes()


@dataclass
class PlatformIdentity:
    """Everything that makes one simulated host itself. See the module docstring."""

    profile: str
    chip_key: bytes = field(repr=False)
    roots: AmdRoots
    #: the CEK certificate signed by the ASK (what AMD's key server returns for this chip)
    cek_cert: bytes = field(repr=False)
    store: PersistentStore
    #: the store failed its integrity check when restored (INIT → SECURE_DATA_INVALID)
    store_corrupt: bool = False

    @property
    def host_profile(self) -> HostProfile:
        return get_profile(self.profile)

    @cached_property
    def cek_key(self) -> ec.EllipticCurvePrivateKey:
        """The CEK, derived from the chip-unique key (ASPFW ``sev_cek_derive``)."""
        return ec_key_from_secret(kdf(self.chip_key, LABEL_CEK, 56))

    def chip_id(self) -> bytes:
        """GET_ID for one socket: X ‖ Y (32 bytes each, big-endian) of the secp256k1
        public key of the chip-unique key (ASPFW ``sev_get_id``)."""
        numbers = (
            ec.derive_private_key(int.from_bytes(self.chip_key, "big"), ec.SECP256K1())
            .public_key()
            .public_numbers()
        )
        return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")

    def copy(self) -> PlatformIdentity:
        """An independent identity (keys are immutable objects; the store is copied)."""
        return replace(self, store=self.store.copy())

    def to_bytes(self) -> bytes:
        store = self.store.to_bytes()
        return (
            _MAGIC
            + struct.pack("<H", _VERSION)
            + b"".join(
                (
                    _record(_Tag.PROFILE, self.profile.encode("ascii")),
                    _record(_Tag.CHIP_KEY, self.chip_key),
                    _record(_Tag.ROOTS, self.roots.to_bytes()),
                    _record(_Tag.CEK_CERT, self.cek_cert),
                    _record(_Tag.STORE, store),
                    _record(_Tag.STORE_SHA256, hashlib.sha256(store).digest()),
                )
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> PlatformIdentity:
        """Restore an identity; ``ValueError`` if it is not one. A persistent store that
        fails its checksum is dropped and flagged (see ``store_corrupt``)."""
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 2:
            raise ValueError("not a sevd platform identity")
        (version,) = struct.unpack_from("<H", data, len(_MAGIC))
        if version != _VERSION:
            raise ValueError(f"unsupported platform identity version {version}")
        values: dict[int, bytes] = {}
        for tag, value in _records(data[len(_MAGIC) + 2 :], "platform identity"):
            if tag not in _TAGS:
                raise ValueError(f"platform identity: unknown record {tag}")
            values[tag] = value
        try:
            profile = values[_Tag.PROFILE].decode("ascii")
            get_profile(profile)
            chip_key = values[_Tag.CHIP_KEY]
            roots = AmdRoots.from_bytes(values[_Tag.ROOTS])
            cek_cert = values[_Tag.CEK_CERT]
            store_bytes = values[_Tag.STORE]
            digest = values[_Tag.STORE_SHA256]
        except KeyError as exc:
            raise ValueError(f"platform identity: missing or invalid record {exc}") from None
        corrupt = hashlib.sha256(store_bytes).digest() != digest
        store = PersistentStore()
        if not corrupt:
            try:
                store = PersistentStore.from_bytes(store_bytes)
            except ValueError:
                corrupt = True
        return cls(profile, chip_key, roots, cek_cert, store, corrupt)


def generate(
    profile: HostProfile | str,
    seed: bytes | None = None,
    roots: AmdRoots | None = None,
) -> PlatformIdentity:
    """A new platform identity for ``profile``, as after its first INIT.

    With ``seed`` every EC key, the chip key and every signature are reproducible; pass the
    same ``roots`` too (RSA keys cannot be seeded) and the identity bytes are identical.
    Without ``roots`` new ones are generated (seconds for RSA-4096).
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    roots = roots if roots is not None else generate_roots(prof.amd_root_bits, seed)
    if roots.bits != prof.amd_root_bits:
        raise ValueError(
            f"profile {prof.name} needs RSA-{prof.amd_root_bits} AMD roots, not RSA-{roots.bits}"
        )
    drbg = HmacDrbg(seed, b"sevd platform identity " + prof.name.encode())
    chip_key = ec_key_from_bits(drbg, ec.SECP256K1()).private_numbers().private_value
    identity = PlatformIdentity(
        prof.name, chip_key.to_bytes(32, "big"), roots, b"", PersistentStore()
    )
    # The CEK certificate as AMD's key server has it: signed by the ASK, slot 1,
    # (ASK 0x13, RSA_SHA256 Naples / RSA_SHA384 Rome+) (§7.3).
    ask = roots.ask
    cek = SevCert.new(
        Usage.CEK, Algo.ECDSA_SHA256, identity.cek_key.public_key(), *prof.api_version
    )
    hash_alg = ask.hash_algorithm
    salt = drbg.generate(hash_alg.digest_size)
    signature = rsa_pss_sign_det(roots.ask_key, cek.signed_region(), hash_alg, salt)
    cek.set_signature(1, Usage.ASK, ask.sev_algo, signature[::-1])
    identity.cek_cert = cek.to_bytes()
    identity.store = fresh_store(drbg, prof.api_version, identity.cek_key)
    return identity


def fresh_store(
    drbg: HmacDrbg, api: tuple[int, int], cek_key: ec.EllipticCurvePrivateKey
) -> PersistentStore:
    """A self-owned store: new OCA, PEK (OCA then CEK), PDH."""
    oca_key, oca_cert = new_oca(drbg, api)
    pek_key, pek_cert = new_pek(drbg, api, oca_key, cek_key)
    pdh_key, pdh_cert = new_pdh(drbg, api, pek_key)
    return PersistentStore(False, oca_key, oca_cert, pek_key, pek_cert, pdh_key, pdh_cert)
