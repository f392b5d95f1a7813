"""The stream parser gives QEMU's messages and parse errors for QEMU's inputs.

Proves, in memory and without sockets, that `JsonStreamParser`:
- turns every malformed input of reference/qmp.md §8.1.4 into exactly QEMU's `JSON parse
  error, …` texts, in QEMU's number and order, and resynchronises as QEMU's lexer does;
- frames a byte stream as QEMU does (§8.1.1): no newline needed, back-to-back objects,
  leading whitespace, CRLF, pretty-printed input, single quotes and `\\'`;
- keeps every id value of the §8.1.1 table as QEMU's parser types it (int64/uint64 as
  integers, beyond that a double that remembers its text, DESIGN §8 `1e400`);
- enforces the three limits of §8.1.5 exactly (token size, token count, nesting) at QEMU's
  values and at configured lower values, and recovers after each.
The same rows run twice: fed whole (the fast path where it applies) and byte by byte (which
always takes the exact path), so both paths are held to the same expectations.
"""

from __future__ import annotations

from typing import Any

import pytest

from sevd.protocol.jsonstream import (
    MAX_NESTING,
    MAX_TOKEN_COUNT,
    MAX_TOKEN_SIZE,
    JFloat,
    JsonStreamParser,
    ParseError,
)

QS = b'{"execute":"query-status","id":'  # a command prefix the rows complete


def E(text: str) -> ParseError:
    """A `JSON parse error, …` as the table rows write it."""
    return ParseError("JSON parse error, " + text)


def feed(chunks: list[bytes], parser: JsonStreamParser | None = None) -> list[Any]:
    p = parser or JsonStreamParser()
    out: list[Any] = []
    for c in chunks:
        out += p.feed(c)
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


# -- §8.1.4: malformed JSON ------------------------------------------------------------------
# (row id, bytes sent, what the parser yields: messages and ParseErrors in order)
MALFORMED: list[tuple[str, bytes, list[Any]]] = [
    ("trailing-garbage", QS + b'"tg"}xyz\n',
     [{"execute": "query-status", "id": "tg"}, E("invalid keyword 'xyz'")]),
    ("extra-close-brace", QS + b'"tg2"}}',
     [{"execute": "query-status", "id": "tg2"}, E("expecting value")]),
    ("stray-close-bracket", b"]", [E("expecting value")]),
    ("bare-word", b"hello\n", [E("invalid keyword 'hello'")]),
    ("missing-colon", b'{"execute" "query-status"}', [E("missing : in object pair")]),
    ("trailing-comma", QS + b'"tc",}', [E("expecting value")]),
    ("bad-escape", QS + b'"\\q"}', [E("invalid escape sequence in string")]),
    ("duplicate-key", b'{"execute":"query-status","execute":"query-name"}',
     [E("duplicate key")]),
    ("NaN", QS + b"NaN}", [E("stray 'N'"), E("expecting value")]),
    ("leading-zero", QS + b"01}", [E("stray '01'"), E("expecting value")]),
    ("percent", QS + b"%d}", [E("stray '%'"), E("expecting value")]),
    ("invalid-utf8-fffe", QS + b'"\xff\xfe"}',
     [E("stray '\"\ufffd'"), E("stray '\ufffd'"), E("expecting value")]),
    ("invalid-utf8-c328", QS + b'"\xc3\x28"}', [E("invalid UTF-8 sequence in string")]),
    ("overlong-utf8", QS + b'"\xc0\xaf"}', [E("invalid UTF-8 sequence in string")]),
    ("ff-before-object", b'\xff{"execute":"query-status","id":"x"}',
     [E("stray '\ufffd'"), {"execute": "query-status", "id": "x"}]),
    ("truncated-lead-byte", b'\xe2{"execute":"query-status","id":"x"}',
     [E("stray '\ufffd'"), {"execute": "query-status", "id": "x"}]),
    ("raw-control-in-string", QS + b'"a\x01"}', [E("stray '\"a\x01'"), E("expecting value")]),
    # QEMU prints the stray token with %s: a NUL byte ends the text (checked on QEMU 7.2).
    ("nul-byte", b"\x00", [E("stray ''")]),
    ("nul-in-string", QS + b'"a\x00b"}', [E("stray '\"a'"), E("expecting value")]),
    ("nul-in-key", b'{"id\x00":1}', [E("stray '\"id'"), E("expecting value"), 1,
                                      E("expecting value")]),
    ("lone-surrogate", QS + b'"\\ud800"}', [E("\\ud800 is not a valid Unicode character")]),
    ("noncharacter", QS + b'"\\uffff"}', [E("\\uffff is not a valid Unicode character")]),
    ("unterminated-object-swallows",
     QS + b'"unt"\n{"execute":"query-status","id":"swallowed"}}',
     [E("expected separator in dict")]),
    ("unterminated-string", QS + b'"abc\n' + QS + b'"next"}',
     [E("stray '\"abc\n'"), {"execute": "query-status", "id": "next"}]),
    ("reset-by-escape-char", b'\x1b{"execute":"query-status","id":"after-reset"}',
     [E("stray '\x1b'"), {"execute": "query-status", "id": "after-reset"}]),
    ("spec-example", b'{ "execute": }', [E("expecting value")]),
    ("execute-then-newline", b'{"execute":\n}', [E("expecting value")]),
    ("at-sign", QS + b"@}", [E("stray '@'"), E("expecting value")]),
    # Parser texts beyond the §8.1.4 rows, each checked by hand against QEMU 7.2.
    ("truncated-keyword", QS + b"tru}", [E("invalid keyword 'tru'")]),
    ("missing-comma-dict", b'{"a":1 "b":2}', [E("expected separator in dict")]),
    ("missing-comma-list", b"[1 2]", [E("expected separator in list")]),
    ("key-not-string", b"{1:2}", [E("key is not a string in object")]),
    ("key-without-value", b'{"a"}', [E("missing : in object pair")]),
    ("value-missing", b'{"a":}', [E("expecting value")]),
    ("short-unicode-escape", b'"\\u12"', [E('\\u12" is not a valid Unicode character')]),
    # Top-level scalars are messages (the session, not the parser, rejects them).
    ("top-level-int", b"1 ", [1]),
    ("top-level-string", b'"str"', ["str"]),
    ("top-level-array", b"[1,2]", [[1, 2]]),
]


