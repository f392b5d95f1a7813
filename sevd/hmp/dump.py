"""HMP text formatters for memory: ``x``/``xp`` dumps, ``print``, ``gva2gpa``, ``info mem``
and ``info tlb``, byte for byte as QEMU prints them on x86_64.

Ports of ``memory_dump``/``monitor_printc``/``hmp_print``/``hmp_gva2gpa``
(``monitor/hmp-cmds-target.c``, ``monitor/monitor.c``, ``monitor/hmp-cmds.c``) and of
``print_pte``/``mem_print``/``addr_canonical`` (``target/i386/monitor.c``). Every function
is pure: memory comes in through a ``read(addr, length)`` callback or as a list of simple
records that the page-table walker (elsewhere) produces, and text goes out with ``\\n``
line ends (the monitor turns them into ``\\r\\n``).

This module must not import transports, the QMP protocol layer or the domain.
"""

from __future__ import annotations

import binascii
import struct
import sys
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "NO_CPU",
    "PG_DISABLED",
    "PTE_ADDR_MASK_1G",
    "PTE_ADDR_MASK_2M",
    "PTE_ADDR_MASK_4K",
    "MemRange",
    "ReadFn",
    "TlbEntry",
    "addr_canonical",
    "format_info_mem",
    "format_info_tlb",
    "format_print",
    "gva2gpa",
    "memory_dump",
    "monitor_printc",
]

#: ``read(addr, length)`` -> exactly ``length`` bytes, or None when unreadable.
ReadFn = Callable[[int, int], "bytes | None"]

_M64 = (1 << 64) - 1

#: What ``info mem``/``info tlb`` print in real mode or with paging off (CR0.PG clear).
PG_DISABLED = "PG disabled\n"
#: What ``info mem``/``info tlb``/``info registers``/``memsave`` print without a CPU.
NO_CPU = "No CPU available\n"

# x86 page-table entry bits (target/i386/cpu.h).
PG_PRESENT_MASK = 1 << 0
PG_RW_MASK = 1 << 1
PG_USER_MASK = 1 << 2
PG_PWT_MASK = 1 << 3
PG_PCD_MASK = 1 << 4
PG_ACCESSED_MASK = 1 << 5
PG_DIRTY_MASK = 1 << 6
PG_PSE_MASK = 1 << 7
PG_GLOBAL_MASK = 1 << 8
PG_NX_MASK = 1 << 63

#: The physical-address masks QEMU's x86_64 ``info tlb`` applies per page size.
PTE_ADDR_MASK_4K = 0x3FFFFFFFFF000
PTE_ADDR_MASK_2M = 0x3FFFFFFE00000
PTE_ADDR_MASK_1G = 0x3FFFFC0000000

_TARGET_PAGE_MASK = ~0xFFF


# --------------------------------------------------------------------------- x / xp


def monitor_printc(c: int) -> str:
    """monitor_printc(): one character in single quotes, C-escaped.

    ``c`` is converted as QEMU converts it to ``int`` (``print /c 300`` gives ``'\\x12c'``,
    ``print /c -1`` gives ``'\\xffffffff'``).
    """
    c &= 0xFFFFFFFF
    if c == 0x27:
        body = "\\'"
    elif c == 0x5C:
        body = "\\\\"
    elif c == 0x0A:
        body = "\\n"
    elif c == 0x0D:
        body = "\\r"
    elif 32 <= c <= 126:
        body = chr(c)
    else:
        body = f"\\x{c:02x}"
    return f"'{body}'"


# Value formats per item size: x is "0x%0*x", d/u "%*" with ceil(bits*10/33) digits,
# o "%#*o" with ceil(bits/3) digits (max_digits in memory_dump).
_HEX_DIGITS = {1: 2, 2: 4, 4: 8, 8: 16}
_DEC_DIGITS = {1: 3, 2: 5, 4: 10, 8: 20}
_OCT_DIGITS = {1: 3, 2: 6, 4: 11, 8: 22}


def _octal(v: int, width: int) -> str:
    # C's "%#o": a leading 0 unless the value is 0.
    return (f"0{v:o}" if v else "0").rjust(width)


