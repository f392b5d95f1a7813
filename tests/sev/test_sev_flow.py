"""The SEV pre-attestation launch flow end to end, through a real daemon's sockets.

Proves that a guest owner using only `sevowner` and what QMP returns can: verify the
platform's chain up to the simulated ARK it pins, open a session for the PDH, have
`guest-add` launch a paused guest with that session (inline or from files in an allowed
folder), check the launch measurement against a digest computed by `sev-snp-measure`,
inject a secret that only the platform it attested can open, resume the guest, and then
verify an attestation report bound to its nonce and the launch digest. The hypervisor's
view of the secret page is ciphertext only (the plaintext check is in-process, in
test_sev_inprocess.py). It also replays the exact QMP conversations of Kata's govmm and of
libvirt (reference/users.md §1.3, §2.1) and checks every field libvirt requires.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
from sev_support import (
    AMDSEV,
    BUILTIN,
    INITRD,
    KATA_GUID,
    KERNEL,
    KUBEVIRT_GUID,
    DaemonProc,
    Owner,
    Qmp,
    RawQmp,
    b64,
    guest_name,
    qmp,
    raw_reply,
    snp_measure,
    unb64,
)

from sevd.formats.ovmf import sev_secret_area
from sevd.formats.secret import build_secret_table
from sevd.formats.sevcert import SEV_CERT_LEN, SevCert

SECRET = b"the owner's disk key\x00"


async def test_capabilities_chain_is_the_firmware_export(control: Qmp) -> None:
    """cert-chain is PEK‖OCA‖CEK as PDH_CERT_EXPORT gives it: the CEK unsigned, while the
    full export carries the same CEK key signed by the simulated ASK."""
    caps = await control.execute("query-sev-capabilities")
    certs = await control.execute("query-sev-certificates")
    chain = unb64(caps["cert-chain"])
    assert len(chain) == 3 * SEV_CERT_LEN
    assert chain[:SEV_CERT_LEN] == unb64(certs["pek"])
    assert chain[SEV_CERT_LEN:2 * SEV_CERT_LEN] == unb64(certs["oca"])
    cek_export, cek_kds = SevCert.from_bytes(chain[2 * SEV_CERT_LEN:]), SevCert.from_bytes(
        unb64(certs["cek"]))
    assert cek_export.public_key == cek_kds.public_key
    assert cek_export.to_bytes() != cek_kds.to_bytes()  # only the KDS copy has the ASK's
    assert len(unb64(caps["cpu0-id"])) == 64
    assert (caps["cbitpos"], caps["reduced-phys-bits"]) == (51, 1)


@pytest.mark.parametrize("as_files", [False, True], ids=["inline", "files"])
async def test_pre_attestation_flow(milan: DaemonProc, control: Qmp,
                                    as_files: bool) -> None:
    owner = await Owner.for_host(control, policy=0x1)
    name = guest_name("flow")
    files = owner.write_files(milan.base / "fw", name) if as_files else None
    before = (await control.execute("query-sev-platform"))["guest-count"]
    info = await control.execute("guest-add", {
        "name": name, "sev-guest": owner.sev_guest(files=files)})
    assert info["status"] == "prelaunch" and not info["running"]
    assert info["sev"]["state"] == "launch-secret"
    assert (await control.execute("query-sev-platform"))["guest-count"] == before + 1
    try:
        async with qmp(info["socket"]) as g:
            status = await g.execute("query-status")
            assert status == {"running": False, "singlestep": False, "status": "prelaunch"}
            sev = await g.execute("query-sev")
            assert sev["enabled"] and sev["state"] == "launch-secret"
            assert sev["sev-type"] == "sev" and sev["policy"] == 1
            assert sev["handle"] == info["sev"]["handle"]
            plat = await control.execute("query-sev-platform")
            assert (sev["api-major"], sev["api-minor"], sev["build-id"]) == (
                plat["api-major"], plat["api-minor"], plat["build-id"])

            measurement = unb64((await g.execute("query-sev-launch-measure"))["data"])
            assert len(measurement) == 48
            digest = snp_measure("--mode", "sev", "--ovmf", BUILTIN)
            owner.verify(measurement, sev, digest)

            packet = owner.secret(measurement, {KUBEVIRT_GUID: SECRET})
            assert await g.execute("sev-inject-launch-secret", packet.qmp_arguments()) == {}
            assert (await g.execute("query-sev"))["state"] == "launch-secret"
            assert await g.execute("cont") == {}
            assert (await g.execute("query-status"))["status"] == "running"
            assert (await g.execute("query-sev"))["state"] == "running"
            # The measurement stays queryable once the guest runs (QEMU: state >= LSECRET).
            again = unb64((await g.execute("query-sev-launch-measure"))["data"])
            assert again == measurement

            # The hypervisor's view of the secret page: neither the plaintext table nor the
            # packet as sent (TEK-encrypted) — the VEK's ciphertext.
            gpa, size = sev_secret_area(BUILTIN.read_bytes()) or (0, 0)
            stored = unb64((await g.execute("x-sevd-query-memory",
                                            {"gpa": gpa, "size": size}))["data"])
            table = build_secret_table({KUBEVIRT_GUID: SECRET})
            assert SECRET not in stored and stored[:len(table)] != table
            assert stored[:len(packet.payload)] != packet.payload
            assert any(stored[:len(table)])

            mnonce = os.urandom(16)
            report = unb64((await g.execute("query-sev-attestation-report",
                                            {"mnonce": b64(mnonce)}))["data"])
            owner.check_report(report, mnonce, digest)
            kvm = await g.execute("query-kvm")
            assert kvm == {"enabled": True, "present": True, "mem-encryption": True}
            assert await g.execute("human-monitor-command", {"command-line": "info kvm"}) == (
                "kvm support: enabled\r\nmemory encryption: enabled\r\n")
    finally:
        await control.execute("guest-remove", {"name": name})
    assert (await control.execute("query-sev-platform"))["guest-count"] == before
    assert not os.path.exists(info["socket"])


async def test_state_change_events(control: Qmp) -> None:
    """SEVD_SEV_STATE_CHANGE on the guest socket and the control socket at LAUNCH_FINISH."""
    owner = await Owner.for_host(control, policy=0x1)
    name = guest_name("ev")
    info = await control.execute("guest-add", {"name": name, "sev-guest": owner.sev_guest()})
    try:
        async with qmp(info["socket"]) as g:
            with g.listener() as guest_events, control.listener() as host_events:
                await g.execute("cont")
                # LAUNCH_FINISH runs in the run-state change, so before RESUME is sent.
                seen = []
                async for ev in guest_events:
                    seen.append(ev["event"])
                    if ev["event"] == "SEVD_SEV_STATE_CHANGE":
                        assert ev["data"] == {"name": name, "state": "running",
                                              "previous": "launch-secret"}
                    if ev["event"] == "RESUME":
                        break
                assert seen == ["SEVD_SEV_STATE_CHANGE", "RESUME"]
                async for ev in host_events:
                    if ev["event"] == "SEVD_SEV_STATE_CHANGE":
                        data: Any = ev["data"]
                        assert (data["name"], data["state"]) == (name, "running")
                        break
    finally:
        await control.execute("guest-remove", {"name": name})


async def test_kata_govmm_sequence(milan: DaemonProc, control: Qmp) -> None:
    """govmm: no ids, `\\n`-terminated commands; godh/session written verbatim to files;
    query-sev-launch-measure, query-sev, sev-inject-launch-secret without gpa, cont.
    Policy 7 (SEV-ES, as Kata's CI annotation) with two vCPUs: the owner's digest is
    `sev-snp-measure --mode seves`, as Kata's CalculateSEVESLaunchDigest computes it."""
    owner = await Owner.for_host(control, policy=0x7)
    name = guest_name("kata")
    godh, sess = owner.write_files(milan.base / "fw", name)
    info = await control.execute("guest-add", {
        "name": name, "cpus": 2, "sev-guest": owner.sev_guest(files=(godh, sess))})
    assert info["sev"]["es"] and info["sev"]["asid"] < 100  # the ES range of Milan
    try:
        c = await RawQmp.connect(info["socket"])
        greeting = json.loads(c.greeting)
        assert set(greeting["QMP"]["version"]["qemu"]) == {"major", "minor", "micro"}

        async def call(cmd: str, args: dict[str, object] | None = None) -> object:
            msg: dict[str, object] = {"execute": cmd}
            if args is not None:
                msg["arguments"] = args
            reply, _ = await raw_reply(c, json.dumps(msg).encode() + b"\n")
            assert "id" not in reply
            return reply["return"]

        await call("qmp_capabilities")
        measure = await call("query-sev-launch-measure")
        sev = await call("query-sev")
        assert isinstance(measure, dict) and isinstance(sev, dict)
        # govmm unmarshals these into uint32 fields.
        for key in ("api-major", "api-minor", "build-id", "policy", "handle"):
            assert isinstance(sev[key], int) and 0 <= sev[key] < 1 << 32
        assert sev["policy"] == 7 and sev["state"] == "launch-secret"
        digest = snp_measure("--mode", "seves", "--vcpus", "2", "--vcpu-type", "EPYC-Milan",
                             "--ovmf", BUILTIN)
        blob = unb64(measure["data"])
        owner.verify(blob, sev, digest)
        bundle = json.dumps({"KEYSET-1": "s3cr3t"}).encode()
        packet = owner.secret(blob, {KATA_GUID: bundle})
        assert await call("sev-inject-launch-secret", {
            "packet-header": packet.header_b64, "secret": packet.payload_b64}) == {}
        assert await call("cont") == {}
        await c.close()
    finally:
        await control.execute("guest-remove", {"name": name})


async def test_libvirt_sequence(milan: DaemonProc) -> None:
    """libvirt: `"id": "libvirt-N"`, `\\r\\n`-terminated; query-sev-capabilities with all
    its required fields; a direct-kernel guest with kernel-hashes (launch-security-sev-
    direct); query-sev-launch-measure and query-sev with every field libvirt requires;
    virt-qemu-sev-validate's check against sha256(firmware ‖ hashes table); then
    sev-inject-launch-secret with an explicit address (--set-address) and cont."""
    ids = iter(range(1, 100))

    async def call(c: RawQmp, cmd: str, args: dict[str, object] | None = None) -> object:
        n = f"libvirt-{next(ids)}"
        msg: dict[str, object] = {"execute": cmd, "id": n}
        if args is not None:
            msg["arguments"] = args
        reply, _ = await raw_reply(c, json.dumps(msg).encode() + b"\r\n")
        assert reply["id"] == n, reply
        return reply.get("return", reply.get("error"))

    host = await RawQmp.connect(milan.control)
    await call(host, "qmp_capabilities")
    caps = await call(host, "query-sev-capabilities")
    assert isinstance(caps, dict)
    for key in ("cbitpos", "reduced-phys-bits"):
        assert isinstance(caps[key], int) and caps[key] >= 0
    for key in ("pdh", "cert-chain", "cpu0-id"):
        assert isinstance(caps[key], str)

    async with qmp(milan.control) as control:
        owner = await Owner.for_host(control, policy=0x1)
    name = guest_name("lv")
    godh, sess = owner.write_files(milan.base / "fw", name)
    # libvirt fills cbitpos/reduced-phys-bits from domain capabilities.
    sev_guest = owner.sev_guest(cbitpos=caps["cbitpos"], files=(godh, sess),
                                **{"kernel-hashes": True})
    sev_guest["reduced-phys-bits"] = caps["reduced-phys-bits"]
    info = await call(host, "guest-add", {
        "name": name, "firmware": "amdsev.fd", "kernel": "vmlinuz", "initrd": "initrd",
        "append": "runme", "sev-guest": sev_guest})
    assert isinstance(info, dict) and "socket" in info, info
    try:
        g = await RawQmp.connect(info["socket"])
        await call(g, "qmp_capabilities")
        # libvirt probes capabilities on a QEMU process's own monitor.
        assert await call(g, "query-sev-capabilities") == caps
        schema = await call(g, "query-qmp-schema")
        assert isinstance(schema, list)
        assert any(e.get("name") == "sev-inject-launch-secret" for e in schema)
        measure = await call(g, "query-sev-launch-measure")
        assert isinstance(measure, dict) and isinstance(measure["data"], str)
        sev = await call(g, "query-sev")
        assert isinstance(sev, dict)
        for key in ("api-major", "api-minor", "build-id", "policy", "handle"):
            assert isinstance(sev[key], int) and sev[key] >= 0, key
        assert sev["sev-type"] in ("sev", "sev-snp")
        digest = snp_measure("--mode", "sev", "--ovmf", AMDSEV, "--kernel", KERNEL,
                             "--initrd", INITRD, "--append", "runme")
        blob = unb64(measure["data"])
        owner.verify(blob, sev, digest)
        packet = owner.secret(blob, {uuid.UUID("0a46e24d-478c-4eb1-8696-113eeec3aa99"):
                                     b'{"key": "value"}'})
        area = sev_secret_area(AMDSEV.read_bytes())
        assert area is not None
        assert await call(g, "sev-inject-launch-secret",
                          packet.qmp_arguments(gpa=area[0])) == {}
        assert await call(g, "cont") == {}
        status = await call(g, "query-status")
        assert isinstance(status, dict) and status["status"] == "running"
        await g.close()
    finally:
        await call(host, "guest-remove", {"name": name})
        await host.close()


async def test_non_sev_guest_reports_disabled(control: Qmp) -> None:
    """query-sev on a plain guest: enabled false, zeroed fields (QEMU's sev_get_info)."""
    name = guest_name("plain")
    info = await control.execute("guest-add", {"name": name})
    try:
        async with qmp(info["socket"]) as g:
            assert await g.execute("query-sev") == {
                "enabled": False, "api-major": 0, "api-minor": 0, "build-id": 0,
                "state": "uninit", "sev-type": "sev", "policy": 0, "handle": 0}
            kvm = await g.execute("query-kvm")
            assert kvm["mem-encryption"] is False
    finally:
        await control.execute("guest-remove", {"name": name})


def xp_bytes(text: str) -> bytes:
    """The bytes of an `xp /Nxb` dump (`<addr>: 0x.. 0x.. …` lines)."""
    out = bytearray()
    for line in text.splitlines():
        out += bytes(int(v, 16) for v in line.split(":", 1)[1].split())
    return bytes(out)


@pytest.mark.parametrize(("policy", "info_sev"), [
    (0x0, "debug: on\r\nkey-sharing: on\r\n"),
    (0x1, "debug: off\r\nkey-sharing: on\r\n"),
    (0x3, "debug: off\r\nkey-sharing: off\r\n"),
])
async def test_debug_view_and_hypervisor_view(control: Qmp, policy: int,
                                              info_sev: str) -> None:
    """The monitor's `xp` reads through DBG_DECRYPT (DESIGN §5): the owner's plaintext for
    a debuggable guest; with NODBG the firmware refuses and `xp` shows what the hypervisor
    stores, the same bytes as `x-sevd-query-memory`. `info sev` prints QEMU's flags."""
    owner = await Owner.for_host(control, policy=policy)
    name = guest_name("dbg")
    info = await control.execute("guest-add", {"name": name, "sev-guest": owner.sev_guest()})
    try:
        async with qmp(info["socket"]) as g:
            blob = unb64((await g.execute("query-sev-launch-measure"))["data"])
            packet = owner.secret(blob, {KUBEVIRT_GUID: SECRET})
            await g.execute("sev-inject-launch-secret", packet.qmp_arguments())
            await g.execute("cont")
            gpa = (sev_secret_area(BUILTIN.read_bytes()) or (0, 0))[0]
            table = build_secret_table({KUBEVIRT_GUID: SECRET})
            shown = xp_bytes(await g.execute("human-monitor-command", {
                "command-line": f"xp /{len(table)}xb 0x{gpa:x}"}))
            stored = unb64((await g.execute("x-sevd-query-memory", {
                "gpa": gpa, "size": len(table)}))["data"])
            assert stored != table
            assert shown == (table if policy & 1 == 0 else stored)
            text = await g.execute("human-monitor-command", {"command-line": "info sev"})
            assert text.endswith(info_sev) and "state: running\r\n" in text
    finally:
        await control.execute("guest-remove", {"name": name})


async def test_dbg_decrypt_fault_through_the_monitor(control: Qmp) -> None:
    owner = await Owner.for_host(control, policy=0x0)
    name = guest_name("dbgf")
    info = await control.execute("guest-add", {"name": name, "sev-guest": owner.sev_guest()})
    try:
        async with qmp(info["socket"]) as g:
            await control.execute("sev-fault-inject", {"command": "dbg-decrypt", "status": 19,
                                                       "count": 1000, "guest": name})
            # A failed firmware read is a failed memory access: QEMU's text, the call succeeds.
            text = await g.execute("human-monitor-command", {"command-line": "xp /2xg 0x1000"})
            assert text == "0000000000001000: Cannot access memory\r\n"
            # Once the firmware answers again, the same read decrypts.
            await control.execute("sev-fault-clear")
            text = await g.execute("human-monitor-command", {"command-line": "xp /2xg 0x1000"})
            assert text.startswith("0000000000001000: 0x") and "Cannot" not in text
    finally:
        await control.execute("sev-fault-clear")
        await control.execute("guest-remove", {"name": name})
