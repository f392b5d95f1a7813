"""Meta-tests: the schema files, the handler registry and QEMU's argument error texts agree.

Proves that:
- per scope (control socket = host, guest socket = guest), the schema declares exactly the
  commands that have handlers, and the application refuses to start when they differ;
- every command's and event's example in schema/*.json validates against its own schema;
- a broken schema directory (not JSON, not a JSON Schema, a command without examples, an
  example that does not validate, a command defined twice, a dangling `$ref`, no files at
  all) raises `SchemaError`, never something else;
- `Schema.explain()` gives the text QEMU 7.2's input visitor gives for every QAPI type
  (str, bool, number, int, int8/16/32, uint8/16/32, uint64, size, enum, enum in a list
  (`'null'`), lists, nested objects, missing / unexpected members, declaration order),
  each text checked by hand against a real QEMU 7.2 (`migrate-set-parameters` has `size`,
  `uint64` and `uint8` members);
- the validator and `explain()` agree on what is valid (hypothesis).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sevd.commands.app import App
from sevd.commands.registry import GUEST, HOST, handlers
from sevd.commands.schema import Schema, SchemaError, schema_dir
from sevd.protocol.jsonstream import JsonStreamParser

SCHEMA = Schema()


# -- schema vs registry ------------------------------------------------------------------------

@pytest.mark.parametrize("scope", [HOST, GUEST])
def test_schema_and_registry_name_the_same_commands(scope: str) -> None:
    declared = {c.name for c in SCHEMA.for_scope(scope)}
    registered = {name for (s, name) in handlers() if s == scope}
    assert declared == registered
    assert "qmp_capabilities" in declared and "query-qmp-schema" in declared


def test_scopes_follow_design_section_3() -> None:
    host = {c.name for c in SCHEMA.for_scope(HOST)}
    guest = {c.name for c in SCHEMA.for_scope(GUEST)}
    assert {"guest-add", "guest-remove", "query-guests"} <= host - guest
    assert {"query-status", "stop", "cont", "system_reset", "query-kvm"} <= guest - host
    assert {"quit", "query-version", "human-monitor-command"} <= host & guest


def test_the_application_builds_from_the_shipped_schema() -> None:
    app = App(SCHEMA)
    assert set(app.tables[HOST]) == {c.name for c in SCHEMA.for_scope(HOST)}
    assert set(app.tables[GUEST]) == {c.name for c in SCHEMA.for_scope(GUEST)}


def test_the_application_refuses_a_schema_without_handlers(tmp_path: Path) -> None:
    d = _copy_schema(tmp_path)
    _write(d / "extra.json", _doc("extra", {"x-no-handler": _command()}))
    with pytest.raises(SchemaError,
                       match=r"guest scope: schema without handler: \['x-no-handler'\]"):
        App(Schema(d))


# -- examples ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SCHEMA.commands))
def test_every_command_example_validates(name: str) -> None:
    cmd = SCHEMA.commands[name]
    assert cmd.examples
    for ex in cmd.examples:
        args = ex.get("arguments", {})
        assert cmd.validator.is_valid(args), ex
        if "return" in ex:
            assert cmd.returns_validator.is_valid(ex["return"]), ex


@pytest.mark.parametrize("name", sorted(SCHEMA.events))
def test_every_event_example_validates(name: str) -> None:
    ev = SCHEMA.events[name]
    assert ev.examples
    for ex in ev.examples:
        assert ex["event"] == name
        assert set(ex) == ({"timestamp", "event", "data"} if ev.data else {"timestamp", "event"})
        if ev.data is not None:
            assert ev.validator.is_valid(ex["data"])


# -- broken schema directories -----------------------------------------------------------------

def _copy_schema(tmp_path: Path) -> Path:
    d = tmp_path / "schema"
    shutil.copytree(schema_dir(), d)
    return d


def _write(path: Path, doc: Any) -> None:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))


def _doc(family: str, commands: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://sevd.invalid/schema/{family}.json",
            "x-commands": commands, **extra}


def _command(**over: Any) -> dict[str, Any]:
    cmd = {"x-scope": ["guest"], "description": "d",
           "arguments": {"$ref": "common.json#/$defs/Empty"},
           "returns": {"$ref": "common.json#/$defs/Empty"},
           "examples": [{"arguments": {}, "return": {}}]}
    cmd.update(over)
    return {k: v for k, v in cmd.items() if v is not None}


INT_ARGS = {"type": "object", "properties": {"n": {"$ref": "common.json#/$defs/int"}},
            "required": ["n"], "additionalProperties": False}
BROKEN: list[tuple[str, Any, str]] = [
    ("not-json", "{", "not JSON"),
    ("not-a-json-schema", _doc("x", {}, type=5), "x.json"),
    ("no-examples-key", _doc("x", {"x-a": _command(examples=None)}), "lacks 'examples'"),
    ("no-scope", _doc("x", {"x-a": _command(**{"x-scope": None})}), "lacks 'x-scope'"),
    ("empty-examples", _doc("x", {"x-a": _command(examples=[])}), "has no example"),
    ("example-arguments-invalid",
     _doc("x", {"x-a": _command(arguments=INT_ARGS, examples=[{"arguments": {"n": "1"}}])}),
     "example arguments of x-a"),
    ("example-return-invalid",
     _doc("x", {"x-a": _command(examples=[{"arguments": {}, "return": {"a": 1}}])}),
     "example return of x-a"),
    ("duplicate-command", _doc("x", {"query-status": _command()}), "also defined in"),
    ("event-example-mismatch",
     _doc("x", {}, **{"x-events": {"X_EV": {"x-scope": ["guest"], "description": "d",
                                            "data": None,
                                            "examples": [{"event": "X_EV", "data": {}}]}}}),
     "example of event X_EV"),
    ("dangling-ref", _doc("x", {"x-a": _command(
        arguments={"$ref": "common.json#/$defs/NoSuchType"})}), "points nowhere"),
]


def rows(table: list[Any]) -> list[Any]:
    """Table rows `(id, *values)` as pytest params; `pytest.param` rows pass through."""
    return [r if hasattr(r, "marks") else pytest.param(*r[1:], id=r[0]) for r in table]


@pytest.mark.parametrize(("doc", "message"), rows(BROKEN))
def test_a_broken_schema_file_raises_schema_error(tmp_path: Path, doc: Any,
                                                   message: str) -> None:
    d = _copy_schema(tmp_path)
    _write(d / "x.json", doc)
    with pytest.raises(SchemaError, match=message):
        Schema(d)


def test_an_empty_schema_directory_raises_schema_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="no schema files"):
        Schema(tmp_path)


# -- explain(): QEMU's argument error texts ----------------------------------------------------

ENUM = {"enum": ["a", "b"], "x-qapi-name": "TestEnum"}


def _ref(t: str) -> dict[str, str]:
    return {"$ref": f"common.json#/$defs/{t}"}


TYPES_ARGS = {
    "type": "object",
    "properties": {
        "s": _ref("str"), "b": _ref("bool"), "n": _ref("number"), "i": _ref("int"),
        "i8": _ref("int8"), "i16": _ref("int16"), "i32": _ref("int32"),
        "u8": _ref("uint8"), "u16": _ref("uint16"), "u32": _ref("uint32"),
        "u64": _ref("uint64"), "sz": _ref("size"), "e": ENUM,
        "le": {"type": "array", "items": ENUM},
        "li": {"type": "array", "items": _ref("int")},
        "lu32": {"type": "array", "items": _ref("uint32")},
        "o": {"type": "object", "properties": {"a": _ref("int")}, "required": ["a"],
              "additionalProperties": False},
        "any": _ref("any"),
    },
    "required": ["s"], "additionalProperties": False,
}


@pytest.fixture(scope="module")
def types_schema(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    d = _copy_schema(tmp_path_factory.mktemp("types"))
    _write(d / "types.json", _doc("types", {"x-types": _command(
        arguments=TYPES_ARGS, examples=[{"arguments": {"s": ""}, "return": {}}])}))
    return Schema(d)


def check(schema: Schema, args_json: bytes) -> str | None:
    """What the dispatcher answers for these arguments: None (valid) or QEMU's text."""
    (args,) = JsonStreamParser().feed(args_json)   # the session's own parse (JFloat etc.)
    cmd = schema.commands["x-types"]
    return None if cmd.validator.is_valid(args) else schema.explain(cmd, args)


