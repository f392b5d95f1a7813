"""Negative paths of the SEV surface, each with QEMU's exact text (reference/qmp.md §4).

Proves that the owner detects a wrong measurement; that every way `sev-inject-launch-secret`
can fail gives QEMU's text in QEMU's check order and leaves the guest able to take a good
packet; that `guest-add` refuses what QEMU's `sev_common_kvm_init()` refuses (cbitpos,
reduced-phys-bits, SEV-ES without host support, a tampered session, files outside the
allowed folders, kernel hashes without a hashes table) and leaves nothing behind — no
socket, no guest, no ASID, the platform's guest count unchanged; and the attestation and
measurement queries' errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sev_support import (
    BUILTIN,
    KUBEVIRT_GUID,
    DaemonProc,
    Owner,
    Qmp,
    b64,
    error_of,
    guest_name,
    qmp,
    snp_measure,
    unb64,
)
from sevowner.measurement import MeasurementMismatch
from sevowner.secret import LaunchSecret

from sevd.formats.ovmf import sev_secret_area

SECRET_AREA = (sev_secret_area(BUILTIN.read_bytes()) or (0, 0))[0]
ROM_BASE = (1 << 32) - BUILTIN.stat().st_size
FW_ERR = "SEV: failed to inject secret ret=-5 fw_error="
GPA_ERR = "SEV: Failed to calculate guest address: "


@dataclass
class Paused:
    """A guest stopped after LAUNCH_MEASURE, with the owner's session and a good packet."""

    name: str
    socket: str
    owner: Owner
    measurement: bytes
    packet: LaunchSecret

    def args(self, header: bytes | None = None, payload: bytes | None = None,
             **extra: Any) -> dict[str, Any]:
        return {"packet-header": b64(self.packet.header if header is None else header),
                "secret": b64(self.packet.payload if payload is None else payload), **extra}


@pytest.fixture
async def paused(control: Qmp) -> Any:
    owner = await Owner.for_host(control, policy=0x1)
    name = guest_name("neg")
    info = await control.execute("guest-add", {"name": name, "sev-guest": owner.sev_guest()})
    async with qmp(info["socket"]) as g:
        blob = unb64((await g.execute("query-sev-launch-measure"))["data"])
    packet = owner.secret(blob, {KUBEVIRT_GUID: b"secret\x00"})
    yield Paused(name, info["socket"], owner, blob, packet)
    await control.execute("guest-remove", {"name": name})


def flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]


async def test_owner_detects_a_wrong_measurement(paused: Paused) -> None:
    """The owner expects another firmware (Debian's OVMF digest): the check fails."""
    async with qmp(paused.socket) as g:
        sev = await g.execute("query-sev")
    other = snp_measure("--mode", "sev", "--ovmf", Path(__file__))  # any other image
    with pytest.raises(MeasurementMismatch):
        paused.owner.verify(paused.measurement, sev, other)
    with pytest.raises(MeasurementMismatch):  # right digest, wrong policy
        paused.owner.verify(paused.measurement, {**sev, "policy": 3},
                            snp_measure("--mode", "sev", "--ovmf", BUILTIN))


