"""Properties of the stream parser, for inputs nobody wrote down (hypothesis).

Proves that `JsonStreamParser`:
- yields the same messages however a valid stream is cut into reads, including cuts inside
  UTF-8 sequences, and that those messages are the values that were serialised (in any of
  the styles clients use: compact, spaced, pretty, raw UTF-8, single quotes);
- never raises on any bytes, random or mutated from valid messages, and yields only
  messages (JSON values) or `ParseError`s;
- gives identical results fed whole (the C fast path wherever it applies) and byte by byte
  (which always takes the exact port of QEMU's lexer), for valid and invalid input alike;
- resynchronises after any garbage when a control character is sent (QMP spec advice).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sevd.protocol.jsonstream import JFloat, JsonStreamParser, ParseError

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _qemu_char(c: str) -> bool:
    """QEMU refuses surrogates and noncharacters in strings (is_valid_codepoint())."""
    cp = ord(c)
    return not (0xD800 <= cp <= 0xDFFF or 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE)


TEXT = st.text(st.characters(codec="utf-8").filter(_qemu_char), max_size=12)
# Integers around the int64/uint64 edges, where QEMU switches to a double.
EDGES = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30])
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | EDGES
           | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)
MESSAGES = st.dictionaries(TEXT, VALUES, max_size=5)
WS = st.text(" \t\r\n", max_size=3)


def _sq(s: str) -> str:
    """A single-quoted string, QEMU's extension: `'` escaped, `"` left raw."""
    body = json.dumps(s, ensure_ascii=False)[1:-1].replace('\\"', '"').replace("'", "\\'")
    return "'" + body + "'"


@st.composite
def serialised(draw: st.DrawFn, value: Any) -> str:
    """`value` as some client might write it."""
    style = draw(st.sampled_from(["compact", "spaced", "pretty", "utf8", "single-quotes"]))
    if style == "compact":
        return json.dumps(value, separators=(",", ":"))
    if style == "spaced":
        return json.dumps(value)
    if style == "pretty":
        return json.dumps(value, indent=2).replace("\n", draw(st.sampled_from(["\n", "\r\n"])))
    if style == "utf8":
        return json.dumps(value, ensure_ascii=False)

    def enc(v: Any) -> str:
        if isinstance(v, str):
            return _sq(v) if draw(st.booleans()) else json.dumps(v)
        if isinstance(v, dict):
            return "{" + ",".join(enc(k) + ":" + enc(x) for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ",".join(enc(x) for x in v) + "]"
        return json.dumps(v)

    return enc(value)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[Any]]:
    """Several messages, back to back or separated by whitespace, and their values."""
    values = draw(st.lists(MESSAGES, min_size=1, max_size=3))
    parts = [draw(WS) + draw(serialised(v)) for v in values]
    return "".join(parts).encode() + draw(WS).encode(), values


