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
        if schema.get("additionalProperties") is False:
            for key in obj:
                if key not in props:
                    return f"Parameter '{path + key}' is unexpected"
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

