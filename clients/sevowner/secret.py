"""LAUNCH_SECRET packets as the guest owner builds them (virtee ``sevctl secret build``).

The plaintext is an OVMF secret table (GUID → bytes, padded to 16 bytes), encrypted with
AES-128-CTR under the TEK with a random (or given) IV; the 52-byte header carries flags 0,
the IV and ``HMAC(TIK, 0x01 ‖ flags ‖ IV ‖ len ‖ len ‖ ciphertext ‖ MEASURE)`` where MEASURE
is the first 32 bytes of the launch measurement (reference/sev-firmware.md §8.5, §15.6).
The result is what QEMU's ``sev-inject-launch-secret`` takes as ``packet-header`` and
``secret`` (base64).

Imports only ``sevd.formats`` and ``cryptography``; must not import daemon code. Never
prints or logs TEK/TIK.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sevd.formats.measure import DIGEST_LEN, MEASUREMENT_LEN
from sevd.formats.secret import build_secret_table, encrypt_secret

__all__ = ["MAX_SECRET_LEN", "LaunchSecret", "build_launch_secret"]

#: Linux/KVM copies at most SEV_FW_BLOB_MAX_SIZE (16 KiB) of secret (reference §8.5).
MAX_SECRET_LEN = 0x4000


@dataclass(frozen=True)
class LaunchSecret:
    """A packet ready for LAUNCH_SECRET: 52-byte header and ciphertext payload."""

    header: bytes
    payload: bytes

    @property
    def header_b64(self) -> str:
        return base64.b64encode(self.header).decode()

    @property
    def payload_b64(self) -> str:
        return base64.b64encode(self.payload).decode()

    def qmp_arguments(self, gpa: int | None = None) -> dict[str, Any]:
        """Arguments of QMP ``sev-inject-launch-secret``."""
        args: dict[str, Any] = {"packet-header": self.header_b64, "secret": self.payload_b64}
        if gpa is not None:
            args["gpa"] = gpa
        return args


def build_launch_secret(
    tek: bytes,
    tik: bytes,
    launch_measure: bytes,
    secrets: Mapping[uuid.UUID, bytes],
    *,
    iv: bytes | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> LaunchSecret:
    """Build the packet for ``secrets`` (in mapping order).

    ``launch_measure`` is the 48-byte blob from LAUNCH_MEASURE (only its first 32 bytes,
    the MEASURE, enter the MAC, as in sevctl) or the 32-byte MEASURE itself.
    """
    if len(launch_measure) == MEASUREMENT_LEN:
        measure = launch_measure[:DIGEST_LEN]
    elif len(launch_measure) == DIGEST_LEN:
        measure = launch_measure
    else:
        raise ValueError(
            f"launch measurement must be {MEASUREMENT_LEN} (or {DIGEST_LEN}) bytes, "
            f"got {len(launch_measure)}"
        )
    plaintext = build_secret_table(secrets)
    if len(plaintext) > MAX_SECRET_LEN:
        raise ValueError(
            f"the secret table is {len(plaintext)} bytes; KVM accepts at most {MAX_SECRET_LEN}"
        )
    packet_iv = rng(16) if iv is None else iv
    if len(packet_iv) != 16:
        raise ValueError(f"the IV must be 16 bytes, not {len(packet_iv)}")
    header, payload = encrypt_secret(tek, tik, packet_iv, plaintext, measure)
    return LaunchSecret(header.to_bytes(), payload)
