"""`query-qmp-schema`: QEMU's SchemaInfo list, generated from the schema files.

Follows QEMU's scripts/qapi/introspect.py: commands and events keep their names, every other
type gets a masked name ("0", "1", … in order of first use; arrays "[elt]"), builtins keep
theirs (every integer type is `int`), optional members carry `"default": null`, and a command
without arguments or returns refers to the empty object type. The result is computed once
per scope and cached as JSON text.
"""

from __future__ import annotations

from typing import Any

from sevd.commands.schema import Schema

_BUILTIN_JSON = {"str": "string", "bool": "boolean", "number": "number", "int": "int",
                 "any": "value", "null": "null"}


class _Introspector:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.names: dict[str, str] = {}       # type identity -> masked name
        self.entries: list[dict[str, Any]] = []
        self.empty = self._object({"properties": {}}, "", "Empty")

    def _builtin(self, qtype: str) -> str:
        name = "int" if qtype not in _BUILTIN_JSON else qtype
        if name not in self.names:
            self.names[name] = name
            self.entries.append({"name": name, "json-type": _BUILTIN_JSON[name],
                                 "meta-type": "builtin"})
        return name

    def use(self, sub: dict[str, Any] | None, base: str) -> str:
        """The (masked) name of the type `sub` describes, emitting its entry on first use."""
        if sub is None:
            return self.empty
        s, base = self.schema.resolve(sub, base)
        qtype = s.get("x-qapi-type")
        if qtype is not None:
            return self._builtin(qtype)
        if "enum" in s:
            key = s.get("x-qapi-name") or "enum:" + ",".join(s["enum"])
            if key not in self.names:
                masked = self.names[key] = str(len([v for v in self.names.values()
                                                    if v.isdigit()]))
                self.entries.append({"name": masked,
                                     "members": [{"name": v} for v in s["enum"]],
                                     "meta-type": "enum", "values": list(s["enum"])})
            return self.names[key]
        if s.get("type") == "array":
            elt = self.use(s.get("items", {}), base)
            name = f"[{elt}]"
            if name not in self.names:
                self.names[name] = name
                self.entries.append({"name": name, "element-type": elt, "meta-type": "array"})
            return name
        if s.get("type") == "object" or "properties" in s:
            return self._object(s, base, s.get("x-qapi-name"))
        return self._builtin("any")

    def _object(self, s: dict[str, Any], base: str, qname: str | None) -> str:
        key = qname or f"anon:{id(s)}"
        if key in self.names:
            return self.names[key]
        masked = self.names[key] = str(len([v for v in self.names.values() if v.isdigit()]))
        entry: dict[str, Any] = {"name": masked, "members": [], "meta-type": "object"}
        self.entries.append(entry)
        required = set(s.get("required", ()))
        for mname, msub in s.get("properties", {}).items():
            member: dict[str, Any] = {"name": mname}
            if mname not in required:
                member["default"] = None
            member["type"] = self.use(msub, base)
            if msub.get("x-features"):
                member["features"] = list(msub["x-features"])
            entry["members"].append(member)
        union = s.get("x-union")
        if union is not None:
            # A flat union (SevInfo): the base members above, then the tag and one variant
            # type per case, as QEMU's SchemaInfoObject has them.
            entry["tag"] = union["tag"]
            entry["variants"] = [{"case": case, "type": self.use(sub, base)}
                                 for case, sub in union["variants"].items()]
        return masked


def qmp_schema(schema: Schema, scope: str) -> list[dict[str, Any]]:
    intro = _Introspector(schema)
    out: list[dict[str, Any]] = []
    for cmd in schema.for_scope(scope):
        entry: dict[str, Any] = {"name": cmd.name,
                                 "ret-type": intro.use(cmd.returns, cmd.base),
                                 "meta-type": "command",
                                 "arg-type": intro.use(cmd.arguments, cmd.base)}
        if cmd.features:
            entry["features"] = list(cmd.features)
        if cmd.allow_oob:
            entry["allow-oob"] = True
        out.append(entry)
    for ev in schema.events.values():
        if scope in ev.scopes:
            out.append({"name": ev.name, "meta-type": "event",
                        "arg-type": intro.use(ev.data, ev.base)})
    return out + intro.entries