def memory_dump(
    read: ReadFn, addr: int, count: int, fmt: str, size: int, physical: bool
) -> str:
    """memory_dump(): the output of ``x`` (``physical=False``) or ``xp`` (``physical=True``).

    ``count``, ``fmt`` and ``size`` come from the ``/fmt`` parser (``size`` is -1 for ``i``
    without a size). Layout, as QEMU 9.2 prints it on x86_64:

    * each line starts with the address as 16 hex digits and ``:`` (``HWADDR_FMT_plx`` for
      ``xp``, ``TARGET_FMT_lx`` for ``x``: the same on a 64-bit target);
    * a line holds 8 bytes when the unit is 1 byte, else 16; this is decided before ``c``
      forces the unit to 1, so ``/c`` after ``/w`` prints 16 characters a line, and the
      byte count is ``count`` times the sticky unit;
    * items are little-endian, each after one space: ``x`` ``0x`` + 2/4/8/16 digits,
      ``u`` width 3/5/10/20, ``d`` the same but signed only for 8-byte items (smaller ones
      are loaded unsigned), ``o`` ``%#*o`` width 3/6/11/22, ``c`` monitor_printc;
    * an unreadable line prints `` Cannot access memory`` after its address and ends the
      dump (a short read counts as unreadable).

    ``i``: sevd has no disassembler. QEMU built without one (no capstone; since 8.0 that
    covers x86) answers, from monitor_disas(), once and whatever the count::

        0x%08" PRIx64 ": Asm output not supported on this arch

    which is what sevd prints. (QEMU 9.2's format: at least 8 hex digits, no padding to 16.)

    ``count`` and the byte count are C ``int``s and wrap as QEMU's do: a negative result
    prints nothing. There is no other cap, as in QEMU: the caller decides whether a huge
    dump is acceptable.
    """
    addr &= _M64
    if fmt == "i":
        return f"0x{addr:08x}: Asm output not supported on this arch\n"
    if size not in _HEX_DIGITS:
        raise ValueError(f"unit size must be 1, 2, 4 or 8, not {size}")
    if fmt not in "xduoc" or len(fmt) != 1:
        raise ValueError(f"unknown dump format {fmt!r}")
    total = _c_int(size * _c_int(count))
    line_size = 8 if size == 1 else 16
    wsize = 1 if fmt == "c" else size
    signed = fmt == "d" and wsize == 8
    item: Callable[[int], str]
    if fmt == "x":
        item = f" 0x{{:0{_HEX_DIGITS[wsize]}x}}".format
    elif fmt in "du":
        item = f" {{:>{_DEC_DIGITS[wsize]}}}".format
    elif fmt == "o":
        width = _OCT_DIGITS[wsize]

        def item(v: int) -> str:
            return " " + _octal(v, width)

    else:

        def item(v: int) -> str:
            return " " + monitor_printc(v)

    def one_line(line_addr: int, data: bytes) -> str:
        parts = [f"{line_addr:016x}:"]
        for i in range(0, len(data), wsize):
            parts.append(item(int.from_bytes(data[i : i + wsize], "little", signed=signed)))
        parts.append("\n")
        return "".join(parts)

    lines: list[str] = []
    while total > 0:
        # Whole lines are read in blocks: one read (for an SEV guest, one DBG_DECRYPT per
        # run of private memory) instead of one per 16-byte line. A block never wraps past
        # 2^64 (there each line is read on its own, as QEMU reads it), and a block that
        # cannot be read whole is read again line by line, so the output is QEMU's: every
        # readable line up to the first unreadable one, then "Cannot access memory".
        block = min(total, _BLOCK, max(line_size, (_M64 + 1 - addr) // line_size * line_size))
        data = read(addr, block)
        if data is not None and len(data) == block:
            lines.append(_format_block(data, addr, line_size, wsize, fmt, signed, one_line))
        else:
            end = block
            for off in range(0, end, line_size):
                n = min(line_size, end - off)
                line_addr = (addr + off) & _M64
                part = read(line_addr, n)
                if part is None or len(part) < n:
                    lines.append(f"{line_addr:016x}: Cannot access memory\n")
                    return "".join(lines)
                lines.append(one_line(line_addr, part))
        addr = (addr + block) & _M64
        total -= block
    return "".join(lines)


#: Bytes of memory read at once by memory_dump (a multiple of both line sizes).
_BLOCK = 64 << 10
#: array/struct codes of unsigned items of 1, 2, 4 and 8 bytes (lower case: signed).
_UNPACK = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _format_block(data: bytes, addr: int, line_size: int, wsize: int, fmt: str,
                  signed: bool, one_line: Callable[[int, bytes], str]) -> str:
    """The lines of a block of memory that was read whole (the block does not wrap).

    ``x`` of many lines is laid out as bytes (_hex_lines); ``x``, ``d`` and ``u`` are
    otherwise formatted with one ``%`` operation for the whole block (a template of every
    line, values unpacked at once). ``o`` (C's ``%#o`` is not Python's) and ``c`` go item
    by item. All give exactly what the item-by-item formatter gives.
    """
    if fmt not in "xdu":
        return "".join(one_line((addr + off) & _M64, data[off : off + line_size])
                       for off in range(0, len(data), line_size))
    full = len(data) // line_size
    if fmt == "x" and full >= _HEX_LINES_MIN:
        text = _hex_lines(data[: full * line_size], addr, line_size, wsize)
        tail = data[full * line_size :]
        return text + one_line((addr + full * line_size) & _M64, tail) if tail else text
    per_line = line_size // wsize
    code = _UNPACK[wsize].lower() if signed else _UNPACK[wsize]
    values = struct.unpack(f"<{len(data) // wsize}{code}", data)
    item = f" 0x%0{_HEX_DIGITS[wsize]}x" if fmt == "x" else f" %{_DEC_DIGITS[wsize]}d"
    lines, partial = divmod(len(values), per_line)
    template = ("%016x:" + item * per_line + "\n") * lines
    if partial:
        template += "%016x:" + item * partial + "\n"
    args: list[int] = []
    for i in range(0, len(values), per_line):
        args.append((addr + i * wsize) & _M64)
        args.extend(values[i : i + per_line])
    return template % tuple(args)


#: array codes of 2-, 4- and 8-byte items on this host (C's int and long vary).
_SWAP_CODES = {array(code).itemsize: code for code in "HILQ"}
#: From this many whole lines on, format ``x`` dumps column by column (_hex_lines).
_HEX_LINES_MIN = 8


def _hex_lines(data: bytes, addr: int, line_size: int, wsize: int) -> str:
    """Whole lines of format ``x``, built column by column instead of item by item.

    Every line has the same layout (``%016x:`` then `` 0x`` and 2*wsize digits per item),
    so the text is a template of fixed-width lines whose digit columns are filled by
    strided slice assignments: one for each of the 16 address digits and one for each
    item digit of a line (48 in all, for any size), each covering every line at once. The
    item digits are the hex of the items in big-endian order (the little-endian items
    byte-swapped). About 15x faster than formatting 512 items one by one.
    """
    lines = len(data) // line_size
    per_line = line_size // wsize
    digits = 2 * wsize
    item_len = 3 + digits
    line_len = 17 + per_line * item_len + 1
    if wsize > 1 and sys.byteorder == "little":
        items = array(_SWAP_CODES[wsize], data)
        items.byteswap()
        data = items.tobytes()
    values = binascii.hexlify(data)
    addrs = binascii.hexlify(struct.pack(f">{lines}Q",
                                         *range(addr, addr + lines * line_size, line_size)))
    out = bytearray((b"0" * 16 + b":" + (b" 0x" + b"0" * digits) * per_line + b"\n") * lines)
    for j in range(16):
        out[j::line_len] = addrs[j::16]
    stride = per_line * digits
    for slot in range(per_line):
        col = 17 + slot * item_len + 3
        for j in range(digits):
            out[col + j::line_len] = values[slot * digits + j::stride]
    return out.decode("ascii")


def _c_int(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


# --------------------------------------------------------------------------- print, gva2gpa


def format_print(val: int, fmt: str) -> str:
    """hmp_print(): the value of ``print /fmt expr`` (only the format letter matters).

    ``o`` ``%#o``, ``x`` ``%#x`` (so 0 is ``0``), ``u`` unsigned, ``c`` monitor_printc,
    and ``d`` or anything else (``i`` included) signed decimal; the value is 64-bit.
    """
    v = val & _M64
    if fmt == "o":
        text = _octal(v, 0)
    elif fmt == "x":
        text = f"{v:#x}" if v else "0"
    elif fmt == "u":
        text = str(v)
    elif fmt == "c":
        text = monitor_printc(v)
    else:
        text = str(v - (1 << 64) if v >> 63 else v)
    return text + "\n"


def gva2gpa(addr: int, translate_page: Callable[[int], int | None]) -> str:
    """hmp_gva2gpa(): translate the page of ``addr``, add the offset, print ``%#x``.

    ``translate_page(page_vaddr)`` returns the guest-physical address of that 4 KiB page
    or None when it is unmapped (QEMU's -1). Prints ``gpa: 0x1000`` (``gpa: 0`` for zero,
    C's ``%#`` has no prefix for 0) or ``Unmapped``. ``No cpu`` is the caller's.
    """
    addr &= _M64
    gpa = translate_page(addr & _TARGET_PAGE_MASK & _M64)
    if gpa is None:
        return "Unmapped\n"
    value = (gpa + (addr & 0xFFF)) & _M64
    return f"gpa: {value:#x}\n" if value else "gpa: 0\n"


# --------------------------------------------------------------------------- info mem / tlb


def addr_canonical(addr: int, la57: bool = False) -> int:
    """addr_canonical(): sign-extend bit 47 (bit 56 with CR4.LA57) of a linear address."""
    addr &= _M64
    if la57:
        if addr & (1 << 56):
            addr |= _M64 ^ ((1 << 57) - 1)
    elif addr & (1 << 47):
        addr |= _M64 ^ ((1 << 48) - 1)
    return addr


@dataclass(frozen=True)
class TlbEntry:
    """One leaf of the page tables, as print_pte() receives it.

    ``vaddr`` is the linear address the walker computed (sign extension is applied here),
    ``pte`` the entry as used for the flags, ``mask`` the physical-address mask for the
    page size. QEMU passes 4 KiB PTEs with the PSE/PAT bit (7) cleared, and large pages
    (PDE/PDPE) with it, which shows as ``P``.
    """

    vaddr: int
    pte: int
    mask: int = PTE_ADDR_MASK_4K


def format_info_tlb(entries: Iterable[TlbEntry], *, la57: bool = False) -> str:
    """``info tlb``: ``%016llx: %016llx XGPDACTUW`` per mapped page, in the given order."""
    out: list[str] = []
    for e in entries:
        pte = e.pte & _M64
        flags = "".join(
            letter if pte & bit else "-"
            for letter, bit in (
                ("X", PG_NX_MASK),
                ("G", PG_GLOBAL_MASK),
                ("P", PG_PSE_MASK),
                ("D", PG_DIRTY_MASK),
                ("A", PG_ACCESSED_MASK),
                ("C", PG_PCD_MASK),
                ("T", PG_PWT_MASK),
                ("U", PG_USER_MASK),
                ("W", PG_RW_MASK),
            )
        )
        out.append(f"{addr_canonical(e.vaddr, la57):016x}: {pte & e.mask:016x} {flags}\n")
    return "".join(out)


@dataclass(frozen=True)
class MemRange:
    """A run of linear addresses with one effective protection, for ``info mem``.

    ``prot`` is what mem_info_* compute: the entry's ``PG_USER | PG_RW | PG_PRESENT`` bits
    ANDed with those of every upper level (0 means not present). ``vaddr`` is the linear
    address as the walker computes it (``l1 << 39 | ...``, not sign-extended).
    """

    vaddr: int
    size: int
    prot: int


def format_info_mem(
    ranges: Iterable[MemRange], *, limit: int = 1 << 48, la57: bool = False
) -> str:
    """``info mem``: ``%016llx-%016llx %016llx %c%c%c`` per run of equal protection.

    Reproduces mem_print(): consecutive ranges with the same protection merge, a gap or a
    change of protection ends a run, and start, end *and size* go through addr_canonical
    (so a size with bit 47 set is printed sign-extended, as QEMU does). ``ranges`` must be
    in ascending address order; ``limit`` is where the walk ends: ``1 << 48`` for 4-level
    paging, ``1 << 57`` for 5-level, ``1 << 32`` for 32-bit and PAE paging.
    """
    wrap = limit - 1 if limit & (limit - 1) == 0 else _M64
    out: list[str] = []
    start = -1
    last_prot = 0

    def event(end: int, prot: int) -> None:
        # mem_print(): called at every entry boundary with the new protection.
        nonlocal start, last_prot
        if prot == last_prot:
            return
        if start != -1:
            out.append(
                f"{addr_canonical(start, la57):016x}-{addr_canonical(end, la57):016x} "
                f"{addr_canonical(end - start, la57):016x} "
                f"{'u' if last_prot & PG_USER_MASK else '-'}r"
                f"{'w' if last_prot & PG_RW_MASK else '-'}\n"
            )
        start = end if prot != 0 else -1
        last_prot = prot

    cursor = 0
    for r in ranges:
        vaddr = r.vaddr & wrap
        if vaddr != cursor:
            event(cursor, 0)  # the walk saw non-present entries in between
        event(vaddr, r.prot & (PG_USER_MASK | PG_RW_MASK | PG_PRESENT_MASK))
        cursor = vaddr + r.size
    if cursor != limit:
        event(cursor, 0)
    event(limit, 0)  # "Flush last range"
    return "".join(out)
