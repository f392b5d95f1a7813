"""ACTIVATE / DEACTIVATE / DECOMMISSION: ASID ranges, dirty ASIDs, key sharing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from psp_helpers import Guests

from sevd.domain.psp import GuestState, SevError, SevFirmware, SevStatus
from sevd.domain.psp.profiles import MILAN


def _status(fn: Callable[[], object]) -> SevStatus | int:
    try:
        fn()
    except SevError as err:
        return err.status
    return SevStatus.SUCCESS


@pytest.mark.parametrize(
    ("profile", "es", "asid", "expected"),
    [
        ("milan", False, 0, SevStatus.INVALID_ASID),
        ("milan", False, 510, SevStatus.INVALID_ASID),  # > ECX 509
        ("milan", False, 99, SevStatus.INVALID_ASID),  # an ES ASID
        ("milan", False, 100, SevStatus.SUCCESS),  # EDX: first SEV ASID
        ("milan", False, 509, SevStatus.SUCCESS),
        ("milan", True, 1, SevStatus.SUCCESS),
        ("milan", True, 99, SevStatus.SUCCESS),
        ("milan", True, 100, SevStatus.INVALID_ASID),
        ("genoa", False, 450, SevStatus.INVALID_ASID),
        ("genoa", False, 451, SevStatus.SUCCESS),
        ("genoa", True, 450, SevStatus.SUCCESS),
        ("rome", False, 1, SevStatus.SUCCESS),  # EDX = 1: no ES ASIDs
        ("rome", True, 1, SevStatus.INVALID_ASID),
        ("naples", False, 15, SevStatus.SUCCESS),
        ("naples", False, 16, SevStatus.INVALID_ASID),
    ],
)
def test_asid_ranges(
    make_fw: Callable[..., SevFirmware], profile: str, es: bool, asid: int, expected: SevStatus
) -> None:
    fw = make_fw(profile, es=es)
    handle = fw.launch_start(0x4 if es else 0)
    assert _status(lambda: fw.activate(handle, asid)) == expected
    if expected is SevStatus.SUCCESS:
        info = fw.guest_info(handle)
        assert (info.asid, info.pending, info.active) == (asid, True, False)


def test_naples_has_no_es(make_fw: Callable[..., SevFirmware]) -> None:
    fw = make_fw("naples", init=False)
    assert _status(lambda: fw.init(1)) == SevStatus.INVALID_CONFIG
    fw.init(0)
    assert _status(lambda: fw.launch_start(0x4)) == SevStatus.UNSUPPORTED


def test_init_leaves_asids_dirty(make_fw: Callable[..., SevFirmware]) -> None:
    fw = make_fw(init=False)
    fw.init()
    handle = fw.launch_start(0)
    assert fw.asid_state(100) == "dirty"
    assert _status(lambda: fw.activate(handle, 100)) == SevStatus.DFFLUSH_REQUIRED
    assert _status(fw.df_flush) == SevStatus.WBINVD_REQUIRED
    fw.wbinvd()
    fw.df_flush()
    assert fw.asid_state(100) == "clean"
    fw.activate(handle, 100)
    assert fw.asid_state(100) == "allocated"


def test_deactivate_running_guest_dirties_its_asid(fw: SevFirmware, guests: Guests) -> None:
    handle = guests.in_state(GuestState.RUNNING)
    asid = fw.guest_info(handle).asid
    assert fw.asid_state(asid) == "in-use"
    fw.deactivate(handle)
    assert fw.asid_state(asid) == "dirty"
    other = guests.launch(0, activate=False)
    assert _status(lambda: fw.activate(other, asid)) == SevStatus.DFFLUSH_REQUIRED
    # DEACTIVATE of a guest that ran clears WBINVD_DONE: DF_FLUSH needs a new WBINVD.
    assert _status(fw.df_flush) == SevStatus.WBINVD_REQUIRED
    fw.wbinvd()
    fw.df_flush()
    fw.activate(other, asid)


def test_deactivate_pending_guest_leaves_asid_clean(fw: SevFirmware, guests: Guests) -> None:
    handle = guests.launch(0)
    asid = fw.guest_info(handle).asid
    fw.deactivate(handle)
    assert fw.asid_state(asid) == "clean"
    assert _status(lambda: fw.deactivate(handle)) == SevStatus.INACTIVE


def test_asid_owned_active_and_reactivation(fw: SevFirmware, guests: Guests) -> None:
    a = guests.launch(0)
    b = guests.launch(0, activate=False)
    asid = fw.guest_info(a).asid
    assert _status(lambda: fw.activate(b, asid)) == SevStatus.ASID_OWNED
    assert _status(lambda: fw.activate(a, guests.asid())) == SevStatus.ACTIVE
    fw.launch_measure(a)
    fw.launch_finish(a)
    fw.deactivate(a)
    fw.wbinvd()
    fw.df_flush()
    # A RUNNING guest re-ACTIVATEd is active at once.
    fw.activate(a, asid)
    assert fw.guest_info(a).active


def test_sent_guest_cannot_be_activated(fw: SevFirmware, guests: Guests) -> None:
    handle = guests.in_state(GuestState.SENT)
    fw.deactivate(handle)
    assert _status(lambda: fw.activate(handle, guests.asid())) == SevStatus.INVALID_GUEST_STATE


def test_decommission_needs_deactivate(fw: SevFirmware, guests: Guests) -> None:
    handle = guests.in_state(GuestState.RUNNING)
    assert _status(lambda: fw.decommission(handle)) == SevStatus.ACTIVE
    fw.deactivate(handle)
    fw.decommission(handle)
    assert _status(lambda: fw.guest_info(handle)) == SevStatus.INVALID_GUEST
    # The last guest gone, the platform is back in INIT: DECOMMISSION is not allowed there.
    assert _status(lambda: fw.decommission(handle)) == SevStatus.INVALID_PLATFORM_STATE


def test_lowest_free_handle_and_resource_limit(
    make_fw: Callable[..., SevFirmware],
) -> None:
    fw = make_fw(prof=replace(MILAN, handle_limit=3))
    assert [fw.launch_start(0) for _ in range(3)] == [1, 2, 3]
    assert _status(lambda: fw.launch_start(0)) == SevStatus.RESOURCE_LIMIT
    fw.decommission(2)
    assert fw.launch_start(0) == 2


def test_key_sharing_shares_vek_and_asid(fw: SevFirmware, guests: Guests) -> None:
    first = guests.launch(0)
    asid = fw.guest_info(first).asid
    second = fw.launch_start(0, handle=first)
    assert fw.guest_info(second).shares_key_with == first
    # sevd (DESIGN §6): a guest sharing the VEK may share the ASID too.
    fw.activate(second, asid)
    memory = fw._guests[first].memory
    memory.write(0, b"x" * 4096)
    fw.launch_update_data(first, 0, 4096)
    fw._guests[second].memory.write(0, memory.read(0, 4096))
    # Same key, same address: the second guest decrypts the first one's ciphertext.
    assert fw.dbg_decrypt(second, 0, 4096) == b"x" * 4096
    fw.deactivate(first)
    assert fw.asid_state(asid) == "allocated"  # still used by the sharer
    fw.deactivate(second)
    assert fw.asid_state(asid) == "clean"
    # A sharer may also take an ASID of its own (what KVM does).
    fw.activate(second, guests.asid())


@pytest.mark.parametrize(
    ("first_policy", "second_policy", "expected"),
    [
        (0x2, 0x2, SevStatus.POLICY_FAILURE),  # NOKS refuses sharing
        (0x0, 0x1, SevStatus.POLICY_FAILURE),  # policies must be identical
        (0x1, 0x1, SevStatus.SUCCESS),
    ],
)
def test_key_sharing_policy(
    fw: SevFirmware, first_policy: int, second_policy: int, expected: SevStatus
) -> None:
    first = fw.launch_start(first_policy)
    assert _status(lambda: fw.launch_start(second_policy, handle=first)) == expected


def test_key_sharing_with_unknown_handle(fw: SevFirmware) -> None:
    assert _status(lambda: fw.launch_start(0, handle=7)) == SevStatus.INVALID_GUEST


def test_different_keys_never_share_an_asid(fw: SevFirmware, guests: Guests) -> None:
    first = guests.launch(0)
    other = fw.launch_start(0)
    assert _status(lambda: fw.activate(other, fw.guest_info(first).asid)) == SevStatus.ASID_OWNED
