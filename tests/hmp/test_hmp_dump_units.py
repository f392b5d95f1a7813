"""sevd.hmp.dump on its own: memory_dump layouts, printc, print, gva2gpa, info mem/tlb."""

from __future__ import annotations

import pytest

from sevd.hmp.dump import (
    PTE_ADDR_MASK_1G,
    PTE_ADDR_MASK_2M,
    MemRange,
    TlbEntry,
    addr_canonical,
    format_info_mem,
    format_info_tlb,
    format_print,
    gva2gpa,
    memory_dump,
    monitor_printc,
)

# reference/qmp.md §8.5: the real-mode IVT at 0 after SeaBIOS ran.
SEABIOS = bytes.fromhex("53ff00f053ff00f0c3e200f053ff00f0") * 2


def read(addr: int, length: int) -> bytes | None:
    if addr + length <= len(SEABIOS):
        return SEABIOS[addr : addr + length]
    if addr >= 0x1000 and addr + length <= 0x10000:
        return bytes(length)
    return None


def dump(count: int, fmt: str, size: int, addr: int = 0, physical: bool = True) -> str:
    return memory_dump(read, addr, count, fmt, size, physical)


@pytest.mark.parametrize(
    ("count", "fmt", "size", "text"),
    [
        (8, "x", 1, "0000000000000000: 0x53 0xff 0x00 0xf0 0x53 0xff 0x00 0xf0\n"),
        (4, "x", 2, "0000000000000000: 0xff53 0xf000 0xff53 0xf000\n"),
        (4, "x", 4, "0000000000000000: 0xf000ff53 0xf000ff53 0xf000e2c3 0xf000ff53\n"),
        (1, "x", 8, "0000000000000000: 0xf000ff53f000ff53\n"),
        (4, "d", 1, "0000000000000000:  83 255   0 240\n"),
        (2, "d", 2, "0000000000000000: 65363 61440\n"),
        (4, "d", 4, "0000000000000000: 4026597203 4026597203 4026589891 4026597203\n"),
        (1, "d", 8, "0000000000000000: -1152640768632881325\n"),  # only g is signed
        (1, "u", 8, "0000000000000000: 17294103305076670291\n"),
        (4, "u", 1, "0000000000000000:  83 255   0 240\n"),
        (4, "o", 1, "0000000000000000: 0123 0377   0 0360\n"),
        (1, "o", 2, "0000000000000000: 0177523\n"),
        (2, "o", 4, "0000000000000000: 036000177523 036000177523\n"),
        (1, "o", 8, "0000000000000000: 01700007765176000177523\n"),
        (3, "c", 1, "0000000000000000: 'S' '\\xff' '\\x00'\n"),
        (0, "x", 4, ""),
        (-1, "x", 4, ""),
    ],
)
def test_formats(count: int, fmt: str, size: int, text: str) -> None:
    assert dump(count, fmt, size) == text


def test_widths_pad_zero() -> None:
    zeros = memory_dump(lambda a, n: bytes(n), 0x2000, 2, "u", 2, True)
    assert zeros == "0000000000002000:     0     0\n"
    assert memory_dump(lambda a, n: bytes(n), 0, 1, "o", 8, True) == (
        "0000000000000000:                      0\n"
    )
    assert memory_dump(lambda a, n: bytes(n), 0, 4, "d", 4, True) == (
        "0000000000000000:          0          0          0          0\n"
    )


def test_line_lengths() -> None:
    # 8 bytes a line for b, 16 otherwise; lines counted from the start address.
    out = dump(17, "x", 1).splitlines()
    assert len(out) == 3 and out[2] == "0000000000000010: 0x53"
    out = dump(5, "x", 4).splitlines()
    assert out[1] == "0000000000000010: 0xf000ff53"
    out = memory_dump(lambda a, n: bytes(n), 0xFFFF0, 9, "x", 8, True).splitlines()
    assert [line[:17] for line in out] == [
        "00000000000ffff0:", "0000000000100000:", "0000000000100010:", "0000000000100020:",
        "0000000000100030:"]


