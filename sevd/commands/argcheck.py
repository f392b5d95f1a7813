"""Fast argument checks compiled from the schema, in front of the jsonschema validator.

`jsonschema` resolves `$ref`s through `referencing` on every call and costs about 45 µs for
`human-monitor-command`'s two members, more than the rest of a round trip. Most argument
schemas are plain QAPI structs (typed members, `required`, `additionalProperties: false`),
so `compile_check` turns such a schema into a few nested closures once, at first use.

The check is *sound, not complete*: True means the jsonschema validator would accept the
arguments too; False means "not vouched for", and the dispatcher then asks the validator,
which decides (and `Schema.explain` computes QEMU's text). A schema using any keyword this
module does not model (`allOf`, `if`, `unevaluatedProperties`, `pattern`, `$ref` with
sibling constraints, …) gets no fast check at all.

Imports nothing from sevd but the parser's number type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sevd.protocol.jsonstream import JFloat

Check = Callable[[Any], bool]

# Keywords that never constrain a value (annotations and sevd's x- vocabulary).
_ANNOTATIONS = frozenset({"description", "title", "$comment", "default", "examples",
                          "deprecated", "readOnly", "writeOnly"})
_MODELLED = frozenset({"type", "enum", "minimum", "maximum", "properties", "required",
                       "additionalProperties", "items"})
_MAX_DEPTH = 16


def _ignorable(key: str) -> bool:
    return key in _ANNOTATIONS or key.startswith("x-")


def compile_check(registry: Any, ref: str) -> Check | None:
    """A fast check for the schema at absolute `ref`, or None if it cannot be modelled."""
    try:
        return _compile({"$ref": ref}, registry.resolver(), 0)
    except Exception:  # anything unexpected: no fast check, the validator decides alone
        return None


def _compile(s: Any, resolver: Any, depth: int) -> Check | None:
    if depth > _MAX_DEPTH or not isinstance(s, dict):
        return None
    # Follow a chain of bare `$ref`s exactly as jsonschema does (the same resolver). A
    # `$ref` beside other constraints would need both applied: not modelled.
    while "$ref" in s:
        if any(k != "$ref" and not _ignorable(k) for k in s):
            return None
        resolved = resolver.lookup(s["$ref"])
        s, resolver = resolved.contents, resolved.resolver
        depth += 1
        if depth > _MAX_DEPTH or not isinstance(s, dict):
            return None
    keys = {k for k in s if not _ignorable(k)}
    if not keys <= _MODELLED:
        return None
    t = s.get("type")
    if "enum" in s:
        values = s["enum"]
        if keys - {"enum", "type"} or t not in (None, "string") or not values \
                or not all(type(v) is str for v in values):
            return None
        allowed = frozenset(values)
        return lambda v: type(v) is str and v in allowed
    if t is None:
        return (lambda v: True) if not keys else None
    if t in ("integer", "number"):
        lo, hi = s.get("minimum"), s.get("maximum")
        if keys - {"type", "minimum", "maximum"} \
                or any(b is not None and type(b) is not int for b in (lo, hi)):
            return None
        lo = -float("inf") if lo is None else lo
        hi = float("inf") if hi is None else hi
        if t == "integer":  # sevd's validator: a JSON integer, never a bool or a double
            return lambda v: type(v) is int and lo <= v <= hi
        return lambda v: type(v) in (int, float, JFloat) and lo <= v <= hi
    if keys != {"type"} and t in ("string", "boolean", "null"):
        return None
    if t == "string":
        return lambda v: type(v) is str
    if t == "boolean":
        return lambda v: type(v) is bool
    if t == "null":
        return lambda v: v is None
    if t == "array":
        if keys - {"type", "items"}:
            return None
        item = _compile(s.get("items", {}), resolver, depth + 1)
        if item is None:
            return None
        return lambda v: type(v) is list and all(item(x) for x in v)
    if t == "object":
        return _object(s, keys, resolver, depth)
    return None


def _object(s: dict[str, Any], keys: set[str], resolver: Any, depth: int) -> Check | None:
    if keys - {"type", "properties", "required", "additionalProperties"}:
        return None
    extra = s.get("additionalProperties", True)
    if type(extra) is not bool:  # a schema for the other members: not modelled
        return None
    members: dict[str, Check] = {}
    for name, sub in s.get("properties", {}).items():
        check = _compile(sub, resolver, depth + 1)
        if check is None:
            return None
        members[name] = check
    required = tuple(s.get("required", ()))
    closed = extra is False

    def check_object(v: Any) -> bool:
        if type(v) is not dict:
            return False
        for key in required:
            if key not in v:
                return False
        for key, value in v.items():
            member = members.get(key)
            if member is None:
                if closed:
                    return False
            elif not member(value):
                return False
        return True

    return check_object
