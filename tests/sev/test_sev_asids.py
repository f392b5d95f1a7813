"""ASIDs and key sharing: what KVM decides around the firmware (DESIGN §6).

Proves that SEV guests take ASIDs from the profile's SEV range and SEV-ES guests from the
ES range; that when a range is exhausted `guest-add` fails with QEMU's init text
(`failed to initialize ret=-16 fw_error=0 ''`), leaves nothing behind, and does not disturb
the guests already there (a running one keeps running, every one keeps its state and
measurement); that a freed ASID is reused; and that key sharing through `handle` shares the
ASID (so it works even when the range is full) only between identical policies without
NOKS, with the firmware's POLICY_FAILURE otherwise.
"""

from __future__ import annotations

import os
from typing import Any

from sev_support import (
    BUILTIN,
    DaemonProc,
    Owner,
    Qmp,
    error_of,
    guest_name,
    qmp,
    snp_measure,
    unb64,
)

EXHAUSTED = "sev_common_kvm_init: failed to initialize ret=-16 fw_error=0 ''"
POLICY = ("sev_common_kvm_init: failed to create encryption context (sev_launch_start: "
          "LAUNCH_START ret=-5 fw_error=7 'Policy is not allowed')")


async def add(control: Qmp, owner: Owner, cbitpos: int = 51, **props: Any
              ) -> dict[str, Any]:
    info: dict[str, Any] = await control.execute("guest-add", {
        "name": guest_name("a"), "sev-guest": owner.sev_guest(cbitpos=cbitpos, **props)})
    return info


async def guest_view(info: dict[str, Any]) -> tuple[Any, ...]:
    async with qmp(info["socket"]) as g:
        return (await g.execute("query-status"), await g.execute("query-sev"),
                await g.execute("query-sev-launch-measure"))


async def test_exhaustion_at_the_naples_limit(naples: DaemonProc) -> None:
    async with qmp(naples.control) as control:
        plat = await control.execute("query-sev-platform")
        assert plat["asids"]["sev-min"] == 1 and plat["asids"]["sev-max"] == 15
        owner = await Owner.for_host(control, policy=0x0, profile="naples")
        guests = [await add(control, owner, cbitpos=47) for _ in range(15)]
        assert sorted(g["sev"]["asid"] for g in guests) == list(range(1, 16))
        async with qmp(guests[3]["socket"]) as g:
            await g.execute("cont")
        views = [await guest_view(g) for g in guests]
        before = await control.execute("query-sev-platform")
        assert before["asids"]["sev-used"] == 15

        name = guest_name("over")
        assert await error_of(control, "guest-add", {
            "name": name, "sev-guest": owner.sev_guest(cbitpos=47)}) == EXHAUSTED
        assert not os.path.exists(naples.guest_socket(name))
        after = await control.execute("query-sev-platform")
        assert (after["guest-count"], after["asids"]) == (before["guest-count"],
                                                          before["asids"])
        assert [await guest_view(g) for g in guests] == views
        assert views[3][0]["status"] == "running"

        # A key-sharing guest needs no ASID of its own: it fits even now.
        shared = await add(control, owner, cbitpos=47, handle=guests[0]["sev"]["handle"])
        assert shared["sev"]["asid"] == guests[0]["sev"]["asid"]
        await control.execute("guest-remove", {"name": shared["name"]})

        # A freed ASID is taken again (after KVM's WBINVD + DF_FLUSH).
        freed = guests[7]
        await control.execute("guest-remove", {"name": freed["name"]})
        again = await add(control, owner, cbitpos=47)
        assert again["sev"]["asid"] == freed["sev"]["asid"]
        for left in [*guests[:7], *guests[8:], again]:
            await control.execute("guest-remove", {"name": left["name"]})
        assert (await control.execute("query-sev-platform"))["asids"]["sev-used"] == 0


