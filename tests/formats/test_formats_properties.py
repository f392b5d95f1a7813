"""Property tests: every encoding round-trips, and any tampered byte is rejected.

Covers the session blob (wrap_mac / policy_mac), the LAUNCH_SECRET header and ciphertext,
the measurement and the attestation report.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sevd.formats.attestation import REPORT_LEN, AttestationReport
from sevd.formats.measure import MEASUREMENT_LEN, launch_measure_mac, verify_measurement
from sevd.formats.secret import SECRET_HEADER_LEN, SecretHeader, encrypt_secret, open_secret
from sevd.formats.session import SESSION_LEN, SessionBlob, build_session, open_session

key16 = st.binary(min_size=16, max_size=16)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# One fixed key pair for the report properties (EC key generation per example is slow).
_PEK = ec.generate_private_key(ec.SECP384R1())


def _flip(data: bytes, index: int, mask: int) -> bytes:
    buf = bytearray(data)
    buf[index % len(buf)] ^= mask
    return bytes(buf)


@SETTINGS
@given(
    z=st.binary(min_size=48, max_size=48),
    nonce=key16,
    iv=key16,
    tek=key16,
    tik=key16,
    policy=st.integers(0, 0xFFFF_FFFF),
    index=st.integers(0, SESSION_LEN - 1),
    mask=st.integers(1, 255),
)
def test_session_blob_tampering_is_rejected(
    z: bytes, nonce: bytes, iv: bytes, tek: bytes, tik: bytes, policy: int, index: int, mask: int
) -> None:
    blob = build_session(z, nonce, iv, tek, tik, policy)
    raw = blob.to_bytes()
    assert SessionBlob.from_bytes(raw) == blob
    assert open_session(z, blob, policy) == (tek, tik)
    tampered = SessionBlob.from_bytes(_flip(raw, index, mask))
    try:
        keys = open_session(z, tampered, policy)
    except ValueError as exc:
        assert str(exc) in ("wrap_mac", "policy_mac")
    else:  # pragma: no cover - would be a MAC forgery
        raise AssertionError(f"tampered session blob accepted: {keys!r}")


@SETTINGS
@given(
    tek=key16,
    tik=key16,
    iv=key16,
    plaintext=st.binary(min_size=16, max_size=256).map(lambda b: b + bytes(-len(b) % 16)),
    measure=st.binary(min_size=32, max_size=32),
    index=st.integers(0, 10_000),
    mask=st.integers(1, 255),
)
def test_secret_tampering_is_rejected(
    tek: bytes,
    tik: bytes,
    iv: bytes,
    plaintext: bytes,
    measure: bytes,
    index: int,
    mask: int,
) -> None:
    header, ct = encrypt_secret(tek, tik, iv, plaintext, measure)
    raw_header = header.to_bytes()
    assert len(raw_header) == SECRET_HEADER_LEN
    assert SecretHeader.from_bytes(raw_header) == header
    assert open_secret(tek, tik, header, ct, measure) == plaintext
    # Tamper with one byte of header ‖ ciphertext ‖ measure.
    whole = raw_header + ct + measure
    bad = _flip(whole, index, mask)
    bad_header = SecretHeader.from_bytes(bad[:SECRET_HEADER_LEN])
    bad_ct = bad[SECRET_HEADER_LEN : SECRET_HEADER_LEN + len(ct)]
    bad_measure = bad[SECRET_HEADER_LEN + len(ct) :]
    try:
        open_secret(tek, tik, bad_header, bad_ct, bad_measure)
    except ValueError as exc:
        assert str(exc) == "mac"
    else:  # pragma: no cover
        raise AssertionError("tampered secret accepted")


@SETTINGS
@given(
    tik=key16,
    major=st.integers(0, 255),
    minor=st.integers(0, 255),
    build=st.integers(0, 255),
    policy=st.integers(0, 0xFFFF_FFFF),
    digest=st.binary(min_size=32, max_size=32),
    mnonce=key16,
    index=st.integers(0, MEASUREMENT_LEN - 1),
    mask=st.integers(1, 255),
)
def test_measurement_tampering_is_rejected(
    tik: bytes,
    major: int,
    minor: int,
    build: int,
    policy: int,
    digest: bytes,
    mnonce: bytes,
    index: int,
    mask: int,
) -> None:
    blob = launch_measure_mac(tik, major, minor, build, policy, digest, mnonce) + mnonce
    assert verify_measurement(blob, tik, major, minor, build, policy, digest)
    assert not verify_measurement(
        _flip(blob, index, mask), tik, major, minor, build, policy, digest
    )
    # A different digest or policy does not verify either.
    assert not verify_measurement(
        blob, tik, major, minor, build, policy, _flip(digest, index, mask)
    )
    assert not verify_measurement(
        blob, tik, major, minor, build, policy ^ (1 << (index % 32)), digest
    )


@SETTINGS
@given(
    mnonce=key16,
    digest=st.binary(min_size=32, max_size=32),
    policy=st.integers(0, 0xFFFF_FFFF),
    index=st.integers(0, REPORT_LEN - 1),
    mask=st.integers(1, 255),
)
def test_report_tampering_is_rejected(
    mnonce: bytes, digest: bytes, policy: int, index: int, mask: int
) -> None:
    report = AttestationReport.create(_PEK, mnonce, digest, policy)
    raw = report.to_bytes()
    assert AttestationReport.from_bytes(raw) == report
    assert report.verify(_PEK.public_key())
    assert not AttestationReport.from_bytes(_flip(raw, index, mask)).verify(_PEK.public_key())


def test_random_report_bytes_parse_but_do_not_verify() -> None:
    raw = os.urandom(REPORT_LEN)
    assert not AttestationReport.from_bytes(raw).verify(_PEK.public_key())


def test_every_report_byte_is_covered() -> None:
    # Exhaustive over positions: signed bytes break the ECDSA check, the usage/algo/reserved
    # words are checked, and r/s (including their zero high bytes) break the signature.
    raw = AttestationReport.create(_PEK, os.urandom(16), os.urandom(32), 1).to_bytes()
    for index in range(REPORT_LEN):
        for mask in (0x01, 0x80):
            assert not AttestationReport.from_bytes(_flip(raw, index, mask)).verify(
                _PEK.public_key()
            ), (index, mask)


def test_every_session_byte_is_covered() -> None:
    z, policy = os.urandom(48), 0x3
    nonce, iv, tek, tik = (os.urandom(16) for _ in range(4))
    raw = build_session(z, nonce, iv, tek, tik, policy).to_bytes()
    for index in range(SESSION_LEN):
        try:
            open_session(z, SessionBlob.from_bytes(_flip(raw, index, 0x01)), policy)
        except ValueError:
            continue
        raise AssertionError(f"flipping byte {index} was not detected")
