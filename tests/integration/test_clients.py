"""Real QMP clients as independent peers: if they work against sevd, sevd speaks QMP.

Proves, against a running sevd, on the control socket and on a guest socket, that:
- qemu.qmp's asyncio `QMPClient` connects (greeting, negotiation with OOB, no newline in
  what it sends), executes, maps errors to `ExecuteError` with QEMU's class and text, and
  receives events through `listener()` (STOP/RESUME without data, RESET with data, and the
  control socket's SEVD_GUEST_* events);
- the legacy synchronous `qemu.qmp.legacy.QEMUMonitorProtocol` works: `cmd`, `cmd_obj`
  without an id gets a reply without an id (an id would make it unroutable), with an id
  gets it back, `pull_event` / `get_events` return the events;
- the `qmp-shell` script, driven through stdin, prints its banner and the replies, in QMP
  mode and in HMP mode (`-H`, which needs CRLF-terminated HMP output and `cpu-index` 0);
- many clients on one socket at once each get a greeting, their own replies in order, and
  every event (a deliberate addition: QEMU serves one client per `-qmp`, DESIGN §8);
- a one-shot script that half-closes its end after writing still gets every reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

from sevd import __version__

UUID = "0a9e2d46-41c6-4c8e-b1a5-5a3c2f1b7d10"
PKG = f"sevd {__version__}"
VERSION = {"qemu": {"major": 9, "minor": 2, "micro": 0}, "package": PKG}
QMP_SHELL = str(Path(sys.executable).with_name("qmp-shell"))


async def _execute(path: str, name: str, args: dict[str, Any] | None = None) -> Any:
    c = QMPClient("helper")
    await c.connect(path)
    try:
        return await c.execute(name, args)
    finally:
        await c.disconnect()


@pytest.fixture
async def guest(module_daemon: Any) -> AsyncIterator[str]:
    """A fresh guest `cl` (prelaunch) on the shared daemon; its socket path."""
    info = await _execute(module_daemon.control, "guest-add", {"name": "cl", "uuid": UUID})
    yield str(info["socket"])
    with contextlib.suppress(ExecuteError):
        await _execute(module_daemon.control, "guest-remove", {"name": "cl"})


# -- qemu.qmp QMPClient ------------------------------------------------------------------------

async def test_qmpclient_on_the_control_socket(module_daemon: Any) -> None:
    c = QMPClient("ctl")
    await c.connect(module_daemon.control)
    try:
        assert await c.execute("query-version") == VERSION
        assert {"name": "guest-add"} in await c.execute("query-commands")
        with pytest.raises(ExecuteError) as e:
            await c.execute("query-status")
        assert e.value.error_class == "CommandNotFound"
        assert str(e.value) == "The command query-status has not been found"
        with c.listener() as listener:
            info = await c.execute("guest-add", {"name": "cl2", "uuid": UUID})
            assert info["name"] == "cl2" and info["status"] == "prelaunch"
            assert info["socket"] == module_daemon.guest_socket("cl2")
            await c.execute("guest-remove", {"name": "cl2"})
            added = await asyncio.wait_for(listener.get(), 5)
            removed = await asyncio.wait_for(listener.get(), 5)
        assert (added["event"], added["data"]) == ("SEVD_GUEST_ADDED", {"name": "cl2"})
        assert (removed["event"], removed["data"]) == ("SEVD_GUEST_REMOVED", {"name": "cl2"})
        assert set(added["timestamp"]) == {"seconds", "microseconds"}
    finally:
        await c.disconnect()


async def test_qmpclient_on_a_guest_socket(guest: str) -> None:
    c = QMPClient("guest")
    await c.connect(guest)
    try:
        assert c.greeting is not None
        assert await c.execute("query-status") == {
            "running": False, "singlestep": False, "status": "prelaunch"}
        assert await c.execute("query-uuid") == {"UUID": UUID}
        assert await c.execute("human-monitor-command", {"command-line": "info status"}) == \
            "VM status: paused (prelaunch)\r\n"
        # Argument errors: QEMU's class and text, on the exception as qemu.qmp exposes them.
        with pytest.raises(ExecuteError) as e:
            await c.execute("human-monitor-command", {})
        assert e.value.error_class == "GenericError"
        assert e.value.error.error.desc == "Parameter 'command-line' is missing"
        assert str(e.value) == "Parameter 'command-line' is missing"
        with pytest.raises(ExecuteError) as e:
            await c.execute("no-such-command")
        assert e.value.error_class == "CommandNotFound"
        # Events, through a listener.
        with c.listener() as listener:
            await c.execute("cont")
            await c.execute("stop")
            await c.execute("system_reset")
            events = [await asyncio.wait_for(listener.get(), 5) for _ in range(3)]
        assert [e["event"] for e in events] == ["RESUME", "STOP", "RESET"]
        assert "data" not in events[0] and "data" not in events[1]
        assert events[2]["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
        assert await c.execute("query-status") == {
            "running": False, "singlestep": False, "status": "prelaunch"}
    finally:
        await c.disconnect()


async def test_query_commands_matches_introspection(guest: str, module_daemon: Any) -> None:
    for path in (guest, module_daemon.control):
        c = QMPClient("intro")
        await c.connect(path)
        try:
            names = [x["name"] for x in await c.execute("query-commands")]
            schema = await c.execute("query-qmp-schema")
        finally:
            await c.disconnect()
        assert "qmp_capabilities" in names and len(set(names)) == len(names)
        assert set(names) == {e["name"] for e in schema if e["meta-type"] == "command"}


async def test_qmpclient_sees_events_caused_by_another_client(guest: str) -> None:
    watcher, actor = QMPClient("watcher"), QMPClient("actor")
    await watcher.connect(guest)
    await actor.connect(guest)
    try:
        with watcher.listener() as listener:
            await actor.execute("cont")
            event = await asyncio.wait_for(listener.get(), 5)
        assert event["event"] == "RESUME"
    finally:
        await actor.disconnect()
        await watcher.disconnect()


# -- qemu.qmp.legacy QEMUMonitorProtocol (synchronous) -----------------------------------------

@pytest.fixture
def own_loop() -> Iterator[None]:
    """The legacy client drives the thread's event loop, as a plain script's would be."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


