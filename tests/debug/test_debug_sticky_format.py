"""QEMU's sticky `/fmt` defaults of `x`/`xp` are per guest, shared by its sessions (DESIGN §5).

One guest is one QEMU process, whose monitor keeps the last format and unit size in
globals: on a real daemon, a `/fmt` given in one QMP session of a guest sets the defaults
for every session of that guest (concurrent or later), and for `x` and `xp` alike; another
guest of the same daemon keeps its own (QEMU's start-up `x` and `w`); a guest removed and
added again under the same name starts afresh, as a new QEMU process would.
"""

from __future__ import annotations

from debug_support import HEARTBEAT, Qmp, hmp, launched, qmp

WORD = f"{HEARTBEAT:016x}: 0x44564553\r\n"             # one 4-byte item, the default
QUAD = f"{HEARTBEAT:016x}: 0x3130424844564553\r\n"     # one 8-byte item
DEC = f"{HEARTBEAT:016x}: {0x3130424844564553:>20}\r\n"  # one 8-byte item in `d`


async def test_defaults_are_shared_by_the_sessions_of_one_guest(control: Qmp) -> None:
    async with launched(control, "milan", policy=0x0) as a, \
            launched(control, "milan", policy=None) as b, \
            qmp(a.socket, "a1") as a1, qmp(a.socket, "a2") as a2, qmp(b.socket) as b1:
        for client in (a1, a2, b1):
            assert await hmp(client, f"xp {HEARTBEAT:#x}") == WORD
        assert await hmp(a1, f"xp /2xg {HEARTBEAT:#x}") == (
            f"{HEARTBEAT:016x}: 0x3130424844564553 0x0000000000000001\r\n")
        # a2 (the same guest) now dumps one giant, with x as with xp; b is untouched
        assert await hmp(a2, f"xp {HEARTBEAT:#x}") == QUAD
        assert await hmp(a2, f"x {HEARTBEAT:#x}") == QUAD
        assert await hmp(b1, f"xp {HEARTBEAT:#x}") == WORD
        # the format alone is sticky too, and the size stays
        assert await hmp(a2, f"xp /d {HEARTBEAT:#x}") == DEC
        assert await hmp(a1, f"x {HEARTBEAT:#x}") == DEC
        # `c` counts in units of the sticky size: 1 unit of 8 bytes = 8 characters
        assert await hmp(a1, f"xp /c {HEARTBEAT:#x}") == (
            f"{HEARTBEAT:016x}: 'S' 'E' 'V' 'D' 'H' 'B' '0' '1'\r\n")
        assert await hmp(b1, f"xp /c {HEARTBEAT:#x}") == (
            f"{HEARTBEAT:016x}: 'S' 'E' 'V' 'D'\r\n")
        name = a.name
    # A later session of a still-running guest keeps the defaults ...
    async with launched(control, "milan", policy=0x0) as c, qmp(c.socket) as c1:
        await hmp(c1, f"xp /1xb {HEARTBEAT:#x}")
        async with qmp(c.socket) as c2:
            assert await hmp(c2, f"xp {HEARTBEAT:#x}") == f"{HEARTBEAT:016x}: 0x53\r\n"
        async with qmp(c.socket) as c3:
            assert await hmp(c3, f"xp /2 {HEARTBEAT:#x}") == f"{HEARTBEAT:016x}: 0x53 0x45\r\n"
    # ... and a guest added again under a removed guest's name starts afresh.
    info = await control.execute("guest-add", {"name": name})
    try:
        async with qmp(info["socket"]) as again:
            await again.execute("cont")
            await again.execute("stop")
            assert await hmp(again, f"xp {HEARTBEAT:#x}") == WORD
    finally:
        await control.execute("guest-remove", {"name": name})
