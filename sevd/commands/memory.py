"""Guest memory for the monitor: memsave/pmemsave, and the operations HMP's x, xp,
gva2gpa, info mem/tlb and the gdb stub share — all through the debug path (DESIGN §5).

QMP and HMP call the same functions here; the texts QEMU prints for each failure are
produced here once.
"""

from __future__ import annotations

from typing import Any

from sevd.commands.registry import GUEST, Ctx, command
from sevd.domain.debug import DebugAccess
from sevd.domain.errors import DomainError
from sevd.files import open_for_write

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
    chunks = []
    for off in range(0, size, CHUNK):
        n = min(CHUNK, size - off)
        data = dbg.read_virt((addr + off) & _M64, n, index)
        if data is None:
            raise DomainError(f"Invalid addr 0x{addr:016x}/size {size} specified")
        chunks.append(data)
    _write(ctx, filename, chunks)


def pmemsave(ctx: Ctx, addr: int, size: int, filename: str) -> None:
    check_size(size)
    dbg = debug(ctx)
    addr &= _M64
    chunks = [dbg.read_phys_or_zero(addr + off, min(CHUNK, size - off))
              for off in range(0, size, CHUNK)]
    _write(ctx, filename, chunks)


def _write(ctx: Ctx, filename: str, chunks: list[bytes]) -> None:
    with open_for_write(filename, ctx.app.dump_dir) as f:
        try:
            for c in chunks:
                f.write(c)
        except OSError:
            raise DomainError(f"writing memory to '{filename}' failed") from None


@command("memsave", GUEST)
def qmp_memsave(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    memsave(ctx, args["val"], args["size"], args["filename"], args.get("cpu-index"))
    return {}


@command("pmemsave", GUEST)
def qmp_pmemsave(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    pmemsave(ctx, args["val"], args["size"], args["filename"])
    return {}