def test_legacy_sync_client(module_daemon: Any, own_loop: None) -> None:
    ctl = QEMUMonitorProtocol(module_daemon.control)
    greeting = ctl.connect()
    assert greeting is not None and greeting["QMP"]["version"] == VERSION
    info = ctl.cmd("guest-add", name="lg", uuid=UUID)
    q = QEMUMonitorProtocol(info["socket"])
    try:
        q.connect()
        # cmd_obj sends no id: the reply must carry none, or the client cannot route it.
        assert q.cmd_obj({"execute": "query-status"}) == {
            "return": {"running": False, "singlestep": False, "status": "prelaunch"}}
        assert q.cmd_obj({"execute": "query-name", "id": "seven"}) == {
            "return": {"name": "lg"}, "id": "seven"}
        assert q.cmd_obj({"execute": "no-such-command"}) == {"error": {
            "class": "CommandNotFound", "desc": "The command no-such-command has not been found"}}
        assert q.cmd_raw("human-monitor-command", {"command-line": "info name"}) == {
            "return": "lg\r\n"}
        assert q.cmd("cont") == {}
        event = q.pull_event(wait=5.0)
        assert event is not None and event["event"] == "RESUME" and "data" not in event
        assert q.pull_event() is None
        q.cmd("system_reset")
        q.cmd("stop")
        events = q.get_events(wait=5.0)
        while len(events) < 2:
            events += q.get_events(wait=5.0)
        assert [e["event"] for e in events] == ["RESET", "STOP"]
        with pytest.raises(ExecuteError):
            q.cmd("query-sev-launch-measure", bogus=1)
    finally:
        q.close()
        ctl.cmd("guest-remove", name="lg")
        ctl.close()


# -- qmp-shell ---------------------------------------------------------------------------------

def shell(path: str, stdin: str, *flags: str) -> str:
    out = subprocess.run([QMP_SHELL, *flags, path], input=stdin.encode(), capture_output=True,
                         timeout=30, check=True)
    assert out.stderr == b""
    return out.stdout.decode()


def test_qmp_shell_plain_mode_on_a_guest(guest: str) -> None:
    assert shell(guest, "query-status\nquery-uuid\nno-such\n") == (
        "Welcome to the QMP low-level shell!\n"
        "Connected to QEMU 9.2.0\n\n"
        '(QEMU) {"return": {"running": false, "singlestep": false, "status": "prelaunch"}}\n'
        f'(QEMU) {{"return": {{"UUID": "{UUID}"}}}}\n'
        '(QEMU) {"error": {"class": "CommandNotFound", "desc": "The command no-such has not '
        'been found"}}\n'
        "(QEMU) \n")


