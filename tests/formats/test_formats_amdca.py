"""sevd.formats.amdca against AMD's real ARK/ASK certificates (virtee/sev builtin)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sevd.formats.amdca import (
    KNOWN_ARK_KEY_IDS,
    AmdCaCert,
    parse_ca_chain,
    sign_sev_cert,
    verify_sev_cert,
)
from sevd.formats.sevcert import Algo, SevCert, Usage

Data = Callable[[str], bytes]
GENERATIONS = ("naples", "rome", "milan", "genoa", "turin")


def ca(data: Data, gen: str, name: str) -> AmdCaCert:
    return AmdCaCert.from_bytes(data(f"virtee-sev/builtin/{gen}/{name}.cert"))


@pytest.mark.parametrize("gen", GENERATIONS)
@pytest.mark.parametrize("name", ["ark", "ask"])
def test_builtin_roundtrip_is_byte_exact(data: Data, gen: str, name: str) -> None:
    # virtee/sev tests/{naples,rome}/{ark,ask}.rs `encode()`.
    raw = data(f"virtee-sev/builtin/{gen}/{name}.cert")
    cert = AmdCaCert.from_bytes(raw)
    assert cert.to_bytes() == raw
    bits = 2048 if gen == "naples" else 4096
    assert len(raw) == (832 if bits == 2048 else 1600)
    assert cert.modulus_bits == cert.pubexp_bits == cert.public_key.key_size == bits
    assert cert.key_usage is (Usage.ARK if name == "ark" else Usage.ASK)


@pytest.mark.parametrize("gen", GENERATIONS)
def test_builtin_chain_verifies(data: Data, gen: str) -> None:
    # virtee/sev tests/*/ark.rs, ask.rs `verify()`: ARK self-signed, ASK signed by ARK.
    ark, ask = ca(data, gen, "ark"), ca(data, gen, "ask")
    assert ark.certifying_id == ark.key_id
    assert ask.certifying_id == ark.key_id
    assert ark.verify_issued_by(ark)
    assert ask.verify_issued_by(ark)
    assert not ark.verify_issued_by(ask)
    assert not ask.verify_issued_by(ask)


@pytest.mark.parametrize("gen", ["naples", "rome", "milan", "genoa"])
def test_known_ark_key_ids(data: Data, gen: str) -> None:
    # reference §7.4 (sev-tool amdcert.h)
    assert ca(data, gen, "ark").key_id == KNOWN_ARK_KEY_IDS[gen]


@pytest.mark.parametrize(("gen", "algo"), [("naples", Algo.RSA_SHA256), ("rome", Algo.RSA_SHA384)])
def test_real_cek_signed_by_ask(data: Data, gen: str, algo: Algo) -> None:
    # testdata README: the Rome CEK is signed with RSA-PSS/SHA-384 by the Rome ASK, the
    # Naples CEK with RSA-PSS/SHA-256 by the Naples ASK.
    ask = ca(data, gen, "ask")
    cek = SevCert.from_bytes(data(f"virtee-sev/{gen}/cek.cert"))
    assert ask.sev_algo is algo
    assert verify_sev_cert(ask, cek)
    assert cek.verify(ask.public_key, Usage.ASK)
    assert not verify_sev_cert(ca(data, gen, "ark"), cek)


def test_rome_ask_does_not_verify_naples_cek(data: Data) -> None:
    # virtee/sev tests/certs.rs `test_for_verify_false_positive` (enarx/enarx#520).
    naples_cek = SevCert.from_bytes(data("virtee-sev/naples/cek.cert"))
    assert not verify_sev_cert(ca(data, "rome", "ask"), naples_cek)
    assert not naples_cek.verify(ca(data, "rome", "ask").public_key)


def test_naples_bad_ark_is_rejected(data: Data) -> None:
    # virtee/sev tests/naples/ark.cert.bad: AMD's malformed Naples ARK without its
    # signature (AMDESE/AMDSEV#17). virtee patches in a known signature; sevd refuses it.
    bad = data("virtee-sev/naples/ark.cert.bad")
    with pytest.raises(ValueError, match="truncated"):
        AmdCaCert.from_bytes(bad)
    # Its body is the genuine ARK's signed region (what virtee relies on).
    assert bad == ca(data, "naples", "ark").signed_region()


def test_ask_ark_chain_file(data: Data) -> None:
    raw = data("virtee-sev/builtin/rome/ask.cert") + data("virtee-sev/builtin/rome/ark.cert")
    ask, ark = parse_ca_chain(raw)
    assert (ask.key_usage, ark.key_usage) == (Usage.ASK, Usage.ARK)
    with pytest.raises(ValueError, match="trailing bytes"):
        AmdCaCert.from_bytes(raw)
    with pytest.raises(ValueError, match="truncated"):
        parse_ca_chain(raw[:-1])


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [(0x00, 2, "version"), (0x24, 0x1001, "neither ARK nor ASK"), (0x3C, 3072, "2048 or 4096")],
)
def test_from_bytes_rejects_bad_fields(data: Data, offset: int, value: int, message: str) -> None:
    raw = bytearray(data("virtee-sev/builtin/milan/ask.cert"))
    struct.pack_into("<I", raw, offset, value)
    with pytest.raises(ValueError, match=message):
        AmdCaCert.from_bytes(bytes(raw))
    with pytest.raises(ValueError, match="header"):
        AmdCaCert.from_bytes(bytes(raw[:10]))


@pytest.mark.parametrize("keyname", ["rsa2048_key", "rsa4096_key"])
def test_simulated_root_sign_and_verify(keyname: str, request: pytest.FixtureRequest) -> None:
    key: rsa.RSAPrivateKey = request.getfixturevalue(keyname)
    ark_id, ask_id = bytes(range(16)), bytes(range(16, 32))
    ark = AmdCaCert.new(ark_id, ark_id, Usage.ARK, key.public_key())
    ark.sign(key)
    # The same key plays the ASK here: generating a second RSA-4096 key is too slow.
    ask = AmdCaCert.new(ask_id, ark_id, Usage.ASK, key.public_key())
    ask.sign(key)
    ark2 = AmdCaCert.from_bytes(ark.to_bytes())
    assert ark2 == ark and ark2.verify_issued_by(ark2)
    assert AmdCaCert.from_bytes(ask.to_bytes()).verify_issued_by(ark)
    expected_hash = "sha256" if key.key_size == 2048 else "sha384"
    assert ark.hash_algorithm.name == expected_hash
    raw = bytearray(ask.to_bytes())
    raw[0x30] ^= 0x80
    assert not AmdCaCert.from_bytes(bytes(raw)).verify(key.public_key())
    # An ASK whose certifying id is not the ARK's key id does not chain.
    stray = AmdCaCert.new(ask_id, ask_id, Usage.ASK, key.public_key())
    stray.sign(key)
    assert stray.verify(key.public_key()) and not stray.verify_issued_by(ark)

    # The ASK signs a CEK (reference §7.3: sig1 = (ASK, RSA_SHA256|RSA_SHA384)).
    cek = SevCert.new(
        Usage.CEK, Algo.ECDSA_SHA256, ec.generate_private_key(ec.SECP384R1()).public_key()
    )
    sign_sev_cert(key, cek)
    assert cek.slot(1)[:2] == (Usage.ASK, ask.sev_algo)
    # RSA signature stored little-endian: the top of the 512-byte slot is zero for 2048.
    assert cek.sig1[key.key_size // 8 :] == bytes(512 - key.key_size // 8)
    cek2 = SevCert.from_bytes(cek.to_bytes())
    assert verify_sev_cert(ask, cek2)
    assert cek2.verify(key.public_key(), Usage.ASK)
    assert not verify_sev_cert(ark, cek2)  # the slot names the ASK, not the ARK


def test_sign_sev_cert_hash_must_match_ask(rsa2048_key: rsa.RSAPrivateKey) -> None:
    ask = AmdCaCert.new(bytes(16), bytes(16), Usage.ASK, rsa2048_key.public_key())
    cek = SevCert.new(
        Usage.CEK, Algo.ECDSA_SHA256, ec.generate_private_key(ec.SECP384R1()).public_key()
    )
    sign_sev_cert(rsa2048_key, cek, hashes.SHA384())
    assert cek.slot(1).algo is Algo.RSA_SHA384
    assert cek.verify(rsa2048_key.public_key())  # the signature itself is fine ...
    assert not verify_sev_cert(ask, cek)  # ... but a 2048-bit ASK signs with SHA-256
    with pytest.raises(ValueError, match="no RSA algorithm"):
        sign_sev_cert(rsa2048_key, cek, hashes.SHA512())
