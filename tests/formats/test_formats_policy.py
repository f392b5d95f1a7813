"""sevd.formats.policy: the 32-bit guest policy word (reference §5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sevd.formats.policy import RESERVED_MASK, GuestPolicy, PolicyFlag


def test_flag_values() -> None:
    # Linux include/linux/psp-sev.h SEV_POLICY_MASK_*
    assert [int(f) for f in PolicyFlag] == [0x1, 0x2, 0x4, 0x8, 0x10, 0x20]
    assert RESERVED_MASK == 0xFFC0


def test_decode_example() -> None:
    p = GuestPolicy.from_int(0x1817_0005)
    assert p.flags == PolicyFlag.NODBG | PolicyFlag.ES
    assert (p.api_major, p.api_minor) == (0x17, 0x18)
    assert not p.debug_allowed and p.es_required and p.key_sharing_allowed and p.send_allowed
    assert p.describe() == {
        "nodbg": True,
        "noks": False,
        "es": True,
        "nosend": False,
        "domain": False,
        "sev": False,
        "api-major": 0x17,
        "api-minor": 0x18,
        "reserved": 0,
    }
    assert int(p) == 0x1817_0005


def test_reserved_bits_are_kept() -> None:
    p = GuestPolicy.from_int(0x40 | 0x8000 | 0x1)
    assert p.has_reserved_bits and p.reserved == 0x8040
    assert p.to_int() == 0x8041


def test_api_minimum() -> None:
    p = GuestPolicy(api_major=1, api_minor=51)
    assert p.api_satisfied_by(1, 51) and p.api_satisfied_by(2, 0)
    assert not p.api_satisfied_by(1, 50) and not p.api_satisfied_by(0, 255)


@pytest.mark.parametrize("bad", [-1, 1 << 32])
def test_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError):
        GuestPolicy.from_int(bad)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        GuestPolicy(api_major=256)
    with pytest.raises(ValueError):
        GuestPolicy(reserved=0x1)
    with pytest.raises(ValueError):
        GuestPolicy(flags=PolicyFlag(0x40))


@given(st.integers(min_value=0, max_value=0xFFFF_FFFF))
def test_roundtrip_every_u32(value: int) -> None:
    assert GuestPolicy.from_int(value).to_int() == value