def test_qmp_shell_hmp_mode_on_a_guest(guest: str) -> None:
    assert shell(guest, "info status\ninfo name\nnosuch\nhelp stop\n", "-H") == (
        "Welcome to the HMP shell!\n"
        "Connected to QEMU 9.2.0\n\n"
        "(QEMU) VM status: paused (prelaunch)\r\n "
        "(QEMU) cl\r\n "
        "(QEMU) unknown command: 'nosuch'\r\n "
        "(QEMU) stop|s  -- stop emulation\r\n "
        "(QEMU) \n")


def test_qmp_shell_on_the_control_socket(module_daemon: Any) -> None:
    assert shell(module_daemon.control, "query-version\n") == (
        "Welcome to the QMP low-level shell!\n"
        "Connected to QEMU 9.2.0\n\n"
        '(QEMU) {"return": {"qemu": {"major": 9, "minor": 2, "micro": 0}, '
        f'"package": "{PKG}"}}}}\n'
        "(QEMU) \n")
    assert shell(module_daemon.control, "info version\n", "-H") == (
        "Welcome to the HMP shell!\n"
        "Connected to QEMU 9.2.0\n\n"
        f"(QEMU) 9.2.0{PKG}\r\n "
        "(QEMU) \n")


# -- many clients on one socket ----------------------------------------------------------------

async def test_many_clients_on_one_socket_at_once(guest: str, module_daemon: Any,
                                                  raw_qmp: Any) -> None:
    n = 64
    clients = await asyncio.gather(*[raw_qmp.connect(guest) for _ in range(n)])
    try:
        greeting = clients[0].greeting
        assert greeting.startswith(b'{"QMP": {"version": ') and greeting.endswith(b"\r\n")
        assert all(c.greeting == greeting for c in clients)

        async def negotiate_and_ask(i: int, c: Any) -> list[bytes]:
            await c.send(b'{"execute":"qmp_capabilities"}{"execute":"query-name","id":%d}' % i)
            return [await c.line(), await c.line()]

        replies = await asyncio.gather(*[negotiate_and_ask(i, c) for i, c in enumerate(clients)])
        assert replies == [[b'{"return": {}}\r\n', b'{"return": {"name": "cl"}, "id": %d}\r\n' % i]
                           for i in range(n)]
        # One client's command: every negotiated client gets the event, the actor before its
        # reply.
        await clients[0].send(b'{"execute":"cont","id":"go"}')
        first = await clients[0].lines(2)
        assert first[0].endswith(b'"event": "RESUME"}\r\n') and first[1] == \
            b'{"return": {}, "id": "go"}\r\n'
        others = await asyncio.gather(*[c.line() for c in clients[1:]])
        assert all(line == first[0] for line in others)      # the same event, same timestamp
    finally:
        await asyncio.gather(*[c.close() for c in clients])


async def test_many_qmpclients_on_the_control_socket(module_daemon: Any) -> None:
    clients = [QMPClient(f"c{i}") for i in range(16)]
    await asyncio.gather(*[c.connect(module_daemon.control) for c in clients])
    try:
        results = await asyncio.gather(*[c.execute("query-version") for c in clients])
        assert results == [VERSION] * len(clients)
    finally:
        await asyncio.gather(*[c.disconnect() for c in clients])


# -- a one-shot script (`printf … | socat - UNIX-CONNECT:…`) -----------------------------------

async def test_a_client_that_half_closes_after_writing_gets_every_reply(
        module_daemon: Any) -> None:
    # QEMU 7.2 answers everything sent before the client's EOF; so does sevd, including a
    # command that takes a while (guest-add) and what was queued behind it.
    reader, writer = await asyncio.open_unix_connection(module_daemon.control)
    writer.write(b'{"execute":"qmp_capabilities"}'
                 b'{"execute":"guest-add","arguments":{"name":"hc","uuid":"' + UUID.encode()
                 + b'"},"id":1}{"execute":"guest-remove","arguments":{"name":"hc"},"id":2}'
                 b'{"execute":"query-version","id":3}')
    writer.write_eof()
    out = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    lines = [line for line in out.split(b"\r\n")[1:-1] if not line.startswith(b'{"timestamp"')]
    assert lines[0] == b'{"return": {}}'
    assert lines[1].startswith(b'{"return": {"name": "hc"') and lines[1].endswith(b', "id": 1}')
    assert lines[2:] == [b'{"return": {}, "id": 2}',
                         b'{"return": {"qemu": {"major": 9, "minor": 2, "micro": 0}, '
                         b'"package": "' + PKG.encode() + b'"}, "id": 3}']
