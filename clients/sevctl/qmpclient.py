"""Talking to sevd: find the control socket, run commands with qemu.qmp's QMPClient.

Only qemu.qmp speaks QMP here (the reference client); this module adds the socket lookup of
DESIGN §3 (`--socket`, `$SEVD_SOCKET`, the defaults) and a guest's socket via query-guests.
"""

from __future__ import annotations

import os
from typing import Any

from qemu.qmp import ExecuteError, QMPClient


class CliError(Exception):
    """A failure to report as one line on stderr with a non-zero exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def default_socket() -> str:
    """`$SEVD_SOCKET`, else where sevd puts its control socket by default (DESIGN §3)."""
    if os.environ.get("SEVD_SOCKET"):
        return os.environ["SEVD_SOCKET"]
    if os.environ.get("RUNTIME_DIRECTORY"):
        return os.path.join(os.environ["RUNTIME_DIRECTORY"].split(":")[0], "sevd.sock")
    candidates = []
    if os.getuid() == 0:
        candidates.append("/run/sevd/sevd.sock")
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "sevd", "sevd.sock"))
    candidates += [os.path.abspath(os.path.join("sevd-run", "sevd.sock")), "/run/sevd/sevd.sock"]
    for c in candidates:
        if os.path.exists(c):
            return c
    return candidates[0]


class Connection:
    """One QMP connection for the duration of a CLI call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.client = QMPClient("sevctl")

    async def __aenter__(self) -> Connection:
        try:
            await self.client.connect(self.path)
        except Exception as e:  # qemu.qmp wraps OSError in ConnectError
            cause = e.__cause__ or e
            raise CliError(f"cannot connect to {self.path}: {cause}", 2) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    async def execute(self, name: str, args: dict[str, Any] | None = None) -> Any:
        try:
            return await self.client.execute(name, args)
        except ExecuteError as e:
            raise CliError(f"{name}: {e.error_class}: {e.error.error.desc}") from None


async def guest_socket(control: str, name: str) -> str:
    async with Connection(control) as c:
        guests = await c.execute("query-guests")
    for g in guests:
        if g["name"] == name:
            return str(g["socket"])
    raise CliError(f"no guest named '{name}'")
