"""sevd.hmp.parser on its own: names, quoting, expressions, /fmt and every args_type."""

from __future__ import annotations

from typing import Any

import pytest

from sevd.hmp.parser import (
    DumpDefaults,
    HmpParseError,
    as_int64,
    eval_expr,
    get_command_name,
    get_str,
    parse_arguments,
    parse_cmdline,
)

REGS = {"eip": 0xFFF0, "pc": 0xFFFFFFF0, "cs.base": 0xFFFF0000, "neg": -1}


def _eval(text: str) -> int:
    value, rest = eval_expr(text, REGS.get)
    assert rest == ""
    return value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0x100+4", 0x104),
        ("(0x100+4)", 0x104),
        ("8*2", 16),
        ("16/2", 8),
        ("0x10 - 4", 12),
        ("-4", -4),
        ("- 4", -4),
        ("--1", 1),
        ("+1", 1),
        ("~0", -1),
        ("~(1)", -2),
        ("-(2+3)*2", -10),
        ("7%3", 1),
        ("-7/2", -3),  # C truncates toward zero
        ("-7%2", -1),  # the remainder has the dividend's sign
        ("5/-2", -2),
        ("5%-2", 1),
        ("1|2^3&4", 0),  # one precedence level, left to right
        ("2*3+4*5", 26),
        ("1+2*3", 7),
        ("8/2/2", 2),
        ("1-2+3", 2),
        ("((2))*((3))", 6),
        ("'a'", 97),
        ("' '", 32),
        ("'''", 39),
        ("'a' + 1", 98),
        ("010", 8),  # octal
        ("0X1f", 31),
        ("0", 0),
        ("18446744073709551615", -1),  # strtoull then int64
        ("0x7fffffffffffffff+1", -(1 << 63)),  # wraps
        ("0x8000000000000000*2", 0),
        ("-0x8000000000000000/-1", -(1 << 63)),  # SIGFPE in QEMU; sevd wraps
        ("$eip", 0xFFF0),
        ("$pc", 0xFFFFFFF0),
        ("$cs.base", 0xFFFF0000),
        ("$eip+1", 0xFFF1),
        ("$neg", -1),
        ("  \t 1", 1),
        ("(" * 5000 + "1" + ")" * 5000, 1),  # no recursion limit, as in QEMU
        ("-" * 5001 + "1", -1),
    ],
)
def test_expression_values(text: str, value: int) -> None:
    assert _eval(text) == value


@pytest.mark.parametrize(
    ("text", "rest"),
    [("1k", "k"), ("0x", "x"), ("0y10", "y10"), ("08", "8"), ("1 2", "2"), ("(1)(2)", "(2)"),
     ("1 )", ")"), ("1 é", "é")],
)
def test_expression_stops_where_qemu_stops(text: str, rest: str) -> None:
    # QEMU's get_expr has no size suffixes: "1k" is 1 followed by "k".
    assert eval_expr(text)[1] == rest


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "unexpected end of expression"),
        ("2+", "unexpected end of expression"),
        ("~", "unexpected end of expression"),
        ("zz", "invalid char 'z' in expression"),
        (")", "invalid char ')' in expression"),
        (",", "invalid char ',' in expression"),
        ("é", "invalid char '\ufffd' in expression"),
        ("(1", "')' expected"),
        ("((1)", "')' expected"),
        ("2+(3", "')' expected"),
        ("1/0", "division by zero"),
        ("1%0", "division by zero"),
        ("(1/0", "division by zero"),  # the division fails before the ')' is checked
        ("1/(0)", "division by zero"),
        ("1/0 zz", "division by zero"),
        ("'", "character constant expected"),
        ("'a", "missing terminating ' character"),
        ("'ab'", "missing terminating ' character"),
        ("''", "missing terminating ' character"),
        ("'é'", "missing terminating ' character"),  # two UTF-8 bytes in QEMU
        ("$zz", "unknown register"),
        ("$", "unknown register"),
        ("$EIP", "unknown register"),
        ("99999999999999999999", "number too large"),
        ("0x10000000000000000", "number too large"),
    ],
)
def test_expression_errors(text: str, error: str) -> None:
    with pytest.raises(HmpParseError) as e:
        eval_expr(text, REGS.get)
    assert e.value.text == error


