"""DBG_DECRYPT / DBG_ENCRYPT and the running guest's own view of private memory."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psp_helpers import Guests

from sevd.domain.psp import GuestState, SevError, SevFirmware, SevStatus, SparsePageStore

MEM = 1 << 20


@pytest.fixture
def running(fw: SevFirmware, guests: Guests) -> int:
    return guests.in_state(GuestState.RUNNING)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    block=st.integers(0, (MEM - 3 * 4096) // 16),
    blocks=st.integers(0, 3 * 4096 // 16),
    seed=st.binary(min_size=1, max_size=16),
)
def test_dbg_round_trip_at_any_aligned_address(
    fw: SevFirmware, running: int, block: int, blocks: int, seed: bytes
) -> None:
    gpa, length = block * 16, blocks * 16
    data = (seed * (length // len(seed) + 1))[:length]
    fw.dbg_encrypt(running, gpa, data)
    assert fw.dbg_decrypt(running, gpa, length) == data
    stored = fw._guests[running].memory.read(gpa, length)
    assert length == 0 or stored != data
    assert fw.cpu_read(running, gpa, length) == data


@pytest.mark.parametrize(
    ("call", "status"),
    [
        (lambda fw, h: fw.dbg_decrypt(h, 8, 16), SevStatus.INVALID_ADDRESS),
        (lambda fw, h: fw.dbg_decrypt(h, 0, 16, dst_paddr=4), SevStatus.INVALID_ADDRESS),
        (lambda fw, h: fw.dbg_decrypt(h, 0, 15), SevStatus.INVALID_LENGTH),
        (lambda fw, h: fw.dbg_encrypt(h, 0, bytes(17)), SevStatus.INVALID_LENGTH),
        (lambda fw, h: fw.dbg_encrypt(h, 0, bytes(16), src_paddr=2), SevStatus.INVALID_ADDRESS),
        (lambda fw, h: fw.dbg_decrypt(0, 0, 16), SevStatus.INVALID_GUEST),
        (lambda fw, h: fw.dbg_decrypt(h, MEM - 16, 32), SevStatus.INVALID_ADDRESS),
        (lambda fw, h: fw.dbg_decrypt(h, 0, 0), SevStatus.SUCCESS),
    ],
)
def test_dbg_checks(
    fw: SevFirmware, guests: Guests, call: Callable[[SevFirmware, int], object], status: SevStatus
) -> None:
    handle = guests.launch(0, memory=SparsePageStore(MEM))
    try:
        call(fw, handle)
    except SevError as err:
        assert err.status is status
    else:
        assert status is SevStatus.SUCCESS


def test_nodbg_policy_refuses_debug(fw: SevFirmware, guests: Guests) -> None:
    handle = guests.in_state(GuestState.RUNNING, policy=0x1)
    for call in (
        lambda: fw.dbg_decrypt(handle, 0, 16),
        lambda: fw.dbg_encrypt(handle, 0, bytes(16)),
    ):
        with pytest.raises(SevError) as err:
            call()
        assert err.value.status is SevStatus.POLICY_FAILURE
    # The guest itself still reads its memory.
    fw.cpu_write(handle, 0, b"z" * 16)
    assert fw.cpu_read(handle, 0, 16) == b"z" * 16


def test_dbg_needs_activation_not_a_state(fw: SevFirmware, guests: Guests) -> None:
    handle = guests.launch(0, activate=False)
    with pytest.raises(SevError) as err:
        fw.dbg_decrypt(handle, 0, 16)
    assert err.value.status is SevStatus.INACTIVE
    fw.activate(handle, guests.asid())
    assert fw.dbg_decrypt(handle, 0, 16)  # LUPDATE, pending: allowed


def test_cpu_access_needs_an_active_guest(fw: SevFirmware, guests: Guests) -> None:
    handle = guests.launch(0)  # pending until LAUNCH_FINISH
    with pytest.raises(SevError) as err:
        fw.cpu_read(handle, 0, 16)
    assert err.value.status is SevStatus.INACTIVE
    with pytest.raises(SevError) as err:
        fw.cpu_write(99, 0, b"")
    assert err.value.status is SevStatus.INVALID_GUEST
