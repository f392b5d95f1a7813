"""sevd.formats.session: the 128-byte LAUNCH_START session blob (reference §6.3, §8.1)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sevd.formats.crypto import derive_kek, derive_kik, derive_master_secret, ecdh_z
from sevd.formats.session import (
    SESSION_LEN,
    SessionBlob,
    build_session,
    open_session,
    policy_mac,
    unwrap_keys,
    wrap_keys,
)


def test_virtee_session_vector() -> None:
    # virtee/sev src/session/mod.rs `mod initialized { fn session() }`: Z = 16 zero bytes,
    # nonce = wrap_iv = TEK = TIK = zeros, policy = Policy::default() (0).
    blob = build_session(bytes(16), bytes(16), bytes(16), bytes(16), bytes(16), 0)
    assert blob.nonce == bytes(16) and blob.wrap_iv == bytes(16)
    assert blob.wrap_tk == bytes.fromhex(
        "2137bc7f9bb8bd7c3e55a576a15d3454b3856b8ba27afadf46dcfee9f02c02c4"
    )
    assert blob.wrap_mac == bytes.fromhex(
        "3176c0752738bd9d5e86689534020f528c088f16238826b000b327dee6aeed7d"
    )
    assert blob.policy_mac == bytes.fromhex(
        "aa7855e13839dd767cd5da7c1ff5036540c9264b7a803029315e55375287b4af"
    )
    # The firmware side opens it again.
    assert open_session(bytes(16), blob, 0) == (bytes(16), bytes(16))


def test_layout() -> None:
    blob = SessionBlob(b"N" * 16, b"W" * 32, b"I" * 16, b"M" * 32, b"P" * 32)
    raw = blob.to_bytes()
    assert len(raw) == SESSION_LEN
    assert raw == b"N" * 16 + b"W" * 32 + b"I" * 16 + b"M" * 32 + b"P" * 32
    assert SessionBlob.from_bytes(raw) == blob
    with pytest.raises(ValueError, match="128 bytes"):
        SessionBlob.from_bytes(raw[:-1])
    with pytest.raises(ValueError, match="nonce"):
        SessionBlob(b"N" * 15, b"W" * 32, b"I" * 16, b"M" * 32, b"P" * 32)


def test_owner_and_firmware_agree_over_ecdh() -> None:
    pdh = ec.generate_private_key(ec.SECP384R1())
    godh = ec.generate_private_key(ec.SECP384R1())
    tek, tik, nonce, iv = (os.urandom(16) for _ in range(4))
    policy = 0x0001_0005
    blob = build_session(ecdh_z(godh, pdh.public_key()), nonce, iv, tek, tik, policy)
    assert open_session(ecdh_z(pdh, godh.public_key()), blob, policy) == (tek, tik)
    # A different policy in the LAUNCH_START command: policy_mac mismatch.
    with pytest.raises(ValueError, match="policy_mac"):
        open_session(ecdh_z(pdh, godh.public_key()), blob, policy ^ 0x1)
    # Another platform's PDH: wrap_mac mismatch.
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="wrap_mac"):
        open_session(ecdh_z(other, godh.public_key()), blob, policy)


def test_wrap_unwrap_and_policy_mac() -> None:
    master = derive_master_secret(os.urandom(48), os.urandom(16))
    kek, kik = derive_kek(master), derive_kik(master)
    tek, tik, iv = os.urandom(16), os.urandom(16), os.urandom(16)
    wrap_tk, wrap_mac = wrap_keys(kek, kik, tek, tik, iv)
    assert unwrap_keys(kek, kik, wrap_tk, iv, wrap_mac) == (tek, tik)
    with pytest.raises(ValueError, match="wrap_mac"):
        unwrap_keys(kek, kik, wrap_tk, iv, bytes(32))
    # reference §16.9: the policy is MACed as 4 little-endian bytes with the TIK.
    # (The zero-key vector is virtee/sev src/session/key.rs `fn mac()`.)
    assert policy_mac(bytes(16), 0).hex().startswith("aa7855e1")
    assert policy_mac(tik, 1) != policy_mac(tik, 1 << 24)
    with pytest.raises(ValueError):
        policy_mac(tik, 1 << 32)
    with pytest.raises(ValueError, match="TEK"):
        wrap_keys(kek, kik, bytes(15), tik, iv)