def test_register_lookup_may_raise_lookup_error() -> None:
    def lookup(name: str) -> int:
        raise KeyError(name)

    with pytest.raises(HmpParseError, match="unknown register"):
        eval_expr("$eip", lookup)
    with pytest.raises(HmpParseError, match="unknown register"):
        eval_expr("$eip")  # no CPU: every register is unknown


def test_register_names_are_cut_like_qemus_buffer() -> None:
    seen: list[str] = []

    def lookup(name: str) -> int:
        seen.append(name)
        return 0

    eval_expr("$" + "a" * 200, lookup)
    assert seen == ["a" * 127]


def test_as_int64() -> None:
    assert as_int64(0xFFFFFFFFFFFFFFFC) == -4
    assert as_int64(1 << 64) == 0
    assert as_int64(5) == 5


# --------------------------------------------------------------------------- names, strings


@pytest.mark.parametrize(
    ("line", "result"),
    [
        ("xp /8xb 0", ("xp", 2)),
        ("xp/8xb 0", ("xp", 2)),
        ("  info status", ("info", 6)),
        ("/x", ("", 0)),
        ("", None),
        (" \t\r\n\v\f", None),
        ("a" * 300, ("a" * 255, 300)),  # char cmdname[256]
    ],
)
def test_get_command_name(line: str, result: tuple[str, int] | None) -> None:
    assert get_command_name(line) == result


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("word rest\0", ("word", 4)),
        ("  word\0", ("word", 6)),
        ('"a b" c\0', ("a b", 5)),
        ('"a\\nb\\r\\\\\\\'\\""\0', ("a\nb\r\\'\"", 14)),
        ('ab"cd" e\0', ('ab"cd"', 6)),  # quotes only count at the start
        ('""\0', ("", 2)),
        ("\0", None),
        ('"abc\0', None),  # unterminated
        ('"a\\qb"\0', None),  # unsupported escape
        ('"a\\\0', None),
    ],
)
def test_get_str(text: str, result: tuple[str, int] | None) -> None:
    assert get_str(text, 0) == result


def test_get_str_keeps_1023_characters() -> None:
    got = get_str("x" * 2000 + "\0", 0)
    assert got is not None
    assert got[0] == "x" * 1023 and got[1] == 2000


def test_parse_cmdline() -> None:
    assert parse_cmdline(' info "sta tus"  x ') == ["info", "sta tus", "x"]
    assert parse_cmdline("") == []
    assert parse_cmdline('"x') is None
    assert parse_cmdline(" ".join("a" * 16)) == ["a"] * 16
    assert parse_cmdline(" ".join("a" * 17)) is None  # MAX_ARGS


# --------------------------------------------------------------------------- /fmt


def _fmt(text: str, defaults: DumpDefaults) -> dict[str, Any]:
    return parse_arguments("xp", "fmt:/,addr:l", text, defaults=defaults)


@pytest.mark.parametrize(
    ("text", "count", "fmt", "size"),
    [
        ("/8xb 0", 8, "x", 1),
        ("/xb8 0", None, None, None),  # digits only first: '8' is an invalid char
        ("/b8x 0", None, None, None),
        ("/4dw 0", 4, "d", 4),
        ("/2uh 0", 2, "u", 2),
        ("/1og 0", 1, "o", 8),
        ("/2xL 0", 2, "x", 8),
        ("/bx 0", 1, "x", 1),  # letters in any order
        ("/xbx 0", 1, "x", 1),
        ("/3c 0", 3, "c", 4),  # size stays the sticky one (w)
        ("/ 0", 1, "x", 4),
        ("/0xw 0", 0, "x", 4),
        ("/4294967297xb 0", 1, "x", 1),  # int count wraps
        ("/2147483648xb 0", -(1 << 31), "x", 1),
        ("/2i 0", 2, "i", -1),  # 'i' without a size gives -1
        ("/2ib 0", 2, "i", 1),
        ("0", 1, "x", 4),  # no /fmt at all
    ],
)
def test_fmt(text: str, count: int | None, fmt: str | None, size: int | None) -> None:
    d = DumpDefaults()
    if count is None:
        with pytest.raises(HmpParseError, match="invalid char in format"):
            _fmt(text, d)
        return
    args = _fmt(text, d)
    assert (args["count"], args["format"], args["size"]) == (count, fmt, size)


