"""The daemon as a process: guests and their sockets, quitting, signals, locks, crashes.

Proves, against real sevd processes, that:
- `guest-add` / `guest-remove` / `query-guests` work and refuse duplicates, bad names
  (`a b`, 65 characters, empty, a leading `-`), bad memory sizes, bad CPU counts and bad
  UUIDs with clear GenericError texts, leaving nothing behind;
- a guest socket path over the 107-byte limit of unix sockets is a clear error, never a
  truncated socket, and a control socket path over it stops the daemon at start-up;
- removing a guest closes its sessions and removes its socket file; a guest's `quit`
  replies, then ends that instance (SHUTDOWN host-qmp-quit first, as QEMU 7.2 sends it);
- the control socket's `quit` and SIGTERM both stop the daemon with exit code 0, within a
  bound, telling guest clients (SHUTDOWN) and removing every socket file;
- a second daemon on the same runtime directory refuses to start and leaves the first one
  alone; a control socket file left by a SIGKILLed daemon is recovered by the next one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from sevd import __version__

NAME_RULE = ("use letters, digits, '-', '_' and '.', at most 64 characters, starting with a "
             "letter or digit")
UUID = "3f6c1d2e-9a4b-4c1d-8e2f-6a7b8c9d0e1f"


async def ask(raw_qmp: Any, path: str, command: dict[str, Any]) -> dict[str, Any]:
    """One command on a fresh negotiated connection; the reply (events skipped)."""
    c = await raw_qmp.connect(path, negotiate=True)
    try:
        await c.send(json.dumps(command).encode())
        while True:
            msg = json.loads(await c.line())
            if "event" not in msg:
                return dict(msg)
    finally:
        await c.close()


async def add(raw_qmp: Any, control: str, **args: Any) -> dict[str, Any]:
    return await ask(raw_qmp, control, {"execute": "guest-add", "arguments": args})


async def remove(raw_qmp: Any, control: str, name: str) -> dict[str, Any]:
    return await ask(raw_qmp, control, {"execute": "guest-remove",
                                        "arguments": {"name": name}})


async def guests(raw_qmp: Any, control: str) -> list[dict[str, Any]]:
    reply = await ask(raw_qmp, control, {"execute": "query-guests"})
    return list(reply["return"])


async def eof(client: Any, timeout: float = 5) -> list[bytes]:
    """Every line until the daemon closes the connection."""
    lines = []
    while True:
        line = await client.line(timeout)
        if not line:
            return lines
        lines.append(line)


def wait_exit(d: Any, timeout: float) -> int:
    return int(d.proc.wait(timeout))


async def ready(raw_qmp: Any, d: Any, timeout: float = 10) -> None:
    """Wait until `d` accepts on its control socket (the file alone proves nothing here)."""
    deadline = time.monotonic() + timeout
    while True:
        assert d.proc.poll() is None, d.proc.stderr.read().decode()
        try:
            c = await raw_qmp.connect(d.control)
        except (ConnectionRefusedError, FileNotFoundError):
            assert time.monotonic() < deadline, "sevd does not accept connections"
            await asyncio.sleep(0.02)
            continue
        await c.close()
        return


# -- guest-add / guest-remove / query-guests ----------------------------------------------------

async def test_add_list_remove(module_daemon: Any, raw_qmp: Any) -> None:
    ctl = module_daemon.control
    reply = await add(raw_qmp, ctl, name="d1", memory=512 << 20, cpus=2, uuid=UUID.upper())
    info = reply["return"]
    assert info["name"] == "d1" and info["uuid"] == UUID          # normalised
    assert info["status"] == "prelaunch" and info["running"] is False
    assert info["memory"] == 512 << 20 and info["cpus"] == 2
    assert info["socket"] == module_daemon.guest_socket("d1")
    assert os.path.exists(info["socket"])
    started = (await add(raw_qmp, ctl, name="d2", start=True))["return"]
    assert started["status"] == "running" and started["running"] is True
    assert len(started["uuid"]) == 36 and started["uuid"] != UUID  # generated
    listed = await guests(raw_qmp, ctl)
    assert [g["name"] for g in listed] == ["d1", "d2"]
    assert listed[0] == info
    assert await remove(raw_qmp, ctl, "d1") == {"return": {}}
    assert await remove(raw_qmp, ctl, "d2") == {"return": {}}
    assert await guests(raw_qmp, ctl) == []
    assert not os.path.exists(info["socket"])


GUEST_ADD_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("space", {"name": "a b"}, f"Invalid guest name 'a b': {NAME_RULE}"),
    ("65-chars", {"name": "a" * 65}, f"Invalid guest name '{'a' * 65}': {NAME_RULE}"),
    ("empty", {"name": ""}, f"Invalid guest name '': {NAME_RULE}"),
    ("leading-dash", {"name": "-x"}, f"Invalid guest name '-x': {NAME_RULE}"),
    ("slash", {"name": "../x"}, f"Invalid guest name '../x': {NAME_RULE}"),
    ("memory-zero", {"name": "m", "memory": 0},
     "Invalid memory size 0: it must be a positive multiple of 4096 bytes"),
    ("memory-unaligned", {"name": "m", "memory": 4095},
     "Invalid memory size 4095: it must be a positive multiple of 4096 bytes"),
    ("memory-huge", {"name": "m", "memory": (1 << 48) + 4096},
     "Invalid memory size 281474976714752: at most 256 TiB"),
    ("memory-string", {"name": "m", "memory": "1G"}, "Parameter 'memory' expects uint64"),
    ("cpus-zero", {"name": "m", "cpus": 0}, "Invalid number of CPUs 0: it must be 1 to 288"),
    ("uuid", {"name": "m", "uuid": "not-a-uuid"}, "Invalid UUID 'not-a-uuid'"),
    ("no-name", {}, "Parameter 'name' is missing"),
    ("unknown-key", {"name": "m", "colour": "red"}, "Parameter 'colour' is unexpected"),
]


@pytest.mark.parametrize(("args", "desc"), [pytest.param(a, d, id=i)
                                             for i, a, d in GUEST_ADD_ERRORS])
async def test_guest_add_refuses(module_daemon: Any, raw_qmp: Any, args: dict[str, Any],
                                 desc: str) -> None:
    reply = await add(raw_qmp, module_daemon.control, **args)
    assert reply == {"error": {"class": "GenericError", "desc": desc}}
    assert await guests(raw_qmp, module_daemon.control) == []
    assert os.listdir(Path(module_daemon.guest_socket("x")).parent) == []


async def test_duplicate_name_and_unknown_guest(module_daemon: Any, raw_qmp: Any) -> None:
    ctl = module_daemon.control
    assert "return" in await add(raw_qmp, ctl, name="dup")
    try:
        assert await add(raw_qmp, ctl, name="dup") == {
            "error": {"class": "GenericError", "desc": "Guest 'dup' already exists"}}
        assert [g["name"] for g in await guests(raw_qmp, ctl)] == ["dup"]
    finally:
        assert await remove(raw_qmp, ctl, "dup") == {"return": {}}
    assert await remove(raw_qmp, ctl, "dup") == {
        "error": {"class": "GenericError", "desc": "Guest 'dup' not found"}}


async def test_a_64_character_name_is_fine(module_daemon: Any, raw_qmp: Any) -> None:
    name = "n" * 64
    info = (await add(raw_qmp, module_daemon.control, name=name))["return"]
    assert os.path.exists(info["socket"])
    assert await remove(raw_qmp, module_daemon.control, name) == {"return": {}}


# -- the 107-byte limit ------------------------------------------------------------------------

def long_base(total: int) -> Path:
    """A fresh directory whose `run/sevd.sock` path is `total` bytes long."""
    root = Path(f"/tmp/svl{os.getpid()}-{time.monotonic_ns()}")
    pad = total - len(str(root)) - len("/run/sevd.sock") - 1
    base = root / ("p" * pad)
    base.mkdir(parents=True)
    assert len(str(base / "run" / "sevd.sock")) == total
    return base


async def test_a_guest_socket_path_over_107_bytes_is_a_clear_error(spawn_daemon: Any,
                                                                   raw_qmp: Any) -> None:
    d = spawn_daemon(base=long_base(90))               # control socket: 90 bytes, fine
    name = "g" * 18                                     # guest socket: 81 + 7 + 18 + 4 = 110
    path = d.guest_socket(name)
    assert len(path) == 110
    reply = await add(raw_qmp, d.control, name=name)
    assert reply == {"error": {"class": "GenericError", "desc": (
        f"Socket path '{path}' is 110 bytes long, over the 107-byte limit of unix sockets")}}
    assert await guests(raw_qmp, d.control) == []
    assert not os.listdir(Path(path).parent)
    ok = (await add(raw_qmp, d.control, name="g" * 15))["return"]  # exactly 107 bytes
    assert len(ok["socket"]) == 107 and os.path.exists(ok["socket"])


def test_a_control_socket_path_over_107_bytes_stops_the_start(spawn_daemon: Any) -> None:
    base = long_base(108)
    d = spawn_daemon(base=base, wait=False)
    assert wait_exit(d, 15) == 2                        # a configuration error
    err = d.proc.stderr.read().decode()
    sock = base / "run" / "sevd.sock"
    assert f"'{sock}' is 108 bytes long, over the 107-byte limit" in err, err
    assert not sock.exists()


# -- ending guests -----------------------------------------------------------------------------

async def test_guest_remove_closes_sessions_and_removes_the_socket(module_daemon: Any,
                                                                   raw_qmp: Any) -> None:
    info = (await add(raw_qmp, module_daemon.control, name="rm"))["return"]
    negotiated = await raw_qmp.connect(info["socket"], negotiate=True)
    waiting = await raw_qmp.connect(info["socket"])
    try:
        assert await remove(raw_qmp, module_daemon.control, "rm") == {"return": {}}
        # Whatever arrives before the end is an event, never a stray reply.
        assert all(line.startswith(b'{"timestamp"') for line in await eof(negotiated))
        assert await eof(waiting) == []
        assert not os.path.exists(info["socket"])
        with pytest.raises(OSError):
            await raw_qmp.connect(info["socket"])
    finally:
        await negotiated.close()
        await waiting.close()


async def test_guest_quit_replies_then_ends_the_instance(module_daemon: Any,
                                                         raw_qmp: Any) -> None:
    info = (await add(raw_qmp, module_daemon.control, name="q1"))["return"]
    watcher = await raw_qmp.connect(module_daemon.control, negotiate=True)
    c = await raw_qmp.connect(info["socket"], negotiate=True)
    try:
        await c.send(b'{"execute":"quit","id":"q"}')
        lines = await eof(c)
        assert len(lines) == 2
        assert lines[0].endswith(b'"event": "SHUTDOWN", "data": {"guest": false, '
                                 b'"reason": "host-qmp-quit"}}\r\n')
        assert lines[1] == b'{"return": {}, "id": "q"}\r\n'
        event = json.loads(await watcher.line())
        assert (event["event"], event["data"]) == ("SEVD_GUEST_REMOVED", {"name": "q1"})
        assert not os.path.exists(info["socket"])
        assert await guests(raw_qmp, module_daemon.control) == []
    finally:
        await c.close()
        await watcher.close()


async def test_hmp_quit_ends_the_instance_too(module_daemon: Any, raw_qmp: Any) -> None:
    info = (await add(raw_qmp, module_daemon.control, name="q2"))["return"]
    c = await raw_qmp.connect(info["socket"], negotiate=True)
    try:
        await c.send(b'{"execute":"human-monitor-command","arguments":{"command-line":"quit"},'
                     b'"id":"h"}')
        lines = await eof(c)
        assert lines[-1] == b'{"return": "", "id": "h"}\r\n'
        assert await guests(raw_qmp, module_daemon.control) == []
    finally:
        await c.close()


# -- ending the daemon -------------------------------------------------------------------------

async def stop_scenario(spawn_daemon: Any, raw_qmp: Any, how: str) -> None:
    d = spawn_daemon()
    info = (await add(raw_qmp, d.control, name="s1", start=True))["return"]
    guest_client = await raw_qmp.connect(info["socket"], negotiate=True)
    control_client = await raw_qmp.connect(d.control, negotiate=True)
    t0 = time.monotonic()
    if how == "quit":
        await control_client.send(b'{"execute":"quit","id":"bye"}')
        assert await control_client.line() == b'{"return": {}, "id": "bye"}\r\n'
    else:
        d.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(wait_exit, d, 10) == 0
    assert time.monotonic() - t0 < 5
    guest_lines = await eof(guest_client)
    assert [json.loads(x)["event"] for x in guest_lines] == ["SHUTDOWN"]
    assert json.loads(guest_lines[0])["data"] == {"guest": False, "reason": "host-signal"}
    assert all(line.startswith(b'{"timestamp"') for line in await eof(control_client))
    assert not os.path.exists(d.control)
    assert not os.path.exists(info["socket"])
    await guest_client.close()
    await control_client.close()


async def test_host_quit_stops_the_daemon(spawn_daemon: Any, raw_qmp: Any) -> None:
    await stop_scenario(spawn_daemon, raw_qmp, "quit")


async def test_sigterm_stops_the_daemon(spawn_daemon: Any, raw_qmp: Any) -> None:
    await stop_scenario(spawn_daemon, raw_qmp, "sigterm")


async def test_a_second_daemon_on_the_same_runtime_dir_refuses(spawn_daemon: Any,
                                                               raw_qmp: Any) -> None:
    first = spawn_daemon()
    second = spawn_daemon(base=first.base, wait=False)
    assert await asyncio.to_thread(wait_exit, second, 15) == 1
    err = second.proc.stderr.read().decode()
    assert f"another sevd is running on {first.base / 'run'}" in err
    # The first one is untouched.
    reply = await ask(raw_qmp, first.control, {"execute": "query-version"})
    assert reply["return"]["package"] == f"sevd {__version__}"


async def test_a_stale_control_socket_is_recovered(spawn_daemon: Any, raw_qmp: Any) -> None:
    first = spawn_daemon()
    await add(raw_qmp, first.control, name="stale")
    first.proc.kill()                                   # SIGKILL: no clean-up at all
    first.proc.wait(10)
    assert os.path.exists(first.control)               # left behind
    assert os.path.exists(first.guest_socket("stale"))
    with pytest.raises(ConnectionRefusedError):
        await raw_qmp.connect(first.control)
    second = spawn_daemon(base=first.base)
    await ready(raw_qmp, second)                        # the old file exists: poll
    reply = await ask(raw_qmp, second.control, {"execute": "query-guests"})
    assert reply == {"return": []}
    assert not os.path.exists(second.guest_socket("stale"))   # stale guest socket removed
