"""The launch flow in-process, where the test can look inside guest memory.

The same command layer the daemon runs (`App` and its dispatchers, the same handlers and
schema checks) drives a guest through guest-add → query-sev-launch-measure →
sev-inject-launch-secret → cont with the owner's crypto. Then the test reads guest memory
the three ways it can be read: as the guest's own CPU (the key in the memory controller),
through the firmware's DBG_DECRYPT, and as the hypervisor (`x-sevd-query-memory`, the raw
store). It proves that the owner's secret table is in guest memory in plaintext for the
guest, that the hypervisor sees only ciphertext, that NODBG makes the firmware refuse to
decrypt for the host, and that a failing DBG_DECRYPT (fault injection) carries the
status a real firmware would return.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from sev_support import BUILTIN, KUBEVIRT_GUID, identity_for
from sevowner.measurement import expected_launch_digest, verify_launch_measurement
from sevowner.secret import build_launch_secret
from sevowner.session import create_session

from sevd.commands.app import App
from sevd.commands.schema import Schema
from sevd.daemon import builtin_firmware
from sevd.domain.platform import SevPlatform
from sevd.domain.psp import Command, SevError, SevStatus
from sevd.formats.ovmf import sev_secret_area
from sevd.formats.secret import build_secret_table, parse_secret_table

SECRETS = {KUBEVIRT_GUID: b"disk passphrase\x00",
           uuid.UUID("e6f5a162-d67f-4750-a67c-5d065f2a9910"): b'{"KEYSET-1": "k"}'}


class InProcess:
    """An `App` with a Milan platform, called as a session would call it."""

    def __init__(self) -> None:
        self.app = App(Schema(), validate_returns=True)
        self.app.platform = SevPlatform(identity_for("milan"), profile="milan")
        self.app.builtin_firmware = builtin_firmware()

    async def host(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        reply = self.app.control.dispatch(None, cmd, args, False)
        return json.loads(reply if isinstance(reply, str) else await reply)

    async def guest(self, name: str, cmd: str, args: dict[str, Any] | None = None) -> Any:
        reply = self.app.slots[name].dispatcher.dispatch(None, cmd, args, False)
        return json.loads(reply if isinstance(reply, str) else await reply)


async def launched(policy: int) -> tuple[InProcess, Any, bytes]:
    """A guest launched, measured, given the secret and resumed; returns the SEV context
    and the plaintext secret table the owner sent."""
    ip = InProcess()
    caps = await ip.host("query-sev-capabilities")
    session = create_session(base64.b64decode(caps["pdh"]), policy)
    await ip.host("guest-add", {"name": "vm1", "sev-guest": {
        "policy": policy, "cbitpos": 51, "reduced-phys-bits": 1,
        "dh-cert": session.godh_b64, "session": session.session_b64}})
    sev = await ip.guest("vm1", "query-sev")
    blob = base64.b64decode((await ip.guest("vm1", "query-sev-launch-measure"))["data"])
    verify_launch_measurement(blob, session.tik, api_major=sev["api-major"],
                              api_minor=sev["api-minor"], build_id=sev["build-id"],
                              policy=policy, digest=expected_launch_digest(BUILTIN.read_bytes()))
    packet = build_launch_secret(session.tek, session.tik, blob, SECRETS)
    assert await ip.guest("vm1", "sev-inject-launch-secret", packet.qmp_arguments()) == {}
    assert await ip.guest("vm1", "cont") == {}
    return ip, ip.app.slots["vm1"].guest.sev, build_secret_table(SECRETS)


async def test_secret_is_plaintext_to_the_guest_ciphertext_to_the_host() -> None:
    ip, sev, table = await launched(policy=0x1)  # NODBG, the QEMU default
    gpa, size = sev_secret_area(BUILTIN.read_bytes()) or (0, 0)
    assert len(table) <= size
    # The guest's CPU (C-bit set) reads what the owner sent.
    seen = sev.fw.cpu_read(sev.handle, gpa, len(table))
    assert seen == table
    assert parse_secret_table(seen) == SECRETS
    # The hypervisor's view over QMP is the stored ciphertext, nothing of the plaintext.
    view = await ip.guest("vm1", "x-sevd-query-memory", {"gpa": gpa, "size": len(table)})
    stored = base64.b64decode(view["data"])
    assert stored == ip.app.slots["vm1"].guest.machine.store.read(gpa, len(table))
    assert stored != table
    for value in SECRETS.values():
        assert value not in stored
    # NODBG: the firmware will not decrypt for the host.
    with pytest.raises(SevError) as err:
        sev.fw.dbg_decrypt(sev.handle, gpa, 16)
    assert err.value.status == SevStatus.POLICY_FAILURE


async def test_debuggable_guest_decrypts_through_dbg_decrypt() -> None:
    ip, sev, table = await launched(policy=0x0)
    gpa, _ = sev_secret_area(BUILTIN.read_bytes()) or (0, 0)
    n = (len(table) + 15) // 16 * 16
    assert sev.fw.dbg_decrypt(sev.handle, gpa, n)[:len(table)] == table
    # The same address in the store is still ciphertext: debug access decrypts a copy.
    assert ip.app.slots["vm1"].guest.machine.store.read(gpa, len(table)) != table


async def test_dbg_decrypt_fault_carries_the_injected_status() -> None:
    ip, sev, _ = await launched(policy=0x0)
    gpa, _ = sev_secret_area(BUILTIN.read_bytes()) or (0, 0)
    assert await ip.host("sev-fault-inject", {"command": "dbg-decrypt", "status": 19,
                                              "guest": "vm1"}) == {}
    assert await ip.host("query-sev-faults") == [
        {"command": "dbg-decrypt", "status": 19, "count": 1, "guest": "vm1"}]
    with pytest.raises(SevError) as err:
        sev.fw.dbg_decrypt(sev.handle, gpa, 16)
    assert (err.value.status, err.value.command) == (SevStatus.HWERROR_PLATFORM,
                                                     Command.DBG_DECRYPT.name)
    assert await ip.host("query-sev-faults") == []
    assert len(sev.fw.dbg_decrypt(sev.handle, gpa, 16)) == 16  # consumed: works again


async def test_remove_zeroes_the_guest() -> None:
    """guest-remove: DEACTIVATE, DECOMMISSION, ASID free, handle gone from the firmware."""
    ip, sev, _ = await launched(policy=0x1)
    fw, handle, asid = sev.fw, sev.handle, sev.asid
    assert fw.asid_state(asid) == "in-use"
    assert await ip.host("guest-remove", {"name": "vm1"}) == {}
    with pytest.raises(SevError) as err:
        fw.guest_info(handle)
    assert err.value.status == SevStatus.INVALID_GUEST
    assert fw.asid_state(asid) in ("dirty", "clean")
    assert ip.app.platform is not None and ip.app.platform.asids_used(False) == 0