def test_fmt_sticky_defaults() -> None:
    d = DumpDefaults()
    assert d == DumpDefaults("x", 4)
    _fmt("/2db 0", d)
    assert d == DumpDefaults("d", 1)
    assert _fmt("0", d) == {"count": 1, "format": "d", "size": 1, "addr": 0}
    _fmt("/u 0", d)
    assert d == DumpDefaults("u", 1)
    _fmt("/3i 0", d)  # 'i' does not touch the size
    assert d == DumpDefaults("i", 1)
    assert _fmt("0", d)["size"] == -1
    _fmt("/x 0", d)
    assert d == DumpDefaults("x", 1)
    _fmt("/2ih 0", d)  # not even when one is given
    assert d == DumpDefaults("i", 1)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("/4xq 0", "invalid char in format: 'q'"),
        ("/-1xb 0", "invalid char in format: '-'"),
        ("/1xb0", "invalid char in format: '0'"),
        ("/s 0", "invalid char in format: 's'"),
        ("/t 0", "invalid char in format: 't'"),
        ("/a 0", "invalid char in format: 'a'"),
        ("/é 0", "invalid char in format: '\ufffd'"),
        ("/4xw", "unexpected end of expression"),
        ("", "unexpected end of expression"),
        ("/1xw 1k", "xp: extraneous characters at the end of line"),
        ("/1xw 0 0", "xp: extraneous characters at the end of line"),
    ],
)
def test_fmt_errors(text: str, error: str) -> None:
    with pytest.raises(HmpParseError) as e:
        _fmt(text, DumpDefaults())
    assert e.value.text == error


# --------------------------------------------------------------------------- args_type


def _parse(args_type: str, text: str, name: str = "cmd") -> dict[str, Any]:
    return parse_arguments(name, args_type, text, registers=REGS.get)


def _error(args_type: str, text: str, name: str = "cmd") -> str:
    with pytest.raises(HmpParseError) as e:
        parse_arguments(name, args_type, text, registers=REGS.get)
    return e.value.text


def test_no_arguments() -> None:
    assert _parse("", "") == {}
    assert _parse("", "   ") == {}
    assert _error("", "x", "stop|s") == "stop|s: extraneous characters at the end of line"


def test_greedy_expressions() -> None:
    # reference §8.5.1: an unquoted absolute filename after "memsave 0 16" is a division.
    assert _error("val:l,size:i,filename:s", "0 16 /tmp/x") == "invalid char 't' in expression"
    assert _error("val:l,size:i,filename:s", '0 -1 "f"') == "invalid char '\"' in expression"
    assert _parse("val:l,size:i,filename:s", "0 16 hm2.bin") == {
        "val": 0, "size": 16, "filename": "hm2.bin"}
    assert _parse("val:l,size:i,filename:s", '0 16 "/tmp/x"')["filename"] == "/tmp/x"


def test_i_is_32_bit() -> None:
    assert _parse("n:i", "0xffffffff") == {"n": 0xFFFFFFFF}
    assert _parse("n:i", "0x80000000") == {"n": 0x80000000}
    for bad in ("-1", "(-1)", "0x100000000", "0xffffffff80000000"):
        assert _error("n:i", bad, "pmemsave") == (
            "'pmemsave' has failed: integer is for 32-bit values"
        )


def test_l_is_unsigned_64_bit() -> None:
    assert _parse("a:l", "-4") == {"a": 0xFFFFFFFFFFFFFFFC}
    assert _parse("a:l", "$neg") == {"a": (1 << 64) - 1}


def test_m_is_mebibytes() -> None:
    assert _parse("v:M", "2") == {"v": 2 << 20}
    assert _error("v:M", "-1") == "enter a positive value"


def test_optional_arguments() -> None:
    assert _parse("a:i?,b:s?", "") == {}
    assert _parse("a:i?,b:s?", "1") == {"a": 1}
    assert _parse("a:i?,b:s?", "1 x") == {"a": 1, "b": "x"}
    assert _error("a:i?,b:s?", "x") == "invalid char 'x' in expression"


def test_dot_optional_integer() -> None:
    # "index:i." takes an integer only after a '.' (the I/O port "i" command).
    assert _parse("addr:i,index:i.", "5") == {"addr": 5}
    assert _parse("addr:i,index:i.", "5 . 3") == {"addr": 5, "index": 3}
    assert _error("addr:i,index:i.", "5 3") == "cmd: extraneous characters at the end of line"


