"""A host without SEV (`--profile none`): management stacks' "no SEV" scenario. QEMU's SEV
commands fail as they fail there — query-sev-capabilities with "SEV is not enabled in KVM"
(libvirt then reports <sev supported='no'/>), an SEV guest cannot be created — while plain
guests work, query-sev reports enabled: false and the daemon is ready."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from qemu.qmp import QMPClient
from sev_support import error_of, sev_daemon, stop_daemon


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[QMPClient]:
    d = sev_daemon(tmp_path, profile="none")
    c = QMPClient("no-sev")
    await c.connect(d.control)
    try:
        yield c
    finally:
        await c.disconnect()
        stop_daemon(d)


async def test_sev_commands_fail_as_on_a_host_without_sev(control: QMPClient) -> None:
    assert await error_of(control, "query-sev-capabilities") == "SEV is not enabled in KVM"
    assert await error_of(control, "query-sev-platform") == "SEV is not enabled in KVM"
    desc = await error_of(control, "guest-add", {
        "name": "s", "sev-guest": {"cbitpos": 51, "reduced-phys-bits": 1}})
    assert desc == "sev_common_kvm_init: Failed to open /dev/sev 'No such file or directory'"
    assert await control.execute("query-guests") == []


async def test_plain_guests_still_work(control: QMPClient) -> None:
    info = await control.execute("guest-add", {"name": "plain", "start": True})
    g = QMPClient("plain")
    await g.connect(info["socket"])
    try:
        sev = await g.execute("query-sev")
        assert sev["enabled"] is False and sev["state"] == "uninit"
        assert await error_of(g, "query-sev-capabilities") == "SEV is not enabled in KVM"
        kvm = await g.execute("query-kvm")
        assert kvm["mem-encryption"] is False
    finally:
        await g.disconnect()
