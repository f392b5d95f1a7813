"""`human-monitor-command`: HMP through QMP, on both scopes."""

from __future__ import annotations

from typing import Any

from sevd.commands.registry import Ctx, command
from sevd.domain.errors import DomainError
from sevd.hmp.rows import guest_monitor, host_monitor
from sevd.hmp.table import HmpError
from sevd.protocol.errors import QmpError


@command("human-monitor-command")
def human_monitor_command(ctx: Ctx, args: dict[str, Any]) -> str:
    cpus = ctx.guest.config.cpus if ctx.guest is not None else 1
    index = args.get("cpu-index")
    if index is not None and not 0 <= index < cpus:
        raise QmpError("Parameter 'cpu-index' expects a CPU number")
    ctx.cpu = index or 0
    monitor = guest_monitor() if ctx.guest is not None else host_monitor()
    try:
        return monitor.run(args["command-line"], ctx)
    except DomainError as e:
        # An operation refused: HMP prints the error (hmp_handle_error), the QMP call succeeds.
        return HmpError.qmp(str(e)).text + "\r\n"
