"""Injected firmware failures (`sev-fault-inject`) give exactly the errors real ones would.

For every firmware command a management stack can reach, an armed fault makes that
command fail with the chosen AMD status, and the QMP error is the text QEMU prints for a
real failure of that step (`ret=-5 fw_error=%d '%s'` or `fw_err=%d (%s)`, QEMU's status
strings, `unknown error` past the table). Launch-time failures leave nothing behind;
LAUNCH_MEASURE failing leaves the guest unmeasured (as QEMU, which only logs it), and
LAUNCH_FINISH failing ends the guest instance (QEMU exit(1)s): SHUTDOWN with reason
host-error, socket and ASID gone. It also proves the fault bookkeeping: per-guest faults,
counts, listing and clearing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sev_support import KUBEVIRT_GUID, DaemonProc, Owner, Qmp, b64, error_of, guest_name, qmp, unb64


@pytest.fixture(autouse=True)
async def no_faults_left(control: Qmp) -> AsyncIterator[None]:
    yield
    await control.execute("sev-fault-clear")
    assert await control.execute("query-sev-faults") == []


START = ("sev_common_kvm_init: failed to create encryption context (sev_launch_start: "
         "LAUNCH_START ret=-5 fw_error=")

# (firmware command, status, guest-add policy, QEMU's text)
LAUNCH_FAULTS = [
    ("launch-start", 11, 0x1, START + "11 'Bad measurement')"),
    ("launch-start", 23, 0x1, START + "23 'Required firmware resource depleted')"),
    ("launch-start", 0x27, 0x1, START + "39 'unknown error')"),
    # KVM's LAUNCH_START ioctl also binds the ASID: an ACTIVATE failure is reported there.
    ("activate", 19, 0x1, START + "19 'Hardware error')"),
    ("launch-update-data", 2, 0x1, "SEV: Failed to encrypt pflash rom (sev_launch_update_data: "
                                   "LAUNCH_UPDATE ret=-5 fw_error=2 'Guest state is invalid')"),
    ("launch-update-vmsa", 19, 0x5,
     "sev_launch_update_vmsa: LAUNCH_UPDATE_VMSA ret=-5 fw_error=19 'Hardware error'"),
]


@pytest.mark.parametrize(("command", "status", "policy", "text"), LAUNCH_FAULTS,
                         ids=[f"{c}-{s}" for c, s, _, _ in LAUNCH_FAULTS])
async def test_launch_faults(milan: DaemonProc, control: Qmp, command: str, status: int,
                             policy: int, text: str) -> None:
    owner = await Owner.for_host(control, policy=policy)
    before = await control.execute("query-sev-platform")
    await control.execute("sev-fault-inject", {"command": command, "status": status})
    name = guest_name("flt")
    assert await error_of(control, "guest-add", {
        "name": name, "sev-guest": owner.sev_guest()}) == text
    after = await control.execute("query-sev-platform")
    assert (after["guest-count"], after["asids"]) == (before["guest-count"], before["asids"])
    assert not os.path.exists(milan.guest_socket(name))
    assert await control.execute("query-sev-faults") == []  # consumed
    info = await control.execute("guest-add", {"name": name, "sev-guest": owner.sev_guest()})
    await control.execute("guest-remove", {"name": name})
    assert info["sev"]["es"] == bool(policy & 4)


# (firmware command, status, control-socket command, sevd's or QEMU's text)
HOST_FAULTS = [
    ("pdh-cert-export", 1, "query-sev-capabilities",
     "SEV: Failed to export PDH cert ret=-5 fw_err=1 (Platform state is invalid)"),
    ("get-id", 19, "query-sev-capabilities",
     "SEV: Failed to get ID ret=-5 fw_err=19 (Hardware error)"),
    ("pdh-cert-export", 19, "query-sev-certificates",
     "PDH_CERT_EXPORT failed: fw_error=19 'Hardware error'"),
    ("pdh-gen", 19, "sev-pdh-generate", "PDH_GEN failed: fw_error=19 'Hardware error'"),
    ("pek-gen", 19, "sev-pek-generate", "PEK_GEN failed: fw_error=19 'Hardware error'"),
    ("pek-csr", 19, "sev-pek-csr", "PEK_CSR failed: fw_error=19 'Hardware error'"),
]


@pytest.mark.parametrize(("command", "status", "qmp_command", "text"), HOST_FAULTS,
                         ids=[f"{q}-{c}" for c, _, q, _ in HOST_FAULTS])
async def test_host_faults(control: Qmp, command: str, status: int, qmp_command: str,
                           text: str) -> None:
    before = await control.execute("query-sev-capabilities")
    await control.execute("sev-fault-inject", {"command": command, "status": status})
    assert await error_of(control, qmp_command) == text
    # The failure changed nothing.
    assert await control.execute("query-sev-capabilities") == before


async def test_launch_measure_fault(control: Qmp) -> None:
    """QEMU only logs a failed LAUNCH_MEASURE: the guest stays in launch-update without a
    measurement, and the first cont's LAUNCH_FINISH then fails on the guest state."""
    owner = await Owner.for_host(control, policy=0x1)
    await control.execute("sev-fault-inject", {"command": "launch-measure", "status": 19})
    name = guest_name("lm")
    info = await control.execute("guest-add", {"name": name, "sev-guest": owner.sev_guest()})
    assert info["sev"]["state"] == "launch-update"
    async with qmp(info["socket"], ends=True) as g:
        assert (await g.execute("query-sev"))["state"] == "launch-update"
        assert await error_of(g, "query-sev-launch-measure") == (
            "SEV launch measurement is not available")
        assert await error_of(g, "sev-inject-launch-secret", {
            "packet-header": b64(bytes(52)), "secret": b64(bytes(16))}) == (
            "SEV: Not in correct state. (LSECRET) 1")
        assert await error_of(g, "cont") == (
            "sev_launch_finish: LAUNCH_FINISH ret=-5 fw_error=2 'Guest state is invalid'")
    await _gone(control, name, info["socket"])