# (case, arguments from the paused guest, QEMU's error text)
INJECT_ERRORS: list[tuple[str, Any, str]] = [
    ("header-mac-tampered", lambda p: p.args(header=flip(p.packet.header, 51)),
     FW_ERR + "11 'Bad measurement'"),
    ("header-iv-tampered", lambda p: p.args(header=flip(p.packet.header, 4)),
     FW_ERR + "11 'Bad measurement'"),
    ("payload-tampered", lambda p: p.args(payload=flip(p.packet.payload, 0)),
     FW_ERR + "11 'Bad measurement'"),
    ("packet-for-another-launch",
     lambda p: p.args(header=p.owner.secret(os.urandom(48), {KUBEVIRT_GUID: b"x"}).header),
     FW_ERR + "11 'Bad measurement'"),
    ("header-empty", lambda p: {**p.args(), "packet-header": ""},
     "SEV: Failed to decode sequence header"),
    # GLib's decoder skips invalid characters: "!!!!" is zero bytes, not an error.
    ("header-not-base64", lambda p: {**p.args(), "packet-header": "!!!!"},
     "SEV: Failed to decode sequence header"),
    ("secret-empty", lambda p: {**p.args(), "secret": ""}, "SEV: Failed to decode data"),
    ("header-short", lambda p: p.args(header=p.packet.header[:51]),
     FW_ERR + "4 'Buffer too small'"),
    ("secret-not-16-aligned", lambda p: p.args(payload=p.packet.payload[:-1]),
     FW_ERR + "4 'Buffer too small'"),
    ("gpa-unaligned", lambda p: p.args(gpa=SECRET_AREA + 8), FW_ERR + "9 'Invalid address'"),
    ("gpa-unmapped", lambda p: p.args(gpa=0x4000_0000),
     GPA_ERR + "No memory is mapped at address 0x40000000"),
    ("gpa-crosses-end-of-ram", lambda p: p.args(gpa=0x1000_0000 - 16),
     GPA_ERR + "Size of memory region at 0xffffff0 exceeded."),
    ("gpa-crosses-end-of-rom", lambda p: p.args(gpa=(1 << 32) - 16),
     GPA_ERR + "Size of memory region at 0xfffffff0 exceeded."),
]


@pytest.mark.parametrize(("case", "make", "text"), INJECT_ERRORS,
                         ids=[c[0] for c in INJECT_ERRORS])
async def test_inject_errors(paused: Paused, case: str, make: Any, text: str) -> None:
    async with qmp(paused.socket) as g:
        assert await error_of(g, "sev-inject-launch-secret", make(paused)) == text
        # Nothing changed: still waiting for a secret, and a good packet goes in.
        assert (await g.execute("query-sev"))["state"] == "launch-secret"
        assert await g.execute("sev-inject-launch-secret", paused.args()) == {}


async def test_inject_into_rom_is_accepted_as_qemu_does(paused: Paused) -> None:
    """QEMU's gpa2hva() accepts ROM and ROMD (pflash) regions: the firmware writes there."""
    async with qmp(paused.socket) as g:
        assert await g.execute("sev-inject-launch-secret", paused.args(gpa=ROM_BASE)) == {}


async def test_inject_after_cont(paused: Paused) -> None:
    async with qmp(paused.socket) as g:
        await g.execute("cont")
        assert await error_of(g, "sev-inject-launch-secret", paused.args()) == (
            "SEV: Not in correct state. (LSECRET) 3")
        # QEMU checks the state before decoding anything.
        assert await error_of(g, "sev-inject-launch-secret", {
            "packet-header": "", "secret": ""}) == "SEV: Not in correct state. (LSECRET) 3"


async def test_inject_without_gpa_needs_a_secret_area(milan: DaemonProc,
                                                      control: Qmp) -> None:
    owner = await Owner.for_host(control, policy=0x1)
    name = guest_name("nosa")
    info = await control.execute("guest-add", {
        "name": name, "firmware": "plain.fd", "sev-guest": owner.sev_guest()})
    try:
        async with qmp(info["socket"]) as g:
            blob = unb64((await g.execute("query-sev-launch-measure"))["data"])
            packet = owner.secret(blob, {KUBEVIRT_GUID: b"s"})
            assert await error_of(g, "sev-inject-launch-secret", packet.qmp_arguments()) == (
                "SEV: no secret area found in OVMF, gpa must be specified.")
            assert await g.execute("sev-inject-launch-secret",
                                   packet.qmp_arguments(gpa=0x80_0000)) == {}
    finally:
        await control.execute("guest-remove", {"name": name})


async def test_non_sev_guest_errors(control: Qmp) -> None:
    name = guest_name("nosev")
    info = await control.execute("guest-add", {"name": name})
    try:
        async with qmp(info["socket"]) as g:
            for cmd, args, text in [
                ("query-sev-launch-measure", None, "SEV launch measurement is not available"),
                ("sev-inject-launch-secret", {"packet-header": "AAAA", "secret": "AAAA"},
                 "SEV not enabled for guest"),
                ("query-sev-attestation-report", {"mnonce": b64(bytes(16))},
                 "SEV is not enabled"),
            ]:
                assert await error_of(g, cmd, args) == text
    finally:
        await control.execute("guest-remove", {"name": name})


