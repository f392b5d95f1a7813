"""The fast `memory_dump` (block reads, column-wise `x`) prints exactly what QEMU's
line-by-line `memory_dump` prints.

`sevd.hmp.dump.memory_dump` reads whole blocks of lines at once (for an SEV guest: one
DBG_DECRYPT per run of private memory instead of one per 16-byte line) and formats `x`
dumps column by column. This module proves, with hypothesis, that for every format, unit
size, count, start address (2^64 wrap-around included) and readable window, the output is
identical to a direct port of QEMU's loop (one read per line, item by item, stop at the
first unreadable line), and that an `xp /512xg` of readable memory costs one read.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from sevd.hmp.dump import _c_int, _octal, memory_dump, monitor_printc

_M64 = (1 << 64) - 1
_HEX = {1: 2, 2: 4, 4: 8, 8: 16}
_DEC = {1: 3, 2: 5, 4: 10, 8: 20}
_OCT = {1: 3, 2: 6, 4: 11, 8: 22}


def qemu_memory_dump(read: Callable[[int, int], bytes | None], addr: int, count: int,
                     fmt: str, size: int) -> str:
    """QEMU's memory_dump() loop as sevd first ported it: a read per line."""
    addr &= _M64
    total = _c_int(size * _c_int(count))
    line_size = 8 if size == 1 else 16
    wsize = 1 if fmt == "c" else size
    signed = fmt == "d" and wsize == 8

    def item(v: int) -> str:
        if fmt == "x":
            return f" 0x{v:0{_HEX[wsize]}x}"
        if fmt in "du":
            return f" {v:>{_DEC[wsize]}}"
        if fmt == "o":
            return " " + _octal(v, _OCT[wsize])
        return " " + monitor_printc(v)

    lines = []
    while total > 0:
        n = min(total, line_size)
        data = read(addr, n)
        if data is None or len(data) < n:
            lines.append(f"{addr:016x}: Cannot access memory\n")
            break
        parts = [f"{addr:016x}:"]
        for i in range(0, n, wsize):
            parts.append(item(int.from_bytes(data[i:i + wsize], "little", signed=signed)))
        lines.append("".join(parts) + "\n")
        addr = (addr + n) & _M64
        total -= n
    return "".join(lines)


def memory(content: bytes, lo: int, hi: int) -> Callable[[int, int], bytes | None]:
    """Readable [lo, hi) with `content` repeated; anything else unreadable."""
    def read(addr: int, n: int) -> bytes | None:
        if not (lo <= addr and addr + n <= hi):
            return None
        return bytes(content[(addr + i) % len(content)] for i in range(n))
    return read


@settings(max_examples=300, deadline=None)
@given(
    content=st.binary(min_size=1, max_size=97),
    fmt=st.sampled_from("xduoc"),
    size=st.sampled_from([1, 2, 4, 8]),
    count=st.integers(min_value=-3, max_value=700),
    base=st.sampled_from([0, 0x100000, 0xFFFF0, (1 << 64) - 0x800, (1 << 64) - 8]),
    offset=st.integers(min_value=0, max_value=0x7FF),
    window=st.tuples(st.integers(0, 0x2000), st.integers(0, 0x2000)),
)
def test_same_text_as_qemus_loop(content: bytes, fmt: str, size: int, count: int, base: int,
                                 offset: int, window: tuple[int, int]) -> None:
    addr = (base + offset) & _M64
    lo = (base + min(window)) & _M64 if base < 1 << 63 else base
    hi = lo + max(window) - min(window) + (1 << 16 if min(window) == 0 else 0)
    read = memory(content, lo, hi)
    assert memory_dump(read, addr, count, fmt, size, True) == \
        qemu_memory_dump(read, addr, count, fmt, size)


@settings(max_examples=100, deadline=None)
@given(fmt=st.sampled_from("xduoc"), size=st.sampled_from([1, 2, 4, 8]),
       count=st.integers(min_value=0, max_value=20000), data=st.binary(min_size=8, max_size=8))
def test_large_dumps(fmt: str, size: int, count: int, data: bytes) -> None:
    read = memory(data, 0, 1 << 40)
    assert memory_dump(read, 0x1000, count, fmt, size, True) == \
        qemu_memory_dump(read, 0x1000, count, fmt, size)


def test_xp_of_a_page_is_one_read() -> None:
    calls: list[tuple[int, int]] = []
    page = bytes(range(256)) * 16

    def read(addr: int, n: int) -> bytes:
        calls.append((addr, n))
        return page[addr - 0x100000:addr - 0x100000 + n]

    out = memory_dump(read, 0x100000, 512, "x", 8, True)
    assert calls == [(0x100000, 4096)]
    assert out.count("\n") == 256
    assert out.startswith("0000000000100000: 0x0706050403020100 0x0f0e0d0c0b0a0908\n")


def test_an_unreadable_line_in_a_block_ends_the_dump_there() -> None:
    read = memory(b"\xab", 0x1000, 0x1000 + 40)  # 2.5 lines of 16 bytes
    out = memory_dump(read, 0x1000, 512, "x", 8, True)
    assert out == ("0000000000001000: 0xabababababababab 0xabababababababab\n"
                   "0000000000001010: 0xabababababababab 0xabababababababab\n"
                   "0000000000001020: Cannot access memory\n")
