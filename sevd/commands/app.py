"""The application as commands see it: the host, every scope's command table, the event hubs.

`App` is built once by the daemon. It checks that the schema and the registered handlers
name exactly the same commands per scope (an inconsistency stops the daemon at boot), turns
domain events into QMP events (wire names and timestamps are decided here, DESIGN §2), and
adds and removes guests together with their sockets, which it asks the daemon to open
through the injected `Sockets`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sevd import __version__
from sevd.commands.registry import GUEST, HOST, Dispatcher, Handler, handlers
from sevd.commands.schema import CommandSchema, Schema, SchemaError
from sevd.domain.errors import DomainError
from sevd.domain.guest import Guest, GuestConfig
from sevd.domain.host import Host
from sevd.protocol import jsonwrite
from sevd.protocol.session import EventHub

log = logging.getLogger("sevd")


@dataclass
class Stats:
    """Plain counters, cheap enough for the hot path; the HTTP side reads them."""

    commands: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def count_error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1


@dataclass
class GuestSlot:
    """A guest together with what makes it a QEMU process: its monitor socket and state."""

    guest: Guest
    hub: EventHub
    dispatcher: Dispatcher
    socket_path: str = ""
    # HMP's sticky x/xp format and size, shared by all sessions of the guest (DESIGN §5).
    dump_defaults: Any = None


class Sockets(Protocol):
    """Opens and closes guest sockets (sevd.transports via the daemon)."""

    async def open_guest(self, slot: GuestSlot) -> None: ...

    async def close_guest(self, slot: GuestSlot) -> None: ...


EventListener = Callable[[str | None, dict[str, Any]], None]


class App:
    def __init__(self, schema: Schema, *, qemu_version: tuple[int, int, int] = (9, 2, 0),
                 package: str = f"sevd {__version__}", validate_returns: bool = False) -> None:
        self.schema = schema
        self.host = Host()
        self.qemu_version = qemu_version
        self.package = package
        self.validate_returns = validate_returns
        self.stats = Stats()
        self.tables = self._tables(schema, handlers())
        self.host_hub = EventHub()
        self.slots: dict[str, GuestSlot] = {}
        self.sockets: Sockets | None = None
        self.listeners: list[EventListener] = []
        self.background: set[Any] = set()  # tasks started by commands, awaited at shutdown
        self.request_quit: Callable[[], None] = lambda: None
        self.control = Dispatcher(self, HOST, None)
        self.greeting = jsonwrite.message({"QMP": {
            "version": self.version_info(), "capabilities": ["oob"]}})

    @staticmethod
    def _tables(schema: Schema, regs: dict[tuple[str, str], Handler]
                ) -> dict[str, dict[str, tuple[CommandSchema, Handler]]]:
        tables: dict[str, dict[str, tuple[CommandSchema, Handler]]] = {HOST: {}, GUEST: {}}
        for scope in (HOST, GUEST):
            declared = {c.name for c in schema.for_scope(scope)}
            registered = {name for (s, name) in regs if s == scope}
            if declared != registered:
                raise SchemaError(
                    f"{scope} scope: schema without handler: {sorted(declared - registered)}; "
                    f"handler without schema: {sorted(registered - declared)}")
            for name in sorted(declared):
                tables[scope][name] = (schema.commands[name], regs[(scope, name)])
        return tables

    def version_info(self) -> dict[str, Any]:
        major, minor, micro = self.qemu_version
        return {"qemu": {"major": major, "minor": minor, "micro": micro},
                "package": self.package}

    # -- events -----------------------------------------------------------------------------

    def emit(self, guest_name: str | None, event: str, data: dict[str, Any] | None = None
             ) -> None:
        """Send an event to every negotiated session of its scope (and to listeners)."""
        now = time.time_ns() // 1000
        msg: dict[str, Any] = {"timestamp": {"seconds": now // 1_000_000,
                                             "microseconds": now % 1_000_000},
                               "event": event}
        if data is not None:
            msg["data"] = data
        hub = self.host_hub if guest_name is None else self.slots[guest_name].hub
        hub.broadcast(jsonwrite.message(msg))
        for listener in self.listeners:
            listener(guest_name, msg)

    def _guest_event(self, guest: Guest, event: str, data: dict[str, Any] | None) -> None:
        if guest.name in self.slots:
            self.emit(guest.name, event, data)

    # -- guests -----------------------------------------------------------------------------

    async def add_guest(self, config: GuestConfig) -> GuestSlot:
        self.host.check_new(config)
        guest = self.make_guest(config)
        slot = GuestSlot(guest=guest, hub=EventHub(),
                         dispatcher=Dispatcher(self, GUEST, guest))
        self.slots[config.name] = slot
        try:
            if self.sockets is not None:
                await self.sockets.open_guest(slot)
            self.host.add(guest)
        except BaseException:
            del self.slots[config.name]
            guest.destroy()
            raise
        if config.start:
            guest.start()
        log.info("guest %s added (%s)", config.name, guest.state.value)
        self.emit(None, "SEVD_GUEST_ADDED", {"name": config.name})
        return slot

    def make_guest(self, config: GuestConfig) -> Guest:
        return Guest(config, on_event=self._guest_event)

    async def remove_guest(self, name: str) -> None:
        slot = self.slots.get(name)
        if slot is None:
            raise DomainError(f"Guest '{name}' not found")
        self.host.remove(name)
        try:
            if self.sockets is not None:
                await self.sockets.close_guest(slot)
        finally:
            del self.slots[name]
        log.info("guest %s removed", name)
        self.emit(None, "SEVD_GUEST_REMOVED", {"name": name})

    def guest_info(self, slot: GuestSlot) -> dict[str, Any]:
        g = slot.guest
        return {"name": g.name, "uuid": g.config.uuid, "status": g.state.value,
                "running": g.running, "memory": g.config.memory, "cpus": g.config.cpus,
                "socket": slot.socket_path}
