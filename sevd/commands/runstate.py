"""Run-state commands of a guest socket; HMP's stop/cont/system_reset call these too."""

from __future__ import annotations

import asyncio
from typing import Any

from sevd.commands.registry import GUEST, HOST, Ctx, command
from sevd.commands.sev import launch_finish_text
from sevd.domain.errors import DomainError
from sevd.domain.psp import SevError


@command("query-status", GUEST)
def query_status(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    g = ctx.the_guest
    return {"running": g.running, "singlestep": False, "status": g.state.value}


@command("stop", GUEST)
def stop(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    ctx.the_guest.stop()
    return {}


@command("cont", GUEST)
def cont(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    guest = ctx.the_guest
    try:
        guest.cont()
    except SevError as e:
        # QEMU exit(1)s when LAUNCH_FINISH fails: the instance ends after this reply.
        ctx.app.emit(guest.name, "SHUTDOWN", {"guest": False, "reason": "host-error"})
        _end_instance(ctx, guest.name)
        raise DomainError(launch_finish_text(e)) from None
    return {}


def _end_instance(ctx: Ctx, name: str) -> None:
    ctx.app.spawn(ctx.app.remove_guest(name))


@command("system_reset", GUEST)
def system_reset(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    ctx.the_guest.system_reset()
    return {}


@command("system_powerdown", GUEST)
def system_powerdown(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    ctx.the_guest.system_powerdown()
    return {}


@command("quit", GUEST)
def quit_guest(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    guest = ctx.the_guest
    guest.quit()
    # The reply goes out first; the instance ends on the next loop iteration (QEMU: "every
    # attempt is made to send the QMP response before terminating").
    _end_instance(ctx, guest.name)
    return {}


@command("quit", HOST)
def quit_daemon(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    asyncio.get_running_loop().call_soon(ctx.app.request_quit)
    return {}
