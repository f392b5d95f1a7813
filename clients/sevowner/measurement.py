"""The guest owner's check of a launch measurement.

QEMU's ``query-sev-launch-measure`` (and sevd's) returns base64 of 48 bytes,
``MEASURE ‖ MNONCE``. The owner recomputes ``MEASURE`` with the TIK from the expected launch
digest — built from the firmware image (and kernel/initrd/cmdline, VMSAs) exactly as QEMU
measures it, or given directly — and the platform's API version, build and the guest policy
from ``query-sev`` (reference/sev-firmware.md §8.4, §12, §15.5). A match proves the
firmware measured what the owner expected, under the owner's TIK; only then is a secret sent.

Imports only ``sevd.formats`` and ``cryptography``; must not import daemon code. Never
prints or logs the TIK.
"""

from __future__ import annotations

from collections.abc import Sequence

from sevd.formats.measure import (
    join_measurement,
    launch_measure_mac,
    split_measurement,
    verify_measurement,
)
from sevd.formats.ovmf import launch_digest

__all__ = [
    "MeasurementMismatch",
    "build_measurement",
    "expected_launch_digest",
    "verify_launch_measurement",
]


class MeasurementMismatch(ValueError):
    """The launch measurement is not the one the owner expects."""


def expected_launch_digest(
    firmware: bytes,
    kernel: bytes | None = None,
    initrd: bytes | None = None,
    cmdline: str | None = None,
    vmsas: Sequence[bytes] = (),
) -> bytes:
    """The SHA-256 launch digest of a guest booted from ``firmware`` (see
    :func:`sevd.formats.ovmf.launch_digest`)."""
    return launch_digest(firmware, kernel, initrd, cmdline, vmsas)


def build_measurement(
    tik: bytes,
    api_major: int,
    api_minor: int,
    build_id: int,
    policy: int,
    digest: bytes,
    mnonce: bytes,
) -> bytes:
    """The 48-byte blob firmware would return for ``digest`` and ``mnonce``
    (what virtee's ``sevctl measurement build`` prints, base64-encoded)."""
    mac = launch_measure_mac(tik, api_major, api_minor, build_id, policy, digest, mnonce)
    return join_measurement(mac, mnonce)


def verify_launch_measurement(
    blob: bytes,
    tik: bytes,
    *,
    api_major: int,
    api_minor: int,
    build_id: int,
    policy: int,
    digest: bytes,
) -> bytes:
    """Check a 48-byte launch measurement; return its 32-byte MEASURE (which the
    LAUNCH_SECRET MAC needs) or raise :class:`MeasurementMismatch`."""
    if not verify_measurement(blob, tik, api_major, api_minor, build_id, policy, digest):
        raise MeasurementMismatch(
            "launch measurement mismatch: the guest was not launched with the expected "
            f"firmware/kernel (digest {digest.hex()}), API {api_major}.{api_minor} build "
            f"{build_id}, policy 0x{policy:x} and this session's TIK"
        )
    return split_measurement(blob)[0]
