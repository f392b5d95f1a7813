"""sevowner.attestation: checking a legacy attestation report against the PEK."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from owner_sim import SimPlatform
from sevowner.attestation import AttestationError, verify_attestation_report

from sevd.formats.attestation import AttestationReport

Data = Callable[[str], bytes]


def test_valid_report(platform: SimPlatform) -> None:
    mnonce, ld = os.urandom(16), os.urandom(32)
    raw = AttestationReport.create(platform.pek_key, mnonce, ld, 0x5).to_bytes()
    report = verify_attestation_report(
        raw, platform.chain.pek, mnonce=mnonce, launch_digest=ld, policy=0x5
    )
    assert report.launch_digest == ld
    assert verify_attestation_report(raw, platform.chain.pek.to_bytes()).policy == 0x5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mnonce": bytes(16)}, "mnonce"),
        ({"launch_digest": bytes(32)}, "launch digest"),
        ({"policy": 0x1}, "policy"),
    ],
)
def test_expectations(platform: SimPlatform, kwargs: dict[str, object], message: str) -> None:
    raw = AttestationReport.create(platform.pek_key, os.urandom(16), os.urandom(32), 5).to_bytes()
    with pytest.raises(AttestationError, match=message):
        verify_attestation_report(raw, platform.chain.pek, **kwargs)  # type: ignore[arg-type]


def test_signature_and_shape(platform: SimPlatform, data: Data) -> None:
    raw = AttestationReport.create(platform.pek_key, bytes(16), bytes(32), 0).to_bytes()
    with pytest.raises(AttestationError, match="does not verify"):
        verify_attestation_report(raw, data("virtee-sev/rome/pek.cert"))
    with pytest.raises(AttestationError, match="not the PDH"):
        verify_attestation_report(raw, platform.chain.pdh)
    with pytest.raises(AttestationError, match="Unexpected report size"):
        verify_attestation_report(raw + b"\x00", platform.chain.pek)
    tampered = bytearray(raw)
    tampered[0x30] ^= 1  # policy
    with pytest.raises(AttestationError, match="does not verify"):
        verify_attestation_report(bytes(tampered), platform.chain.pek)