@pytest.mark.parametrize("feeding", ["whole", "bytewise"])
@pytest.mark.parametrize(("data", "expected"), [pytest.param(d, e, id=i) for i, d, e in MALFORMED])
def test_malformed_input_gives_qemus_errors(data: bytes, expected: list[Any],
                                            feeding: str) -> None:
    chunks = [data] if feeding == "whole" else bytewise(data)
    assert feed(chunks) == expected


# -- §8.1.1: framing -------------------------------------------------------------------------
STATUS = {"execute": "query-status"}
FRAMING: list[tuple[str, list[bytes], list[Any]]] = [
    ("no-newline", [b'{"execute":"query-status","id":"nonl"}'],
     [{"execute": "query-status", "id": "nonl"}]),
    ("back-to-back", [b'{"execute":"query-status"}{"execute":"query-status"}'], [STATUS] * 2),
    ("ten-in-one-write", [b'{"execute":"query-status"}' * 10], [STATUS] * 10),
    ("split-in-four", [b'{"exec', b'ute":"que', b'ry-sta', b'tus"}'], [STATUS]),
    ("split-inside-utf8", [b'{"execute":"query-status","id":"\xc3', b'\xa9\xf0\x9f',
                           b'\x98\x80"}'],
     [{"execute": "query-status", "id": "\u00e9\U0001f600"}]),
    ("leading-whitespace", [b' \t\r\n {"execute":"query-status"}'], [STATUS]),
    ("crlf-terminated", [b'{"execute":"query-status"}\r\n{"execute":"query-status"}\r\n'],
     [STATUS] * 2),
    ("pretty-printed", [b'{\r\n    "execute": "query-status",\r\n    "id": "pp"\r\n}\r\n'],
     [{"execute": "query-status", "id": "pp"}]),
    ("single-quotes", [b"{'execute':'query-status','id':'sq'}"],
     [{"execute": "query-status", "id": "sq"}]),
    ("escaped-single-quote", [b'{"id":"\\\'"}', b"{'id':'\\''}", b"{'id':'\\\"'}"],
     [{"id": "'"}, {"id": "'"}, {"id": '"'}]),
    ("raw-DEL", [b'{"id":"a\x7fb"}'], [{"id": "a\x7fb"}]),
    ("escaped-NUL", [b'{"id":"a\\u0000b"}'], [{"id": "a\x00b"}]),
    ("id-before-execute", [b'{"id":1,"execute":"query-status"}'],
     [{"id": 1, "execute": "query-status"}]),
    ("bad-middle-message", [b'{"execute":"query-status","id":1}{"execute":}'
                            b'{"execute":"query-status","id":3}'],
     [{"execute": "query-status", "id": 1}, E("expecting value"),
      {"execute": "query-status", "id": 3}]),
]


@pytest.mark.parametrize("feeding", ["as-written", "bytewise"])
@pytest.mark.parametrize(("chunks", "expected"), [pytest.param(c, e, id=i) for i, c, e in FRAMING])
def test_stream_framing(chunks: list[bytes], expected: list[Any], feeding: str) -> None:
    if feeding == "bytewise":
        chunks = bytewise(b"".join(chunks))
    assert feed(chunks) == expected


