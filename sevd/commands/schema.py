"""The schema: loaded once at start-up, the one source of every command's shape.

Reads `schema/*.json` (JSON Schema 2020-12 plus the x- keywords of schema/README.md), checks
every document against the metaschema and every example against its command, and compiles a
`jsonschema` validator per command. An invalid schema raises `SchemaError` and stops the
daemon at boot.

Argument errors are reported as QEMU's input visitor reports them: members are visited in
declaration order (missing / wrong type), then the first leftover key is "unexpected". The
jsonschema validator decides *whether* arguments are valid; `explain()` says *what* QEMU
would say about them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.jsonschema

from sevd.protocol.jsonstream import JFloat
from sevd.protocol.session import qdict_order

_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64 = (0, (1 << 64) - 1)
# Sized integers: (min, max, QEMU's type name in "Parameter 'x' expects <name>").
_SIZED = {"int8": (-128, 127, "int8_t"), "int16": (-32768, 32767, "int16_t"),
          "int32": (-(1 << 31), (1 << 31) - 1, "int32_t"), "uint8": (0, 255, "uint8_t"),
          "uint16": (0, 65535, "uint16_t"), "uint32": (0, (1 << 32) - 1, "uint32_t")}


def _is_integer(checker: Any, instance: Any) -> bool:
    # QEMU's visitor wants a JSON integer: 2.0 is a double there, though JSON Schema calls it
    # an integer.
    return type(instance) is int


_QmpValidator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))


class SchemaError(Exception):
    """The schema files are inconsistent; the daemon must not start."""


@dataclass
class CommandSchema:
    name: str
    family: str
    scopes: tuple[str, ...]
    description: str
    arguments: dict[str, Any]
    returns: dict[str, Any]
    base: str
    allow_oob: bool
    features: list[str]
    errors: list[dict[str, str]]
    examples: list[dict[str, Any]]
    takes_arguments: bool = False
    validator: Any = field(default=None, repr=False)
    returns_validator: Any = field(default=None, repr=False)


@dataclass
class EventSchema:
    name: str
    family: str
    scopes: tuple[str, ...]
    description: str
    data: dict[str, Any] | None
    base: str
    examples: list[dict[str, Any]]
    validator: Any = field(default=None, repr=False)


def schema_dir() -> Path:
    """The installed copy (wheel package data) or, in a checkout, the repository's schema/."""
    packaged = Path(str(resources.files("sevd"))) / "schema"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "schema"