S = b'"s":"",'
EXPLAIN: list[Any] = [
    ("missing", b"{}", "Parameter 's' is missing"),
    ("declaration-order", b'{"b":1}', "Parameter 's' is missing"),
    ("unexpected", S + b'"zz":1', "Parameter 'zz' is unexpected"),
    ("type-before-unexpected", b'{"zz":1,"s":1}',
     "Invalid parameter type for 's', expected: string"),
    ("str", b'{"s":1}', "Invalid parameter type for 's', expected: string"),
    ("bool", S + b'"b":"true"', "Invalid parameter type for 'b', expected: boolean"),
    ("number-string", S + b'"n":"1"', "Invalid parameter type for 'n', expected: number"),
    ("number-int", S + b'"n":1', None),
    ("number-double", S + b'"n":1.5', None),
    ("int-string", S + b'"i":"1"', "Invalid parameter type for 'i', expected: integer"),
    ("int-double", S + b'"i":1.5', "Invalid parameter type for 'i', expected: integer"),
    ("int-above-int64", S + b'"i":9223372036854775808',
     "Invalid parameter type for 'i', expected: integer"),
    ("int-1e400", S + b'"i":1e400', "Invalid parameter type for 'i', expected: integer"),
    ("int-min", S + b'"i":-9223372036854775808', None),
    ("int-integral-double", S + b'"i":2.0', "Invalid parameter type for 'i', expected: integer"),
    ("int8-range", S + b'"i8":128', "Parameter 'i8' expects int8_t"),
    ("int8-string", S + b'"i8":"x"', "Invalid parameter type for 'i8', expected: integer"),
    ("int16-range", S + b'"i16":-32769', "Parameter 'i16' expects int16_t"),
    ("int32-range", S + b'"i32":2147483648', "Parameter 'i32' expects int32_t"),
    ("uint8-range", S + b'"u8":256', "Parameter 'u8' expects uint8_t"),
    ("uint8-negative", S + b'"u8":-1', "Parameter 'u8' expects uint8_t"),
    ("uint8-string", S + b'"u8":"x"', "Parameter 'u8' expects uint64"),
    ("uint16-range", S + b'"u16":65536', "Parameter 'u16' expects uint16_t"),
    ("uint32-range", S + b'"u32":4294967296', "Parameter 'u32' expects uint32_t"),
    ("uint32-max", S + b'"u32":4294967295', None),
    ("uint32-string", S + b'"u32":"x"', "Parameter 'u32' expects uint64"),
    ("uint32-above-uint64", S + b'"u32":18446744073709551616',
     "Parameter 'u32' expects uint64"),
    ("uint64-string", S + b'"u64":"x"', "Parameter 'u64' expects uint64"),
    ("uint64-double", S + b'"u64":1.5', "Parameter 'u64' expects uint64"),
    ("uint64-above", S + b'"u64":18446744073709551616', "Parameter 'u64' expects uint64"),
    ("uint64-max", S + b'"u64":18446744073709551615', None),
    ("uint64-negative-wraps", S + b'"u64":-1', None),
    # A double that rounds to -2**63: still a double, so not a uint64.
    ("uint64-below-int64", S + b'"u64":-9223372036854775809',
     "Parameter 'u64' expects uint64"),
    ("size-string", S + b'"sz":"x"', "Parameter 'sz' expects uint64"),
    ("size-double", S + b'"sz":1.5', "Parameter 'sz' expects uint64"),
    ("size-integral-double", S + b'"sz":4096.0', "Parameter 'sz' expects uint64"),
    ("size-negative-wraps", S + b'"sz":-1', None),
    ("enum-value", S + b'"e":"zz"', "Parameter 'e' does not accept value 'zz'"),
    ("enum-type", S + b'"e":1', "Invalid parameter type for 'e', expected: string"),
    ("enum-in-list", S + b'"le":["a","foo"]', "Parameter 'null' does not accept value 'foo'"),
    ("list-type", S + b'"le":"a"', "Invalid parameter type for 'le', expected: array"),
    ("list-element-type", S + b'"li":[1,"x"]',
     "Invalid parameter type for 'li[1]', expected: integer"),
    ("sized-int-in-list", S + b'"lu32":[4294967296]', "Parameter 'null' expects uint32_t"),
    ("object-type", S + b'"o":1', "Invalid parameter type for 'o', expected: object"),
    ("object-missing", S + b'"o":{}', "Parameter 'o.a' is missing"),
    ("object-unexpected", S + b'"o":{"a":1,"z":2}', "Parameter 'o.z' is unexpected"),
    ("object-member-type", S + b'"o":{"a":"x"}',
     "Invalid parameter type for 'o.a', expected: integer"),
    ("any", S + b'"any":[{"x":null}]', None),
    ("all-valid", S + b'"b":true,"i":-1,"u8":255,"u64":0,"sz":4096,"e":"b","le":["a"],'
     b'"li":[],"o":{"a":0}', None),
]


