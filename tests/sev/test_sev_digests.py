"""Launch digests equal what `sev-snp-measure` (run as a program) computes.

`query-sev-launch-measure` returns `HMAC(TIK, 0x04 ‖ API ‖ build ‖ policy ‖ LD ‖ mnonce) ‖
mnonce`, so each case proves LD — SHA-256 over everything LAUNCH_UPDATE_DATA/VMSA measured —
by recomputing that MAC with the owner's TIK from sev-snp-measure's digest. The cases: the
built-in image with and without direct kernel boot (kernel-hashes on and off), Debian's
OVMF, the OvmfPkg/AmdSev fragment (a real kernel-hashes area, cross-checked with the fake
kernel/initrd/cmdline), and SEV-ES guests with 1 and 2 vCPUs (`--mode seves`, QEMU's
initial VMSAs for EPYC-Milan).
"""

from __future__ import annotations

from typing import Any

import pytest
from sev_support import (
    AMDSEV,
    BUILTIN,
    DEBIAN_OVMF,
    INITRD,
    KERNEL,
    Owner,
    Qmp,
    guest_name,
    qmp,
    snp_measure,
    unb64,
)

APPEND = "console=ttyS0 root=/dev/vda1 quiet"
FILES = {"builtin.fd": BUILTIN, "amdsev.fd": AMDSEV, "debian-ovmf.fd": DEBIAN_OVMF}
HASHES: dict[str, Any] = {"kernel-hashes": True}
BOOT = {"kernel": "vmlinuz", "initrd": "initrd", "append": APPEND}
MEASURE_BOOT = ("--kernel", KERNEL, "--initrd", INITRD, "--append", APPEND)

# (case, firmware file or None for the built-in, guest-add extras, sev-guest extras,
#  policy, sev-snp-measure arguments after --ovmf)
CASES: list[tuple[str, str | None, dict[str, Any], dict[str, Any], int, tuple[Any, ...]]] = [
    ("builtin", None, {}, {}, 0x1, ("--mode", "sev")),
    ("builtin-by-name", "builtin.fd", {}, {}, 0x1, ("--mode", "sev")),
    ("builtin-kernel-hashes", None, BOOT, {"kernel-hashes": True}, 0x1,
     ("--mode", "sev", *MEASURE_BOOT)),
    ("builtin-kernel-only", None, {"kernel": "vmlinuz"}, {"kernel-hashes": True}, 0x1,
     ("--mode", "sev", "--kernel", KERNEL)),
    # Without kernel-hashes QEMU measures the firmware alone, kernel or not.
    ("builtin-kernel-unmeasured", None, BOOT, {}, 0x1, ("--mode", "sev")),
    ("amdsev", "amdsev.fd", {}, {}, 0x3, ("--mode", "sev")),
    ("amdsev-kernel-hashes", "amdsev.fd", BOOT, {"kernel-hashes": True}, 0x3,
     ("--mode", "sev", *MEASURE_BOOT)),
    ("debian-ovmf", "debian-ovmf.fd", {}, {}, 0x1, ("--mode", "sev")),
    ("builtin-es-1", None, {"cpus": 1}, {}, 0x5,
     ("--mode", "seves", "--vcpus", "1", "--vcpu-type", "EPYC-Milan")),
    ("builtin-es-2", None, {"cpus": 2}, {}, 0x5,
     ("--mode", "seves", "--vcpus", "2", "--vcpu-type", "EPYC-Milan")),
    ("amdsev-es-2", "amdsev.fd", {"cpus": 2}, {}, 0x5,
     ("--mode", "seves", "--vcpus", "2", "--vcpu-type", "EPYC-Milan")),
    ("debian-ovmf-es-2", "debian-ovmf.fd", {"cpus": 2}, {}, 0x5,
     ("--mode", "seves", "--vcpus", "2", "--vcpu-type", "EPYC-Milan")),
    ("builtin-es-2-kernel-hashes", None, {"cpus": 2, **BOOT}, {"kernel-hashes": True}, 0x7,
     ("--mode", "seves", "--vcpus", "2", "--vcpu-type", "EPYC-Milan", *MEASURE_BOOT)),
]


@pytest.mark.parametrize(("case", "firmware", "extra", "props", "policy", "measure_args"),
                         CASES, ids=[c[0] for c in CASES])
async def test_launch_digest(control: Qmp, case: str, firmware: str | None,
                             extra: dict[str, Any], props: dict[str, Any], policy: int,
                             measure_args: tuple[Any, ...]) -> None:
    if firmware is not None and FILES[firmware] is None:
        pytest.skip("Debian's ovmf package is not installed")
    image = FILES[firmware] if firmware is not None else BUILTIN
    assert image is not None
    expected = snp_measure(*measure_args, "--ovmf", image)
    owner = await Owner.for_host(control, policy=policy)
    args: dict[str, Any] = {"name": guest_name("d"), **extra,
                            "sev-guest": owner.sev_guest(**props)}
    if firmware is not None:
        args["firmware"] = firmware
    info = await control.execute("guest-add", args)
    try:
        async with qmp(info["socket"]) as g:
            sev = await g.execute("query-sev")
            blob = unb64((await g.execute("query-sev-launch-measure"))["data"])
        owner.verify(blob, sev, expected)
    finally:
        await control.execute("guest-remove", {"name": args["name"]})


async def test_digest_differs_with_the_kernel(control: Qmp) -> None:
    """The check is not vacuous: another cmdline gives another digest, which fails."""
    from sevowner.measurement import MeasurementMismatch

    owner = await Owner.for_host(control, policy=0x1)
    name = guest_name("d")
    info = await control.execute("guest-add", {
        "name": name, **BOOT, "sev-guest": owner.sev_guest(**HASHES)})
    try:
        async with qmp(info["socket"]) as g:
            sev = await g.execute("query-sev")
            blob = unb64((await g.execute("query-sev-launch-measure"))["data"])
        other = snp_measure("--mode", "sev", "--ovmf", BUILTIN, "--kernel", KERNEL,
                            "--initrd", INITRD, "--append", APPEND + " single")
        with pytest.raises(MeasurementMismatch):
            owner.verify(blob, sev, other)
    finally:
        await control.execute("guest-remove", {"name": name})


async def test_es_digest_beyond_64_vcpus(control: Qmp) -> None:
    owner = await Owner.for_host(control, policy=0x5)
    name = guest_name("d")
    info = await control.execute("guest-add", {"name": name, "cpus": 65,
                                               "sev-guest": owner.sev_guest()})
    try:
        async with qmp(info["socket"]) as g:
            sev = await g.execute("query-sev")
            blob = unb64((await g.execute("query-sev-launch-measure"))["data"])
        owner.verify(blob, sev, snp_measure("--mode", "seves", "--vcpus", "65", "--vcpu-type",
                                            "EPYC-Milan", "--ovmf", BUILTIN))
    finally:
        await control.execute("guest-remove", {"name": name})
