"""Machine identity and accelerator queries of a guest socket."""

from __future__ import annotations

from typing import Any

from sevd.commands.registry import GUEST, Ctx, command


@command("query-name", GUEST)
def query_name(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": ctx.the_guest.name}


@command("query-uuid", GUEST)
def query_uuid(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    return {"UUID": ctx.the_guest.config.uuid}


def mem_encryption(ctx: Ctx) -> bool:
    return ctx.the_guest.sev is not None


@command("query-kvm", GUEST)
def query_kvm(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    # A real SEV host runs KVM; the RFC's mem-encryption says whether this guest is encrypted.
    return {"enabled": True, "present": True, "mem-encryption": mem_encryption(ctx)}