@pytest.mark.parametrize(("mnonce", "text"), [
    (b64(bytes(15)), "SEV: mnonce must be 16 bytes (got 15)"),
    (b64(bytes(17)), "SEV: mnonce must be 16 bytes (got 17)"),
    ("", "SEV: mnonce must be 16 bytes (got 0)"),
])
async def test_attestation_mnonce_length(paused: Paused, mnonce: str, text: str) -> None:
    async with qmp(paused.socket) as g:
        assert await error_of(g, "query-sev-attestation-report", {"mnonce": mnonce}) == text


# -- guest-add refusals: QEMU's init texts, and nothing left behind ---------------------------

async def snapshot(control: Qmp) -> tuple[Any, ...]:
    plat = await control.execute("query-sev-platform")
    guests = await control.execute("query-guests")
    return (plat["guest-count"], plat["asids"], sorted(g["name"] for g in guests))


def _props(owner: Owner, **change: Any) -> dict[str, Any]:
    props = owner.sev_guest()
    for key, value in change.items():
        key = key.replace("_", "-")
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    return props


# (case, guest-add arguments besides name, error text); `owner` is a policy-1 session.
ADD_ERRORS: list[tuple[str, Any, str]] = [
    ("cbitpos-wrong", lambda o: {"sev-guest": _props(o, cbitpos=47)},
     "sev_common_kvm_init: cbitpos check failed, host '51' requested '47'"),
    ("cbitpos-missing", lambda o: {"sev-guest": _props(o, cbitpos=None)},
     "sev_common_kvm_init: cbitpos check failed, host '51' requested '0'"),
    ("reduced-phys-bits-0", lambda o: {"sev-guest": _props(o, reduced_phys_bits=0)},
     "sev_common_kvm_init: reduced_phys_bits check failed, it should be in the range of 1 "
     "to 63, requested '0'"),
    ("reduced-phys-bits-64", lambda o: {"sev-guest": _props(o, reduced_phys_bits=64)},
     "sev_common_kvm_init: reduced_phys_bits check failed, it should be in the range of 1 "
     "to 63, requested '64'"),
    ("session-tampered", lambda o: {"sev-guest": _props(
        o, session=b64(flip(o.session.session, 100)))},
     "sev_common_kvm_init: failed to create encryption context (sev_launch_start: "
     "LAUNCH_START ret=-5 fw_error=11 'Bad measurement')"),
    ("session-for-another-policy", lambda o: {"sev-guest": _props(o, policy=3)},
     "sev_common_kvm_init: failed to create encryption context (sev_launch_start: "
     "LAUNCH_START ret=-5 fw_error=11 'Bad measurement')"),
    ("session-short", lambda o: {"sev-guest": _props(o, session=b64(o.session.session[:127]))},
     "sev_common_kvm_init: failed to create encryption context (sev_launch_start: "
     "LAUNCH_START ret=-5 fw_error=4 'Buffer too small')"),
    ("handle-unknown", lambda o: {"sev-guest": _props(o, handle=777)},
     "sev_common_kvm_init: failed to create encryption context (sev_launch_start: "
     "LAUNCH_START ret=-5 fw_error=16 'Guest handle is invalid')"),
    ("dh-cert-file-outside", lambda o: {"sev-guest": _props(
        o, dh_cert=None, session=None, dh_cert_file="/etc/passwd",
        session_file="/etc/passwd")},
     "File '/etc/passwd' is outside the allowed directories ({fw})"),
    ("session-file-dotdot", lambda o: {"sev-guest": _props(
        o, dh_cert=None, session=None, dh_cert_file="../state/x", session_file="x")},
     "File name '../state/x' must not contain '..'"),
    ("firmware-outside", lambda o: {"firmware": "/usr/share/ovmf/OVMF.fd"},
     "File '/usr/share/ovmf/OVMF.fd' is outside the allowed directories ({fw})"),
    ("kernel-missing", lambda o: {"kernel": "no-such-kernel", "sev-guest": _props(o)},
     "Could not open 'no-such-kernel': No such file or directory in the allowed "
     "directories ({fw})"),
    ("append-without-kernel", lambda o: {"append": "quiet", "initrd": "initrd"},
     "-append only allowed with -kernel option"),
    ("initrd-without-kernel", lambda o: {"initrd": "initrd"},
     "-initrd only allowed with -kernel option"),
    ("hashes-without-guid", lambda o: {
        "firmware": "plain.fd", "kernel": "vmlinuz",
        "sev-guest": _props(o, kernel_hashes=True)},
     "SEV: kernel specified but guest firmware has no hashes table GUID"),
]
if os.path.exists("/usr/share/ovmf/OVMF.fd") or os.path.exists("/usr/share/OVMF/OVMF_CODE.fd"):
    ADD_ERRORS.append(
        ("hashes-area-zero", lambda o: {
            "firmware": "debian-ovmf.fd", "kernel": "vmlinuz",
            "sev-guest": _props(o, kernel_hashes=True)},
         "SEV: guest firmware hashes table area is invalid (base=0x0 size=0x0)"))


