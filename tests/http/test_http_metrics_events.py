"""Metrics and the event stream in process: the numbers follow what happened, the stream
carries every event with its guest, and the HTTP modules keep to their room."""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from http_support import ROOT, add_guest, check, qmp, sev_args
from prometheus_client.parser import text_string_to_metric_families

from sevd.commands.app import App
from sevd.transports.http import HttpServer

Client = TestClient[Any, Any]


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for fam in text_string_to_metric_families(await resp.text()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict[Any, float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_follow_guests_asids_and_commands(client: Client, app: App) -> None:
    m = await scrape(client)
    assert value(m, "sevd_info", version="0.1.0", qemu_version="9.2.0", profile="milan") == 1
    assert value(m, "sevd_asids", range="sev", state="free") == 410
    assert value(m, "sevd_asids", range="es", state="free") == 99
    await add_guest(app, "a", **sev_args())
    await add_guest(app, "b", **sev_args(policy=0x4))
    await add_guest(app, "c")
    await qmp(app, "a", "cont")
    for _ in range(3):
        await qmp(app, "a", "query-status")
    from sevd.protocol.errors import QmpError

    with pytest.raises(QmpError, match="fw_error=4"):  # a short header: INVALID_LENGTH
        await qmp(app, "b", "sev-inject-launch-secret", {"packet-header": "AAAA",
                                                        "secret": "AAAA"})
    m = await scrape(client)
    assert value(m, "sevd_guests", run_state="running", sev_state="running") == 1
    assert value(m, "sevd_guests", run_state="prelaunch", sev_state="launch-secret") == 1
    assert value(m, "sevd_guests", run_state="prelaunch", sev_state="none") == 1
    assert value(m, "sevd_guests", run_state="paused", sev_state="none") == 0  # zeros kept
    assert value(m, "sevd_asids", range="sev", state="used") == 1
    assert value(m, "sevd_asids", range="es", state="used") == 1
    assert value(m, "sevd_asids", range="sev", state="free") == 409
    assert value(m, "sevd_qmp_commands_total", command="query-status", result="ok") == 3
    assert value(m, "sevd_qmp_commands_total", command="cont", result="ok") == 1
    assert value(m, "sevd_qmp_commands_total", command="sev-inject-launch-secret",
                 result="error") == 1
    fw = app.platform.fw.stats  # type: ignore[union-attr]
    assert value(m, "sevd_firmware_commands_total", command="LAUNCH_START") == \
        fw.calls["LAUNCH_START"] == 2
    assert value(m, "sevd_firmware_commands_total", command="LAUNCH_FINISH") == 1
    # The short packet header: the firmware refuses LAUNCH_SECRET (status name and number).
    fails = {k: v for k, v in m.items() if k[0] == "sevd_firmware_command_failures_total"
             and dict(k[1])["command"] == "LAUNCH_SECRET"}
    assert sum(fails.values()) == 1
    labels = dict(next(iter(fails))[1])
    assert labels["code"] == str(app.firmware_status_code(labels["status"]))
    assert value(m, "sevd_firmware_bytes_encrypted_total") == fw.bytes_encrypted > 0
    assert value(m, "sevd_qmp_sessions", socket="control") == 2
    # Latency is measured while HTTP is on: three query-status observations.
    assert value(m, "sevd_qmp_command_duration_seconds_count", command="query-status") == 3
    assert value(m, "sevd_http_requests_total", handler="/metrics", code="200") >= 1


async def test_scraping_calls_no_firmware_command(client: Client, app: App) -> None:
    """A scrape must not change the firmware's counters nor consume an armed fault."""
    await add_guest(app, "f", **sev_args())
    await qmp(app, None, "sev-fault-inject", {"command": "platform-status", "status": 1})
    calls = dict(app.platform.fw.stats.calls)  # type: ignore[union-attr]
    for path in ("/metrics", "/", "/api/v1/guests", "/api/v1/guests/f",
                 "/api/v1/guests/f/memory"):
        assert (await client.get(path)).status == 200
    assert dict(app.platform.fw.stats.calls) == calls  # type: ignore[union-attr]
    assert (await qmp(app, None, "query-sev-faults"))[0]["command"] == "platform-status"


class Sse:
    """A minimal Server-Sent Events reader over an aiohttp response."""

    def __init__(self, resp: Any) -> None:
        self.resp = resp

    async def next(self, timeout: float = 5) -> dict[str, Any]:
        fields: dict[str, str] = {}
        while True:
            raw = await asyncio.wait_for(self.resp.content.readline(), timeout)
            assert raw, "stream ended"
            line = raw.decode().rstrip("\n")
            if not line:
                if "data" in fields:
                    return {"id": fields.get("id"), **json.loads(fields["data"])}
                fields = {}
                continue
            if line.startswith(":"):
                continue
            key, _, val = line.partition(": ")
            fields[key] = val


async def test_events_stream_every_event_with_its_guest(client: Client, app: App) -> None:
    resp = await client.get("/api/v1/events")
    assert resp.headers["Content-Type"] == "text/event-stream"
    sse = Sse(resp)
    await add_guest(app, "e1", **sev_args())
    await qmp(app, "e1", "cont")
    await qmp(app, "e1", "stop")
    seen = [await sse.next() for _ in range(5)]
    for ev in seen:
        check("SseEvent", {k: v for k, v in ev.items() if k != "id"} | {"id": int(ev["id"])})
    names = [(e["scope"], e["event"], e["guest"]) for e in seen]
    # (The launch's own SEV state changes happen before the guest exists for QMP: no events.)
    assert names == [
        ("host", "SEVD_GUEST_ADDED", "e1"),
        ("guest", "SEVD_SEV_STATE_CHANGE", "e1"), ("host", "SEVD_SEV_STATE_CHANGE", "e1"),
        ("guest", "RESUME", "e1"), ("guest", "STOP", "e1")]
    assert [int(e["id"]) for e in seen] == sorted(int(e["id"]) for e in seen)
    assert seen[1]["data"] == {"name": "e1", "state": "running", "previous": "launch-secret"}
    resp.close()


async def test_events_filter_by_guest_and_replay(client: Client, app: App) -> None:
    await add_guest(app, "x1")
    await add_guest(app, "x2")
    await qmp(app, "x1", "cont")
    await qmp(app, "x2", "cont")
    # A new client that saw event 1 gets x2's later events replayed, then live ones.
    resp = await client.get("/api/v1/events?guest=x2", headers={"Last-Event-ID": "1"})
    sse = Sse(resp)
    first = await sse.next()
    assert (first["event"], first["guest"]) == ("SEVD_GUEST_ADDED", "x2")
    assert (await sse.next())["event"] == "RESUME"
    await qmp(app, "x1", "stop")  # filtered out
    await qmp(app, "x2", "stop")
    ev = await sse.next()
    assert (ev["event"], ev["guest"]) == ("STOP", "x2")
    resp.close()


async def test_a_client_that_does_not_read_is_cut_off(client: Client, app: App,
                                                     server: HttpServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import sevd.transports.http as http

    monkeypatch.setattr(http, "STREAM_BACKLOG", 5)
    resp = await client.get("/api/v1/events")
    for _ in range(50):
        await asyncio.sleep(0)
        if server._streams:
            break
    stream = next(iter(server._streams.values()))
    # Fill the queue faster than the handler can drain it (no awaits in between).
    for _ in range(20):
        app.emit(None, "SEVD_TEST", {"n": 1})
    assert not server._streams  # dropped from the fan-out
    assert stream.queue.get_nowait() is None  # and its stream told to end
    resp.close()


async def test_close_ends_streams(client: Client, server: HttpServer) -> None:
    resp = await client.get("/api/v1/events")
    await resp.content.readline()  # "retry:" line: the stream is up
    await server.close()
    rest = await asyncio.wait_for(resp.content.read(), 5)
    assert b"data:" not in rest


# -- rooms and start-up cost ----------------------------------------------------------------------

def test_http_modules_never_import_the_domain() -> None:
    """DESIGN §2: transports read the domain through the App, never import sevd.domain."""
    for path in sorted((ROOT / "sevd" / "transports").glob("http*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert not n.startswith("sevd.domain"), f"{path.name} imports {n}"


def test_the_daemon_module_does_not_load_aiohttp() -> None:
    code = ("import sys, sevd.daemon, sevd.__main__; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('aiohttp', 'prometheus_client')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(ROOT)).stdout
    assert out.strip() == "[]"


def test_static_assets_are_package_data() -> None:
    folder = Path(ROOT / "sevd" / "transports" / "http_static")
    assert {p.name for p in folder.iterdir()} >= {"status.css", "status.js"}