async def test_key_sharing(control: Qmp) -> None:
    first_owner = await Owner.for_host(control, policy=0x0)
    first = await add(control, first_owner)
    used = (await control.execute("query-sev-platform"))["asids"]["sev-used"]
    second_owner = await Owner.for_host(control, policy=0x0)  # its own session
    second = await add(control, second_owner, handle=first["sev"]["handle"])
    assert second["sev"]["asid"] == first["sev"]["asid"]
    assert second["sev"]["handle"] != first["sev"]["handle"]
    assert (await control.execute("query-sev-platform"))["asids"]["sev-used"] == used
    digest = snp_measure("--mode", "sev", "--ovmf", BUILTIN)
    async with qmp(second["socket"]) as g:
        sev = await g.execute("query-sev")
        assert sev["handle"] == second["sev"]["handle"]
        blob = unb64((await g.execute("query-sev-launch-measure"))["data"])
        second_owner.verify(blob, sev, digest)
    # The ASID stays bound while a sharing guest lives.
    await control.execute("guest-remove", {"name": first["name"]})
    assert (await control.execute("query-sev-platform"))["asids"]["sev-used"] == used
    async with qmp(second["socket"]) as g:
        assert await g.execute("cont") == {}
        assert (await g.execute("query-sev"))["state"] == "running"
    await control.execute("guest-remove", {"name": second["name"]})
    assert (await control.execute("query-sev-platform"))["asids"]["sev-used"] == used - 1


async def test_key_sharing_refused(control: Qmp) -> None:
    """NOKS on the guest shared with, or a different policy: POLICY_FAILURE from
    LAUNCH_START through guest-add, nothing left behind."""
    for first_policy, second_policy in ((0x2, 0x2), (0x0, 0x1), (0x1, 0x0)):
        first = await add(control, await Owner.for_host(control, policy=first_policy))
        before = await control.execute("query-sev-platform")
        owner = await Owner.for_host(control, policy=second_policy)
        assert await error_of(control, "guest-add", {
            "name": guest_name(), "sev-guest": owner.sev_guest(
                handle=first["sev"]["handle"])}) == POLICY, (first_policy, second_policy)
        after = await control.execute("query-sev-platform")
        assert (after["guest-count"], after["asids"]) == (before["guest-count"],
                                                          before["asids"])
        await control.execute("guest-remove", {"name": first["name"]})


async def test_es_and_sev_ranges_on_milan(control: Qmp) -> None:
    plat = await control.execute("query-sev-platform")
    assert plat["asids"] | {"es-used": 0, "sev-used": 0} == {
        "es-min": 1, "es-max": 99, "es-used": 0, "sev-min": 100, "sev-max": 509,
        "sev-used": 0}
    es = await add(control, await Owner.for_host(control, policy=0x5))
    sev = await add(control, await Owner.for_host(control, policy=0x1))
    assert es["sev"]["es"] and 1 <= es["sev"]["asid"] <= 99
    assert not sev["sev"]["es"] and 100 <= sev["sev"]["asid"] <= 509
    after = (await control.execute("query-sev-platform"))["asids"]
    assert (after["es-used"], after["sev-used"]) == (plat["asids"]["es-used"] + 1,
                                                     plat["asids"]["sev-used"] + 1)
    for g in (es, sev):
        await control.execute("guest-remove", {"name": g["name"]})


async def test_es_range_exhaustion_leaves_sev_range_free(control: Qmp) -> None:
    """Milan's 99 ES ASIDs run out on their own; SEV guests still get theirs."""
    owner = await Owner.for_host(control, policy=0x5)
    free = 99 - (await control.execute("query-sev-platform"))["asids"]["es-used"]
    guests = [await add(control, owner) for _ in range(free)]
    try:
        assert await error_of(control, "guest-add", {
            "name": guest_name(), "sev-guest": owner.sev_guest()}) == EXHAUSTED
        plain = await add(control, await Owner.for_host(control, policy=0x1))
        guests.append(plain)
        assert plain["sev"]["asid"] >= 100
    finally:
        for g in guests:
            await control.execute("guest-remove", {"name": g["name"]})
