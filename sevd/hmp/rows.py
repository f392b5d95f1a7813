"""sevd's HMP command table: QEMU's rows (names, parameters, help from qemu_rows), wired to
the operations the QMP commands use (one implementation each); the handlers only format
text as QEMU's `hmp_*` functions do.

`guest_monitor()` serves guest sockets, `host_monitor()` the control socket (help and
`info version` only, DESIGN §3). Memory commands go through the debug path
(sevd.commands.memory, sevd.domain.debug).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from sevd.hmp.cpudump import CPU_NOT_AVAILABLE, format_info_cpus, format_info_registers
from sevd.hmp.dump import (
    PG_DISABLED,
    PTE_ADDR_MASK_1G,
    PTE_ADDR_MASK_2M,
    PTE_ADDR_MASK_4K,
    MemRange,
    TlbEntry,
    format_info_mem,
    format_info_tlb,
    gva2gpa,
    memory_dump,
)
from sevd.hmp.parser import DumpDefaults
from sevd.hmp.qemu_rows import command, info_command
from sevd.hmp.table import HmpCommand, HmpMonitor

PS = 0x80
MAX_DUMP_BYTES = 1 << 20  # x/xp: 1 MiB of memory is ~6 MiB of text


def _guest(ctx: Any) -> Any:
    return ctx.the_guest


def _debug(ctx: Any) -> Any:
    from sevd.commands.memory import debug

    return debug(ctx)


# -- info ----------------------------------------------------------------------------------

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
    enc = "enabled" if _guest(ctx).sev is not None else "disabled"
    # The 2016 RFC's extra line follows "kvm support:".
    return f"kvm support: enabled\nmemory encryption: {enc}\n"


def info_sev(ctx: Any, args: dict[str, Any]) -> str:
    g = _guest(ctx)
    s = g.sev
    if s is None:
        return "SEV is not enabled\n"
    prof = s.platform.profile
    # hmp_info_sev() of QEMU 9.1+; debug is also off when the RFC's security policy says so.
    debug = "on" if s.debug_allowed and g.config.debug else "off"
    return (f"SEV type: sev\nstate: {s.state.value}\nbuild: {prof.build}\n"
            f"api version: {prof.api_major}.{prof.api_minor}\nhandle: {s.handle}\n"
            f"debug: {debug}\nkey-sharing: {'on' if s.key_sharing else 'off'}\n")


def info_mem(ctx: Any, args: dict[str, Any]) -> str:
    walker = _debug(ctx).walker(ctx.cpu)
    if not walker.paging:
        return PG_DISABLED
    return format_info_mem(MemRange(leaf.vaddr, leaf.size, leaf.prot)
                           for leaf in walker.leaves())


def info_tlb(ctx: Any, args: dict[str, Any]) -> str:
    walker = _debug(ctx).walker(ctx.cpu)
    if not walker.paging:
        return PG_DISABLED
    masks = {4096: PTE_ADDR_MASK_4K, 2 << 20: PTE_ADDR_MASK_2M, 1 << 30: PTE_ADDR_MASK_1G}
    # tlb_info_la48(): 4 KiB PTEs are printed with bit 7 (PAT there, not PSE) cleared.
    return format_info_tlb(
        TlbEntry(leaf.vaddr, leaf.pte & ~PS if leaf.size == 4096 else leaf.pte,
                 masks[leaf.size])
        for leaf in walker.leaves())


def info_sevd_memory(ctx: Any, args: dict[str, Any]) -> str:
    from sevd.domain.debug import page_kinds

    return "".join(f"{lo:016x}-{hi:016x} {hi - lo:016x} {kind}\n"
                   for lo, hi, kind in page_kinds(_guest(ctx)))


# -- memory --------------------------------------------------------------------------------

def _x(physical: bool) -> Any:
    def handler(ctx: Any, args: dict[str, Any]) -> str:
        # QEMU has no cap; one line could make the shared daemon build gigabytes of text.
        if args["count"] * max(args["size"], 1) > MAX_DUMP_BYTES:
            return (f"{'xp' if physical else 'x'}: at most {MAX_DUMP_BYTES} bytes per dump "
                    "(sevd's limit); use pmemsave/memsave for more\n")
        dbg = _debug(ctx)
        if physical:
            read = dbg.read_phys
        else:
            def read(addr: int, n: int) -> bytes | None:
                return dbg.read_virt(addr, n, ctx.cpu)  # type: ignore[no-any-return]
        return memory_dump(read, args["addr"], args["count"], args["format"], args["size"],
                           physical)
    return handler


def hmp_gva2gpa(ctx: Any, args: dict[str, Any]) -> str:
    dbg = _debug(ctx)
    return gva2gpa(args["addr"], lambda page: dbg.translate(page, ctx.cpu))


def _save(physical: bool) -> Any:
    def handler(ctx: Any, args: dict[str, Any]) -> None:
        from sevd.commands.memory import memsave, pmemsave

        if physical:
            pmemsave(ctx, args["val"], args["size"], args["filename"])
        else:
            memsave(ctx, args["val"], args["size"], args["filename"], ctx.cpu)
    return handler


def hmp_gdbserver(ctx: Any, args: dict[str, Any]) -> str:
    from sevd.commands.memory import gdbserver

    return gdbserver(ctx, args.get("device"))


def info_registers(ctx: Any, args: dict[str, Any]) -> str:
    vcpus = _guest(ctx).machine.vcpus
    booted = _guest(ctx).os.booted
    if args.get("cpustate_all"):
        wanted = range(len(vcpus))
    else:
        index = args.get("vcpu", ctx.cpu)
        if not 0 <= index < len(vcpus):
            return CPU_NOT_AVAILABLE.format(index=index)
        wanted = range(index, index + 1)
    # Application processors wait in HLT until the firmware starts them.
    return "".join(format_info_registers(vcpus[i].regs, i, halted=i > 0 and not booted)
                   for i in wanted)


def info_cpus(ctx: Any, args: dict[str, Any]) -> str:
    # Every simulated vCPU runs on the daemon's thread: its id is the thread id shown.
    tid = threading.get_native_id()
    return format_info_cpus([(v.index, v.index == ctx.cpu, v.regs.get("rip", 0), tid)
                             for v in _guest(ctx).machine.vcpus])


# -- run state -----------------------------------------------------------------------------

def _op(name: str) -> Any:
    def handler(ctx: Any, args: dict[str, Any]) -> None:
        getattr(_guest(ctx), name)()
    return handler


def _cont(ctx: Any, args: dict[str, Any]) -> None:
    from sevd.commands.runstate import cont

    cont(ctx, {})


def _quit(ctx: Any, args: dict[str, Any]) -> None:
    from sevd.commands.runstate import quit_guest

    quit_guest(ctx, {})


def _defaults(ctx: Any) -> DumpDefaults:
    return ctx.app.slots[ctx.the_guest.name].dump_defaults  # type: ignore[no-any-return]


def _registers(ctx: Any, name: str) -> int | None:
    """`$reg` in expressions: the current vCPU's registers (QEMU's monitor_defs)."""
    regs = ctx.the_guest.machine.vcpus[ctx.cpu].regs
    alias = {"eip": "rip", "pc": "rip", "eflags": "rflags", "sp": "rsp"}
    key = alias.get(name, name)
    if key not in regs:
        return None
    value = int(regs[key])
    if name == "pc":
        value += regs.get("cs_base", 0)  # $pc is the linear address (cs base + eip)
    return value


@functools.cache
def guest_monitor() -> HmpMonitor:
    info = [
        info_command("version", info_version),
        info_command("status", info_status),
        info_command("name", info_name),
        info_command("uuid", info_uuid),
        info_command("kvm", info_kvm),
        info_command("sev", info_sev),
        info_command("mem", info_mem),
        info_command("tlb", info_tlb),
        info_command("registers", info_registers),
        info_command("cpus", info_cpus),
        HmpCommand("x-sevd-memory", "", "",
                   "show which guest-physical ranges are private, shared or untouched (sevd)",
                   info_sevd_memory),
    ]
    rows = [
        command("info", None, subcommands=info),
        command("stop|s", _op("stop")),
        command("cont|c", _cont),
        command("system_reset", _op("system_reset")),
        command("system_powerdown", _op("system_powerdown")),
        command("quit|q", _quit),
        command("x", _x(physical=False)),
        command("xp", _x(physical=True)),
        command("gva2gpa", hmp_gva2gpa),
        command("memsave", _save(physical=False)),
        command("pmemsave", _save(physical=True)),
        HmpCommand("gdbserver", "device:s?", "[device]",
                   "start gdbserver on given device (default 'tcp::1234'), stop with 'none'",
                   hmp_gdbserver),
    ]
    return HmpMonitor(rows, defaults=_defaults, registers=_registers)


@functools.cache
def host_monitor() -> HmpMonitor:
    return HmpMonitor([command("info", None,
                               subcommands=[info_command("version", info_version)])])
