"""sevd.formats.measure: the LAUNCH_MEASURE MAC against virtee's and sevctl's vectors."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from sevd.formats.measure import (
    MEASUREMENT_LEN,
    join_measurement,
    launch_measure_mac,
    split_measurement,
    verify_measurement,
)
from sevd.formats.ovmf import launch_digest

Data = Callable[[str], bytes]
SEVCTL_FIRMWARE = "virtee-sevctl/OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9"


def test_virtee_session_verify_vector() -> None:
    # virtee/sev src/session/mod.rs `mod initialized { fn verify() }`: API 0.18 build 15,
    # policy 0, digest = SHA-256(""), TIK 66320db7...
    digest = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    measure = bytes.fromhex("6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea")
    mnonce = bytes.fromhex("4fbe0bedbad6c86ae8f68971d103e554")
    tik = bytes.fromhex("66320db73158a35a255d051758e95ed4")
    assert launch_measure_mac(tik, 0x00, 0x12, 0x0F, 0, digest, mnonce) == measure
    assert verify_measurement(measure + mnonce, tik, 0, 0x12, 0x0F, 0, digest)
    assert not verify_measurement(measure + mnonce, tik, 0, 0x12, 0x0F, 1, digest)
    assert not verify_measurement(measure + mnonce, tik, 0, 0x13, 0x0F, 0, digest)


# virtee/sevctl tests/measurementbuild.rs `measurement_build()` (stdargs: --api-major 0x01
# --api-minor 40 --build-id 40 --policy 0x03 --tik tests/data/measurement/tik1.bin
# --nonce wxP6tRHCFrFQWxsuqZA8QA==).
SEVCTL_NONCE = base64.b64decode("wxP6tRHCFrFQWxsuqZA8QA==")


def _sevctl_blob(
    data: Data,
    digest: bytes,
    major: int = 1,
    minor: int = 40,
    build: int = 40,
    policy: int = 3,
    nonce: bytes = SEVCTL_NONCE,
) -> str:
    tik = data("virtee-sevctl/measurement/tik1.bin")
    mac = launch_measure_mac(tik, major, minor, build, policy, digest, nonce)
    return base64.b64encode(join_measurement(mac, nonce)).decode()


def test_sevctl_launch_digest_vector(data: Data) -> None:
    digest = base64.b64decode("xkvRAfyaSizgonxAjZIAkR8TmolUabBKQKb6KJCDDSM=")
    assert _sevctl_blob(data, digest) == (
        "lswbxWxI9gckya16JQvdFtpYmNO4b+3inAPpqsgoBI7DE/q1EcIWsVBbGy6pkDxA"
    )


def test_sevctl_firmware_vector(data: Data) -> None:
    digest = launch_digest(data(SEVCTL_FIRMWARE))
    assert _sevctl_blob(data, digest) == (
        "oMDewIouJSpbpNRHj7Mk3p08H2dPZQdsZMU14qIymBnDE/q1EcIWsVBbGy6pkDxA"
    )


def test_sevctl_kernel_vector(data: Data) -> None:
    digest = launch_digest(
        data(SEVCTL_FIRMWARE),
        kernel=data("virtee-sevctl/measurement/vmlinuz-fake"),
        initrd=data("virtee-sevctl/measurement/initrd-fake"),
        append="foo bar baz fake kernel=cmdline",
    )
    assert _sevctl_blob(data, digest) == (
        "h3auYbWQnVW7EGLWN4Hf9SN0oEYMPU2sK4bLnefWPwvDE/q1EcIWsVBbGy6pkDxA"
    )


def test_sevctl_seves_vmsa_vector(data: Data) -> None:
    # Same test, "Test SEV-ES VMSA bits": --policy 0x05 --num-cpus 4 --vmsa-cpu0 vmsa0.bin
    # --vmsa-cpu1 vmsa1.bin --api-major 1 --api-minor 49 --build-id 6, nonce taken from the
    # expected blob itself (--launch-measure-blob).
    expected = "/o0nzDKE5XgtVnUZWPhUea/WZYrTKLExR7KCwuMdbActvpWfXTFk21KMZIAAhQny"
    _, nonce = split_measurement(base64.b64decode(expected))
    vmsa0, vmsa1 = data("virtee-sevctl/vmsa0.bin"), data("virtee-sevctl/vmsa1.bin")
    digest = launch_digest(data(SEVCTL_FIRMWARE), vmsas=[vmsa0, vmsa1, vmsa1, vmsa1])
    assert _sevctl_blob(data, digest, 1, 49, 6, 5, nonce) == expected


def test_split_and_join() -> None:
    blob = bytes(range(48))
    mac, nonce = split_measurement(blob)
    assert (mac, nonce) == (blob[:32], blob[32:])
    assert join_measurement(mac, nonce) == blob
    assert MEASUREMENT_LEN == 48
    with pytest.raises(ValueError, match="48 bytes"):
        split_measurement(blob[:47])


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="one byte"):
        launch_measure_mac(bytes(16), 256, 0, 0, 0, bytes(32), bytes(16))
    with pytest.raises(ValueError, match="digest"):
        launch_measure_mac(bytes(16), 0, 0, 0, 0, bytes(48), bytes(16))
    with pytest.raises(ValueError, match="mnonce"):
        launch_measure_mac(bytes(16), 0, 0, 0, 0, bytes(32), bytes(8))
