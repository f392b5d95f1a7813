"""sevowner.session: launch sessions and the virtee-compatible session files."""

from __future__ import annotations

import base64
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from owner_sim import SimPlatform
from sevowner.session import (
    LaunchSession,
    create_session,
    load_session,
    save_session,
    session_file_names,
    write_key_file,
)

from sevd.formats.crypto import ecdh_z
from sevd.formats.session import SessionBlob, open_session
from sevd.formats.sevcert import Algo, SevCert, Usage


def counter_rng() -> Callable[[int], bytes]:
    state = {"n": 0}

    def rng(size: int) -> bytes:
        out = bytes((state["n"] + i) & 0xFF for i in range(size))
        state["n"] += size
        return out

    return rng


def firmware_open(
    platform: SimPlatform, session: LaunchSession, policy: int
) -> tuple[bytes, bytes]:
    """What LAUNCH_START does with the owner's GODH and session (reference §8.1)."""
    godh = SevCert.from_bytes(session.godh_cert)
    z = ecdh_z(platform.pdh_key, godh.public_key)
    return open_session(z, SessionBlob.from_bytes(session.session), policy)


def test_firmware_recovers_tek_tik(platform: SimPlatform) -> None:
    session = create_session(platform.chain.pdh.to_bytes(), 0x1)
    assert firmware_open(platform, session, 0x1) == (session.tek, session.tik)
    with pytest.raises(ValueError, match="policy_mac"):
        firmware_open(platform, session, 0x3)


def test_policy_high_bits_are_maced_as_given(platform: SimPlatform) -> None:
    # Unlike virtee's sevctl (reference §16.9), API-version bits 16-31 are MACed as given.
    policy = 0x3317_0005
    session = create_session(platform.chain.pdh, policy)
    assert firmware_open(platform, session, policy) == (session.tek, session.tik)


def test_godh_certificate_as_virtee_writes_it(platform: SimPlatform) -> None:
    godh = SevCert.from_bytes(create_session(platform.chain.pdh, 0).godh_cert)
    # reference §15.2
    assert (godh.version, godh.api_major, godh.api_minor) == (1, 0, 0)
    assert (godh.pubkey_usage, godh.pubkey_algo, godh.curve_id) == (Usage.PDH, Algo.ECDH_SHA256, 2)
    assert godh.slot(1).is_empty and godh.slot(2).is_empty


def test_deterministic_with_given_rng(platform: SimPlatform) -> None:
    a = create_session(platform.chain.pdh, 1, rng=counter_rng())
    b = create_session(platform.chain.pdh, 1, rng=counter_rng())
    assert (a.godh_cert, a.session, a.tek, a.tik) == (b.godh_cert, b.session, b.tek, b.tik)
    # Order of draws: GODH scalar (56 bytes on P-384), TEK, TIK, nonce, wrap IV.
    assert a.tek == bytes(range(56, 72))
    assert SessionBlob.from_bytes(a.session).nonce == bytes(range(88, 104))


def test_real_pdh(data: Callable[[str], bytes]) -> None:
    session = create_session(data("virtee-sev/rome/pdh.cert"), 1)
    assert len(session.session) == 128 and len(session.godh_cert) == 2084


def test_refuses_a_non_pdh(data: Callable[[str], bytes]) -> None:
    with pytest.raises(ValueError, match="not a PDH certificate: usage PEK"):
        create_session(data("virtee-sev/rome/pek.cert"), 1)


def test_repr_hides_keys(platform: SimPlatform) -> None:
    session = create_session(platform.chain.pdh, 7)
    text = repr(session)
    assert session.tek.hex() not in text and session.tik.hex() not in text
    assert "0x7" in text


def test_files_names_modes_and_contents(platform: SimPlatform, tmp_path: Path) -> None:
    session = create_session(platform.chain.pdh, 1)
    files = save_session(session, "guest1", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "guest1_godh.b64",
        "guest1_session.b64",
        "guest1_tek.bin",
        "guest1_tik.bin",
    ]
    assert stat.S_IMODE(files.tek.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.tik.stat().st_mode) == 0o600
    assert files.tek.read_bytes() == session.tek and files.tik.read_bytes() == session.tik
    # base64 text without a newline, as sevctl writes and QEMU's *-file properties read.
    assert files.godh.read_text() == base64.b64encode(session.godh_cert).decode()
    assert files.session.read_text() == base64.b64encode(session.session).decode()
    loaded = load_session(1, "guest1", tmp_path)
    assert (loaded.tek, loaded.tik, loaded.session) == (session.tek, session.tik, session.session)


def test_default_name_is_vm() -> None:
    files = session_file_names()
    assert (str(files.godh), str(files.tik)) == ("vm_godh.b64", "vm_tik.bin")


def test_key_file_mode_is_enforced_on_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "vm_tek.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    write_key_file(path, bytes(16))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == bytes(16)


def test_session_validation() -> None:
    with pytest.raises(ValueError):
        LaunchSession(1, bytes(2084), bytes(128), bytes(16), bytes(16))  # not a certificate
    godh = struct.pack("<I", 1)  # truncated
    with pytest.raises(ValueError):
        LaunchSession(1, godh, bytes(128), bytes(16), bytes(16))