def test_one_mib_of_leading_spaces_then_a_command() -> None:
    p = JsonStreamParser()
    assert p.feed(b" " * (1 << 20)) == []
    assert p.idle
    assert p.feed(b'{"execute":"query-status"}') == [STATUS]


def test_an_open_object_waits_for_its_end() -> None:
    p = JsonStreamParser()
    assert p.feed(b'{"execute":"query-status","id":"unt"\n') == []
    assert not p.idle
    assert p.feed(b'{"execute":"query-status"}') == []   # swallowed into the open object
    assert p.feed(b"}") == [E("expected separator in dict")]
    assert p.idle
    assert p.feed(b'{"execute":"query-status"}') == [STATUS]


def test_idle_only_between_messages() -> None:
    p = JsonStreamParser()
    assert p.idle
    p.feed(b'{"a":')
    assert not p.idle
    p.feed(b"1}")
    assert p.idle
    p.feed(b"12")           # a number needs its lookahead byte
    assert not p.idle
    assert p.feed(b" ") == [12]
    assert p.idle


# -- §8.1.1: the id table, as the parser types each value ------------------------------------
# (id text, parsed value, Python type): int64/uint64 stay integers, anything else a double.
IDS: list[tuple[bytes, Any, type]] = [
    (b"1", 1, int), (b"0", 0, int), (b"-3", -3, int),
    (b"9223372036854775807", 9223372036854775807, int),
    (b"9223372036854775808", 9223372036854775808, int),
    (b"18446744073709551615", 18446744073709551615, int),
    (b"18446744073709551616", 1.8446744073709552e19, JFloat),
    (b"123456789012345678901234567890", 1.2345678901234568e29, JFloat),
    (b"-9223372036854775808", -9223372036854775808, int),
    (b"-9223372036854775809", -9.2233720368547758e18, JFloat),
    (b"1.5", 1.5, JFloat), (b"1e3", 1000.0, JFloat), (b"1E+2", 100.0, JFloat),
    (b"-0.0", -0.0, JFloat), (b"0.1", 0.1, JFloat), (b"2.5e-8", 2.5e-8, JFloat),
    (b"1e300", 1e300, JFloat), (b"1e400", float("inf"), JFloat),
    (b"-1e400", float("-inf"), JFloat),
    (b'"abc"', "abc", str), (b'""', "", str), (b"null", None, type(None)),
    (b"true", True, bool), (b"false", False, bool), (b"[]", [], list), (b"{}", {}, dict),
    (b'[1,"x",null]', [1, "x", None], list),
    ('"é"'.encode(), "é", str), (b'"\\u00e9"', "é", str),
    ('"😀"'.encode(), "😀", str), (b'"\\ud83d\\ude00"', "😀", str),
    (b'"\\u007f"', "\x7f", str), (b'"\x7f"', "\x7f", str),
    (b'"\\u0001\\b\\f"', "\x01\b\f", str), (b'"a/b"', "a/b", str), (b'"\\/"', "/", str),
    (b'"a\\u0000b"', "a\x00b", str),
]


@pytest.mark.parametrize("feeding", ["whole", "bytewise"])
@pytest.mark.parametrize(("text", "value", "kind"),
                         [pytest.param(t, v, k, id=t.decode("utf-8", "replace"))
                          for t, v, k in IDS])
def test_id_values_are_typed_as_qemu_types_them(text: bytes, value: Any, kind: type,
                                                feeding: str) -> None:
    data = b'{"execute":"query-status","id":' + text + b"}"
    out = feed([data] if feeding == "whole" else bytewise(data))
    assert len(out) == 1 and isinstance(out[0], dict), out
    got = out[0]["id"]
    assert type(got) is kind
    assert got == value
    if kind is JFloat:
        assert got.text == text.decode()   # kept for DESIGN §8's `1e400` echo


# -- §8.1.5: limits --------------------------------------------------------------------------

def test_qemus_limit_values() -> None:
    assert (MAX_TOKEN_SIZE, MAX_TOKEN_COUNT, MAX_NESTING) == (64 << 20, 2 << 20, 1024)


def test_65_mib_string_gives_qemus_three_errors() -> None:
    data = QS + b'"' + b"x" * (65 << 20) + b'"}\n'
    out = feed([data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)])
    # The lexer cuts the token at 64 MiB + 1 bytes; the last MiB is lexed as a keyword whose
    # message parse_error() cuts at 1023 bytes (desc of 1,041 characters); then `"}\n`.
    assert out == [ParseError("JSON token size limit exceeded"),
                   E("invalid keyword '" + "x" * 1006),
                   E("stray '\"}\n'")]
    assert len(out[1].desc) == 1041


def test_16_mib_string_is_accepted() -> None:
    out = feed([QS + b'"' + b"y" * (16 << 20) + b'"}'])
    assert out == [{"execute": "query-status", "id": "y" * (16 << 20)}]


