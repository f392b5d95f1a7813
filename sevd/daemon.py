"""Wiring: configuration → schema → application → listeners; signals and shutdown.

The daemon owns every long-lived object: the control endpoint, one endpoint per guest, the
lock that keeps a second daemon off the same runtime directory, and the shutdown sequence
(stop accepting, let in-flight commands finish and their replies go out, SHUTDOWN events,
close sessions, remove socket files).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from sevd import __version__, systemd
from sevd.commands.app import App, GuestSlot
from sevd.commands.schema import Schema
from sevd.config import Config, ConfigError
from sevd.domain.errors import DomainError
from sevd.files import ensure_dir, open_for_read
from sevd.protocol.session import Limits
from sevd.state import StateDir
from sevd.transports.unix import (
    AccessPolicy,
    ConnectionBudget,
    EndpointOptions,
    SocketPathError,
    UnixEndpoint,
    check_path,
)

if TYPE_CHECKING:
    from sevd.transports.http import HttpServer

log = logging.getLogger("sevd")


class StartupError(Exception):
    """The daemon cannot start; the text says why."""


class Daemon:
    def __init__(self, config: Config, *, validate_returns: bool = False) -> None:
        self.config = config
        self.validate_returns = validate_returns
        self.stopping = asyncio.Event()
        self.endpoints: dict[str, UnixEndpoint] = {}
        self.control: UnixEndpoint | None = None
        self._lock_fd: int | None = None
        self.supervisor = systemd.Supervisor(self.status_line)
        c = config
        self.options = EndpointOptions(
            limits=Limits(max_message=c["qmp.max_message"], max_nesting=c["qmp.max_nesting"],
                          max_output=c["qmp.max_output"],
                          negotiation_timeout=c["qmp.negotiation_timeout"] or None),
            access=AccessPolicy(frozenset(c["access.allow_uids"]),
                                frozenset(c["access.allow_gids"])),
            max_clients=c["qmp.max_clients_per_socket"], backlog=c["qmp.backlog"],
            socket_mode=int(c["qmp.socket_mode"], 8))
        self.budget = ConnectionBudget(max_total=c["qmp.max_clients_total"])
        major, minor, micro = (int(x) for x in c["qmp.qemu_version"].split("."))
        self.app = App(Schema(), qemu_version=(major, minor, micro),
                       validate_returns=validate_returns)
        self.app.sockets = self
        self.app.request_quit = self.stopping.set
        self.state = StateDir(config.state_dir)
        self.app.read_file = lambda name: open_for_read(name, c["paths.firmware_dirs"])
        self.app.builtin_firmware = builtin_firmware()
        self.app.dump_dir = c["paths.dump_dir"]
        self.app.save_identity = lambda data: self.state.save_identity(self.profile, data)
        self.app.save_definition = self.state.save_guest
        self.app.delete_definition = self.state.delete_guest
        self.profile: str = c["platform.profile"]
        self._ticker: asyncio.Task[None] | None = None
        self.http: HttpServer | None = None  # the read-only HTTP side, when configured
        self._started = False

    # -- guest sockets (App.sockets) --------------------------------------------------------

    def guest_socket_path(self, name: str) -> str:
        return str(self.config.guest_socket_dir / f"{name}.qmp")

    async def open_guest(self, slot: GuestSlot) -> None:
        path = self.guest_socket_path(slot.guest.name)
        try:
            check_path(path)
            endpoint = UnixEndpoint(path, slot.dispatcher, slot.hub, self.app.greeting,
                                    self.options, self.budget)
            await endpoint.start()
        except SocketPathError as e:
            raise DomainError(str(e)) from None
        except OSError as e:
            raise DomainError(f"Cannot create socket '{path}': {e.strerror}") from None
        slot.socket_path = path
        self.endpoints[slot.guest.name] = endpoint

    async def close_guest(self, slot: GuestSlot) -> None:
        endpoint = self.endpoints.pop(slot.guest.name, None)
        if endpoint is not None:
            await endpoint.close()

    # -- lifecycle --------------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        rd = self.config.runtime_dir
        for d in (rd, self.config.guest_socket_dir, Path(self.config.control_socket).parent):
            ensure_dir(d, 0o750)  # exactly 0750 whatever the umask: group members traverse
        ensure_dir(self.config.state_dir, 0o700)
        fd = os.open(rd / "sevd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(f"another sevd is running on {rd} (it holds {rd}/sevd.lock); "
                               "refusing to take over its sockets") from None
        self._lock_fd = fd
        # Guest sockets of a crashed predecessor: nobody can be listening on them now.
        for stale in self.config.guest_socket_dir.glob("*.qmp"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def _start_platform(self) -> None:
        """Load (or, the first time, create) the platform identity and INIT the firmware."""
        from sevd.domain.platform import SevPlatform
        from sevd.domain.psp import generate

        self.state.prepare()
        if self.profile == "none":
            log.info("profile none: a host without SEV")
            return
        seed = bytes.fromhex(self.config["platform.seed"]) or None
        identity = self.state.load_identity(self.profile)
        if identity is None:
            log.info("generating the %s platform identity (RSA roots: a few seconds, once)",
                     self.profile)
            identity = generate(self.profile, seed).to_bytes()
        try:
            self.app.platform = SevPlatform(identity, profile=self.profile, seed=seed)
        except (ValueError, KeyError) as e:
            raise StartupError(f"platform identity in {self.config.state_dir} is unusable: "
                               f"{e}") from None
        self.app.identity_changed()  # INIT may have created keys

    async def _restore_guests(self) -> None:
        from sevd.commands.guests import build_config
        from sevd.commands.registry import Ctx

        ctx = Ctx(None, self.app, None)
        for args in self.state.load_guests():
            try:
                await self.app.add_guest(build_config(ctx, args), None)
            except DomainError as e:
                log.error("persistent guest %s not launched: %s", args.get("name"), e)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.05)
            self.app.tick(loop.time())

    async def start(self) -> None:
        # Signals first: a SIGTERM that arrives while the platform loads or guests are
        # restored (sockets may already accept) must stop the daemon gracefully, not kill it.
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._sighup)
        self._prepare_dirs()
        self._start_platform()
        try:
            # Under socket activation the control socket comes from sevd.socket (matched by
            # FileDescriptorName=control or by its path); whatever else is passed is unused.
            inherited = systemd.listen_fds()
            sock = systemd.take_socket(inherited, "control", self.config.control_socket)
            for extra in inherited:
                log.warning("ignoring inherited socket fd %d (name %s, path %s): neither named "
                            "'control' (FileDescriptorName=) nor bound at %s "
                            "(paths.control_socket)", extra.sock.fileno(), extra.name,
                            extra.path, self.config.control_socket)
                extra.sock.close()
            self.control = UnixEndpoint(self.config.control_socket, self.app.control,
                                        self.app.host_hub, self.app.greeting, self.options,
                                        self.budget)
            await self.control.start(sock)
        except systemd.ActivationError as e:
            raise StartupError(str(e)) from None
        except (SocketPathError, OSError) as e:
            raise StartupError(f"cannot listen on {self.config.control_socket}: {e}") from None
        await self._restore_guests()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        if self.config["http.listen"]:
            await self._start_http()
        self._started = True

    async def _start_http(self) -> None:
        # Imported here, and only when configured: aiohttp and prometheus-client cost start-up
        # time and memory that a daemon without HTTP never pays (issue #3).
        from sevd.transports.http import HttpServer, ListenError

        self.http = HttpServer(self.app, sessions=self.session_counts,
                               problems=self.readiness_problems)
        try:
            await self.http.start(self.config["http.listen"], self.config.runtime_dir,
                                  socket_mode=self.options.socket_mode,
                                  backlog=self.options.backlog)
        except ListenError as e:
            raise StartupError(str(e)) from None

    def session_counts(self) -> dict[str, int]:
        """Connected QMP clients on the control socket and on guest sockets."""
        return {"control": len(self.control.sessions) if self.control else 0,
                "guest": sum(len(e.sessions) for e in self.endpoints.values())}

    def readiness_problems(self) -> list[str]:
        """Why the daemon is not ready (empty: every listener up, state loaded)."""
        problems = []
        if self.stopping.is_set():
            problems.append("stopping")
        if not self._started:
            problems.append("starting: guests and listeners not all up yet")
        if self.app.platform is None and self.profile != "none":
            problems.append("SEV platform not loaded")
        if self.control is None or self.control.server is None \
                or not self.control.server.is_serving():
            problems.append("control socket not listening")
        for name, endpoint in self.endpoints.items():
            if endpoint.server is None or not endpoint.server.is_serving():
                problems.append(f"guest {name}: socket not listening")
        return problems

    def _sighup(self) -> None:
        # Logs go to stderr (journald): there is no log file to reopen. What is safe to change
        # under running sessions is re-read from the same file/flags (config.RELOADABLE) and
        # applied to connections made from now on; the rest is named as needing a restart.
        try:
            new = self.config.reload()
        except ConfigError as e:
            log.error("SIGHUP: configuration not reloaded, keeping the running one: %s", e)
            return
        applied, restart = self.config.changes(new)
        limits, opts = self.options.limits, self.options
        limits.max_message, limits.max_nesting = new["qmp.max_message"], new["qmp.max_nesting"]
        limits.max_output = new["qmp.max_output"]
        limits.negotiation_timeout = new["qmp.negotiation_timeout"] or None
        opts.access = AccessPolicy(frozenset(new["access.allow_uids"]),
                                   frozenset(new["access.allow_gids"]))
        opts.max_clients = new["qmp.max_clients_per_socket"]
        self.budget.max_total = new["qmp.max_clients_total"]
        logging.getLogger().setLevel(new["log.level"].upper())
        for key in applied:
            section, _, name = key.partition(".")
            self.config.values[(section, name)] = new[key]
        log.info("SIGHUP: reloaded %s: %s%s", self.config.source,
                 ", ".join(applied) or "no changes",
                 f"; needs a restart (not applied): {', '.join(restart)}" if restart else "")

    def status_line(self) -> str:
        """The one-line summary systemd shows (STATUS=)."""
        guests = len(self.app.slots)
        return (f"{guests} guest{'s' * (guests != 1)}, "
                f"{self.budget.current} client{'s' * (self.budget.current != 1)}")

    async def run(self) -> int:
        await self.start()
        assert self.control is not None
        print(f"sevd {__version__} listening on {self.control.path} "
              f"(guest sockets in {self.config.guest_socket_dir})", flush=True)
        self.supervisor.ready()
        try:
            await self.stopping.wait()
            self.supervisor.stopping()
            await self.shutdown()
        finally:
            await self.supervisor.aclose()
        return 0

    async def shutdown(self) -> None:
        log.info("shutting down")
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        endpoints = [e for e in [self.control, *self.endpoints.values()] if e is not None]
        for e in endpoints:
            e.stop_accepting()
        # Let in-flight commands finish so their replies are written.
        pending = {s._task for e in endpoints for s in e.sessions
                   if s._task is not None and not s._task.done()}
        pending |= set(self.app.background)
        if pending:
            await asyncio.wait(pending, timeout=self.config["daemon.shutdown_timeout"])
        for slot in list(self.app.slots.values()):
            self.app.emit(slot.guest.name, "SHUTDOWN", {"guest": False, "reason": "host-signal"})
        for name in list(self.app.slots):
            with contextlib.suppress(DomainError):
                await self.app.remove_guest(name)
        if self.http is not None:
            # After the guests' SHUTDOWN and removal events, so event streams carry them.
            await self.http.close()
        if self.control is not None:
            await self.control.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def builtin_firmware() -> bytes:
    """sevd's own firmware image, shipped in the package (DESIGN §4)."""
    from importlib import resources

    return (resources.files("sevd") / "data" / "sevd-builtin.fd").read_bytes()
