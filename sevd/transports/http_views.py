"""The JSON the HTTP side serves: views of the `App`, and the OpenAPI document.

Every shape here is declared in `schema/http.json` (tests validate each response against
it), and `openapi()` generates the OpenAPI 3.1 document from that file, so the schema stays
the one source of the wire shapes, as for QMP.

Platform data comes from the QMP handlers themselves (`query-sev-platform`,
`query-sev-capabilities`, `query-sev-certificates`): the HTTP view says exactly what a QMP
client would be told, and errors keep QEMU's texts. The domain is read through the objects
the `App` holds; this module must not import `sevd.domain` (DESIGN §2) nor aiohttp (it is
imported by tests and by the benchmark without a server).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from sevd import __version__

if TYPE_CHECKING:
    from sevd.commands.app import App, GuestSlot
    from sevd.commands.schema import Schema

HTTP_SCHEMA = "http.json"


def host_view(app: App, sessions: dict[str, int]) -> dict[str, Any]:
    """GET /api/v1/host (raises QmpError, with QEMU's text, when the firmware fails)."""
    caps = app.query("query-sev-capabilities")
    major, minor, micro = app.qemu_version
    return {
        "version": __version__,
        "qemu-version": f"{major}.{minor}.{micro}",
        "platform": app.query("query-sev-platform"),
        "pdh": caps["pdh"],
        "cert-chain": caps["cert-chain"],
        "certificates": app.query("query-sev-certificates"),
        "guests": len(app.slots),
        "sessions": {"control": sessions.get("control", 0), "guest": sessions.get("guest", 0)},
    }


def guest_view(app: App, slot: GuestSlot) -> dict[str, Any]:
    """One guest: query-guests' entry plus what a dashboard wants to see of it."""
    info = app.guest_info(slot)
    g = slot.guest
    cfg = g.config
    info["debug"] = cfg.debug
    info["firmware-size"] = len(cfg.firmware)
    info["kernel-boot"] = cfg.kernel is not None
    info["resets"] = g.resets
    s = g.sev
    if s is not None:
        sev = info["sev"]
        sev["policy-decoded"] = s.policy.describe()
        sev["cbitpos"] = s.spec.cbitpos
        sev["reduced-phys-bits"] = s.spec.reduced_phys_bits
        sev["kernel-hashes"] = s.spec.kernel_hashes
        if s.measurement is not None:
            # Public by design: QEMU hands it to anyone on the monitor; it is MACed with the
            # TIK, which only the guest owner holds.
            sev["measurement"] = base64.b64encode(s.measurement).decode()
    return info


def guests_view(app: App) -> dict[str, Any]:
    return {"guests": [guest_view(app, slot) for slot in app.slots.values()]}


def memory_view(app: App, name: str) -> dict[str, Any]:
    """The memory map of guest `name` by region (KeyError for an unknown guest)."""
    runs = app.memory_map(name)
    regions = app.slots[name].guest.machine.regions
    totals = {"private": 0, "shared": 0, "untouched": 0}
    out: list[dict[str, Any]] = []
    i = 0
    for r in regions:
        kind = "firmware" if r.kind == "rom" else r.kind
        region: dict[str, Any] = {"start": r.start, "end": r.end, "kind": kind, "runs": []}
        # page_kinds() yields runs region by region, in address order, never across a
        # region's end: consume them in step.
        while i < len(runs) and runs[i][0] < r.end:
            start, end, what = runs[i]
            region["runs"].append({"start": start, "end": end, "kind": what})
            totals[what] += end - start
            i += 1
        out.append(region)
    return {"name": name, "regions": out, "totals": totals}


def event_view(seq: int, guest_name: str | None, msg: dict[str, Any]) -> dict[str, Any]:
    """An event as the SSE stream carries it (schema: SseEvent)."""
    guest = guest_name
    data = msg.get("data")
    if guest is None and isinstance(data, dict) and isinstance(data.get("name"), str):
        guest = data["name"]  # SEVD_GUEST_ADDED, SEVD_SEV_STATE_CHANGE, …: about a guest
    out: dict[str, Any] = {"id": seq, "scope": "host" if guest_name is None else "guest",
                           "guest": guest, "timestamp": msg["timestamp"], "event": msg["event"]}
    if data is not None:
        out["data"] = data
    return out


# -- OpenAPI ----------------------------------------------------------------------------------

_STATUS_TEXT = {"200": "OK", "404": "Not Found", "405": "Method Not Allowed",
                "503": "Service Unavailable"}


def openapi(schema: Schema, server_url: str = "/") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP side, generated from schema/http.json.

    OpenAPI 3.1 schemas are JSON Schema 2020-12, so the shapes are taken as they are; only
    `$ref`s change: each referenced `$defs` entry (of http.json, or of another family such
    as sev.json or common.json) becomes a component, named after its definition (prefixed
    with its family when it is not http.json's own).
    """
    docs = schema.documents
    http = docs[HTTP_SCHEMA]
    components: dict[str, Any] = {}

    def component(doc: str, name: str) -> str:
        key = name if doc == HTTP_SCHEMA else f"{doc.removesuffix('.json')}.{name}"
        if key not in components:
            components[key] = {}  # placeholder: recursive references terminate
            components[key] = convert(docs[doc]["$defs"][name], doc)
        return key

    def convert(node: Any, doc: str) -> Any:
        if isinstance(node, list):
            return [convert(x, doc) for x in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "$ref":
                target, _, pointer = v.partition("#")
                if not pointer.startswith("/$defs/") or pointer.count("/") != 2:
                    raise ValueError(f"{doc}: cannot express $ref {v!r} in OpenAPI")
                out[k] = "#/components/schemas/" + component(target or doc, pointer[7:])
            else:
                out[k] = convert(v, doc)
        return out

    paths: dict[str, Any] = {}
    for path, spec in http["x-http"].items():
        ctype = spec.get("content-type", "application/json")
        responses: dict[str, Any] = {}
        for code, shape in spec["responses"].items():
            content: dict[str, Any] = {}
            if shape is None:
                content[ctype] = {"schema": {"type": "string"}}
            else:
                ct = ctype if code == "200" else "application/json"
                content[ct] = {"schema": {"$ref": "#/components/schemas/"
                                          + component(HTTP_SCHEMA, shape)}}
            responses[code] = {"description": _STATUS_TEXT.get(code, code), "content": content}
        responses["405"] = {"description": "any method but GET and HEAD: sevd's HTTP side "
                            "is read-only", "content": {"application/json": {"schema": {
                                "$ref": "#/components/schemas/"
                                + component(HTTP_SCHEMA, "HttpError")}}}}
        params = []
        for pname, pdesc in spec.get("parameters", {}).items():
            where = "path" if "{" + pname + "}" in path else "query"
            params.append({"name": pname, "in": where, "required": where == "path",
                           "description": pdesc, "schema": {"type": "string"}})
        words = "".join(p.strip("{}").replace(".", "-").title().replace("-", "")
                        for p in path.split("/") if p)
        op: dict[str, Any] = {"summary": spec["summary"],
                              "operationId": "get" + (words or "StatusPage"),
                              "responses": responses}
        if params:
            op["parameters"] = params
        paths[path] = {"get": op}
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {"title": "sevd read-only HTTP API", "version": __version__,
                 "description": http["description"]},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {"schemas": components},
    }
