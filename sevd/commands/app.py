"""The application as commands see it: the host, every scope's command table, the event hubs.

`App` is built once by the daemon. It checks that the schema and the registered handlers
name exactly the same commands per scope (an inconsistency stops the daemon at boot), turns
domain events into QMP events (wire names and timestamps are decided here, DESIGN §2), and
adds and removes guests together with their sockets, which it asks the daemon to open
through the injected `Sockets`.
"""

from __future__ import annotations

import asyncio
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
from sevd.domain.platform import SevPlatform
from sevd.domain.psp import SevError
from sevd.domain.sev import LaunchError, SevGuest, SevState
from sevd.hmp.parser import DumpDefaults
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
    dump_defaults: DumpDefaults = field(default_factory=DumpDefaults)
    next_tick: float = 0.0
    gdbserver: Any = None  # the guest's gdb stub (sevd.transports.gdb.GdbServer), if started


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
        # Injected by the daemon: the SEV platform, file access within the configured
        # directories, the built-in firmware image, and persistence.
        self.platform: SevPlatform | None = None
        self.read_file: Callable[[str], bytes] = _no_files
        self.builtin_firmware = b""
        self.dump_dir = "dumps"
        self.save_identity: Callable[[bytes], None] = lambda data: None
        self.save_definition: Callable[[str, dict[str, Any]], None] = lambda n, a: None
        self.delete_definition: Callable[[str], bool] = lambda n: False
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

    async def add_guest(self, config: GuestConfig, args: dict[str, Any] | None = None
                        ) -> GuestSlot:
        """Create, launch and expose a guest; on any failure nothing is left behind."""
        self.host.check_new(config)
        name = config.name
        guest = Guest(config, on_event=self._guest_event)
        sev = None
        if config.sev is not None:
            if self.platform is None:
                raise DomainError("SEV is not enabled in KVM")
            sev = SevGuest(self.platform, guest.machine, config.sev,
                           on_state=lambda old, new: self._sev_state(name, old, new))
        guest.attach(sev, self.platform.profile.cbitpos if self.platform else 51)
        slot = GuestSlot(guest=guest, hub=EventHub(), dispatcher=Dispatcher(self, GUEST, guest))
        self.slots[name] = slot
        try:
            try:
                guest.launch()
            except LaunchError as e:
                from sevd.commands.sev import launch_error_text
                raise DomainError(launch_error_text(e)) from None
            if self.sockets is not None:
                await self.sockets.open_guest(slot)
            self.host.add(guest)
            if config.start:
                try:
                    guest.start()
                except SevError as e:
                    from sevd.commands.sev import launch_finish_text
                    raise DomainError(launch_finish_text(e)) from None
        except BaseException:
            self.slots.pop(name, None)
            self.host.guests.pop(name, None)
            guest.destroy()
            if slot.socket_path and self.sockets is not None:
                await self.sockets.close_guest(slot)
            raise
        if config.persistent and args is not None:
            self.save_definition(name, args)
        log.info("guest %s added (%s%s)", name, guest.state.value,
                 f", SEV {sev.state.value}, ASID {sev.asid}" if sev else "")
        self.emit(None, "SEVD_GUEST_ADDED", {"name": name})
        return slot

    def _sev_state(self, name: str, old: SevState, new: SevState) -> None:
        # Changes during guest-add are the launch itself; reported only once the guest
        # exists, so a failed guest-add leaves no trace on the wire either.
        if name not in self.host.guests:
            return
        data = {"name": name, "state": new.value, "previous": old.value}
        self.emit(name, "SEVD_SEV_STATE_CHANGE", data)
        self.emit(None, "SEVD_SEV_STATE_CHANGE", data)

    def spawn(self, coro: Any) -> None:
        """Run a coroutine a command started; the daemon awaits these at shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def identity_changed(self) -> None:
        if self.platform is not None:
            self.save_identity(self.platform.export_identity())

    async def remove_guest(self, name: str, forget: bool = False) -> None:
        """End a guest instance; `forget` also deletes its persistent definition."""
        slot = self.slots.get(name)
        if slot is None:
            if forget and self.delete_definition(name):
                # A persistent guest that quit: only its definition is left to remove.
                log.info("definition of guest %s removed", name)
                return
            raise DomainError(f"Guest '{name}' not found")
        self.host.remove(name)
        if slot.gdbserver is not None:
            slot.gdbserver.close()
        try:
            if self.sockets is not None:
                await self.sockets.close_guest(slot)
        finally:
            del self.slots[name]
        if forget:
            self.delete_definition(name)
        log.info("guest %s removed", name)
        self.emit(None, "SEVD_GUEST_REMOVED", {"name": name})

    def tick(self, now: float) -> None:
        """Run the workload of every running guest whose interval has passed."""
        for slot in self.slots.values():
            g = slot.guest
            if g.running and now >= slot.next_tick:
                slot.next_tick = now + g.config.workload.interval
                try:
                    g.tick()
                except Exception:
                    log.exception("workload of guest %s failed", g.name)

    def wrap_handlers(self, wrap: Callable[[str, Handler], Handler]) -> None:
        """Replace every handler by `wrap(name, handler)`, in place (dispatchers share the
        tables). The HTTP side times commands this way while it is on; when it is off nothing
        is wrapped and the hot path keeps its plain counters only."""
        for table in self.tables.values():
            for name, (cmd, handler) in table.items():
                table[name] = (cmd, wrap(name, handler))

    def query(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """Run host command `name` for a read-only view that is not a QMP session (HTTP):
        its result, or QmpError with the text a QMP client would get. The handler is called
        as registered (not wrapped, not counted in `stats`: it is not a QMP command)."""
        from sevd.commands.registry import Ctx
        from sevd.protocol.errors import QmpError

        handler = handlers()[(HOST, name)]
        try:
            return handler(Ctx(None, self, None), args or {})
        except DomainError as e:
            raise QmpError(str(e)) from None

    def memory_map(self, name: str) -> list[tuple[int, int, str]]:
        """Guest `name`'s physical memory as runs of (start, end, "private" | "shared" |
        "untouched"), for read-only views (KeyError for an unknown guest)."""
        from sevd.domain.debug import page_kinds

        return page_kinds(self.slots[name].guest)

    @staticmethod
    def firmware_status_code(name: str) -> int | None:
        """The AMD status number of a status name as the firmware's failure counters key it
        (e.g. "BAD_MEASUREMENT" → 11), for read-only views; None if it names none."""
        from sevd.domain.psp import SevStatus

        if name.startswith("0x"):  # a status without an AMD name (status_name())
            return int(name, 16)
        try:
            return int(SevStatus[name])
        except KeyError:
            return None

    def guest_info(self, slot: GuestSlot) -> dict[str, Any]:
        g = slot.guest
        info: dict[str, Any] = {
            "name": g.name, "uuid": g.config.uuid, "status": g.state.value,
            "running": g.running, "memory": g.config.memory, "cpus": g.config.cpus,
            "socket": slot.socket_path, "persistent": g.config.persistent}
        if g.sev is not None:
            info["sev"] = {"state": g.sev.state.value, "handle": g.sev.handle,
                           "asid": g.sev.asid, "policy": g.sev.spec.policy, "es": g.sev.es}
        return info


def _no_files(path: str) -> bytes:
    raise DomainError(f"Could not open '{path}': no file access is configured")