class Schema:
    """Every family's commands and events, with compiled validators."""

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory or schema_dir()
        self.documents: dict[str, dict[str, Any]] = {}
        for path in sorted(self.dir.glob("*.json")):
            try:
                self.documents[path.name] = json.loads(path.read_text())
            except ValueError as e:
                raise SchemaError(f"{path}: not JSON: {e}") from e
        if not self.documents:
            raise SchemaError(f"no schema files in {self.dir}")
        resources_ = [(doc.get("$id", name), referencing.Resource.from_contents(
            doc, default_specification=referencing.jsonschema.DRAFT202012))
            for name, doc in self.documents.items()]
        self.registry: referencing.Registry[Any] = referencing.Registry().with_resources(
            resources_)
        self.commands: dict[str, CommandSchema] = {}
        self.events: dict[str, EventSchema] = {}
        for name, doc in self.documents.items():
            self._load(name, doc)

    def _load(self, fname: str, doc: dict[str, Any]) -> None:
        try:
            jsonschema.Draft202012Validator.check_schema(doc)
        except jsonschema.SchemaError as e:
            raise SchemaError(f"{fname}: {e.message}") from e
        base = doc.get("$id", fname)
        family = fname.removesuffix(".json")
        for name, spec in doc.get("x-commands", {}).items():
            if name in self.commands:
                raise SchemaError(f"{fname}: command {name} is also defined in "
                                  f"{self.commands[name].family}.json")
            for key in ("x-scope", "description", "arguments", "returns", "examples"):
                if key not in spec:
                    raise SchemaError(f"{fname}: command {name} lacks '{key}'")
            cmd = CommandSchema(
                name=name, family=family, scopes=tuple(spec["x-scope"]),
                description=spec["description"],
                arguments=spec["arguments"], returns=spec["returns"], base=base,
                allow_oob=bool(spec.get("x-allow-oob", False)),
                features=list(spec.get("x-features", [])), errors=list(spec.get("x-errors", [])),
                examples=list(spec["examples"]))
            cmd.validator = self._validator(base, f"/x-commands/{name}/arguments")
            cmd.returns_validator = self._validator(base, f"/x-commands/{name}/returns")
            cmd.takes_arguments = bool(self.resolve(cmd.arguments, base)[0].get("properties"))
            if not cmd.examples:
                raise SchemaError(f"{fname}: command {name} has no example")
            for ex in cmd.examples:
                for err in cmd.validator.iter_errors(ex.get("arguments", {})):
                    raise SchemaError(f"{fname}: example arguments of {name}: {err.message}")
                if "return" in ex:
                    for err in cmd.returns_validator.iter_errors(ex["return"]):
                        raise SchemaError(f"{fname}: example return of {name}: {err.message}")
            self.commands[name] = cmd
        for name, spec in doc.get("x-events", {}).items():
            data = spec.get("data")
            ev = EventSchema(name=name, family=family, scopes=tuple(spec["x-scope"]),
                             description=spec["description"],
                             data=data, base=base,
                             examples=list(spec.get("examples", [])))
            if ev.data is not None:
                ev.validator = self._validator(base, f"/x-events/{name}/data")
            if not ev.examples:
                raise SchemaError(f"{fname}: event {name} has no example")
            for ex in ev.examples:
                if (ex.get("event") != name or ("data" in ex) != (ev.data is not None)
                        or (ev.validator and not ev.validator.is_valid(ex["data"]))):
                    raise SchemaError(f"{fname}: example of event {name} does not match")
            self.events[name] = ev

    def _validator(self, base: str, pointer: str) -> Any:
        # Validate through a $ref into the document, so relative $refs keep resolving.
        return _QmpValidator({"$ref": base + "#" + pointer}, registry=self.registry)

    def resolve(self, schema: dict[str, Any], base: str) -> tuple[dict[str, Any], str]:
        """Follow `$ref`s to the schema that says what a value is; (schema, its document)."""
        while "$ref" in schema:
            ref = schema["$ref"]
            doc, _, pointer = ref.partition("#")
            if doc:
                base = doc if "://" in doc else base.rsplit("/", 1)[0] + "/" + doc
            try:
                target: Any = self.registry.contents(base)
                for part in filter(None, pointer.split("/")):
                    target = target[part.replace("~1", "/").replace("~0", "~")]
            except (LookupError, TypeError):
                raise SchemaError(f"{base}: $ref '{ref}' points nowhere") from None
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **extra}
        return schema, base

    def for_scope(self, scope: str) -> Iterator[CommandSchema]:
        return (c for c in self.commands.values() if scope in c.scopes)

    # -- QEMU's argument error texts -------------------------------------------------------

    def explain(self, cmd: CommandSchema, args: dict[str, Any]) -> str:
        """The error QEMU's input visitor reports first for `args` (given they are invalid)."""
        msg = self._struct(args, *self.resolve(cmd.arguments, cmd.base), "")
        return msg or "Invalid arguments"

    def _struct(self, obj: dict[str, Any], schema: dict[str, Any], base: str,
                path: str) -> str | None:
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        for name, sub in props.items():
            full = path + name
            if name not in obj:
                if name in required:
                    return f"Parameter '{full}' is missing"
                continue
            msg = self._value(obj[name], *self.resolve(sub, base), full, name)
            if msg:
                return msg
        if schema.get("additionalProperties") is False or "unevaluatedProperties" in schema:
            extra = [k for k in obj if k not in props]
            if extra:
                first = ghash_first_left(qdict_order(obj), extra)
                return f"Parameter '{path + first}' is unexpected"
        return None

    def _value(self, v: Any, s: dict[str, Any], base: str, full: str,
               bare: str | None) -> str | None:
        qtype = s.get("x-qapi-type")
        if "enum" in s:
            if type(v) is not str:
                return f"Invalid parameter type for '{full}', expected: string"
            if v not in s["enum"]:
                # List elements are visited without a name; QEMU prints it as 'null'.
                return f"Parameter '{bare or 'null'}' does not accept value '{v}'"
            return None
        if qtype is None:
            t = s.get("type")
            if t == "object":
                if type(v) is not dict:
                    return f"Invalid parameter type for '{full}', expected: object"
                return self._struct(v, s, base, full + ".")
            if t == "array":
                if type(v) is not list:
                    return f"Invalid parameter type for '{full}', expected: array"
                items, ibase = self.resolve(s.get("items", {}), base)
                for i, item in enumerate(v):
                    msg = self._value(item, items, ibase, f"{full}[{i}]", None)
                    if msg:
                        return msg
            return None
        if qtype == "str":
            return None if type(v) is str else \
                f"Invalid parameter type for '{full}', expected: string"
        if qtype == "bool":
            return None if type(v) is bool else \
                f"Invalid parameter type for '{full}', expected: boolean"
        if qtype == "number":
            return None if type(v) in (int, float, JFloat) else \
                f"Invalid parameter type for '{full}', expected: number"
        is_int = type(v) is int
        if qtype.startswith("uint") or qtype == "size":
            # visit_type_uintN() and type_size() visit as uint64 first: any uint64, or an
            # int64 (wrapped), else "Parameter 'x' expects uint64".
            if not (is_int and _INT64[0] <= v <= _UINT64[1]):
                return f"Parameter '{full}' expects uint64"
            v &= _UINT64[1]
        elif not is_int or not _INT64[0] <= v <= _INT64[1]:
            return f"Invalid parameter type for '{full}', expected: integer"
        if qtype in _SIZED:
            lo, hi, cname = _SIZED[qtype]
            if not lo <= v <= hi:
                return f"Parameter '{bare or 'null'}' expects {cname}"
        return None



