"""sevd.formats.crypto: KDF, ECDH Z, AES-128-CTR and HMAC against published vectors."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sevd.formats.crypto import (
    aes128_ctr,
    derive_kek,
    derive_kik,
    derive_master_secret,
    ecdh_z,
    ecdsa_sign_le,
    ecdsa_verify_le,
    hmac_sha256,
    int_from_le,
    int_to_le,
    kdf,
    le32,
)


def test_kdf_master_secret_virtee_vector() -> None:
    # virtee/sev src/session/key.rs `fn derive()`:
    # Key::zeroed(16).derive(16, &[0u8; 16], "sev-master-secret")
    assert derive_master_secret(bytes(16), bytes(16)) == bytes.fromhex(
        "ab4d269fcc62bedb4511d56c386ce706"
    )


def test_hmac_virtee_vector() -> None:
    # virtee/sev src/session/key.rs `fn mac()`: Key::zeroed(16).mac(&[0u8; 4])
    assert hmac_sha256(bytes(16), bytes(4)) == bytes.fromhex(
        "aa7855e13839dd767cd5da7c1ff5036540c9264b7a803029315e55375287b4af"
    )


def test_kdf_block_layout_is_little_endian() -> None:
    # reference §6.1 / §16.1: HMAC(K, LE32(i) || label || 0x00 || context || LE32(8*L))
    key, ctx = b"k" * 16, b"c" * 16
    expected = hmac_sha256(
        key, b"\x01\x00\x00\x00", b"sev-master-secret", b"\x00", ctx, b"\x80\x00\x00\x00"
    )[:16]
    assert kdf(key, b"sev-master-secret", 16, ctx) == expected


def test_kdf_multi_block_and_length_binding() -> None:
    key = bytes(range(16))
    long = kdf(key, b"label", 48)
    assert len(long) == 48
    # L is part of every block, so a longer output is not an extension of a shorter one.
    assert long[:32] != kdf(key, b"label", 32)
    block2 = hmac_sha256(key, b"\x02\x00\x00\x00", b"label", b"\x00", b"", b"\x80\x01\x00\x00")
    assert long[32:] == block2[:16]


def test_kek_kik_labels_differ() -> None:
    master = derive_master_secret(bytes(48), bytes(16))
    assert derive_kek(master) == kdf(master, b"sev-kek", 16)
    assert derive_kik(master) == kdf(master, b"sev-kik", 16)
    assert derive_kek(master) != derive_kik(master)


@pytest.mark.parametrize("bad", [0, -1])
def test_kdf_rejects_bad_length(bad: int) -> None:
    with pytest.raises(ValueError):
        kdf(b"k", b"l", bad)


def test_master_secret_needs_16_byte_nonce() -> None:
    with pytest.raises(ValueError, match="nonce"):
        derive_master_secret(bytes(48), bytes(15))


def test_ecdh_z_is_big_endian_x_and_symmetric() -> None:
    a = ec.generate_private_key(ec.SECP384R1())
    b = ec.generate_private_key(ec.SECP384R1())
    z = ecdh_z(a, b.public_key())
    assert len(z) == 48
    assert z == ecdh_z(b, a.public_key())
    # Z is X of d_a * Q_b: with d_b = 1 (Q_b = G) it is the X coordinate of Q_a, big-endian.
    one = ec.derive_private_key(1, ec.SECP384R1())
    assert ecdh_z(a, one.public_key()) == a.public_key().public_numbers().x.to_bytes(48, "big")


def test_ecdh_curve_mismatch() -> None:
    a = ec.generate_private_key(ec.SECP384R1())
    b = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="curve mismatch"):
        ecdh_z(a, b.public_key())


def test_aes128_ctr_nist_sp800_38a_f51() -> None:
    # NIST SP 800-38A, F.5.1 CTR-AES128.Encrypt, block #1.
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    iv = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    pt = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    ct = aes128_ctr(key, iv, pt)
    assert ct == bytes.fromhex("874d6191b620e3261bef6864990db6ce")
    assert aes128_ctr(key, iv, ct) == pt


def test_aes128_ctr_counter_is_128_bit_big_endian() -> None:
    # reference §6.4 / §16.14: the whole 16-byte block is the counter; it wraps at 2^128.
    key = bytes(range(16))
    out = aes128_ctr(key, b"\xff" * 16, bytes(32))
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    assert out[16:] == ecb.update(bytes(16)) + ecb.finalize()


def test_aes128_ctr_checks_sizes() -> None:
    with pytest.raises(ValueError):
        aes128_ctr(bytes(32), bytes(16), b"")
    with pytest.raises(ValueError):
        aes128_ctr(bytes(16), bytes(8), b"")


def test_integer_encodings() -> None:
    assert int_to_le(0x0102, 4) == b"\x02\x01\x00\x00"
    assert int_from_le(b"\x02\x01\x00\x00") == 0x0102
    assert le32(0x80) == b"\x80\x00\x00\x00"
    with pytest.raises(ValueError):
        int_to_le(1 << 32, 4)
    with pytest.raises(ValueError):
        int_to_le(-1, 4)
    with pytest.raises(ValueError):
        le32(1 << 32)


def test_ecdsa_le_roundtrip() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    r, s = ecdsa_sign_le(key, b"message")
    assert len(r) == len(s) == 72
    assert r[48:] == bytes(24) and s[48:] == bytes(24)
    assert ecdsa_verify_le(key.public_key(), r, s, b"message")
    assert not ecdsa_verify_le(key.public_key(), r, s, b"messagE")
    assert not ecdsa_verify_le(key.public_key(), bytes(72), s, b"message")
