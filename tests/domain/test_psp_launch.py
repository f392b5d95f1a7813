"""LAUNCH_* and ATTESTATION against a guest owner built from sevd.formats alone."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psp_helpers import Guests, Owner, pdh_of

from sevd.domain.psp import GuestState, SevError, SevFirmware, SevStatus, SparsePageStore
from sevd.formats.attestation import AttestationReport
from sevd.formats.measure import split_measurement, verify_measurement
from sevd.formats.secret import encrypt_secret
from sevd.formats.sevcert import Algo, SevCert, Usage


def _launch_with_session(fw: SevFirmware, owner: Owner, **kwargs: object) -> int:
    pdh = pdh_of(fw)
    return fw.launch_start(
        owner.policy,
        dh_cert=owner.godh,
        session=owner.session(pdh),
        **kwargs,  # type: ignore[arg-type]
    )


def test_launch_start_with_session_opens_channel(fw: SevFirmware, guests: Guests) -> None:
    owner = Owner(policy=0x1)
    handle = _launch_with_session(fw, owner)
    assert fw.guest_info(handle).state is GuestState.LUPDATE
    fw.activate(handle, guests.asid())
    data = os.urandom(4096 * 3)
    fw.guest_info(handle)
    memory = fw._guests[handle].memory
    memory.write(0x10000, data)
    fw.launch_update_data(handle, 0x10000, len(data))
    blob = fw.launch_measure(handle)
    status = fw.platform_status()
    # The guest owner verifies with its own TIK and the digest it expects.
    assert verify_measurement(
        blob,
        owner.tik,
        status.api_major,
        status.api_minor,
        status.build,
        owner.policy,
        hashlib.sha256(data).digest(),
    )


def test_launch_digest_is_independent_of_chunking(fw: SevFirmware, guests: Guests) -> None:
    data = os.urandom(8192)
    digests = []
    for chunks in ((8192,), (16, 4080, 4096), (4096, 4096)):
        handle = guests.launch(0)
        memory = fw._guests[handle].memory
        memory.write(0, data)
        gpa = 0
        for size in chunks:
            fw.launch_update_data(handle, gpa, size)
            gpa += size
        fw.launch_measure(handle)
        digests.append(fw.guest_info(handle).launch_digest)
    assert digests[0] == digests[1] == digests[2] == hashlib.sha256(data).digest()


def test_launch_update_encrypts_in_place(fw: SevFirmware, guests: Guests) -> None:
    memory = SparsePageStore(1 << 20)
    handle = guests.launch(0, memory=memory)
    page = b"A" * 4096
    memory.write(0, page + page)
    fw.launch_update_data(handle, 0, 8192)
    stored = memory.read(0, 8192)
    # Ciphertext, and equal plaintext at two addresses encrypts differently.
    assert stored[:4096] != page and stored[4096:] != page
    assert stored[:4096] != stored[4096:]
    assert fw.dbg_decrypt(handle, 0, 8192) == page + page


def test_no_session_means_zero_tek_tik(fw: SevFirmware, guests: Guests) -> None:
    handle = guests.launch(0)
    blob = fw.launch_measure(handle)
    status = fw.platform_status()
    assert verify_measurement(
        blob,
        bytes(16),
        status.api_major,
        status.api_minor,
        status.build,
        0,
        hashlib.sha256(b"").digest(),
    )


def test_session_is_ignored_without_dh_cert(fw: SevFirmware) -> None:
    # ASPFW: dh_cert_paddr == 0 skips the whole channel, session or not.
    handle = fw.launch_start(0, session=b"garbage")
    assert fw.guest_info(handle).state is GuestState.LUPDATE


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 127), flip=st.integers(1, 255))
def test_tampered_session_is_bad_measurement(fw: SevFirmware, index: int, flip: int) -> None:
    owner = Owner(policy=0x3)
    session = bytearray(owner.session(pdh_of(fw)))
    session[index] ^= flip
    with pytest.raises(SevError) as err:
        fw.launch_start(owner.policy, dh_cert=owner.godh, session=bytes(session))
    assert err.value.status is SevStatus.BAD_MEASUREMENT


def test_policy_mismatch_is_bad_measurement(fw: SevFirmware) -> None:
    owner = Owner(policy=0x1)
    with pytest.raises(SevError) as err:
        fw.launch_start(0x0, dh_cert=owner.godh, session=owner.session(pdh_of(fw)))
    assert err.value.status is SevStatus.BAD_MEASUREMENT


def test_session_for_another_pdh_is_bad_measurement(fw: SevFirmware) -> None:
    owner = Owner(policy=0)
    other = SevCert.new(
        Usage.PDH, Algo.ECDH_SHA256, ec.generate_private_key(ec.SECP384R1()).public_key()
    )
    with pytest.raises(SevError) as err:
        fw.launch_start(0, dh_cert=owner.godh, session=owner.session(other.to_bytes()))
    assert err.value.status is SevStatus.BAD_MEASUREMENT


# Policy bits 23:16 are the minimum API major, bits 31:24 the minimum API minor.
@pytest.mark.parametrize(
    ("policy", "accepted"),
    [
        (0x40, False),  # reserved bit 6
        (0x8000, False),  # reserved bit 15
        (0x00_02_0000, False),  # needs API 2.0 > Milan's 1.51
        (0x34_01_0000, False),  # needs API 1.52
        (0x33_01_0000, True),  # needs API 1.51: exactly Milan's
        (0x00_01_0003, True),
    ],
)
def test_policy_checks_with_session(fw: SevFirmware, policy: int, accepted: bool) -> None:
    owner = Owner(policy=policy)
    if accepted:
        assert _launch_with_session(fw, owner) >= 1
        return
    with pytest.raises(SevError) as err:
        _launch_with_session(fw, owner)
    assert err.value.status is SevStatus.POLICY_FAILURE


def test_policy_is_not_checked_without_session(fw: SevFirmware) -> None:
    # ASPFW runs sev_guest_verify_policy only when a DH certificate is supplied.
    assert fw.launch_start(0xFFC0) >= 1


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: setattr(c, "pubkey_usage", Usage.OCA),
        lambda c: setattr(c, "pubkey_algo", Algo.ECDSA_SHA256),
        lambda c: setattr(c, "public_key", ec.generate_private_key(ec.SECP256R1()).public_key()),
    ],
    ids=["usage", "algo", "curve"],
)
def test_bad_godh_is_invalid_certificate(fw: SevFirmware, mutate: object) -> None:
    owner = Owner(policy=0)
    cert = SevCert.from_bytes(owner.godh)
    mutate(cert)  # type: ignore[operator]
    with pytest.raises(SevError) as err:
        fw.launch_start(0, dh_cert=cert.to_bytes(), session=owner.session(pdh_of(fw)))
    assert err.value.status is SevStatus.INVALID_CERTIFICATE


def test_godh_not_on_curve_is_invalid_certificate(fw: SevFirmware) -> None:
    owner = Owner(policy=0)
    raw = bytearray(owner.godh)
    raw[0x14] ^= 1  # qx: almost certainly no longer a curve point
    with pytest.raises(SevError) as err:
        fw.launch_start(0, dh_cert=bytes(raw), session=owner.session(pdh_of(fw)))
    assert err.value.status is SevStatus.INVALID_CERTIFICATE


@pytest.mark.parametrize(("cert_len", "session_len"), [(2083, 128), (2084, 127), (2084, None)])
def test_launch_start_lengths(fw: SevFirmware, cert_len: int, session_len: int | None) -> None:
    owner = Owner(policy=0)
    session = None if session_len is None else owner.session(pdh_of(fw))[:session_len]
    with pytest.raises(SevError) as err:
        fw.launch_start(0, dh_cert=owner.godh[:cert_len], session=session)
    assert err.value.status is SevStatus.INVALID_LENGTH


def test_launch_measure_length_query(fw: SevFirmware, guests: Guests) -> None:
    handle = guests.launch(0)
    with pytest.raises(SevError) as err:
        fw.launch_measure(handle, length=0)
    assert err.value.status is SevStatus.INVALID_LENGTH
    assert err.value.required_length == 48
    assert fw.guest_info(handle).state is GuestState.LUPDATE
    assert len(fw.launch_measure(handle, length=48)) == 48


def _secret_guest(fw: SevFirmware, guests: Guests, owner: Owner) -> tuple[int, bytes]:
    memory = SparsePageStore(1 << 20)
    handle = _launch_with_session(fw, owner, memory=memory)
    fw.activate(handle, guests.asid())
    memory.write(0, b"firmware" * 512)
    fw.launch_update_data(handle, 0, 4096)
    measure, _ = split_measurement(fw.launch_measure(handle))
    return handle, measure


def test_launch_secret_round_trip(fw: SevFirmware, guests: Guests) -> None:
    owner = Owner(policy=0)
    handle, measure = _secret_guest(fw, guests, owner)
    secret = os.urandom(64)
    header, payload = encrypt_secret(owner.tek, owner.tik, b"\x07" * 16, secret, measure)
    fw.launch_secret(handle, header.to_bytes(), 0x8010, payload)
    memory = fw._guests[handle].memory
    stored = memory.read(0x8010, 64)
    assert stored != secret and secret not in memory.read(0x8000, 4096)
    assert fw.dbg_decrypt(handle, 0x8010, 64) == secret
    # Several secrets are allowed while in LSECRET.
    fw.launch_secret(handle, header.to_bytes(), 0x9000, payload)
    fw.launch_finish(handle)
    assert fw.dbg_decrypt(handle, 0x9000, 64) == secret
    with pytest.raises(SevError) as err:
        fw.launch_secret(handle, header.to_bytes(), 0xA000, payload)
    assert err.value.status is SevStatus.INVALID_GUEST_STATE


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 52 + 32 - 1), flip=st.integers(1, 255))
def test_tampered_secret_is_rejected(make_fw: object, index: int, flip: int) -> None:
    fw: SevFirmware = make_fw()  # type: ignore[operator]
    owner = Owner(policy=0)
    handle, measure = _secret_guest(fw, Guests(fw), owner)
    header, payload = encrypt_secret(owner.tek, owner.tik, b"\x01" * 16, bytes(32), measure)
    packet = bytearray(header.to_bytes() + payload)
    packet[index] ^= flip
    with pytest.raises(SevError) as err:
        fw.launch_secret(handle, bytes(packet[:52]), 0, bytes(packet[52:]))
    # Flipping bit 0 of the flags with a correct MAC is impossible; any tamper fails the MAC.
    assert err.value.status is SevStatus.BAD_MEASUREMENT


def test_compressed_secret_is_unsupported_after_mac(fw: SevFirmware, guests: Guests) -> None:
    owner = Owner(policy=0)
    handle, measure = _secret_guest(fw, guests, owner)
    header, payload = encrypt_secret(owner.tek, owner.tik, bytes(16), bytes(16), measure, flags=1)
    with pytest.raises(SevError) as err:
        fw.launch_secret(handle, header.to_bytes(), 0, payload)
    assert err.value.status is SevStatus.UNSUPPORTED


@pytest.mark.parametrize(
    ("hdr_len", "gpa", "payload_len", "guest_len", "status"),
    [
        (52, 8, 16, None, SevStatus.INVALID_ADDRESS),
        (51, 0, 16, None, SevStatus.INVALID_LENGTH),
        (52, 0, 24, None, SevStatus.INVALID_LENGTH),
        (52, 0, 0, None, SevStatus.INVALID_LENGTH),
        (52, 0, 0x5010, None, SevStatus.INVALID_LENGTH),
        (52, 0, 32, 16, SevStatus.INVALID_LENGTH),
    ],
)
def test_launch_secret_checks(
    fw: SevFirmware,
    guests: Guests,
    hdr_len: int,
    gpa: int,
    payload_len: int,
    guest_len: int | None,
    status: SevStatus,
) -> None:
    handle = guests.in_state(GuestState.LSECRET)
    with pytest.raises(SevError) as err:
        fw.launch_secret(handle, bytes(hdr_len), gpa, bytes(payload_len), guest_len)
    assert err.value.status is status


def test_launch_finish_destroys_channel(fw: SevFirmware, guests: Guests) -> None:
    owner = Owner(policy=0)
    handle, _ = _secret_guest(fw, guests, owner)
    fw.launch_finish(handle)
    guest = fw._guests[handle]
    assert guest.tek == bytes(16) and guest.tik == bytes(16) and guest.ld is None
    assert fw.guest_info(handle).active


def test_attestation_report_verifies_with_pek(fw: SevFirmware, guests: Guests) -> None:
    handle = guests.in_state(GuestState.LSECRET, policy=0x1)
    mnonce = os.urandom(16)
    raw = fw.attestation(handle, mnonce)
    assert len(raw) == 208
    report = AttestationReport.from_bytes(raw)
    _pdh, chain = fw.pdh_cert_export()
    pek = SevCert.from_bytes(chain[:2084])
    assert report.verify(pek.public_key)
    assert report.mnonce == mnonce and report.policy == 0x1
    assert report.launch_digest == fw.guest_info(handle).launch_digest
    assert (report.sig_usage, report.sig_algo) == (Usage.PEK, Algo.ECDSA_SHA256)
    tampered = bytearray(raw)
    tampered[0x20] ^= 1
    assert not AttestationReport.from_bytes(bytes(tampered)).verify(pek.public_key)


def test_attestation_length_query_and_naples(
    fw: SevFirmware, guests: Guests, make_fw: object
) -> None:
    handle = guests.in_state(GuestState.RUNNING)
    with pytest.raises(SevError) as err:
        fw.attestation(handle, bytes(16), length=100)
    assert err.value.status is SevStatus.INVALID_LENGTH and err.value.required_length == 208
    naples: SevFirmware = make_fw("naples")  # type: ignore[operator]
    h = Guests(naples).in_state(GuestState.RUNNING)
    with pytest.raises(SevError) as err:
        naples.attestation(h, bytes(16))
    assert err.value.status is SevStatus.INVALID_COMMAND


def test_update_vmsa_for_es_guest(make_fw: object) -> None:
    fw: SevFirmware = make_fw(es=True)  # type: ignore[operator]
    guests = Guests(fw)
    handle = guests.launch(0x5)
    fw._guests[handle].memory.write(0x1000, b"\x11" * 4096)
    with pytest.raises(SevError) as err:
        fw.launch_update_vmsa(handle, 0x1000, 4080)
    assert err.value.status is SevStatus.INVALID_LENGTH
    fw.launch_update_vmsa(handle, 0x1000)
    assert fw.guest_info(handle).es
    assert fw.guest_info(handle).asid < fw.profile.min_sev_asid


def test_es_policy_needs_config_es(fw: SevFirmware) -> None:
    with pytest.raises(SevError) as err:
        fw.launch_start(0x4)
    assert err.value.status is SevStatus.UNSUPPORTED


@pytest.mark.parametrize("policy", [-1, 1 << 32])
def test_policy_outside_u32_is_invalid_param(fw: SevFirmware, policy: int) -> None:
    owner = Owner(policy=0)
    for kwargs in ({}, {"dh_cert": owner.godh, "session": owner.session(pdh_of(fw))}):
        with pytest.raises(SevError) as err:
            fw.launch_start(policy, **kwargs)  # type: ignore[arg-type]
        assert err.value.status is SevStatus.INVALID_PARAM
