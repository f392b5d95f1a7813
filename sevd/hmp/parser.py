"""HMP command-line parsing: a faithful port of QEMU's ``monitor/hmp.c``.

What lives here: splitting off the command name (``get_command_name``), the quoting rules
of ``get_str``, the ``/fmt`` parser with its sticky defaults, and the ``args_type`` grammar
of ``hmp-commands.hx`` (``monitor_parse_arguments``), each with QEMU's exact error texts.
The expression evaluator that the integer types use is in :mod:`sevd.hmp.expr`.
Everything is pure and synchronous; the sticky ``/fmt`` defaults live in a
:class:`DumpDefaults` object that the caller owns (one per guest, as one guest is one QEMU
process), and ``$reg`` values come from a callback.

This module must not import transports, the QMP protocol layer or the domain: it only
turns text into a dict of arguments or an :class:`HmpParseError` carrying the text QEMU
prints. The ``Try "help ..."`` line is added by the dispatcher (``table.py``), because QEMU
composes it in ``handle_hmp_command`` from the command line, not from the error.

Byte-versus-character notes. QEMU parses the UTF-8 bytes of a C string; sevd parses the
Python ``str``. They agree on everything ASCII. Where they could differ, QEMU's observable
behaviour is reproduced: the line ends at the first NUL (a C string), ``%c`` of a non-ASCII
character comes out as U+FFFD (QEMU prints one byte of a UTF-8 sequence, which the QMP
JSON writer replaces), and a non-ASCII character constant (``'é'``) fails with "missing
terminating ' character" (its second UTF-8 byte is not a quote). Buffer limits (1023
characters for strings, 255 for command names, 127 for register names) are counted in
characters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from sevd.hmp.expr import (
    SPACE,
    HmpParseError,
    RegisterLookup,
    as_int64,
    eval_expr,
    get_expr,
    is_space,
    printable_char,
    skip_space,
    terminate,
)

__all__ = [
    "DumpDefaults",
    "HmpParseError",
    "RegisterLookup",
    "as_int64",
    "eval_expr",
    "get_command_name",
    "get_str",
    "is_space",
    "parse_arguments",
    "parse_cmdline",
]

_M64 = (1 << 64) - 1
_MIB = 1 << 20

_DIGITS = frozenset("0123456789")
# strtod(): the prefix it accepts (decimal, hexadecimal, inf/infinity, nan[(chars)]).
_DOUBLE = re.compile(
    r"[+-]?(?:0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?"
    r"|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN](?:\([0-9A-Za-z_]*\))?)"
)
_STR_MAX = 1023  # char buf[1024] in get_str's callers
_NAME_MAX = 255  # char cmdname[256] in monitor_parse_command
_MAX_ARGS = 16  # MAX_ARGS of parse_cmdline (help)


@dataclass
class DumpDefaults:
    """The sticky ``/fmt`` defaults (``default_fmt_format``/``default_fmt_size`` in hmp.c).

    QEMU keeps them in two process-wide globals shared by ``x``, ``xp``, ``print`` and the
    I/O-port commands; sevd keeps one object per guest (one guest is one QEMU process).
    """

    format: str = "x"
    size: int = 4


def _as_int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


# --------------------------------------------------------------------------- names, strings


def get_command_name(s: str, i: int = 0) -> tuple[str, int] | None:
    """Port of get_command_name(): the name runs to the first space, ``/`` or end of line.

    Returns ``(name, end)`` with ``end`` right after the name, or None for a blank line.
    ``s`` must be NUL-terminated (as the dispatcher prepares it) or plain text.
    """
    n = len(s)
    while i < n and s[i] in SPACE:
        i += 1
    if i >= n or s[i] == "\0":
        return None
    start = i
    while i < n and s[i] != "\0" and s[i] != "/" and s[i] not in SPACE:
        i += 1
    return s[start : min(i, start + _NAME_MAX)], i


def get_str(s: str, i: int) -> tuple[str, int] | None:
    """Port of get_str(): one word, or a double-quoted string with ``\\n \\r \\\\ \\' \\"``.

    Returns ``(value, end)`` or None on failure (nothing left, an unterminated string or an
    unsupported escape; QEMU prints the last two on its stdout, not to the monitor).
    ``s`` must be NUL-terminated.
    """
    i = skip_space(s, i)
    if s[i] == "\0":
        return None
    out: list[str] = []
    if s[i] == '"':
        i += 1
        while s[i] != "\0" and s[i] != '"':
            if s[i] == "\\":
                c = s[i + 1]
                i += 2
                if c == "n":
                    c = "\n"
                elif c == "r":
                    c = "\r"
                elif c not in "\\'\"":
                    return None  # "unsupported escape code: '\%c'" on QEMU's stdout
                out.append(c)
            else:
                out.append(s[i])
                i += 1
        if s[i] != '"':
            return None  # "unterminated string" on QEMU's stdout
        i += 1
    else:
        start = i
        while s[i] != "\0" and s[i] not in SPACE:
            i += 1
        out.append(s[start:i])
    return "".join(out)[:_STR_MAX], i


def parse_cmdline(text: str) -> list[str] | None:
    """Port of parse_cmdline() (used by ``help``): words via get_str, at most 16.

    Returns None where QEMU's parse fails (too many words, bad quoting).
    """
    s = terminate(text)
    args: list[str] = []
    i = 0
    while True:
        i = skip_space(s, i)
        if s[i] == "\0":
            return args
        if len(args) >= _MAX_ARGS:
            return None
        got = get_str(s, i)
        if got is None:
            return None
        args.append(got[0])
        i = got[1]


# --------------------------------------------------------------------------- sizes, doubles


def _suffix_mul(c: str) -> int:
    # suffix_mul() with unit 1024: B K M G T P E, either case.
    return {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50,
            "E": 1 << 60}.get(c.upper(), -1) if c != "\0" else -1


_SIZE_INT = re.compile(r"[0-9]+")
_SIZE_HEX = re.compile(r"0[xX]([0-9a-fA-F]+)")
_SIZE_FRAC = re.compile(r"\.[0-9]*")


def _strtosz_mib(s: str, i: int) -> tuple[int, int] | None:
    """qemu_strtosz_MiB(): a byte size with an optional B/K/M/G/T/P/E suffix, default M.

    This follows QEMU 8.1+'s do_strtosz for every well-formed input (decimal integers,
    decimal fractions that need a suffix other than B, hexadecimal without fraction or
    suffix) and rejects what it rejects; corner cases of its error positions do not matter
    because every failure prints the same "invalid size".
    """
    h = _SIZE_HEX.match(s, i)
    if h is not None:
        end = h.end()
        if s[end] == "." or _suffix_mul(s[end]) > 0:
            return None
        # Hexadecimal takes no suffix but still the default unit: "0x10" is 16 MiB.
        val = int(h.group(1), 16) * _suffix_mul("M")
        return (val, end) if val <= _M64 else None
    m = _SIZE_INT.match(s, i)
    fraction = 0.0
    if m is None:
        f = _SIZE_FRAC.match(s, i)
        if f is None or f.end() == i + 1:
            return None
        val, end = 0, i
    else:
        val, end = int(m.group()), m.end()
        if val > _M64:
            return None
    f = _SIZE_FRAC.match(s, end)
    if f is not None:
        digits = f.group()[1:]
        fraction = float("0." + digits) if digits else 0.0
        end = f.end()
    mul = _suffix_mul(s[end])
    if mul > 0:
        end += 1
    else:
        mul = _suffix_mul("M")
    if mul == 1 and fraction != 0.0:
        return None
    scaled = fraction * mul
    total = val * mul + math.floor(scaled) + (1 if scaled - math.floor(scaled) >= 0.5 else 0)
    if total > _M64:
        return None
    return total, end


def _get_double(s: str, i: int) -> tuple[float, int]:
    m = _DOUBLE.match(s, i)
    if m is None:
        raise HmpParseError("Number expected")
    text = m.group()
    bare = text.lstrip("+-")
    if bare[:2] in ("0x", "0X"):
        try:
            value = float.fromhex(text)
        except OverflowError:
            value = math.inf
    elif bare[:1] in ("i", "I", "n", "N"):
        value = math.inf  # inf and nan: "Bad number" either way
    else:
        value = float(text)  # overflows to inf, as strtod gives HUGE_VAL
    if not math.isfinite(value):
        raise HmpParseError("Bad number")
    return value, m.end()


# --------------------------------------------------------------------------- arguments


def _parse_fmt(s: str, i: int, defaults: DumpDefaults, out: dict[str, Any]) -> int:
    """The ``/`` type: ``/{count}{format}{size}``, updating the sticky defaults."""
    i = skip_space(s, i)
    if s[i] == "/":
        i += 1
        count = 1
        if s[i] in _DIGITS:
            start = i
            while s[i] in _DIGITS:
                i += 1
            count = _as_int32(int(s[start:i]))  # an int that wraps (QEMU builds -fwrapv)
        size = -1
        fmt = ""
        while True:
            c = s[i]
            if c in "oduxic":
                fmt = c
            elif c == "b":
                size = 1
            elif c == "h":
                size = 2
            elif c == "w":
                size = 4
            elif c in "gL":
                size = 8
            else:
                break
            i += 1
        if s[i] != "\0" and s[i] not in SPACE:
            raise HmpParseError(f"invalid char in format: '{printable_char(s[i])}'")
        if not fmt:
            fmt = defaults.format
        if fmt != "i":
            # For 'i', not specifying a size gives -1, and the default size is kept.
            if size < 0:
                size = defaults.size
            defaults.size = size
        defaults.format = fmt
    else:
        count = 1
        fmt = defaults.format
        size = defaults.size if fmt != "i" else -1
    out["count"] = count
    out["format"] = fmt
    out["size"] = size
    return i


def parse_arguments(
    name: str,
    args_type: str,
    line: str,
    pos: int = 0,
    *,
    defaults: DumpDefaults | None = None,
    registers: RegisterLookup | None = None,
) -> dict[str, Any]:
    """Port of monitor_parse_arguments(): parse ``line[pos:]`` against ``args_type``.

    ``name`` is the table name used in messages (with its aliases, e.g. ``print|p``, as
    QEMU prints ``cmd->name``). Returns a dict like QEMU's QDict: absent optional arguments
    are absent keys. Value types: ``s``/``F``/``B``/``S``/``O`` str; ``/`` gives ``count``
    (int), ``format`` (one-character str) and ``size`` (int, -1 for ``i`` without a size);
    ``i`` an int in 0..2**32-1; ``l`` the int64 result as an unsigned 64-bit int (QEMU's
    handlers cast it to hwaddr/target_ulong; use :func:`as_int64` for a signed view);
    ``M`` the value times 1 MiB; ``o`` bytes; ``T`` float seconds; ``b`` and ``-x`` bool.
    ``O`` (QemuOpts) is kept as the raw word, since sevd has no QemuOpts lists.

    Raises :class:`HmpParseError` with the text QEMU prints before its "Try" line.
    """
    s = terminate(line)
    if defaults is None:
        defaults = DumpDefaults()
    out: dict[str, Any] = {}
    t = args_type + "\0"
    ti = 0
    p = pos
    while True:
        # key_get_info(): skip one ',', the key runs to ':'; no ':' means the end.
        if t[ti] == ",":
            ti += 1
        colon = t.find(":", ti)
        if colon < 0:
            break
        key = t[ti:colon]
        ti = colon + 1
        c = t[ti]
        ti += 1
        if c in "FBs":
            p = skip_space(s, p)
            if t[ti] == "?":
                ti += 1
                if s[p] == "\0":
                    continue
            got = get_str(s, p)
            if got is None:
                what = {"F": "filename", "B": "block device name"}.get(c, "string")
                raise HmpParseError(f"{name}: {what} expected")
            out[key], p = got
        elif c == "O":
            p = skip_space(s, p)
            if s[p] == "\0":
                continue
            got = get_str(s, p)
            if got is None:
                raise HmpParseError("")  # QEMU prints nothing before its "Try" line
            out[key], p = got
        elif c == "/":
            p = _parse_fmt(s, p, defaults, out)
        elif c in "ilM":
            p = skip_space(s, p)
            if t[ti] in "?.":
                if t[ti] == "?":
                    if s[p] == "\0":
                        ti += 1
                        continue
                elif s[p] == ".":
                    p = skip_space(s, p + 1)
                else:
                    ti += 1
                    continue
                ti += 1
            val, p = get_expr(s, p, registers)
            if c == "i":
                if (val >> 32) & 0xFFFFFFFF:
                    raise HmpParseError(f"'{name}' has failed: integer is for 32-bit values")
                out[key] = val
            elif c == "M":
                if val < 0:
                    raise HmpParseError("enter a positive value")
                out[key] = as_int64(val * _MIB)
            else:
                out[key] = val & _M64
        elif c == "o":
            p = skip_space(s, p)
            if t[ti] == "?":
                ti += 1
                if s[p] == "\0":
                    continue
            size = _strtosz_mib(s, p)
            if size is None or size[0] > (1 << 63) - 1:
                raise HmpParseError("invalid size")
            out[key], p = size
        elif c == "T":
            p = skip_space(s, p)
            if t[ti] == "?":
                ti += 1
                if s[p] == "\0":
                    continue
            seconds, p = _get_double(s, p)
            if s[p] != "\0" and s[p + 1] == "s" and s[p] in "mun":
                seconds /= {"m": 1e3, "u": 1e6, "n": 1e9}[s[p]]
                p += 2
            if s[p] != "\0" and s[p] not in SPACE:
                raise HmpParseError("Unknown unit suffix")
            out[key] = seconds
        elif c == "b":
            p = skip_space(s, p)
            beg = p
            while "\x21" <= s[p] <= "\x7e":  # qemu_isgraph()
                p += 1
            word = s[beg:p]
            if word not in ("on", "off"):
                raise HmpParseError("Expected 'on' or 'off'")
            out[key] = word == "on"
        elif c == "-":
            p, ti = _parse_option(name, key, t, ti, s, p, out)
        elif c == "S":
            p = skip_space(s, p)
            if t[ti] == "?":
                ti += 1
                if s[p] == "\0":
                    continue
            rest = s[p:-1]
            if not rest:
                raise HmpParseError(f"{name}: string expected")
            out[key] = rest
            p = len(s) - 1
        else:
            raise HmpParseError(f"{name}: unknown type '{c}'")
    p = skip_space(s, p)
    if s[p] != "\0":
        raise HmpParseError(f"{name}: extraneous characters at the end of line")
    return out


def _parse_option(
    name: str, key: str, t: str, ti: int, s: str, p: int, out: dict[str, Any]
) -> tuple[int, int]:
    """The ``-x`` type (a flag) and ``-xs`` (a flag with a string value).

    Port of the '-' case of monitor_parse_arguments(): a present flag sets True (or the
    string); a different ``-y`` that is_valid_option() finds later in args_type is left
    for its own key (the position goes back to before the spaces); any other is refused.
    Returns the new line position and args_type position.
    """
    flag = t[ti]
    ti += 1
    if flag == "\0":
        raise HmpParseError(f"{name}: unknown type '-'")
    tmp = p
    p = skip_space(s, p)
    if s[p] != "-":
        if t[ti] == "s":
            ti += 1
        return p, ti
    p += 1
    if flag != s[p]:
        # is_valid_option(): strstr(typestr, "-<c>") on the rest of args_type.
        option = "-" + s[p] if s[p] != "\0" else "-"
        if option not in t[ti:-1]:
            raise HmpParseError(f"{name}: unsupported option -{printable_char(s[p])}"
                                if s[p] != "\0" else f"{name}: unsupported option -")
        return tmp, ti  # skip_key
    if t[ti] == "s":
        ti += 1
        opt = s[p]
        got = get_str(s, skip_space(s, p + 1))
        if got is None:
            raise HmpParseError(f"{name}: value expected for -{opt}")
        out[key] = got[0]
        return got[1], ti
    out[key] = True
    return p + 1, ti
