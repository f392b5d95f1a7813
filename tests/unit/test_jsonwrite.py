"""The writer produces QEMU's JSON text: the id table of reference/qmp.md §8.1.1, byte for byte.

Proves that `sevd.protocol.jsonwrite`:
- echoes every id of the §8.1.1 table as QEMU re-serialises it (int64/uint64 as integers,
  doubles as `%.17g`, code points >= 0x7F as upper-case `\\uXXXX`, surrogate pairs, short
  escapes, `/` never escaped), parsing each id with sevd's own parser first, as the
  session does; the one deliberate difference is `1e400`, echoed as sent (DESIGN §8);
- frames replies, errors and events as one ASCII line ending in CRLF with `", "` / `": "`
  separators and sevd's key order (DESIGN §8);
- for any JSON value, writes ASCII-only, valid JSON that reads back as the same value, with
  no lower-case `\\u` escape and no escaped `/` (hypothesis).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sevd.protocol import jsonwrite
from sevd.protocol.jsonstream import JFloat, JsonStreamParser


def echo(id_text: bytes) -> str:
    """Parse `{"id": <id_text>}` as the session does and write the id back."""
    (msg,) = JsonStreamParser().feed(b'{"id":' + id_text + b"}")
    return jsonwrite.encode_value(msg["id"])


# (id sent, id echoed, deviation) — reference/qmp.md §8.1.1, the `id` table, row by row.
ID_TABLE: list[tuple[bytes, str, str]] = [
    (b"1", "1", ""), (b"0", "0", ""), (b"-3", "-3", ""),
    (b"9223372036854775807", "9223372036854775807", ""),
    (b"9223372036854775808", "9223372036854775808", ""),
    (b"18446744073709551615", "18446744073709551615", ""),
    (b"18446744073709551616", "1.8446744073709552e+19", ""),
    (b"123456789012345678901234567890", "1.2345678901234568e+29", ""),
    (b"-9223372036854775809", "-9.2233720368547758e+18", ""),
    (b"1.5", "1.5", ""), (b"1e3", "1000", ""), (b"1E+2", "100", ""), (b"-0.0", "-0", ""),
    (b"0.1", "0.10000000000000001", ""), (b"2.5e-8", "2.4999999999999999e-08", ""),
    (b"1e300", "1.0000000000000001e+300", ""),
    (b"1e400", "1e400", "DESIGN §8: QEMU writes `inf` (invalid JSON); sevd echoes the text"),
    (b"-1e400", "-1e400", "DESIGN §8: QEMU writes `-inf`"),
    (b"9" * 400, "9" * 400, "DESIGN §8: beyond a double QEMU writes `inf`"),
    (b'"abc"', '"abc"', ""), (b'""', '""', ""), (b"null", "null", ""),
    (b"true", "true", ""), (b"false", "false", ""), (b"[]", "[]", ""), (b"{}", "{}", ""),
    (b'[1,"x",null]', '[1, "x", null]', ""),
    ('"é"'.encode(), '"\\u00E9"', ""), (b'"\\u00e9"', '"\\u00E9"', ""),
    ('"😀"'.encode(), '"\\uD83D\\uDE00"', ""), (b'"\\ud83d\\ude00"', '"\\uD83D\\uDE00"', ""),
    (b'"\\u007f"', '"\\u007F"', ""), (b'"\x7f"', '"\\u007F"', ""),
    (b'"\\u0001\\b\\f"', '"\\u0001\\b\\f"', ""),
    (b'"\\n\\r\\t\\"\\\\"', '"\\n\\r\\t\\"\\\\"', ""),
    (b'"a/b"', '"a/b"', ""), (b'"\\/"', '"/"', ""),
    (b'"a\\u0000b"', '"a\\u0000b"', ""),
    (b'{"zeta":1,"alpha":2,"id":3,"return":4,"error":5}',
     '{"zeta": 1, "alpha": 2, "id": 3, "return": 4, "error": 5}',
     "DESIGN §8 key order: QEMU re-orders by hash ({zeta, return, id, error, alpha})"),
    (b'{"a":[1.5,{"b":"\\u00e9"}]}', '{"a": [1.5, {"b": "\\u00E9"}]}', ""),
    (b"'sq'", '"sq"', ""),
    (b'"\\\\u00e9"', '"\\\\u00e9"', ""),   # a literal backslash-u is not an escape to upcase
]


@pytest.mark.parametrize(("sent", "echoed", "deviation"),
                         [pytest.param(s, e, d, id=s.decode("utf-8", "replace")[:40])
                          for s, e, d in ID_TABLE])
def test_id_echo_table(sent: bytes, echoed: str, deviation: str) -> None:
    assert echo(sent) == echoed


# -- framing ----------------------------------------------------------------------------------

def test_reply_ok_with_and_without_id() -> None:
    assert jsonwrite.reply_ok("{}", None) == b'{"return": {}}\r\n'
    assert jsonwrite.reply_ok('{"a": 1}', '"x"') == b'{"return": {"a": 1}, "id": "x"}\r\n'


def test_reply_error_with_and_without_id() -> None:
    assert jsonwrite.reply_error("GenericError", "d\u00e9sc", None) == \
        b'{"error": {"class": "GenericError", "desc": "d\\u00E9sc"}}\r\n'
    assert jsonwrite.reply_error("CommandNotFound", "x", "1") == \
        b'{"error": {"class": "CommandNotFound", "desc": "x"}, "id": 1}\r\n'


def test_event_and_greeting_lines() -> None:
    event = {"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESET",
             "data": {"guest": False, "reason": "host-qmp-system-reset"}}
    assert jsonwrite.message(event) == (
        b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESET", '
        b'"data": {"guest": false, "reason": "host-qmp-system-reset"}}\r\n')
    greeting = {"QMP": {"version": {"qemu": {"major": 9, "minor": 2, "micro": 0},
                                    "package": "sevd 0.1.0"}, "capabilities": ["oob"]}}
    assert jsonwrite.message(greeting) == (
        b'{"QMP": {"version": {"qemu": {"major": 9, "minor": 2, "micro": 0}, '
        b'"package": "sevd 0.1.0"}, "capabilities": ["oob"]}}\r\n')


def test_newlines_inside_strings_never_break_the_line() -> None:
    line = jsonwrite.message({"return": "VM status: running\r\n"})
    assert line == b'{"return": "VM status: running\\r\\n"}\r\n'
    assert line.count(b"\n") == 1


@pytest.mark.parametrize(("value", "text"), [
    (True, "true"), (False, "false"), (None, "null"), (0, "0"),
    (-(1 << 63), "-9223372036854775808"), ((1 << 64) - 1, "18446744073709551615"),
    (1 << 64, "1.8446744073709552e+19"), (-(1 << 63) - 1, "-9.2233720368547758e+18"),
    (10**400, "1" + "0" * 400),                   # beyond a double: the digits (never `inf`)
    (0.5, "0.5"), (1e16, "10000000000000000"), (1 / 3, "0.33333333333333331"),
    (float("inf"), "null"), (float("nan"), "null"),   # a handler's non-finite: valid JSON
    (JFloat("1E400"), "1E400"), ({"a": [True, 1.0]}, '{"a": [true, 1]}'),
])
def test_scalars_as_qemus_writer_writes_them(value: Any, text: str) -> None:
    assert jsonwrite.encode_value(value) == text


# -- any value ---------------------------------------------------------------------------------

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=16)


@settings(max_examples=200, deadline=None)
@given(VALUES)
def test_any_value_is_ascii_json_that_reads_back(value: Any) -> None:
    text = jsonwrite.encode_value(value)
    assert text.isascii()
    assert not re.search(r"(?<!\\)(?:\\\\)*\\u[0-9A-F]{0,3}[a-f]", text)   # upper-case hex
    assert "\\/" not in text.replace("\\\\", "")
    assert json.loads(text) == value
    assert jsonwrite.message({"return": value}).endswith(b"\r\n")
    assert b"\n" not in jsonwrite.message({"return": value})[:-2]