def test_c_uses_the_sticky_size_for_count_and_line() -> None:
    # /3c after /w: 12 characters on one 16-byte line; after /g: 24 on 16 + 8.
    out = dump(3, "c", 4)
    assert out.count("'") == 24 and out.count("\n") == 1
    lines = memory_dump(lambda a, n: bytes(n), 0, 3, "c", 8, True).splitlines()
    assert [line.count("'\\x00'") for line in lines] == [16, 8]


def test_cannot_access_memory_stops_the_dump() -> None:
    assert dump(1, "x", 4, addr=0xFFFFFFFFFFFF) == "0000ffffffffffff: Cannot access memory\n"
    assert dump(1, "x", 4, addr=-4) == "fffffffffffffffc: Cannot access memory\n"
    # The first line prints, the second is unreadable, the rest is not tried.
    out = dump(12, "x", 4, addr=0x10)
    assert out.splitlines() == [
        "0000000000000010: 0xf000ff53 0xf000ff53 0xf000e2c3 0xf000ff53",
        "0000000000000020: Cannot access memory",
    ]


def test_short_read_is_unreadable() -> None:
    assert memory_dump(lambda a, n: b"\x01", 0, 4, "x", 1, True) == (
        "0000000000000000: Cannot access memory\n"
    )


def test_virtual_and_physical_print_alike_on_x86_64() -> None:
    assert dump(4, "x", 4, physical=False) == dump(4, "x", 4, physical=True)


def test_address_wraps_at_2_64() -> None:
    seen: list[int] = []

    def rd(addr: int, n: int) -> bytes:
        seen.append(addr)
        return bytes(n)

    out = memory_dump(rd, 0xFFFFFFFFFFFFFFF8, 2, "x", 8, True)
    assert seen == [0xFFFFFFFFFFFFFFF8]  # one 16-byte line, read in one go
    memory_dump(rd, 0xFFFFFFFFFFFFFFF0, 3, "x", 8, True)
    assert seen[-2:] == [0xFFFFFFFFFFFFFFF0, 0]
    assert out.startswith("fffffffffffffff8:")


def test_disassembly_is_not_supported() -> None:
    # QEMU without a disassembler (monitor_disas): one line whatever the count.
    assert dump(10, "i", -1, addr=0xFFFF0) == (
        "0x000ffff0: Asm output not supported on this arch\n"
    )
    assert dump(1, "i", 2, addr=0xFFFFFFFF0) == (
        "0xffffffff0: Asm output not supported on this arch\n"
    )


def test_bad_arguments_are_programming_errors() -> None:
    with pytest.raises(ValueError):
        dump(1, "q", 4)
    with pytest.raises(ValueError):
        dump(1, "x", 3)


@pytest.mark.parametrize(
    ("c", "text"),
    [(ord("S"), "'S'"), (32, "' '"), (0xFF, "'\\xff'"), (0, "'\\x00'"), (10, "'\\n'"),
     (13, "'\\r'"), (0x5C, "'\\\\'"), (0x27, "'\\''"), (126, "'~'"), (127, "'\\x7f'"),
     (300, "'\\x12c'"), (-1, "'\\xffffffff'"), (1 << 63, "'\\x00'")],
)
def test_monitor_printc(c: int, text: str) -> None:
    assert monitor_printc(c) == text


@pytest.mark.parametrize(
    ("val", "fmt", "text"),
    [(0x104, "x", "0x104\n"), (0, "x", "0\n"), (-1, "x", "0xffffffffffffffff\n"),
     (-1, "d", "-1\n"), (-1, "u", "18446744073709551615\n"), (8, "o", "010\n"),
     (0, "o", "0\n"), (65, "c", "'A'\n"), (5, "i", "5\n"), ((1 << 64) - 4, "d", "-4\n")],
)
def test_format_print(val: int, fmt: str, text: str) -> None:
    assert format_print(val, fmt) == text


