"""Guest memory for the monitor: memsave/pmemsave, and the operations HMP's x, xp,
gva2gpa, info mem/tlb and the gdb stub share — all through the debug path (DESIGN §5).

QMP and HMP call the same functions here; the texts QEMU prints for each failure are
produced here once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from sevd.commands.registry import GUEST, Ctx, command
from sevd.domain.debug import DebugAccess, DebugRefused
from sevd.domain.errors import DomainError
from sevd.domain.guest import Guest
from sevd.files import dump_path, open_for_write
from sevd.protocol.gdb import GdbError

MAX_DUMP = 4 << 30
CHUNK = 1 << 20
_M64 = (1 << 64) - 1


def debug(ctx: Ctx) -> DebugAccess:
    """The guest's debug path (DebugRefused when its security policy forbids it)."""
    return DebugAccess(ctx.the_guest)


def check_size(size: int) -> None:
    # QEMU 7.2 segfaults on a negative size (memcpy of ~2^64 bytes); sevd refuses.
    if not 0 <= size <= MAX_DUMP:
        raise DomainError(f"Invalid size {size}: it must be 0 to {MAX_DUMP} bytes")


def check_cpu(ctx: Ctx, cpu: int | None) -> int:
    if cpu is None:
        return 0
    if not 0 <= cpu < len(ctx.the_guest.machine.vcpus):
        raise DomainError("Parameter 'cpu-index' expects a CPU number")
    return cpu


def memsave(ctx: Ctx, addr: int, size: int, filename: str, cpu: int | None = None) -> None:
    index = check_cpu(ctx, cpu)
    check_size(size)
    dbg = debug(ctx)
    addr &= _M64

    def chunks() -> Iterator[bytes]:
        for off in range(0, size, CHUNK):
            data = dbg.read_virt((addr + off) & _M64, min(CHUNK, size - off), index)
            if data is None:
                raise DomainError(f"Invalid addr 0x{addr:016x}/size {size} specified")
            yield data

    _write(ctx, filename, chunks())


def pmemsave(ctx: Ctx, addr: int, size: int, filename: str) -> None:
    check_size(size)
    dbg = debug(ctx)
    addr &= _M64

    def chunks() -> Iterator[bytes]:
        # Physical addresses wrap at 2^64, as QEMU's hwaddr does: a chunk never crosses it.
        off = 0
        while off < size:
            gpa = (addr + off) & _M64
            n = min(CHUNK, size - off, _M64 + 1 - gpa)
            yield dbg.read_phys_or_zero(gpa, n)
            off += n

    _write(ctx, filename, chunks())


def _write(ctx: Ctx, filename: str, chunks: Iterator[bytes]) -> None:
    """Stream a dump into its file, one chunk (1 MiB) in memory at a time.

    A 4 GiB dump must not cost 4 GiB of the daemon's memory. As in QEMU's qmp_memsave()
    and qmp_pmemsave(), the file is opened before memory is read, so a bad file name is
    reported before a bad address; unlike QEMU, which leaves an empty or partial file
    behind, a dump that fails is removed.
    """
    with open_for_write(filename, ctx.app.dump_dir) as f:
        try:
            for chunk in chunks:
                f.write(chunk)
        except (OSError, DomainError) as e:
            with contextlib.suppress(OSError, DomainError):
                os.unlink(dump_path(filename, ctx.app.dump_dir))
            if isinstance(e, DomainError):
                raise
            raise DomainError(f"writing memory to '{filename}' failed") from None


@command("memsave", GUEST)
def qmp_memsave(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    memsave(ctx, args["val"], args["size"], args["filename"], args.get("cpu-index"))
    return {}


@command("pmemsave", GUEST)
def qmp_pmemsave(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    pmemsave(ctx, args["val"], args["size"], args["filename"])
    return {}


class DebugTarget:
    """The gdb stub's view of one guest: its vCPUs and memory through the debug path.

    The simulated vCPUs do not execute, so attaching a debugger does not stop the guest
    (QEMU would enter run state `debug`); registers are what the simulated firmware set.
    """

    def __init__(self, guest: Guest) -> None:
        self.guest = guest

    def _debug(self) -> DebugAccess:
        try:
            return DebugAccess(self.guest)
        except DebugRefused as e:
            raise GdbError(14, str(e)) from None

    def vcpu_count(self) -> int:
        return len(self.guest.machine.vcpus)

    def registers(self, cpu: int) -> Mapping[str, int]:
        return self.guest.machine.vcpus[cpu].regs

    def read_memory(self, vaddr: int, length: int, cpu: int) -> bytes:
        data = self._debug().read_virt(vaddr, length, cpu)
        if data is None:
            raise GdbError(14, "Cannot access memory")
        return data

    def write_memory(self, vaddr: int, data: bytes, cpu: int) -> None:
        if not self._debug().write_virt(vaddr, data, cpu):
            raise GdbError(14, "Cannot access memory")

    def set_register(self, cpu: int, name: str, value: int) -> None:
        regs = self.guest.machine.vcpus[cpu].regs
        if name not in regs:
            raise GdbError(22, f"register {name} is not modelled")
        regs[name] = value


def gdbserver(ctx: Ctx, device: str | None) -> str:
    """HMP `gdbserver [device]`: start (or, with `none`, stop) the guest's gdb stub."""
    from sevd.hmp.rows import guest_monitor
    from sevd.transports.gdb import GdbDeviceError, GdbServer, parse_gdbserver_device

    guest = ctx.the_guest
    slot = ctx.app.slots[guest.name]
    shown = device if device is not None else "tcp::1234"
    try:
        parsed = parse_gdbserver_device(device)
    except GdbDeviceError as e:
        return f"{e}\nCould not open gdbserver on device '{shown}'\n"
    if slot.gdbserver is not None:
        slot.gdbserver.close()
        slot.gdbserver = None
    if parsed is None:
        return "Disabled gdbserver\n"

    def monitor(line: str) -> str:
        return guest_monitor().run(line, Ctx(None, ctx.app, guest)).replace("\r\n", "\n")

    server = GdbServer(parsed, lambda: DebugTarget(guest), monitor)
    try:
        server.bind()
    except GdbDeviceError as e:
        return f"{e}\nCould not open gdbserver on device '{shown}'\n"
    slot.gdbserver = server
    ctx.app.spawn(server.serve())
    return f"Waiting for gdb connection on device '{shown}'\n"