async def _gone(control: Qmp, name: str, socket: str) -> None:
    for _ in range(100):
        if name not in [g["name"] for g in await control.execute("query-guests")]:
            break
        await asyncio.sleep(0.02)
    assert name not in [g["name"] for g in await control.execute("query-guests")]
    assert not os.path.exists(socket)


async def paused_guest(control: Qmp, owner: Owner) -> tuple[str, str, bytes]:
    name = guest_name("pg")
    info = await control.execute("guest-add", {"name": name, "sev-guest": owner.sev_guest()})
    async with qmp(info["socket"]) as g:
        blob = unb64((await g.execute("query-sev-launch-measure"))["data"])
    return name, info["socket"], blob


async def test_launch_secret_fault_for_one_guest(control: Qmp) -> None:
    owner = await Owner.for_host(control, policy=0x1)
    a, a_sock, a_blob = await paused_guest(control, owner)
    b, b_sock, b_blob = await paused_guest(control, owner)
    try:
        await control.execute("sev-fault-inject", {
            "command": "launch-secret", "status": 11, "count": 2, "guest": a})
        assert await control.execute("query-sev-faults") == [
            {"command": "launch-secret", "status": 11, "count": 2, "guest": a}]
        async with qmp(a_sock) as ga, qmp(b_sock) as gb:
            packet_b = owner.secret(b_blob, {KUBEVIRT_GUID: b"b"}).qmp_arguments()
            assert await gb.execute("sev-inject-launch-secret", packet_b) == {}
            packet_a = owner.secret(a_blob, {KUBEVIRT_GUID: b"a"}).qmp_arguments()
            text = "SEV: failed to inject secret ret=-5 fw_error=11 'Bad measurement'"
            assert await error_of(ga, "sev-inject-launch-secret", packet_a) == text
            assert (await control.execute("query-sev-faults"))[0]["count"] == 1
            assert await error_of(ga, "sev-inject-launch-secret", packet_a) == text
            assert await control.execute("query-sev-faults") == []
            assert (await ga.execute("query-sev"))["state"] == "launch-secret"
            assert await ga.execute("sev-inject-launch-secret", packet_a) == {}
    finally:
        for n in (a, b):
            await control.execute("guest-remove", {"name": n})


async def test_launch_finish_fault_ends_the_instance(control: Qmp) -> None:
    owner = await Owner.for_host(control, policy=0x1)
    before = await control.execute("query-sev-platform")
    name, sock, _ = await paused_guest(control, owner)
    await control.execute("sev-fault-inject", {"command": "launch-finish", "status": 19,
                                               "guest": name})
    async with qmp(sock, ends=True) as g:
        with g.listener() as events:
            assert await error_of(g, "cont") == (
                "sev_launch_finish: LAUNCH_FINISH ret=-5 fw_error=19 'Hardware error'")
            ev = await asyncio.wait_for(events.get(), 5)
            assert (ev["event"], ev["data"]) == (
                "SHUTDOWN", {"guest": False, "reason": "host-error"})
    await _gone(control, name, sock)
    after = await control.execute("query-sev-platform")
    assert (after["guest-count"], after["asids"]) == (before["guest-count"], before["asids"])


async def test_attestation_fault(control: Qmp) -> None:
    owner = await Owner.for_host(control, policy=0x1)
    name, sock, _ = await paused_guest(control, owner)
    try:
        await control.execute("sev-fault-inject", {"command": "attestation", "status": 19})
        async with qmp(sock) as g:
            args = {"mnonce": b64(bytes(16))}
            assert await error_of(g, "query-sev-attestation-report", args) == (
                "SEV: Failed to query the attestation report length ret=-5 fw_err=19 "
                "(Hardware error)")
            assert len(unb64((await g.execute("query-sev-attestation-report",
                                              args))["data"])) == 208
    finally:
        await control.execute("guest-remove", {"name": name})


async def test_fault_bookkeeping(control: Qmp) -> None:
    owner = await Owner.for_host(control, policy=0x1)
    name, _, _ = await paused_guest(control, owner)
    try:
        arm: list[dict[str, Any]] = [
            {"command": "launch-start", "status": 11},
            {"command": "launch-secret", "status": 11, "count": 3, "guest": name},
            {"command": "attestation", "status": 19, "count": 2},
        ]
        for args in arm:
            assert await control.execute("sev-fault-inject", args) == {}
        assert await control.execute("query-sev-faults") == [
            {"count": 1, **arm[0]}, arm[1], arm[2]]
        assert await control.execute("sev-fault-clear", {"command": "launch-secret"}) == {}
        assert await control.execute("query-sev-faults") == [{"count": 1, **arm[0]}, arm[2]]
        assert await control.execute("sev-fault-clear") == {}
        assert await control.execute("query-sev-faults") == []
        for args, text in [
            ({"command": "launch-secret", "status": 0},
             "a fault needs a failing status (1..0xffff), not 0"),
            ({"command": "launch-secret", "status": 11, "count": 0},
             "fault count must be at least 1, not 0"),
            ({"command": "launch-secret", "status": 11, "guest": "nobody"},
             "Guest 'nobody' not found or has no SEV handle"),
        ]:
            assert await error_of(control, "sev-fault-inject", args) == text
    finally:
        await control.execute("guest-remove", {"name": name})
