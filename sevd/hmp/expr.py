"""The HMP expression evaluator and the C-string conventions shared by the HMP parser.

A port of ``get_expr``/``expr_sum``/``expr_logic``/``expr_prod``/``expr_unary`` of QEMU's
``monitor/hmp.c``: ``+ - * / % & | ^ ~ ( )``, unary ``+ - ~``, numbers as ``strtoull(p, &end,
0)`` reads them (decimal, ``0x`` hexadecimal, leading-0 octal; no size suffixes), character
constants ``'a'`` and ``$reg`` through a callback, with int64 arithmetic that wraps as C's
does and QEMU's exact error texts. See :mod:`sevd.hmp.parser` for the byte-versus-character
notes that apply here too.

This module must not import transports, the QMP protocol layer or the domain.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "SPACE",
    "HmpParseError",
    "RegisterLookup",
    "as_int64",
    "eval_expr",
    "get_expr",
    "is_space",
    "printable_char",
    "skip_space",
    "terminate",
]

#: ``$name`` -> value, or None (or a raised LookupError) for "unknown register".
RegisterLookup = Callable[[str], int | None]

_M64 = (1 << 64) - 1
# qemu_isspace() is isspace() in the C locale: exactly these six characters.
SPACE = frozenset(" \t\n\v\f\r")
_REG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")
_REG_MAX = 127  # char buf[128] in expr_unary's '$' case
# strtoull(p, &end, 0) on a string that starts with no space and no sign: "0x" needs a hex
# digit after it (else only the "0" is taken), a leading 0 means octal, else decimal.
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


class HmpParseError(Exception):
    """A command line QEMU refuses; ``text`` is what QEMU prints (no trailing newline)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def is_space(ch: str) -> bool:
    """qemu_isspace(): C-locale whitespace."""
    return ch in SPACE


def as_int64(value: int) -> int:
    """Reinterpret the low 64 bits of ``value`` as a signed int64 (C's wrap-around)."""
    value &= _M64
    return value - (1 << 64) if value >> 63 else value


def printable_char(ch: str) -> str:
    """What QEMU's ``%c`` of this character looks like once it reaches QMP (see module doc)."""
    return ch if ch < "\x80" else "\ufffd"


def terminate(line: str) -> str:
    """The C string QEMU sees, plus a NUL sentinel so that ``s[i]`` is always valid."""
    nul = line.find("\0")
    if nul >= 0:
        line = line[:nul]
    return line + "\0"


def skip_space(s: str, i: int) -> int:
    """The index of the first non-space at or after ``i`` (``s`` is NUL-terminated)."""
    while s[i] in SPACE:
        i += 1
    return i


# --------------------------------------------------------------------------- expressions


# Binding strength of the binary operators: expr_prod (* / %) binds tighter than
# expr_logic (& | ^), which binds tighter than expr_sum (+ -); all are left-associative.
_PRECEDENCE = {"*": 3, "/": 3, "%": 3, "&": 2, "|": 2, "^": 2, "+": 1, "-": 1}


def _apply(op: str, val: int, val2: int) -> int:
    """One binary operation of expr_sum/expr_logic/expr_prod on int64 values."""
    if op == "+":
        return as_int64(val + val2)
    if op == "-":
        return as_int64(val - val2)
    if op == "*":
        return as_int64(val * val2)
    if op == "&":
        return val & val2
    if op == "|":
        return val | val2
    if op == "^":
        return val ^ val2
    if val2 == 0:
        raise HmpParseError("division by zero")
    # C division truncates toward zero and the remainder takes the dividend's sign.
    # INT64_MIN / -1 traps (SIGFPE) in QEMU; sevd gives the wrapped quotient instead.
    q = abs(val) // abs(val2)
    if (val < 0) != (val2 < 0):
        q = -q
    return as_int64(q) if op == "/" else as_int64(val - val2 * q)