@pytest.mark.parametrize(("args", "text"), rows(EXPLAIN))
def test_explain_gives_qemus_text(types_schema: Schema, args: bytes, text: str | None) -> None:
    if not args.startswith(b"{"):
        args = b"{" + args + b"}"
    assert check(types_schema, args) == text


def test_explain_on_the_shipped_schema() -> None:
    # The texts of reference/qmp.md §8.1.2 / §8.1.3 on real commands.
    cases = [
        ("qmp_capabilities", {"enable": ["foo"]}, "Parameter 'null' does not accept value 'foo'"),
        ("qmp_capabilities", {"enable": "oob"},
         "Invalid parameter type for 'enable', expected: array"),
        ("qmp_capabilities", {"foo": 1}, "Parameter 'foo' is unexpected"),
        ("query-status", {"foo": 1}, "Parameter 'foo' is unexpected"),
        ("human-monitor-command", {}, "Parameter 'command-line' is missing"),
        ("human-monitor-command", {"command-line": "info status", "bar": True},
         "Parameter 'bar' is unexpected"),
        ("human-monitor-command", {"command-line": 5},
         "Invalid parameter type for 'command-line', expected: string"),
        ("human-monitor-command", {"command-line": "x", "cpu-index": "0"},
         "Invalid parameter type for 'cpu-index', expected: integer"),
        ("human-monitor-command", {"command-line": "x", "cpu-index": None},
         "Invalid parameter type for 'cpu-index', expected: integer"),
    ]
    for name, args, text in cases:
        cmd = SCHEMA.commands[name]
        assert not cmd.validator.is_valid(args)
        assert SCHEMA.explain(cmd, args) == text


# Values of every JSON type, integers beyond 64 bits (doubles once parsed) and integral
# doubles included.
VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.text(max_size=3)
    | st.sampled_from(["a", "b", "zz", 2.0, -9223372036854775809, 18446744073709551616])
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["a", "z"]), inner, max_size=2), max_leaves=6)
MEMBERS = st.sampled_from([*TYPES_ARGS["properties"], "zz"])  # type: ignore[index]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(MEMBERS, VALUE, max_size=4))
def test_validator_and_explain_agree(types_schema: Schema, args: dict[str, Any]) -> None:
    cmd = types_schema.commands["x-types"]
    encoded = json.dumps(args).encode()
    (parsed,) = JsonStreamParser().feed(encoded)
    valid = cmd.validator.is_valid(parsed)
    text = types_schema.explain(cmd, parsed)
    # explain() falls back to "Invalid arguments" only when it finds nothing to say.
    assert valid == (text == "Invalid arguments"), (encoded, text)
