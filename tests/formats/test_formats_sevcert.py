"""sevd.formats.sevcert against the real AMD platform certificates published by virtee/sev."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sevd.formats.sevcert import (
    SEV_CERT_LEN,
    SIGNED_REGION_LEN,
    Algo,
    SevCert,
    Usage,
    encode_cert_chain,
    parse_cert_chain,
)

Data = Callable[[str], bytes]
GENERATIONS = ("naples", "rome")
NAMES = ("oca", "pek", "pdh", "cek")


def load(data: Data, gen: str) -> dict[str, SevCert]:
    return {n: SevCert.from_bytes(data(f"virtee-sev/{gen}/{n}.cert")) for n in NAMES}


@pytest.mark.parametrize("gen", GENERATIONS)
@pytest.mark.parametrize("name", NAMES)
def test_real_cert_roundtrip_is_byte_exact(data: Data, gen: str, name: str) -> None:
    # virtee/sev tests/{naples,rome}/{oca,pek,pdh,cek}.rs `encode()`: decode then encode
    # gives the same bytes.
    raw = data(f"virtee-sev/{gen}/{name}.cert")
    cert = SevCert.from_bytes(raw)
    assert cert.to_bytes() == raw
    assert cert.signed_region() == raw[:SIGNED_REGION_LEN]
    assert cert.curve_id == 2


@pytest.mark.parametrize(("gen", "api"), [("naples", (0, 16)), ("rome", (0, 22))])
def test_real_cert_fields(data: Data, gen: str, api: tuple[int, int]) -> None:
    # Field values of the real chains (reference §7.2, §7.3).
    c = load(data, gen)
    assert (c["pdh"].api_major, c["pdh"].api_minor) == api
    assert (c["cek"].api_major, c["cek"].api_minor) == (0, 14)
    assert c["oca"].pubkey_usage is Usage.OCA and c["oca"].pubkey_algo is Algo.ECDSA_SHA256
    assert c["pdh"].pubkey_usage is Usage.PDH and c["pdh"].pubkey_algo is Algo.ECDH_SHA256
    assert c["pek"].slot(1)[:2] == (Usage.OCA, Algo.ECDSA_SHA256)
    assert c["pek"].slot(2)[:2] == (Usage.CEK, Algo.ECDSA_SHA256)
    assert c["pdh"].slot(1)[:2] == (Usage.PEK, Algo.ECDSA_SHA256)
    assert c["pdh"].slot(2).is_empty
    cek_algo = Algo.RSA_SHA256 if gen == "naples" else Algo.RSA_SHA384
    assert c["cek"].slot(1)[:2] == (Usage.ASK, cek_algo)


@pytest.mark.parametrize("gen", GENERATIONS)
def test_real_chain_signatures(data: Data, gen: str) -> None:
    # virtee/sev tests/{naples,rome}/{oca,pek,pdh}.rs `verify()`.
    c = load(data, gen)
    assert c["oca"].verify(c["oca"].public_key, Usage.OCA)
    assert c["pek"].verify(c["oca"].public_key, Usage.OCA)
    assert c["pek"].verify(c["cek"].public_key, Usage.CEK)
    assert c["pdh"].verify(c["pek"].public_key, Usage.PEK)
    # ... and not the other way round (tests/naples/pek.rs asserts these are errors).
    assert not c["cek"].verify(c["pek"].public_key)
    assert not c["oca"].verify(c["pek"].public_key)
    assert not c["pdh"].verify(c["oca"].public_key)
    # The signer usage must match when it is given.
    assert not c["pek"].verify(c["cek"].public_key, Usage.OCA)


def test_cross_generation_chains_do_not_verify(data: Data) -> None:
    naples, rome = load(data, "naples"), load(data, "rome")
    assert not rome["pdh"].verify(naples["pek"].public_key)
    assert not naples["pek"].verify(rome["oca"].public_key)


def test_godh_layout() -> None:
    # reference §15.2: version 1, API 0.0, usage 0x1003, algo 0x003, curve 2, both slots
    # (0x1000, 0, zeros).
    key = ec.generate_private_key(ec.SECP384R1())
    raw = SevCert.new_godh(key.public_key()).to_bytes()
    assert len(raw) == SEV_CERT_LEN
    assert struct.unpack_from("<IBBHIII", raw, 0) == (1, 0, 0, 0, 0x1003, 0x003, 2)
    nums = key.public_key().public_numbers()
    assert raw[0x14 : 0x14 + 72] == nums.x.to_bytes(72, "little")
    assert raw[0x5C : 0x5C + 72] == nums.y.to_bytes(72, "little")
    assert raw[0xA4:0x414] == bytes(880)
    for off in (0x414, 0x61C):
        assert struct.unpack_from("<II", raw, off) == (0x1000, 0)
        assert raw[off + 8 : off + 520] == bytes(512)
    assert SevCert.from_bytes(raw).public_key.public_numbers() == nums


def test_sign_fills_free_slots_in_order() -> None:
    oca = ec.generate_private_key(ec.SECP384R1())
    cek = ec.generate_private_key(ec.SECP384R1())
    pek = SevCert.new(
        Usage.PEK, Algo.ECDSA_SHA256, ec.generate_private_key(ec.SECP384R1()).public_key(), 1, 55
    )
    pek.sign(oca, Usage.OCA)
    pek.sign(cek, Usage.CEK)
    assert pek.slot(1)[:2] == (Usage.OCA, Algo.ECDSA_SHA256)
    assert pek.slot(2)[:2] == (Usage.CEK, Algo.ECDSA_SHA256)
    # r and s are LE72 each, then 368 zero bytes (reference §7.1).
    assert pek.sig1[144:] == bytes(368) and pek.sig1[48:72] == bytes(24)
    with pytest.raises(ValueError, match="both signature slots"):
        pek.sign(oca, Usage.OCA)
    reparsed = SevCert.from_bytes(pek.to_bytes())
    assert reparsed.verify(oca.public_key(), Usage.OCA)
    assert reparsed.verify(cek.public_key(), Usage.CEK)
    # Tampering with the signed region breaks both signatures.
    raw = bytearray(pek.to_bytes())
    raw[5] ^= 1
    tampered = SevCert.from_bytes(bytes(raw))
    assert not tampered.verify(oca.public_key()) and not tampered.verify(cek.public_key())


def test_sign_into_explicit_slot_and_clear() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = SevCert.new(Usage.OCA, Algo.ECDSA_SHA256, key.public_key())
    cert.sign(key, Usage.OCA, slot=2)
    assert cert.slot(1).is_empty and cert.free_slot() == 1
    assert cert.verify(key.public_key(), Usage.OCA)
    cert.clear_signature(2)
    assert not cert.verify(key.public_key())
    with pytest.raises(ValueError):
        cert.slot(3)


def test_malformed_slot_detection() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = SevCert.new(Usage.PDH, Algo.ECDH_SHA256, key.public_key())
    cert.set_signature(1, Usage.PEK, Algo.INVALID, b"")
    assert cert.slot(1).is_malformed and not cert.slot(1).is_signed
    assert not cert.slot(2).is_malformed


def _patched(raw: bytes, offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(raw)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "message"),
    [
        (0x000, "<I", 2, "version"),
        (0x008, "<I", 0x2000, "unknown public key usage"),
        (0x00C, "<I", 0x7, "unknown public key algorithm"),
        (0x00C, "<I", 0x1, "not supported"),
        (0x010, "<I", 3, "curve"),
        (0x014, "<I", 0x12345, "not a valid point"),
        (0x414, "<I", 0x4242, "sig1 usage"),
        (0x620, "<I", 0x999, "sig2 algorithm"),
    ],
)
def test_from_bytes_rejects_bad_fields(
    data: Data, offset: int, fmt: str, value: int, message: str
) -> None:
    raw = data("virtee-sev/rome/pek.cert")
    with pytest.raises(ValueError, match=message):
        SevCert.from_bytes(_patched(raw, offset, fmt, value))


@pytest.mark.parametrize("size", [0, 2083, 2085, 4168])
def test_from_bytes_rejects_bad_length(data: Data, size: int) -> None:
    raw = (data("virtee-sev/rome/pek.cert") * 3)[:size]
    with pytest.raises(ValueError, match="2084 bytes"):
        SevCert.from_bytes(raw)


def test_cert_chain_split(data: Data) -> None:
    raw = b"".join(data(f"virtee-sev/rome/{n}.cert") for n in ("pek", "oca", "cek"))
    certs = parse_cert_chain(raw)
    assert [c.pubkey_usage for c in certs] == [Usage.PEK, Usage.OCA, Usage.CEK]
    assert encode_cert_chain(certs) == raw
    with pytest.raises(ValueError, match="multiple of 2084"):
        parse_cert_chain(raw[:-1])


def test_usage_and_algo_codes() -> None:
    # reference §7.2
    assert [int(u) for u in (Usage.ARK, Usage.ASK, Usage.INVALID, Usage.OCA)] == [
        0,
        0x13,
        0x1000,
        0x1001,
    ]
    assert [int(u) for u in (Usage.PEK, Usage.PDH, Usage.CEK)] == [0x1002, 0x1003, 0x1004]
    assert Usage(0x1003) is Usage.PDH and int(Usage.GODH) == 0x1003  # GODH is an alias
    assert [int(a) for a in Algo] == [0, 1, 2, 3, 0x101, 0x102, 0x103]
    assert Algo.ECDSA_SHA256.hash_algorithm.name == "sha256"
    assert Algo.RSA_SHA384.hash_algorithm.name == "sha384"