def test_string_kinds_and_messages() -> None:
    assert _error("f:F", "") == "cmd: filename expected"
    assert _error("d:B", "") == "cmd: block device name expected"
    assert _error("s:s", "") == "cmd: string expected"
    assert _parse("f:F,d:B", 'a "b c"') == {"f": "a", "d": "b c"}


def test_rest_of_line() -> None:
    assert _parse("name:S?", "") == {}
    assert _parse("name:S?", "  info  status ") == {"name": "info  status "}
    assert _error("name:S", "") == "cmd: string expected"


def test_qemu_opts_kept_raw() -> None:
    assert _parse("device:O", "virtio-net,id=n0") == {"device": "virtio-net,id=n0"}
    assert _parse("device:O", "") == {}
    assert _error("device:O", '"x') == ""  # QEMU prints nothing before its Try line


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1 << 20), ("1M", 1 << 20), ("1k", 1024), ("2K", 2048), ("1G", 1 << 30),
     ("1T", 1 << 40), ("4096B", 4096), ("1.5k", 1536), ("1.5", 3 << 19), ("0x10", 16 << 20),
     ("0", 0), ("1e", 1 << 60)],
)
def test_sizes(text: str, value: int) -> None:
    # qemu_strtosz_MiB: default unit M, suffixes B K M G T P E, hex without suffix.
    assert _parse("size:o", text) == {"size": value}


@pytest.mark.parametrize(
    "text", ["x", "-1", "0x10k", "1.5B", "0x1.8", "16E", "99999999999999999999"]
)
def test_size_errors(text: str) -> None:
    assert _error("size:o", text) == "invalid size"


def test_size_optional_and_trailing_text() -> None:
    assert _parse("size:o?", "") == {}
    assert _error("size:o", "1kx") == "cmd: extraneous characters at the end of line"


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1.0), ("1.5", 1.5), ("2ms", 0.002), ("3us", 3e-6), ("4ns", 4e-9), ("1e3", 1000.0),
     ("0x10", 16.0), ("-2", -2.0)],
)
def test_seconds(text: str, value: float) -> None:
    assert _parse("t:T", text)["t"] == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "error"),
    [("x", "Number expected"), ("inf", "Bad number"), ("nan", "Bad number"),
     ("1e999", "Bad number"), ("1xs", "Unknown unit suffix"), ("1s", "Unknown unit suffix")],
)
def test_seconds_errors(text: str, error: str) -> None:
    assert _error("t:T", text) == error


def test_on_off() -> None:
    assert _parse("v:b", "on") == {"v": True}
    assert _parse("v:b", " off") == {"v": False}
    for bad in ("", "onx", "ON", "yes"):
        assert _error("v:b", bad) == "Expected 'on' or 'off'"


def test_flags() -> None:
    spec = "cpustate_all:-a,vcpu:i?"
    assert _parse(spec, "") == {}
    assert _parse(spec, "-a") == {"cpustate_all": True}
    assert _parse(spec, "3") == {"vcpu": 3}
    assert _parse(spec, "-a 3") == {"cpustate_all": True, "vcpu": 3}
    assert _error(spec, "-x", "registers") == "registers: unsupported option -x"
    assert _error(spec, "-", "registers") == "registers: unsupported option -"


def test_flags_in_any_declared_order() -> None:
    spec = "force:-f,nodes:-n,device:B"
    assert _parse(spec, "-f -n d") == {"force": True, "nodes": True, "device": "d"}
    # A later declared flag is skipped over for its own key (is_valid_option).
    assert _parse(spec, "-n d") == {"nodes": True, "device": "d"}
    assert _parse(spec, "d") == {"device": "d"}
    # Out of order, "-f" is no flag any more but the device name, as in QEMU.
    assert _error(spec, "-n -f d") == "cmd: extraneous characters at the end of line"
    assert _parse(spec, "-n -f") == {"nodes": True, "device": "-f"}


def test_flag_with_string_value() -> None:
    spec = "protocol:s,display:-ds"
    assert _parse(spec, "vnc -d  one") == {"protocol": "vnc", "display": "one"}
    assert _parse(spec, "vnc") == {"protocol": "vnc"}
    assert _error(spec, "vnc -d") == "cmd: value expected for -d"


def test_unknown_type() -> None:
    assert _error("x:z", "1") == "cmd: unknown type 'z'"


def test_nul_ends_the_line_like_a_c_string() -> None:
    assert _parse("a:l", "5\0 garbage") == {"a": 5}
