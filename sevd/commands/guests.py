"""Guest management on the control socket: guest-add, guest-remove, query-guests."""

from __future__ import annotations

from typing import Any

from sevd.commands.registry import HOST, Ctx, command
from sevd.domain.guest import DEFAULT_MEMORY, GuestConfig


@command("guest-add", HOST)
async def guest_add(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    config = GuestConfig(name=args["name"], memory=args.get("memory", DEFAULT_MEMORY),
                         cpus=args.get("cpus", 1), uuid=args.get("uuid", ""),
                         start=args.get("start", False))
    slot = await ctx.app.add_guest(config)
    return ctx.app.guest_info(slot)


@command("guest-remove", HOST)
async def guest_remove(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    await ctx.app.remove_guest(args["name"])
    return {}


@command("query-guests", HOST)
def query_guests(ctx: Ctx, args: dict[str, Any]) -> list[dict[str, Any]]:
    return [ctx.app.guest_info(slot) for slot in ctx.app.slots.values()]