@pytest.mark.parametrize(("case", "make", "text"), ADD_ERRORS, ids=[c[0] for c in ADD_ERRORS])
async def test_guest_add_refusals_leave_nothing(milan: DaemonProc, control: Qmp,
                                               case: str, make: Any, text: str) -> None:
    owner = await Owner.for_host(control, policy=0x1)
    before = await snapshot(control)
    name = guest_name("bad")
    with control.listener() as listener:
        got = await error_of(control, "guest-add", {"name": name, **make(owner)})
        events: list[Any] = []
        while not listener.empty():
            events.append(await listener.get())
    # No SEVD_GUEST_ADDED; a launch torn down after LAUNCH_START reports its way back.
    assert [e["event"] for e in events if e["event"] != "SEVD_SEV_STATE_CHANGE"] == []
    states = [e["data"]["state"] for e in events]
    assert states in ([], ["launch-update", "uninit"]), states
    assert got == text.format(fw=milan.base / "fw")
    assert await snapshot(control) == before
    assert not os.path.exists(milan.guest_socket(name))
    # The name is free again, and so is everything else: the same guest can be added.
    info = await control.execute("guest-add", {"name": name, "sev-guest": owner.sev_guest()})
    await control.execute("guest-remove", {"name": name})
    assert info["sev"]["state"] == "launch-secret"


async def test_es_refused_on_naples(naples: DaemonProc) -> None:
    async with qmp(naples.control) as control:
        owner = await Owner.for_host(control, policy=0x5, profile="naples")
        before = await snapshot(control)
        assert await error_of(control, "guest-add", {
            "name": guest_name(), "sev-guest": owner.sev_guest(cbitpos=47)}) == (
            "sev_common_kvm_init: guest policy requires SEV-ES, but host SEV-ES support "
            "unavailable")
        assert await error_of(control, "guest-add", {
            "name": guest_name(), "sev-guest": owner.sev_guest(cbitpos=51)}) == (
            "sev_common_kvm_init: cbitpos check failed, host '47' requested '51'")
        assert await snapshot(control) == before


async def test_attestation_needs_api_0_23(naples: DaemonProc) -> None:
    """Naples (API 0.17) has no ATTESTATION: QEMU's length query fails first."""
    async with qmp(naples.control) as control:
        owner = await Owner.for_host(control, policy=0x1, profile="naples")
        name = guest_name()
        info = await control.execute("guest-add", {
            "name": name, "sev-guest": owner.sev_guest(cbitpos=47)})
        try:
            async with qmp(info["socket"]) as g:
                assert await error_of(g, "query-sev-attestation-report", {
                    "mnonce": b64(bytes(16))}) == (
                    "SEV: Failed to query the attestation report length ret=-5 fw_err=17 "
                    "(Invalid command)")
        finally:
            await control.execute("guest-remove", {"name": name})
