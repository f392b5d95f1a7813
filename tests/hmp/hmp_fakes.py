"""Test doubles for the HMP tests: a fake guest with SeaBIOS-like memory and a monitor whose
table uses QEMU's own rows, so that golden strings observed on a real QEMU apply as-is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sevd.hmp import DumpDefaults, HmpCommand, HmpError, HmpMonitor
from sevd.hmp import qemu_rows as rows
from sevd.hmp.dump import PG_DISABLED, format_print, gva2gpa, memory_dump

RAM_SIZE = 256 << 20
# The real-mode IVT after SeaBIOS ran (reference/qmp.md §8.5): every vector is f000:ff53
# except vector 2 (NMI), f000:e2c3.
IVT = b"".join(
    (0xF000E2C3 if n == 2 else 0xF000FF53).to_bytes(4, "little") for n in range(256)
)
# The 16 bytes at the reset vector 0xffff0 of SeaBIOS 1.16 (Debian's QEMU 7.2):
# "ljmpw $0xf000:$0xe05b", then the build date "06/23/99".
RESET_VECTOR = bytes.fromhex("ea5be000f030362f32332f393900fc00")


@dataclass
class FakeGuest:
    """What a handler's ctx would give access to: memory, registers, sticky defaults."""

    memory: dict[int, bytes] = field(
        default_factory=lambda: {0: IVT, 0xFFFF0: RESET_VECTOR}
    )
    registers: dict[str, int] = field(
        default_factory=lambda: {"eip": 0xFFF0, "pc": 0xFFFFFFF0, "cs": 0xF000}
    )
    defaults: DumpDefaults = field(default_factory=DumpDefaults)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def read(self, addr: int, length: int) -> bytes | None:
        """Guest-physical read: zeros in RAM, None outside, the fixed regions above."""
        if addr < 0 or addr + length > RAM_SIZE:
            return None
        out = bytearray(length)
        for base, data in self.memory.items():
            lo, hi = max(addr, base), min(addr + length, base + len(data))
            if lo < hi:
                out[lo - addr : hi - addr] = data[lo - base : hi - base]
        return bytes(out)


def _record(name: str) -> Any:
    def handler(ctx: FakeGuest, args: dict[str, Any]) -> None:
        ctx.calls.append((name, args))

    return handler


def _x(ctx: FakeGuest, args: dict[str, Any]) -> str:
    # Real mode: linear = physical.
    return memory_dump(ctx.read, args["addr"], args["count"], args["format"], args["size"],
                       False)


def _xp(ctx: FakeGuest, args: dict[str, Any]) -> str:
    return memory_dump(ctx.read, args["addr"], args["count"], args["format"], args["size"],
                       True)


def _cpu(ctx: FakeGuest, args: dict[str, Any]) -> None:
    if args["index"] != 0:
        raise HmpError("invalid CPU index")


def build_monitor() -> HmpMonitor:
    info = [
        rows.info_command("status", lambda ctx, a: "VM status: paused (prelaunch)\n"),
        rows.info_command("kvm", lambda ctx, a: "kvm support: disabled\n"),
        rows.info_command("mem", lambda ctx, a: PG_DISABLED),
        rows.info_command("tlb", lambda ctx, a: PG_DISABLED),
        rows.info_command("registers", _record("info registers")),
        rows.info_command("name", lambda ctx, a: None),
    ]
    table: list[HmpCommand] = [
        rows.command("x", _x),
        rows.command("xp", _xp),
        rows.command("print|p", lambda ctx, a: format_print(a["val"], a["format"])),
        rows.command("memsave", _record("memsave")),
        rows.command("pmemsave", _record("pmemsave")),
        rows.command("gva2gpa", lambda ctx, a: gva2gpa(a["addr"], lambda page: page)),
        rows.command("cpu", _cpu),
        rows.command("sum", _record("sum")),
        rows.command("cont|c", _record("cont")),
        rows.command("stop|s", _record("stop")),
        rows.command("info", None, info),
    ]
    return HmpMonitor(
        table,
        defaults=lambda ctx: ctx.defaults,
        registers=lambda ctx, name: ctx.registers.get(name),
    )
