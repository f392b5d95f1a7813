"""sevd's own limits on the monitor's memory views, where QEMU has none: an `x`/`xp` line
cannot make the shared daemon build more than 1 MiB of memory as text, and the hypervisor
view (`x-sevd-query-memory`) covers adjacent regions (firmware up to 4 GiB, high RAM from
there) but nothing unmapped. In-process, through the real HMP table and handlers."""

from __future__ import annotations

import asyncio
import base64

from sevd.commands.app import App
from sevd.commands.guests import build_config
from sevd.commands.registry import Ctx
from sevd.commands.schema import Schema
from sevd.commands.sev import x_sevd_query_memory
from sevd.daemon import builtin_firmware
from sevd.domain.errors import DomainError
from sevd.hmp.rows import guest_monitor


def make_guest(memory: int) -> Ctx:
    app = App(Schema())
    app.builtin_firmware = builtin_firmware()
    slot = asyncio.run(app.add_guest(build_config(Ctx(None, app, None),
                                                  {"name": "g", "memory": memory})))
    return Ctx(None, app, slot.guest)


def test_dump_size_is_capped() -> None:
    g = make_guest(256 << 20)
    out = guest_monitor().run("xp /268435455xg 0", g)
    assert out == ("xp: at most 1048576 bytes per dump (sevd's limit); use pmemsave/memsave "
                   "for more\r\n")
    assert guest_monitor().run("xp /131072xg 0", g).count("\r\n") == 65536  # exactly 1 MiB


def test_hypervisor_view_spans_adjacent_regions() -> None:
    g = make_guest(5 << 30)  # RAM 0-2 GiB, firmware up to 4 GiB, RAM 4-7 GiB
    data = base64.b64decode(x_sevd_query_memory(g, {"gpa": (4 << 30) - 16, "size": 32})["data"])
    assert data[:16] == builtin_firmware()[-16:]
    assert data[16:] == bytes(16)
    try:
        x_sevd_query_memory(g, {"gpa": 0x8000_0000 - 16, "size": 32})  # RAM then a hole
    except DomainError as e:
        assert str(e) == "Range 0x7ffffff0+32 is outside guest memory"
    else:
        raise AssertionError("a range into the hole below the firmware was accepted")
