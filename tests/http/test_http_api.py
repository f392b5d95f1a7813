"""The HTTP side in process (aiohttp TestServer over a real App with a simulated platform):
every endpoint, its schema, its error paths, and the read-only rule."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient
from http_support import SCHEMA, add_guest, check, qmp, sev_args

from sevd.commands.app import App
from sevd.transports.http import HttpServer

Client = TestClient[Any, Any]


async def get_json(client: Client, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    return await resp.json()


# -- health -----------------------------------------------------------------------------------

async def test_healthz(client: Client) -> None:
    assert check("Health", await get_json(client, "/healthz")) == {"status": "ok",
                                                                   "problems": []}


async def test_readyz_ready_then_not(client: Client, server: HttpServer) -> None:
    assert check("Health", await get_json(client, "/readyz"))["status"] == "ok"
    server.problems = lambda: ["control socket not listening"]
    body = check("Health", await get_json(client, "/readyz", 503))
    assert body == {"status": "not-ready", "problems": ["control socket not listening"]}
    server.problems = list
    server.stopping = True
    assert (await get_json(client, "/readyz", 503))["problems"] == ["stopping"]
    assert (await get_json(client, "/healthz"))["status"] == "ok"  # alive while stopping


# -- host ---------------------------------------------------------------------------------------

async def test_host(client: Client, app: App) -> None:
    await add_guest(app, "h1", **sev_args())
    host = check("HostInfo", await get_json(client, "/api/v1/host"))
    assert host["platform"] == app.query("query-sev-platform")
    caps = app.query("query-sev-capabilities")
    assert (host["pdh"], host["cert-chain"]) == (caps["pdh"], caps["cert-chain"])
    assert host["certificates"] == app.query("query-sev-certificates")
    assert host["platform"]["profile"] == "milan"
    assert host["platform"]["cpuid"] == {"eax": 0x0101FD3F, "ebx": app.platform.profile.cpuid.ebx,
                                         "ecx": 509, "edx": 100}
    assert host["platform"]["asids"]["sev-used"] == 1
    assert host["guests"] == 1 and host["sessions"] == {"control": 2, "guest": 1}
    assert host["qemu-version"] == "9.2.0"
    assert len(base64.b64decode(host["pdh"])) == 2084


async def test_host_firmware_failure_is_503_with_qemus_text(client: Client, app: App) -> None:
    await qmp(app, None, "sev-fault-inject", {"command": "pdh-cert-export", "status": 1,
                                              "count": 2})
    body = check("HttpError", await get_json(client, "/api/v1/host", 503))
    assert body["detail"] == ("SEV: Failed to export PDH cert ret=-5 fw_err=1 (Platform state "
                              "is invalid)")


# -- guests ---------------------------------------------------------------------------------------

async def test_guests_empty_then_listed_in_order(client: Client, app: App) -> None:
    assert check("GuestList", await get_json(client, "/api/v1/guests")) == {"guests": []}
    await add_guest(app, "plain", memory=64 << 20, cpus=2)
    await add_guest(app, "sev1", **sev_args(policy=0x1))
    body = check("GuestList", await get_json(client, "/api/v1/guests"))
    assert [g["name"] for g in body["guests"]] == ["plain", "sev1"]
    plain, sev1 = body["guests"]
    assert "sev" not in plain and plain["memory"] == 64 << 20 and plain["cpus"] == 2
    assert plain["status"] == "prelaunch" and not plain["running"]
    s = sev1["sev"]
    assert s["state"] == "launch-secret" and s["policy"] == 1 and s["asid"] == 100
    assert s["policy-decoded"]["nodbg"] and not s["policy-decoded"]["es"]
    # The measurement is the one QMP hands out.
    measure = await qmp(app, "sev1", "query-sev-launch-measure")
    assert s["measurement"] == measure["data"]


async def test_guest_reflects_state_changes_at_once(client: Client, app: App) -> None:
    await add_guest(app, "g", **sev_args())
    assert (await get_json(client, "/api/v1/guests"))["guests"][0]["status"] == "prelaunch"
    await qmp(app, "g", "cont")
    # The list is cached, but every state change emits an event that invalidates it.
    g = (await get_json(client, "/api/v1/guests"))["guests"][0]
    assert (g["status"], g["running"], g["sev"]["state"]) == ("running", True, "running")
    await qmp(app, "g", "stop")
    assert (await get_json(client, "/api/v1/guests"))["guests"][0]["status"] == "paused"
    await qmp(app, None, "guest-remove", {"name": "g"})
    assert (await get_json(client, "/api/v1/guests"))["guests"] == []


async def test_guest_by_name(client: Client, app: App) -> None:
    await add_guest(app, "es1", **sev_args(policy=0x5), cpus=2)
    g = check("GuestView", await get_json(client, "/api/v1/guests/es1"))
    assert g["name"] == "es1" and g["sev"]["es"] and g["sev"]["asid"] == 1
    assert g["sev"]["policy-decoded"] == {"nodbg": True, "noks": False, "es": True,
                                          "nosend": False, "domain": False, "sev": False,
                                          "api-major": 0, "api-minor": 0, "reserved": 0}
    assert g["firmware-size"] == len(app.builtin_firmware) and not g["kernel-boot"]


async def test_unknown_guest_is_404_json(client: Client) -> None:
    for path in ("/api/v1/guests/nope", "/api/v1/guests/nope/memory"):
        body = check("HttpError", await get_json(client, path, 404))
        assert body == {"status": 404, "error": "Not Found", "detail": "Guest 'nope' not found"}


async def test_memory_map(client: Client, app: App) -> None:
    await add_guest(app, "m", **sev_args(), memory=64 << 20)
    before = check("MemoryMap", await get_json(client, "/api/v1/guests/m/memory"))
    kinds = [r["kind"] for r in before["regions"]]
    assert kinds == ["ram", "firmware"]
    fw = before["regions"][1]
    # The firmware was encrypted in place by LAUNCH_UPDATE_DATA; nothing is shared before
    # the guest boots.
    assert {r["kind"] for r in fw["runs"]} == {"private"}
    assert before["totals"]["shared"] == 0
    await qmp(app, "m", "cont")  # LAUNCH_FINISH, then the simulated firmware boots
    after = check("MemoryMap", await get_json(client, "/api/v1/guests/m/memory"))
    t = after["totals"]
    assert t["private"] > before["totals"]["private"] and t["shared"] > 0
    assert sum(t.values()) == sum(r["end"] - r["start"] for r in after["regions"])
    for region in after["regions"]:  # runs tile each region exactly, in order
        ends = [region["start"]] + [r["end"] for r in region["runs"]]
        assert [r["start"] for r in region["runs"]] == ends[:-1]
        assert ends[-1] == region["end"]


async def test_memory_map_of_a_plain_guest_has_no_private_memory(client: Client,
                                                                   app: App) -> None:
    await add_guest(app, "p", memory=32 << 20, start=True)
    t = (await get_json(client, "/api/v1/guests/p/memory"))["totals"]
    assert t["private"] == 0 and t["shared"] > 0


# -- the read-only rule and errors ----------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/metrics", "/api/v1/guests", "/api/v1/guests/x",
                                  "/api/v1/host", "/api/v1/events", "/no/such/path"])
async def test_every_write_method_is_405(client: Client, app: App, method: str,
                                         path: str) -> None:
    before = dict(app.slots)
    resp = await client.request(method, path, json={"name": "x"})
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET, HEAD"
    body = check("HttpError", await resp.json())
    assert "read-only" in body["detail"]
    assert app.slots == before


async def test_unknown_path_is_404_json(client: Client) -> None:
    body = check("HttpError", await get_json(client, "/api/v2/guests", 404))
    assert body["detail"] == "No such resource: /api/v2/guests"


async def test_head(client: Client) -> None:
    resp = await client.head("/api/v1/guests")
    assert resp.status == 200 and await resp.read() == b""


async def test_host_header_must_be_loopback_on_tcp(client: Client, server: HttpServer) -> None:
    server._tcp = True  # as when listening on tcp:127.0.0.1:PORT
    for host in ("evil.example", "127.0.0.1.evil.example:80", "10.0.0.1"):
        resp = await client.get("/api/v1/host", headers={"Host": host})
        assert resp.status == 403, host
        assert "DNS rebinding" in (await resp.json())["detail"]
    for host in ("127.0.0.1:8080", "localhost", "[::1]:80"):
        resp = await client.get("/healthz", headers={"Host": host})
        assert resp.status == 200, host


async def test_unexpected_error_is_500_without_details(client: Client, app: App,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import sevd.transports.http as http

    def boom(app: App) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(http, "guests_view", boom)
    body = check("HttpError", await get_json(client, "/api/v1/guests", 500))
    assert "secret internals" not in json.dumps(body)


# -- OpenAPI --------------------------------------------------------------------------------------

async def test_openapi_paths_are_the_routes(client: Client, server: HttpServer) -> None:
    doc = await get_json(client, "/api/v1/openapi.json")
    routes = {r.resource.canonical for r in server.web.router.routes()
              if r.resource is not None and r.method == "GET"}
    routes.discard("/static/{file}")  # the page's assets, not API
    assert set(doc["paths"]) == routes
    assert set(doc["paths"]) == set(SCHEMA.documents["http.json"]["x-http"])
    assert doc["openapi"] == "3.1.0"
    op = doc["paths"]["/api/v1/guests/{name}"]["get"]
    assert op["parameters"] == [{"name": "name", "in": "path", "required": True,
                                 "description": "the guest's name",
                                 "schema": {"type": "string"}}]
    assert len({p["get"]["operationId"] for p in doc["paths"].values()}) == len(doc["paths"])


async def test_openapi_schemas_describe_the_real_responses(client: Client, app: App) -> None:
    """Validate live responses against the generated document's own component schemas (not
    schema/http.json): the OpenAPI document is self-contained and says the truth."""
    await add_guest(app, "o1", **sev_args())
    await qmp(app, "o1", "cont")
    doc = await get_json(client, "/api/v1/openapi.json")

    def validate(path: str, body: Any, status: str = "200") -> None:
        content = doc["paths"][path]["get"]["responses"][status]["content"]
        schema = next(iter(content.values()))["schema"]
        jsonschema.Draft202012Validator({**schema, "components": doc["components"]}
                                        ).validate(body)

    validate("/api/v1/host", await get_json(client, "/api/v1/host"))
    validate("/api/v1/guests", await get_json(client, "/api/v1/guests"))
    validate("/api/v1/guests/{name}", await get_json(client, "/api/v1/guests/o1"))
    validate("/api/v1/guests/{name}/memory", await get_json(client, "/api/v1/guests/o1/memory"))
    validate("/api/v1/guests/{name}", await get_json(client, "/api/v1/guests/zz", 404), "404")
    validate("/readyz", await get_json(client, "/readyz"))
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        validate("/api/v1/guests/{name}", {"name": "o1"})


# -- status page (content; the rendering is checked in Chromium) ---------------------------------

async def test_status_page_html(client: Client, app: App) -> None:
    await add_guest(app, "web1", **sev_args())
    resp = await client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    html = await resp.text()
    assert 'data-name="web1"' in html and "launch-secret" in html
    assert (await client.get("/static/status.js")).status == 200
    assert (await client.get("/static/status.css")).status == 200
    assert (await client.get("/static/nope.js")).status == 404
