"""sevowner.measurement: the owner's check of a 48-byte launch measurement."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import pytest
from sevowner.measurement import (
    MeasurementMismatch,
    build_measurement,
    expected_launch_digest,
    verify_launch_measurement,
)

from sevd.formats.measure import launch_measure_mac

Data = Callable[[str], bytes]
AMDSEV = "virtee-sev/measurement/ovmf_AmdSev_suffix.bin"


def test_virtee_verify_vector() -> None:
    # virtee/sev src/session/mod.rs `fn verify()`: API 0.18, build 15, policy 0.
    digest = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    blob = bytes.fromhex(
        "6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea"
        "4fbe0bedbad6c86ae8f68971d103e554"
    )
    tik = bytes.fromhex("66320db73158a35a255d051758e95ed4")
    measure = verify_launch_measurement(
        blob, tik, api_major=0, api_minor=0x12, build_id=0x0F, policy=0, digest=digest
    )
    assert measure == blob[:32]


def test_sevctl_kernel_vector(data: Data) -> None:
    # virtee/sevctl tests/measurementbuild.rs, "--firmware + --kernel everything".
    digest = expected_launch_digest(
        data("virtee-sevctl/OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9"),
        data("virtee-sevctl/measurement/vmlinuz-fake"),
        data("virtee-sevctl/measurement/initrd-fake"),
        "foo bar baz fake kernel=cmdline",
    )
    blob = build_measurement(
        data("virtee-sevctl/measurement/tik1.bin"),
        1,
        40,
        40,
        3,
        digest,
        base64.b64decode("wxP6tRHCFrFQWxsuqZA8QA=="),
    )
    assert base64.b64encode(blob).decode() == (
        "h3auYbWQnVW7EGLWN4Hf9SN0oEYMPU2sK4bLnefWPwvDE/q1EcIWsVBbGy6pkDxA"
    )


def test_mismatch_is_reported(data: Data) -> None:
    tik, mnonce = os.urandom(16), os.urandom(16)
    fw = data(AMDSEV)
    launched = expected_launch_digest(fw, b"kernel-A", None, "root=/dev/vda")
    # What the firmware returns for the guest that was actually launched (reference §8.4).
    blob = launch_measure_mac(tik, 1, 51, 3, 0x1, launched, mnonce) + mnonce
    expected = expected_launch_digest(fw, b"kernel-A", None, "root=/dev/vda")
    verify_launch_measurement(
        blob, tik, api_major=1, api_minor=51, build_id=3, policy=0x1, digest=expected
    )
    other = expected_launch_digest(fw, b"kernel-B", None, "root=/dev/vda")
    with pytest.raises(MeasurementMismatch, match="launch measurement mismatch"):
        verify_launch_measurement(
            blob, tik, api_major=1, api_minor=51, build_id=3, policy=0x1, digest=other
        )
    with pytest.raises(MeasurementMismatch):
        verify_launch_measurement(
            blob,
            os.urandom(16),
            api_major=1,
            api_minor=51,
            build_id=3,
            policy=0x1,
            digest=expected,
        )
    with pytest.raises(ValueError, match="48 bytes"):
        verify_launch_measurement(
            blob[:32], tik, api_major=1, api_minor=51, build_id=3, policy=0x1, digest=expected
        )


def test_mismatch_message_does_not_leak_tik() -> None:
    tik = os.urandom(16)
    with pytest.raises(MeasurementMismatch) as info:
        verify_launch_measurement(
            bytes(48), tik, api_major=1, api_minor=0, build_id=0, policy=0, digest=bytes(32)
        )
    assert tik.hex() not in str(info.value)
