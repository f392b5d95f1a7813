"""Control commands of both scopes: negotiation, version, command list, introspection."""

from __future__ import annotations

from typing import Any

from sevd.commands.introspect import qmp_schema
from sevd.commands.registry import Ctx, command
from sevd.protocol.errors import COMMAND_NOT_FOUND, QmpError

_OFFERED = {"oob"}


@command("qmp_capabilities")
def qmp_capabilities(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    session = ctx.session
    if session is None:
        return {}
    if session.negotiated:
        raise QmpError("Capabilities negotiation is already complete, command ignored",
                       COMMAND_NOT_FOUND)
    enable = args.get("enable", [])
    missing = [c for c in enable if c not in _OFFERED]
    if missing:
        raise QmpError("Capability " + ", ".join(missing) + " not available")
    session.complete_negotiation(oob="oob" in enable)
    return {}


@command("query-version")
def query_version(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    return ctx.app.version_info()


@command("query-commands")
def query_commands(ctx: Ctx, args: dict[str, Any]) -> list[dict[str, str]]:
    scope = "guest" if ctx.guest is not None else "host"
    return [{"name": name} for name in ctx.app.tables[scope]]


_SCHEMA_CACHE: dict[tuple[int, str], list[dict[str, Any]]] = {}


@command("query-qmp-schema")
def query_qmp_schema(ctx: Ctx, args: dict[str, Any]) -> list[dict[str, Any]]:
    scope = "guest" if ctx.guest is not None else "host"
    key = (id(ctx.app.schema), scope)
    if key not in _SCHEMA_CACHE:
        _SCHEMA_CACHE[key] = qmp_schema(ctx.app.schema, scope)
    return _SCHEMA_CACHE[key]