def expected(v: Any) -> Any:
    """What the parser must make of a serialised Python value (QEMU's parse_literal())."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return ("i", v) if -(1 << 63) <= v < (1 << 64) else ("f", float(v))
    if isinstance(v, float):
        return ("f", v)
    if isinstance(v, list):
        return [expected(x) for x in v]
    return [(k, expected(x)) for k, x in v.items()]


def canon(v: Any) -> Any:
    """A parser result in a form that tells int from double and keeps member order."""
    if isinstance(v, ParseError):
        return ("error", v.desc)
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, JFloat):
        return ("f", float(v))
    if isinstance(v, int):
        return ("i", v)
    if isinstance(v, float):
        raise AssertionError(f"a plain float escaped the parser: {v!r}")
    if isinstance(v, list):
        return [canon(x) for x in v]
    assert isinstance(v, dict), type(v)
    return [(k, canon(x)) for k, x in v.items()]


def feed(chunks: list[bytes]) -> list[Any]:
    p = JsonStreamParser()
    out: list[Any] = []
    for c in chunks:
        out += p.feed(c)
    return out


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted({p % (len(data) + 1) for p in points}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def well_typed(v: Any) -> bool:
    if isinstance(v, ParseError):
        return v.desc.startswith("JSON ")
    if v is None or isinstance(v, bool | int | float | str):
        return True
    if isinstance(v, list):
        return all(well_typed(x) for x in v)
    return isinstance(v, dict) and all(isinstance(k, str) and well_typed(x)
                                       for k, x in v.items())


# Cases that random generation finds only now and then, pinned (hypothesis `@example`).
PINNED = [
    (b'{"id":18446744073709551616}', [{"id": 2**64}]),
    (b'{"id":-9223372036854775809} {"id":18446744073709551615}',
     [{"id": -(2**63) - 1}, {"id": 2**64 - 1}]),
    (b"{'id':'\\u00e9\\'\"'}\r\n{\"a\":[1.5,\"" + "😀".encode() + b'"]}',
     [{"id": "é'\""}, {"a": [1.5, "😀"]}]),
]


def pinned(fn: Any) -> Any:
    for stream in PINNED:
        fn = example(stream, list(range(1, len(stream[0]))))(fn)
    return fn


@SETTINGS
@pinned
@given(streams(), st.lists(st.integers(0, 1 << 16), max_size=8))
def test_any_split_of_a_valid_stream_yields_the_serialised_messages(
        stream: tuple[bytes, list[Any]], points: list[int]) -> None:
    data, values = stream
    want = [expected(v) for v in values]
    assert [canon(m) for m in feed([data])] == want
    assert [canon(m) for m in feed(cut(data, points))] == want


@SETTINGS
@example(PINNED[0])
@example(PINNED[1])
@given(streams())
def test_fast_path_and_exact_path_agree_on_valid_streams(
        stream: tuple[bytes, list[Any]]) -> None:
    data, _ = stream
    bytewise = [data[i:i + 1] for i in range(len(data))]
    assert [canon(m) for m in feed([data])] == [canon(m) for m in feed(bytewise)]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid stream with a few bytes flipped, inserted or deleted."""
    data = bytearray(draw(streams())[0])
    interesting = st.sampled_from(b'{}[]:,"\'\\\x00\x1b\n\xff\xc3\xe2\x80u01eE-+.ntf ')
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "insert" or not data:
            data[i:i] = bytes([draw(interesting | st.integers(0, 255))])
        elif op == "delete":
            del data[min(i, len(data) - 1)]
        else:
            data[min(i, len(data) - 1)] = draw(interesting | st.integers(0, 255))
    return bytes(data)


GARBAGE = st.binary(max_size=64) | mutated()


@SETTINGS
@given(GARBAGE, st.lists(st.integers(0, 1 << 16), max_size=6))
def test_any_bytes_never_raise_and_yield_messages_or_parse_errors(
        data: bytes, points: list[int]) -> None:
    whole = feed([data])
    assert all(well_typed(m) for m in whole)
    # The same results for any cut, and byte by byte (fast path vs exact path on garbage).
    assert [canon(m) for m in feed(cut(data, points))] == [canon(m) for m in whole]
    assert [canon(m) for m in feed([data[i:i + 1] for i in range(len(data))])] == \
        [canon(m) for m in whole]


@SETTINGS
@given(GARBAGE, st.sampled_from([b"\x1b", b"\x00", b"\x01", b"\x1f"]))
def test_a_control_character_resynchronises_after_any_garbage(data: bytes,
                                                              ctrl: bytes) -> None:
    p = JsonStreamParser()
    p.feed(data)
    out = p.feed(ctrl + b'{"execute":"query-status","id":"sync"}')
    assert out[-1] == {"execute": "query-status", "id": "sync"}
    assert p.idle


def test_whole_and_bytewise_really_are_two_paths(monkeypatch: Any) -> None:
    """What the fast/exact properties rely on: a plain message fed whole never reaches the
    exact path's lexer, and fed byte by byte always does."""
    calls: list[int] = []
    real = JsonStreamParser._lex

    def counting(self: JsonStreamParser, data: bytes, pos: int) -> int:
        calls.append(pos)
        return real(self, data, pos)

    monkeypatch.setattr(JsonStreamParser, "_lex", counting)
    msg = b'{"execute":"query-status","arguments":{"a":[1,2.5,"x",null]},"id":"__qmp#00001"}'
    assert feed([msg + b"\r\n" + msg]) == [json.loads(msg)] * 2
    assert calls == []
    assert feed([msg[i:i + 1] for i in range(len(msg))]) == [json.loads(msg)]
    assert len(calls) == len(msg)
