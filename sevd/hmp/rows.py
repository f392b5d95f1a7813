"""sevd's HMP command rows: QEMU's names, parameters and help texts, wired to operations.

Each row's handler calls the same domain operation as the QMP command of the same meaning
(one implementation each); the rows only format text as QEMU's `hmp_*` functions do.
`guest_monitor()` serves guest sockets, `host_monitor()` the control socket (help and
`info version` only, DESIGN §3).
"""

from __future__ import annotations

import functools
from typing import Any

from sevd.hmp.parser import DumpDefaults
from sevd.hmp.table import HmpCommand, HmpMonitor


def _guest(ctx: Any) -> Any:
    return ctx.the_guest


def info_version(ctx: Any, args: dict[str, Any]) -> str:
    v = ctx.app.version_info()
    q = v["qemu"]
    # hmp_info_version(): "%d.%d.%d%s\n" — no space before the package.
    return f"{q['major']}.{q['minor']}.{q['micro']}{v['package']}\n"


def info_status(ctx: Any, args: dict[str, Any]) -> str:
    g = _guest(ctx)
    text = "VM status: " + ("running" if g.running else "paused")
    if not g.running and g.state.value != "paused":
        text += f" ({g.state.value})"
    return text + "\n"


def info_name(ctx: Any, args: dict[str, Any]) -> str:
    return f"{_guest(ctx).name}\n"


def info_uuid(ctx: Any, args: dict[str, Any]) -> str:
    return f"{_guest(ctx).config.uuid}\n"


def info_kvm(ctx: Any, args: dict[str, Any]) -> str:
    enc = "enabled" if getattr(_guest(ctx), "sev", None) else "disabled"
    # The 2016 RFC's extra line follows "kvm support:".
    return f"kvm support: enabled\nmemory encryption: {enc}\n"


def _op(name: str) -> Any:
    def handler(ctx: Any, args: dict[str, Any]) -> None:
        getattr(_guest(ctx), name)()
    return handler


def _quit(ctx: Any, args: dict[str, Any]) -> None:
    from sevd.commands.runstate import quit_guest
    quit_guest(ctx, {})


_INFO_VERSION = HmpCommand("version", "", "", "show the version of QEMU", info_version)


def _defaults(ctx: Any) -> DumpDefaults:
    slot = ctx.app.slots[ctx.the_guest.name]
    if slot.dump_defaults is None:
        slot.dump_defaults = DumpDefaults()
    return slot.dump_defaults  # type: ignore[no-any-return]


@functools.cache
def guest_monitor() -> HmpMonitor:
    info = [
        _INFO_VERSION,
        HmpCommand("status", "", "", "show the current VM status (running|paused)",
                   info_status),
        HmpCommand("name", "", "", "show the current VM name", info_name),
        HmpCommand("uuid", "", "", "show the current VM UUID", info_uuid),
        HmpCommand("kvm", "", "", "show KVM information", info_kvm),
    ]
    rows = [
        HmpCommand("info", "item:s?", "[subcommand]",
                   "show various information about the system state", None,
                   subcommands=info),
        HmpCommand("stop|s", "", "", "stop emulation", _op("stop")),
        HmpCommand("cont|c", "", "", "resume emulation", _op("cont")),
        HmpCommand("system_reset", "", "", "reset the system", _op("system_reset")),
        HmpCommand("system_powerdown", "", "", "send system power down event",
                   _op("system_powerdown")),
        HmpCommand("quit|q", "", "", "quit the emulator", _quit),
    ]
    return HmpMonitor(rows, defaults=_defaults)


@functools.cache
def host_monitor() -> HmpMonitor:
    rows = [HmpCommand("info", "item:s?", "[subcommand]",
                       "show various information about the system state", None,
                       subcommands=[_INFO_VERSION])]
    return HmpMonitor(rows)
