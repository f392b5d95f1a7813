"""Properties: any command line gives a string (never an exception), and the expression
evaluator agrees with C int64 semantics on random expression trees."""

from __future__ import annotations

import time
from typing import Any

from hmp_fakes import FakeGuest, build_monitor
from hypothesis import given, settings
from hypothesis import strategies as st

from sevd.hmp.parser import HmpParseError, as_int64, eval_expr

MONITOR = build_monitor()
WORDS = ["x", "xp", "p", "print", "memsave", "pmemsave", "gva2gpa", "cpu", "sum", "info",
         "status", "registers", "help", "?", "c", "stop", "nosuch", "mem", "tlb", "-a"]
PIECES = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(["/", "/8xb", "/3c", "/2i", "/xq", "/4294967297x", "0x", "0x100", "-4",
                     "(", ")", "'", "'a'", '"', '"a b"', "\\", "$eip", "$", "1/0", "%",
                     "~", "+", "*", "&", "|", "^", ",", ".", "é", "\0", "\t", "  ", "\n"]),
    st.text(max_size=6),
    st.integers(min_value=-(1 << 70), max_value=1 << 70).map(str),
)
LINES = st.lists(PIECES, max_size=12).map(" ".join) | st.text(max_size=40)


@settings(max_examples=600, deadline=None)
@given(LINES)
def test_any_line_returns_monitor_text(line: str) -> None:
    out = MONITOR.run(line, FakeGuest())
    assert isinstance(out, str)
    # Every line end is CRLF (the handlers here all end their text with a newline).
    assert out == "" or out.endswith("\r\n")
    assert "\n" not in out.replace("\r\n", "")


@settings(max_examples=200, deadline=None)
@given(st.lists(LINES, min_size=1, max_size=8))
def test_sessions_never_break_the_sticky_defaults(lines: list[str]) -> None:
    guest = FakeGuest()
    for line in lines:
        MONITOR.run(line, guest)
    assert guest.defaults.format in "xduoci" and guest.defaults.size in (1, 2, 4, 8)
    assert MONITOR.run("xp /1xb 0", guest) == "0000000000000000: 0x53\r\n"


# --------------------------------------------------------------------------- expressions


class DivZero(Exception):
    pass


def _c_div(a: int, b: int, op: str) -> int:
    if b == 0:
        raise DivZero
    q = abs(a) // abs(b) * (-1 if (a < 0) != (b < 0) else 1)
    return as_int64(q if op == "/" else a - b * q)


def _leaf() -> st.SearchStrategy[tuple[str, int]]:
    ints = st.integers(min_value=0, max_value=(1 << 64) - 1)
    return st.one_of(
        ints.map(lambda n: (str(n), as_int64(n))),
        ints.map(lambda n: (hex(n), as_int64(n))),
        st.integers(min_value=0, max_value=1 << 40).map(lambda n: (oct(n).replace("0o", "0"),
                                                                     n)),
        st.sampled_from("abz09 ~").map(lambda c: (f"'{c}'", ord(c))),
    )


def _extend(children: st.SearchStrategy[tuple[str, Any]]) -> st.SearchStrategy[Any]:
    binary = st.tuples(children, st.sampled_from("+-*/%&|^"), children)
    unary = st.tuples(st.sampled_from("+-~"), children)
    return st.one_of(binary.map(lambda t: ("bin", *t)), unary.map(lambda t: ("un", *t)))


TREES = st.recursive(_leaf(), _extend, max_leaves=12)


def _render(tree: Any, spaces: Any) -> str:
    if isinstance(tree[1], int):
        return str(tree[0])
    sp = spaces.draw(st.sampled_from(["", " ", "  ", "\t"]))
    if tree[0] == "un":
        return f"{tree[1]}{sp}({_render(tree[2], spaces)})"
    return f"({_render(tree[1], spaces)}){sp}{tree[2]}{sp}({_render(tree[3], spaces)})"


def _value(tree: Any) -> int:
    if isinstance(tree[1], int):
        return int(tree[1])
    if tree[0] == "un":
        v = _value(tree[2])
        return {"+": v, "-": as_int64(-v), "~": ~v}[tree[1]]
    a, op, b = _value(tree[1]), tree[2], _value(tree[3])
    if op in "/%":
        return _c_div(a, b, op)
    return as_int64({"+": a + b, "-": a - b, "*": a * b, "&": a & b, "|": a | b,
                     "^": a ^ b}[op])


@settings(max_examples=400, deadline=None)
@given(TREES, st.data())
def test_expressions_follow_c_int64_semantics(tree: Any, data: Any) -> None:
    text = _render(tree, data)
    try:
        expected = _value(tree)
    except DivZero:
        try:
            eval_expr(text)
        except HmpParseError as e:
            assert e.text == "division by zero"
        else:
            raise AssertionError("division by zero not detected") from None
        return
    assert eval_expr(text) == (expected, "")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["1", "2", "3", "0x10", "7"]), min_size=1, max_size=8),
       st.lists(st.sampled_from("+-*/%&|^"), min_size=7, max_size=7))
def test_precedence_without_parentheses(operands: list[str], ops: list[str]) -> None:
    # Python has the same three levels here except that & | ^ differ; evaluate the C way.
    text = "".join(o + (ops[i] if i < len(operands) - 1 else "")
                   for i, o in enumerate(operands))
    levels = [{"*", "/", "%"}, {"&", "|", "^"}, {"+", "-"}]
    vals = [int(o, 0) for o in operands]
    opl = ops[: len(operands) - 1]
    try:
        for level in levels:
            i = 0
            while i < len(opl):
                if opl[i] in level:
                    a, b, op = vals[i], vals[i + 1], opl[i]
                    if op in "/%":
                        r = _c_div(a, b, op)
                    else:
                        r = as_int64({"+": a + b, "-": a - b, "*": a * b, "&": a & b,
                                      "|": a | b, "^": a ^ b}[op])
                    vals[i : i + 2] = [r]
                    del opl[i]
                else:
                    i += 1
    except DivZero:
        try:
            eval_expr(text)
        except HmpParseError as e:
            assert e.text == "division by zero"
        return
    assert eval_expr(text) == (vals[0], "")


def test_parsing_is_fast() -> None:
    # "tens of microseconds" for a typical line; the bound leaves room for slow CI.
    guest = FakeGuest()
    lines = ["xp /8xb 0", 'memsave 0x1000+4 16 "/tmp/x"', "p ($eip+1)*2", "info status"]
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        for line in lines:
            MONITOR.parse_only(line, guest)
    per_line = (time.perf_counter() - start) / (n * len(lines))
    assert per_line < 100e-6, f"{per_line * 1e6:.1f} µs per line"