def test_gva2gpa() -> None:
    identity = lambda page: page  # noqa: E731
    assert gva2gpa(0, identity) == "gpa: 0\n"
    assert gva2gpa(0x1000, identity) == "gpa: 0x1000\n"
    assert gva2gpa(0xFFFF5, identity) == "gpa: 0xffff5\n"
    pages: list[int] = []

    def translate(page: int) -> int | None:
        pages.append(page)
        return 0x7000 if page == 0xFFFFFFFF80001000 else None

    assert gva2gpa(0xFFFFFFFF80001234, translate) == "gpa: 0x7234\n"
    assert gva2gpa(-1, translate) == "Unmapped\n"
    assert pages == [0xFFFFFFFF80001000, 0xFFFFFFFFFFFFF000]


def test_addr_canonical() -> None:
    assert addr_canonical(0x7FFFFFFFF000) == 0x7FFFFFFFF000
    assert addr_canonical(0x800000000000) == 0xFFFF800000000000
    assert addr_canonical(1 << 48) == 1 << 48  # bit 47 clear: unchanged
    assert addr_canonical(0x800000000000, la57=True) == 0x800000000000
    assert addr_canonical(1 << 56, la57=True) == 0xFF00000000000000


def test_info_tlb_lines() -> None:
    entries = [
        TlbEntry(0x0, 0x0000000000001063),  # P W A D, 4K
        TlbEntry(0x200000, 0x80000000002000E7 | (1 << 8), PTE_ADDR_MASK_2M),
        TlbEntry(0xFF8000000000, 0x000FFFFFC00000A1 | 0x1F, PTE_ADDR_MASK_1G),
    ]
    assert format_info_tlb(entries) == (
        "0000000000000000: 0000000000001000 ---DA---W\n"
        "0000000000200000: 0000000000200000 XGPDA--UW\n"
        "ffffff8000000000: 0003ffffc0000000 --P-ACTUW\n"
    )


def test_info_mem_merges_runs_and_canonicalises() -> None:
    urw, ur, krw = 7, 5, 3
    ranges = [
        MemRange(0x0, 0x1000, krw),
        MemRange(0x1000, 0x2000, krw),  # same protection: one line
        MemRange(0x4000, 0x1000, krw),  # after a hole: a new line
        MemRange(0x5000, 0x1000, ur),  # other protection: a new line
        MemRange(0x400000, 0x200000, urw),
        MemRange(0x600000, 0x1000, 0),  # not present
        MemRange(0xFFFF800000000000, 0x1000, krw),  # canonical input is accepted
        MemRange(0xFFFFFFFFFFE00000, 0x200000, krw),  # runs to the end of the walk
    ]
    assert format_info_mem(ranges) == (
        "0000000000000000-0000000000003000 0000000000003000 -rw\n"
        "0000000000004000-0000000000005000 0000000000001000 -rw\n"
        "0000000000005000-0000000000006000 0000000000001000 ur-\n"
        "0000000000400000-0000000000600000 0000000000200000 urw\n"
        "ffff800000000000-ffff800000001000 0000000000001000 -rw\n"
        "ffffffffffe00000-0001000000000000 0000000000200000 -rw\n"
    )


def test_info_mem_whole_lower_half_prints_a_sign_extended_size() -> None:
    # mem_print() canonicalises the size too: 0x800000000000 has bit 47 set.
    assert format_info_mem([MemRange(0, 1 << 47, 7)]) == (
        "0000000000000000-ffff800000000000 ffff800000000000 urw\n"
    )


def test_info_mem_32_bit_limit_and_empty() -> None:
    assert format_info_mem([]) == ""
    assert format_info_mem([MemRange(0xFFC00000, 0x400000, 3)], limit=1 << 32) == (
        "00000000ffc00000-0000000100000000 0000000000400000 -rw\n"
    )
