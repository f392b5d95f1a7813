"""How many DBG_DECRYPT calls a monitor read costs: one per run of private memory.

In process (the daemon's command layer, `App`, with a Milan platform), a debuggable SEV
guest is launched and booted; the test counts the firmware's DBG_DECRYPT calls and the
bytes they decrypt while HMP and QMP read memory. It proves that a dump reads each page
table once per operation (not once per page) and reads physically contiguous pages as
one run: `x /512xg` costs the 4 tables and 1 data read, a 1 MiB `memsave` the same 5
calls, `xp`/`pmemsave` of private memory 1 call per run (split only at the shared
window), where reading line by line and page by page cost hundreds to thousands.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debug_support import HEARTBEAT, SHARED_WINDOW, short_tmpdir
from sev_support import identity_for  # on the path through debug_support

from sevd.commands.app import App
from sevd.commands.schema import Schema
from sevd.daemon import builtin_firmware
from sevd.domain.platform import SevPlatform


class Counted:
    """An in-process daemon with one booted debuggable SEV guest; DBG_DECRYPT counted."""

    def __init__(self, dumps: Path) -> None:
        from sevowner.session import create_session

        self.app = App(Schema(), validate_returns=True)
        self.app.platform = SevPlatform(identity_for("milan"), profile="milan")
        self.app.builtin_firmware = builtin_firmware()
        self.app.dump_dir = str(dumps)
        caps = self.host("query-sev-capabilities")
        session = create_session(base64.b64decode(caps["pdh"]), 0x0)
        self.host("guest-add", {"name": "vm", "sev-guest": {
            "policy": 0, "cbitpos": 51, "reduced-phys-bits": 1,
            "dh-cert": session.godh_b64, "session": session.session_b64}})
        self.guest("cont")
        self.guest("stop")
        sev = self.app.slots["vm"].guest.sev
        assert sev is not None
        fw = sev.fw
        self.calls: list[tuple[int, int]] = []
        real = fw.dbg_decrypt

        def dbg_decrypt(handle: int, gpa: int, length: int, *rest: Any) -> bytes:
            self.calls.append((gpa, length))
            return real(handle, gpa, length, *rest)  # type: ignore[no-any-return]

        fw.dbg_decrypt = dbg_decrypt

    def _run(self, dispatcher: Any, name: str, args: dict[str, Any] | None) -> Any:
        reply = dispatcher.dispatch(None, name, args, False)
        assert isinstance(reply, str), name  # these commands answer synchronously
        return json.loads(reply)

    def host(self, name: str, args: dict[str, Any] | None = None) -> Any:
        reply = self.app.control.dispatch(None, name, args, False)
        if not isinstance(reply, str):  # guest-add is a coroutine
            import asyncio

            reply = asyncio.get_event_loop().run_until_complete(reply)
        return json.loads(reply)

    def guest(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return self._run(self.app.slots["vm"].dispatcher, name, args)

    def hmp(self, line: str) -> str:
        self.calls.clear()
        return str(self.guest("human-monitor-command", {"command-line": line}))


@pytest.fixture(scope="module")
def counted() -> Iterator[Counted]:
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield Counted(short_tmpdir())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


TABLES = {(0x9000, 4096), (0xA000, 4096), (0xB000, 4096), (0xC000, 4096)}


def test_x_of_a_page_reads_each_table_once(counted: Counted) -> None:
    out = counted.hmp(f"x /512xg {HEARTBEAT:#x}")
    assert out.startswith(f"{HEARTBEAT:016x}: 0x3130424844564553 ")
    assert set(counted.calls) == TABLES | {(HEARTBEAT, 4096)}
    assert len(counted.calls) == 5


def test_memsave_of_a_mib_is_one_run(counted: Counted) -> None:
    counted.calls.clear()
    counted.guest("memsave", {"val": HEARTBEAT, "size": 1 << 20, "filename": "m.bin"})
    assert sorted(counted.calls) == sorted(TABLES | {(HEARTBEAT, 1 << 20)})
    data = (Path(counted.app.dump_dir) / "m.bin").read_bytes()
    assert data[:8] == b"SEVDHB01" and len(data) == 1 << 20


def test_a_virtual_read_across_the_shared_window(counted: Counted) -> None:
    """Private, then the shared window (read as stored, no firmware call), then private:
    one call for each private run."""
    start, size = SHARED_WINDOW[0] - 0x2000, SHARED_WINDOW[1] - SHARED_WINDOW[0] + 0x4000
    counted.calls.clear()
    counted.guest("memsave", {"val": start, "size": size, "filename": "w.bin"})
    data = (Path(counted.app.dump_dir) / "w.bin").read_bytes()
    assert data[0x2000:0x2008] == b"SEVDHB01"  # the shared heartbeat
    assert sorted(c for c in counted.calls if c not in TABLES) == [
        (start, 0x2000), (SHARED_WINDOW[1], 0x2000)]


def test_xp_and_pmemsave_are_one_call_per_private_run(counted: Counted) -> None:
    counted.hmp(f"xp /512xg {HEARTBEAT:#x}")
    assert counted.calls == [(HEARTBEAT, 4096)]
    counted.calls.clear()
    counted.guest("pmemsave", {"val": 0, "size": 8 << 20, "filename": "p.bin"})
    # 1 MiB chunks; the chunks of the shared window need no firmware call
    assert sorted(counted.calls) == [(0, 1 << 20), (1 << 20, 1 << 20)] + [
        (gpa, 1 << 20) for gpa in range(SHARED_WINDOW[1], 8 << 20, 1 << 20)]
