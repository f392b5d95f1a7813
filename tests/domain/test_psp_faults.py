"""Fault injection and the per-command counters."""

from __future__ import annotations

import pytest
from psp_helpers import Guests

from sevd.domain.psp import Command, GuestState, SevError, SevFirmware, SevStatus


def test_next_n_calls_fail_then_recover(fw: SevFirmware) -> None:
    rule = fw.faults.arm("PDH_CERT_EXPORT", SevStatus.INVALID_PLATFORM_STATE, count=2)
    assert rule.command is Command.PDH_CERT_EXPORT
    for _ in range(2):
        with pytest.raises(SevError) as err:
            fw.pdh_cert_export()
        assert err.value.status is SevStatus.INVALID_PLATFORM_STATE
        assert err.value.command == "PDH_CERT_EXPORT"
    fw.pdh_cert_export()
    assert fw.faults.rules() == []


def test_fault_for_one_guest_handle(fw: SevFirmware, guests: Guests) -> None:
    a = guests.in_state(GuestState.LUPDATE)
    b = guests.in_state(GuestState.LUPDATE)
    fw.faults.arm(Command.LAUNCH_MEASURE, SevStatus.HWERROR_UNSAFE, handle=b)
    fw.launch_measure(a)  # another guest: unaffected
    with pytest.raises(SevError) as err:
        fw.launch_measure(b)
    assert err.value.status is SevStatus.HWERROR_UNSAFE
    assert fw.guest_info(b).state is GuestState.LUPDATE  # the command did not run
    fw.launch_measure(b)


def test_any_status_number_can_be_injected(fw: SevFirmware) -> None:
    fw.faults.arm("get_id", 0x27)
    with pytest.raises(SevError) as err:
        fw.get_id()
    assert err.value.status == 0x27 and err.value.name == "0x27"
    assert err.value.text == "unknown error"


def test_list_and_clear(fw: SevFirmware) -> None:
    fw.faults.arm("INIT", 1)
    fw.faults.arm("DF_FLUSH", 2, count=3)
    fw.faults.arm("DF_FLUSH", 3, handle=4)
    listed = fw.faults.rules()
    assert [(r.command.name, r.status, r.remaining, r.handle) for r in listed] == [
        ("INIT", 1, 1, None),
        ("DF_FLUSH", 2, 3, None),
        ("DF_FLUSH", 3, 1, 4),
    ]
    listed[0].remaining = 99  # copies: the armed rules do not change
    assert fw.faults.rules()[0].remaining == 1
    assert fw.faults.clear("df_flush") == 2
    assert fw.faults.clear() == 1
    assert fw.faults.rules() == []


@pytest.mark.parametrize(
    ("command", "status", "count"),
    [("NO_SUCH", 1, 1), ("INIT", 0, 1), ("INIT", 1, 0), ("INIT", -1, 1)],
)
def test_arm_rejects_nonsense(fw: SevFirmware, command: str, status: int, count: int) -> None:
    with pytest.raises((ValueError, KeyError)):
        fw.faults.arm(command, status, count)


def test_counters(fw: SevFirmware, guests: Guests) -> None:
    handle = guests.in_state(GuestState.RUNNING)
    fw.dbg_encrypt(handle, 0, bytes(4096))
    fw.dbg_decrypt(handle, 0, 64)
    with pytest.raises(SevError):
        fw.dbg_decrypt(handle, 1, 16)
    fw.faults.arm("GET_ID", SevStatus.INVALID_LENGTH)
    with pytest.raises(SevError):
        fw.get_id()
    stats = fw.stats
    assert stats.calls["DBG_DECRYPT"] == 2 and stats.calls["INIT"] == 1
    assert stats.failures[("DBG_DECRYPT", "INVALID_ADDRESS")] == 1
    assert stats.failures[("GET_ID", "INVALID_LENGTH")] == 1
    assert stats.bytes_encrypted >= 4096 and stats.bytes_decrypted == 64
