"""sevd.formats.attestation: the 208-byte legacy attestation report (reference §9).

No published report exists (ECDSA is randomized, reference §14), so the report is checked
structurally, with keys generated here and with the real Rome PEK for the negative case.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sevd.formats.attestation import REPORT_LEN, SIGNED_LEN, AttestationReport
from sevd.formats.crypto import ecdsa_verify_le
from sevd.formats.sevcert import SevCert

Data = Callable[[str], bytes]


def test_layout_and_signature() -> None:
    pek = ec.generate_private_key(ec.SECP384R1())
    mnonce, ld = os.urandom(16), os.urandom(32)
    report = AttestationReport.create(pek, mnonce, ld, 0x5)
    raw = report.to_bytes()
    assert len(raw) == REPORT_LEN == 208 and SIGNED_LEN == 0x34
    assert raw[:16] == mnonce and raw[16:48] == ld
    assert struct.unpack_from("<IIII", raw, 0x30) == (0x5, 0x1002, 0x002, 0)
    # ECDSA-SHA256 over bytes [0x00, 0x34) with r, s LE72 and no padding after them.
    assert ecdsa_verify_le(pek.public_key(), raw[0x40:0x88], raw[0x88:0xD0], raw[:0x34])
    parsed = AttestationReport.from_bytes(raw)
    assert parsed == report and parsed.verify(pek.public_key())


def test_rejections(data: Data) -> None:
    pek = ec.generate_private_key(ec.SECP384R1())
    report = AttestationReport.create(pek, bytes(16), bytes(32), 1)
    real_pek = SevCert.from_bytes(data("virtee-sev/rome/pek.cert")).public_key
    assert not report.verify(real_pek)
    raw = bytearray(report.to_bytes())
    struct.pack_into("<I", raw, 0x34, 0x1001)  # sig_usage OCA: not what firmware writes
    assert not AttestationReport.from_bytes(bytes(raw)).verify(pek.public_key())
    with pytest.raises(ValueError, match="208 bytes"):
        AttestationReport.from_bytes(report.to_bytes()[:-1])
    with pytest.raises(ValueError, match="mnonce"):
        AttestationReport(bytes(15), bytes(32), 0)