# -- GLib's GHashTable, as far as QEMU's input visitor makes its order visible -------------

_PRIME_MOD = (1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749,
              65521, 131071, 262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213)
_MIN_SHIFT = 3


def _g_str_hash(key: str) -> int:
    """g_str_hash(): djb2 over signed chars; 0 and 1 are reserved (HASH_IS_REAL)."""
    h = 5381
    for c in key.encode("utf-8", "surrogatepass"):
        h = (h * 33 + (c - 256 if c > 127 else c)) & 0xFFFFFFFF
    return h if h >= 2 else 2


class _GHashTable:
    """GLib 2.74's GHashTable of strings, as far as its slot order goes: open addressing
    from `(hash * 11) % mod` (32-bit arithmetic) with growing steps, tombstones, and the
    in-place resize_map() of g_hash_table_resize(). Iteration is slot order."""

    _UNUSED, _TOMB = 0, 1

    def __init__(self) -> None:
        self._set_shift(_MIN_SHIFT)
        self.hashes = [self._UNUSED] * self.size
        self.keys_: list[str | None] = [None] * self.size
        self.nnodes = 0
        self.noccupied = 0

    def _set_shift(self, shift: int) -> None:
        self.size = 1 << shift
        self.mod = _PRIME_MOD[shift]
        self.mask = self.size - 1

    def _index(self, h: int) -> int:
        return ((h * 11) & 0xFFFFFFFF) % self.mod

    def _lookup(self, key: str) -> tuple[int, int]:
        h = _g_str_hash(key)
        i = self._index(h)
        step = 0
        tomb = -1
        while self.hashes[i] != self._UNUSED:
            if self.hashes[i] == h and self.keys_[i] == key:
                return i, h
            if self.hashes[i] == self._TOMB and tomb < 0:
                tomb = i
            step += 1
            i = (i + step) & self.mask
        return (tomb if tomb >= 0 else i), h

    def insert(self, key: str) -> None:
        i, h = self._lookup(key)
        if self.hashes[i] >= 2:
            return
        if self.hashes[i] == self._UNUSED:
            self.noccupied += 1
        self.hashes[i], self.keys_[i] = h, key
        self.nnodes += 1
        self._maybe_resize()

    def remove(self, key: str) -> None:
        i, _ = self._lookup(key)
        if self.hashes[i] >= 2:
            self.hashes[i], self.keys_[i] = self._TOMB, None
            self.nnodes -= 1
            self._maybe_resize()

    def _maybe_resize(self) -> None:
        if (self.size > self.nnodes * 4 and self.size > 1 << _MIN_SHIFT) or \
                self.size <= self.noccupied + self.noccupied // 16:
            self._resize()

    def _resize(self) -> None:
        old = self.size
        self._set_shift(max(int(self.nnodes * 1.333).bit_length(), _MIN_SHIFT))
        if self.size > old:
            self.hashes += [self._UNUSED] * (self.size - old)
            self.keys_ += [None] * (self.size - old)
        moved = [False] * max(self.size, old)
        for i in range(old):  # resize_map(): relocate in place, evicting as it goes
            h = self.hashes[i]
            if h < 2:
                self.hashes[i] = self._UNUSED
                continue
            if moved[i]:
                continue
            self.hashes[i] = self._UNUSED
            key = self.keys_[i]
            self.keys_[i] = None
            while True:
                j = self._index(h)
                step = 0
                while moved[j]:
                    step += 1
                    j = (j + step) & self.mask
                moved[j] = True
                replaced, rkey = self.hashes[j], self.keys_[j]
                self.hashes[j], self.keys_[j] = h, key
                if replaced < 2:
                    break
                h, key = replaced, rkey
        if self.size < old:
            del self.hashes[self.size:]
            del self.keys_[self.size:]
        self.noccupied = self.nnodes

    def keys(self) -> list[str]:
        return [k for h, k in zip(self.hashes, self.keys_, strict=True)
                if h >= 2 and k is not None]


def ghash_first_left(qdict_keys: list[str], unexpected: list[str]) -> str:
    """The key qobject_input_check_struct() reports: every member goes into a GHashTable
    (in QDict order), the visited ones are removed, and the first slot left is named."""
    table = _GHashTable()
    for k in qdict_keys:
        table.insert(k)
    left = set(unexpected)
    for k in qdict_keys:
        if k not in left:
            table.remove(k)
    return table.keys()[0]
