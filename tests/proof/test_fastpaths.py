"""The hot path's shortcuts give exactly the answers of the slow paths they skip.

Proves, with hypothesis, that:
- the stream parser's fast path (C scanner without per-object hooks, duplicate keys ruled
  out by counting colons) agrees with the exact port of QEMU's parser (fed byte by byte)
  on objects with duplicate keys at any depth, colons and braces inside strings, long
  digit runs and odd numbers;
- `sevd.commands.argcheck` decides exactly as the jsonschema validator for every command of
  the schema, on arguments drawn from each command's own schema and on arbitrary JSON, and
  that it compiles for `human-monitor-command` and the negotiation (the commands whose
  speed the benchmark measures);
- `jsonwrite.encode_value` (C encoder built once, shortcuts for string and integer ids)
  writes what the generic path writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sevd.commands.argcheck import compile_check
from sevd.commands.schema import Schema
from sevd.protocol import jsonwrite
from sevd.protocol.jsonstream import JsonStreamParser

Draw = Callable[[st.SearchStrategy[Any]], Any]
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
SCHEMA = Schema()

KEYS = st.sampled_from(["a", "b", "execute", "id", "a:b", ":", "{", "", "x\u00e9"])
NUMBERS = st.sampled_from(["0", "-0", "1", "-1", "1.5", "1e400", "9223372036854775808",
                           "18446744073709551616", "-9223372036854775809", "1" * 30,
                           "12345678901234567890123"])
STRINGS = st.text(alphabet=st.sampled_from(list('ab:{}[],"\\ \u00e9')), max_size=6)


@st.composite
def json_text(draw: st.DrawFn, depth: int = 0) -> str:
    """JSON text (not a Python value: keys may repeat) of an object or a scalar."""
    kind = draw(st.integers(0, 4 if depth < 3 else 2))
    if kind == 0:
        return draw(NUMBERS)
    if kind == 1:
        return json.dumps(draw(STRINGS))
    if kind == 2:
        return draw(st.sampled_from(["true", "false", "null"]))
    if kind == 3:
        items = draw(st.lists(json_text(depth + 1), max_size=3))
        return "[" + ",".join(items) + "]"
    pairs = draw(st.lists(st.tuples(KEYS, json_text(depth + 1)), max_size=4))
    return "{" + ",".join(json.dumps(k) + ":" + v for k, v in pairs) + "}"


def _outcome(parser_out: list[Any]) -> list[str]:
    # Compare by repr: JFloat keeps its text, ParseError its message.
    return [repr(x) for x in parser_out]


@SETTINGS
@given(st.lists(st.tuples(KEYS, json_text()), max_size=5))
def test_fast_path_agrees_with_the_exact_parser(pairs: list[tuple[str, str]]) -> None:
    text = "{" + ",".join(json.dumps(k) + ":" + v for k, v in pairs) + "}"
    data = text.encode()
    whole = JsonStreamParser().feed(data)
    exact = JsonStreamParser()
    byte_by_byte: list[Any] = []
    for i in range(len(data)):
        byte_by_byte += exact.feed(data[i:i + 1])
    assert _outcome(whole) == _outcome(byte_by_byte), text


def test_duplicate_keys_are_refused_at_any_depth() -> None:
    for text in (b'{"a":1,"a":2}', b'{"x":{"a":1,"a":2}}', b'{"x":[{"a":1,"a":2}]}',
                 b'{"a:":1,"a":1,"a":2}'):
        out = JsonStreamParser().feed(text)
        assert [repr(x) for x in out] == ["ParseError(desc='JSON parse error, duplicate key')"]


def _arguments(s: dict[str, Any], base: str, draw: Draw, depth: int = 0) -> Any:
    """A value drawn from schema `s`, right or wrong."""
    s, base = SCHEMA.resolve(s, base)
    if depth > 4 or draw(st.integers(0, 9)) == 0:
        return draw(ANY)
    if "enum" in s:
        return draw(st.sampled_from(s["enum"]) | st.text(max_size=4))
    t = s.get("type")
    if t == "object":
        props = s.get("properties", {})
        out = {k: _arguments(v, base, draw, depth + 1) for k, v in props.items()
               if draw(st.booleans())}
        if draw(st.integers(0, 5)) == 0:
            out[draw(st.text(max_size=3))] = draw(ANY)
        return out
    if t == "array":
        return [_arguments(s.get("items", {}), base, draw, depth + 1)
                for _ in range(draw(st.integers(0, 2)))]
    if t == "integer":
        lo, hi = s.get("minimum", -(1 << 70)), s.get("maximum", 1 << 70)
        return draw(st.integers(lo - 2, hi + 2) | st.sampled_from([lo - 1, hi + 1, True]))
    return draw(ANY)


ANY = st.recursive(st.none() | st.booleans() | st.integers(-(1 << 65), 1 << 65)
                   | st.floats(allow_nan=False) | st.text(max_size=4),
                   lambda inner: st.lists(inner, max_size=3)
                   | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6)


@pytest.mark.parametrize("name", sorted(SCHEMA.commands))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_argument_check_decides_as_jsonschema(name: str, data: st.DataObject) -> None:
    cmd = SCHEMA.commands[name]
    check = compile_check(SCHEMA.registry, f"{cmd.base}#/x-commands/{name}/arguments")
    if check is None:
        return  # not modelled: the validator alone decides
    args = _arguments(cmd.arguments, cmd.base, data.draw)
    if data.draw(st.integers(0, 3)) == 0:
        args = data.draw(st.dictionaries(st.text(max_size=4), ANY, max_size=3))
    assert check(args) == cmd.validator.is_valid(args), args


@pytest.mark.parametrize("name", sorted(SCHEMA.commands))
def test_argument_check_accepts_the_schema_examples(name: str) -> None:
    cmd = SCHEMA.commands[name]
    check = compile_check(SCHEMA.registry, f"{cmd.base}#/x-commands/{name}/arguments")
    for example in cmd.examples:
        assert check is None or check(example.get("arguments", {})), example


def test_hot_commands_have_a_compiled_check() -> None:
    for name in ("human-monitor-command", "qmp_capabilities"):
        cmd = SCHEMA.commands[name]
        assert compile_check(SCHEMA.registry,
                             f"{cmd.base}#/x-commands/{name}/arguments") is not None


@SETTINGS
@given(ANY)
def test_encode_value_shortcuts(value: Any) -> None:
    assert jsonwrite.encode_value(value) == jsonwrite._slow(value)