class _Expr:
    """The evaluator of hmp.c: int64 arithmetic with C's wrap-around and truncation.

    QEMU evaluates by recursive descent (expr_sum -> expr_logic -> expr_prod ->
    expr_unary). This is the same grammar evaluated with explicit stacks, so that deep
    nesting costs no Python stack. It scans left to right exactly as the recursion does
    and applies every operator at the same point of the scan, so errors (including
    "division by zero", which QEMU raises as soon as the divisor is parsed) come out in
    the same order with the same texts.
    """

    __slots__ = ("i", "registers", "s")

    def __init__(self, s: str, i: int, registers: RegisterLookup | None) -> None:
        self.s = s
        self.i = i
        self.registers = registers

    def next(self) -> None:
        # next(): step over one character, then over spaces (never past the NUL).
        s = self.s
        i = self.i
        if s[i] != "\0":
            i += 1
            while s[i] in SPACE:
                i += 1
        self.i = i

    def evaluate(self) -> int:
        s = self.s
        # One level per open parenthesis: (operands, operators, prefixes before the '(').
        outer: list[tuple[list[int], list[str], list[str]]] = []
        vals: list[int] = []
        ops: list[str] = []
        while True:
            # An operand of expr_unary: prefix operators, then '(' or an atom.
            prefixes: list[str] = []
            c = s[self.i]
            while c in "+-~":
                prefixes.append(c)
                self.next()
                c = s[self.i]
            if c == "(":
                outer.append((vals, ops, prefixes))
                vals, ops = [], []
                self.next()
                continue
            n = _prefix(prefixes, self.atom(c))
            while True:
                vals.append(n)
                op = s[self.i]
                prec = _PRECEDENCE.get(op, 0)
                # Apply what the recursion would have finished before going on: every
                # pending operator that binds at least as tightly as the next one.
                while ops and _PRECEDENCE[ops[-1]] >= prec:
                    val2 = vals.pop()
                    vals[-1] = _apply(ops.pop(), vals[-1], val2)
                if prec:
                    ops.append(op)
                    self.next()
                    break
                # End of this expression: the whole input, or a parenthesised operand.
                result = vals[0]
                if not outer:
                    return result
                if s[self.i] != ")":
                    raise HmpParseError("')' expected")
                self.next()
                vals, ops, prefixes = outer.pop()
                n = _prefix(prefixes, result)

    def atom(self, c: str) -> int:
        """The non-recursive cases of expr_unary: 'c', $reg, a number, or an error."""
        s = self.s
        if c == "'":
            self.i += 1
            ch = s[self.i]
            if ch == "\0":
                raise HmpParseError("character constant expected")
            self.i += 1
            if ch >= "\x80" or s[self.i] != "'":
                raise HmpParseError("missing terminating ' character")
            self.next()
            return ord(ch)
        if c == "$":
            return self.register()
        if c == "\0":
            raise HmpParseError("unexpected end of expression")
        m = _NUMBER.match(s, self.i)
        if m is None:
            raise HmpParseError(f"invalid char '{printable_char(c)}' in expression")
        g = m.group()
        n = int(g, 16 if g[:2] in ("0x", "0X") else 8 if g[0] == "0" else 10)
        if n > _M64:
            raise HmpParseError("number too large")  # strtoull's ERANGE
        i = m.end()
        while s[i] in SPACE:
            i += 1
        self.i = i
        return as_int64(n)

    def register(self) -> int:
        s = self.s
        i = self.i + 1
        start = i
        while s[i] in _REG_CHARS:
            i += 1
        name = s[start:i][:_REG_MAX]
        while s[i] in SPACE:
            i += 1
        self.i = i
        # get_monitor_def() fails (no CPU, no such name) -> "unknown register".
        value: int | None = None
        if self.registers is not None:
            try:
                value = self.registers(name)
            except LookupError:
                value = None
        if value is None:
            raise HmpParseError("unknown register")
        return as_int64(value)


def _prefix(prefixes: list[str], n: int) -> int:
    # expr_unary's '+', '-' and '~', innermost (rightmost) first.
    for op in reversed(prefixes):
        if op == "-":
            n = as_int64(-n)
        elif op == "~":
            n = ~n
    return n


def get_expr(s: str, i: int, registers: RegisterLookup | None) -> tuple[int, int]:
    """get_expr() on the NUL-terminated ``s`` from ``i``: (int64 value, end index)."""
    e = _Expr(s, skip_space(s, i), registers)
    return e.evaluate(), e.i


def eval_expr(
    text: str, registers: RegisterLookup | None = None
) -> tuple[int, str]:
    """Evaluate an HMP expression (get_expr) at the start of ``text``.

    Returns the int64 value and the unparsed rest (after trailing spaces); raises
    :class:`HmpParseError` with QEMU's text. There are no size suffixes: ``1k`` is 1
    followed by the rest ``k`` (QEMU then says "extraneous characters").
    """
    s = terminate(text)
    value, end = get_expr(s, 0, registers)
    return value, s[end:-1]