def test_nesting_1000_accepted_1030_refused_then_leftovers() -> None:
    ok = QS + b"[" * 1000 + b"]" * 1000 + b"}"
    assert len(feed([ok])) == 1 and isinstance(feed([ok])[0], dict)
    bad = QS + b"[" * 1030 + b"]" * 1030 + b"}"
    for chunks in ([bad], bytewise(bad)):
        out = feed(chunks)
        # QEMU: `{` and 1,023 `[` pass; the 1,024th `[` is refused; the leftover six `[`
        # and six `]` are one array (not an object), then each of the remaining 1,024 `]`
        # and the `}` is "expecting value".
        assert out[0] == ParseError("JSON nesting depth limit exceeded")
        assert out[1] == [[[[[[]]]]]]
        assert out[2:] == [E("expecting value")] * 1025


@pytest.mark.parametrize(("length", "accepted"), [(23, True), (24, False)])
def test_configured_message_size_limit(length: int, accepted: bool) -> None:
    # The streamer's "token size" is the sum of the message's token bytes: each token is
    # refused when sum-so-far + its length + 1 exceeds the limit, so a message of N token
    # bytes passes a limit of N + 1 and fails at N.
    p = JsonStreamParser(max_token_size=24)
    k = length - len(b'{"id":""}')
    out = p.feed(b'{"id":"' + b"s" * k + b'"}')
    if accepted:
        assert out == [{"id": "s" * k}]
    else:
        assert out == [ParseError("JSON token size limit exceeded")]  # refused at the `}`
    assert p.feed(b'{"id":1}') == [{"id": 1}]   # and the stream goes on


def test_configured_message_size_limit_mid_message_leaves_the_rest_to_err() -> None:
    p = JsonStreamParser(max_token_size=24)
    # The 18-byte string pushes the sum to 25: refused there; the lone `}` is then a message.
    assert p.feed(b'{"id":"' + b"s" * 16 + b'"}') == [
        ParseError("JSON token size limit exceeded"), E("expecting value")]


def test_configured_single_token_size_limit() -> None:
    # The lexer cuts a token longer than the limit at limit + 1 bytes (json-lexer.c), and
    # lexes what follows afresh.
    p = JsonStreamParser(max_token_size=8)
    assert p.feed(b'"abcdefghijkl"\n') == [ParseError("JSON token size limit exceeded"),
                                            E("invalid keyword 'ijkl'"), E("stray '\"\n'")]


def test_configured_token_count_limit_then_every_leftover_token_errs() -> None:
    # At a limit of 10 the 11th token is refused; the tokens after it are lexed afresh, one
    # message each (QEMU's pattern for its 2M-token case).
    p = JsonStreamParser(max_token_count=10)
    assert p.feed(b'{"id":[1,1,1]}') == [ParseError("JSON token count limit exceeded")]
    assert p.feed(b'{"id":[1,1]}') == [{"id": [1, 1]}]
    #              1 2   34 567891011...
    assert p.feed(b'{"id":[1,1,1,1,1]}') == [
        ParseError("JSON token count limit exceeded"),   # the 11th token, `1`
        E("expecting value"), 1, E("expecting value"), E("expecting value")]


def test_configured_nesting_limit() -> None:
    p = JsonStreamParser(max_nesting=3)
    assert p.feed(b'{"a":[[1]]}') == [{"a": [[1]]}]
    assert p.feed(b'{"a":[[[1]]]}') == [ParseError("JSON nesting depth limit exceeded"),
                                        1, E("expecting value"), E("expecting value"),
                                        E("expecting value"), E("expecting value")]


def test_deep_nesting_on_the_exact_path_does_not_hit_pythons_recursion_limit() -> None:
    data = b"[" * MAX_NESTING + b"]" * MAX_NESTING
    out = feed(bytewise(data))
    assert len(out) == 1 and isinstance(out[0], list)


def test_error_messages_are_cut_at_1023_bytes_like_parse_error() -> None:
    out = feed([b"{" + b"a" * 5000 + b"}"])
    assert out == [E("invalid keyword '" + "a" * 1006)]


@pytest.mark.parametrize("feeding", ["whole", "bytewise"])
def test_integer_beyond_pythons_digit_limit_is_a_double_not_an_exception(feeding: str) -> None:
    # Python refuses int() of more than 4,300 digits; QEMU makes such a literal a double.
    # The parser must neither raise (that would kill the session) nor lose the text.
    digits = b"9" * 5000
    data = b'{"id":' + digits + b"}"
    out = feed([data] if feeding == "whole" else bytewise(data))
    assert len(out) == 1
    got = out[0]["id"]
    assert type(got) is JFloat and got == float("inf") and got.text == digits.decode()
