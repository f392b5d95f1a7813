"""Guest management on the control socket: guest-add, guest-remove, query-guests."""

from __future__ import annotations

from typing import Any

from sevd.commands.registry import HOST, Ctx, command
from sevd.commands.sev import sev_spec
from sevd.domain.boot import Workload
from sevd.domain.errors import DomainError
from sevd.domain.guest import DEFAULT_MEMORY, GuestConfig, check_name


def build_config(ctx: Ctx, args: dict[str, Any]) -> GuestConfig:
    """guest-add's arguments as a domain configuration, files read from allowed places."""
    app = ctx.app
    name = args["name"]
    check_name(name)
    if name in app.slots:
        raise DomainError(f"Guest '{name}' already exists")
    sev = sev_spec(ctx, args["sev-guest"]) if "sev-guest" in args else None
    firmware = app.read_file(args["firmware"]) if "firmware" in args else app.builtin_firmware
    # QEMU's checks (system/vl.c qemu_validate_options), in its order and words.
    if "kernel" not in args and "append" in args:
        raise DomainError("-append only allowed with -kernel option")
    if "kernel" not in args and "initrd" in args:
        raise DomainError("-initrd only allowed with -kernel option")
    kernel = app.read_file(args["kernel"]) if "kernel" in args else None
    initrd = app.read_file(args["initrd"]) if "initrd" in args else None
    w = args.get("workload", {})
    workload = Workload(heartbeat=w.get("heartbeat", True), dirty_pages=w.get("dirty-pages", 0),
                        interval=max(w.get("interval-ms", 100), 1) / 1000)
    return GuestConfig(
        name=name, memory=args.get("memory", DEFAULT_MEMORY), cpus=args.get("cpus", 1),
        uuid=args.get("uuid", ""), start=args.get("start", False), sev=sev, firmware=firmware,
        kernel=kernel, initrd=initrd, append=args.get("append"), workload=workload,
        debug=args.get("security-policy", {}).get("debug", True),
        persistent=args.get("persistent", False))


@command("guest-add", HOST)
async def guest_add(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    slot = await ctx.app.add_guest(build_config(ctx, args), args)
    return ctx.app.guest_info(slot)


@command("guest-remove", HOST)
async def guest_remove(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    # The name may become a file name (a persistent definition): check it first.
    check_name(args["name"])
    await ctx.app.remove_guest(args["name"], forget=True)
    return {}


@command("query-guests", HOST)
def query_guests(ctx: Ctx, args: dict[str, Any]) -> list[dict[str, Any]]:
    return [ctx.app.guest_info(slot) for slot in ctx.app.slots.values()]
