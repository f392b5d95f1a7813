"""The listener behind HMP ``gdbserver``: the GDB remote protocol on a unix socket or on
loopback TCP, one debugger at a time, as QEMU serves it.

:func:`parse_gdbserver_device` reads QEMU's device strings (``tcp::1234``, the default;
``tcp:127.0.0.1:PORT``; ``unix:PATH``, with QEMU's chardev options; ``none`` to stop) and
:func:`serve_gdb` listens on one, giving each connection a fresh
:class:`~sevd.protocol.gdb.GdbSession` over a target from ``target_factory``.

Where sevd differs from QEMU, on purpose: the stub gives plaintext access to guest memory
(the debug path), so TCP listens on loopback only (``tcp::PORT`` binds 127.0.0.1, where
QEMU binds every interface, and any other host is refused) and a unix socket is created
mode 0600; a second debugger is disconnected at once instead of waiting unanswered in the
backlog; a ``unix:`` device always listens (QEMU needs ``server=on`` for that).

This module imports the gdb packet engine and the unix-socket helpers; it must not import
``sevd.domain`` or ``sevd.commands`` (the target is injected), and it needs no daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sevd.protocol.gdb import GdbSession, GdbTarget
from sevd.transports.unix import SocketPathError, bind_unix

__all__ = [
    "DEFAULT_DEVICE",
    "GdbDevice",
    "GdbDeviceError",
    "GdbServer",
    "parse_gdbserver_device",
    "serve_gdb",
]

log = logging.getLogger("sevd.gdb")

#: HMP ``gdbserver`` without an argument (QEMU's "tcp::" DEFAULT_GDBSTUB_PORT).
DEFAULT_DEVICE = "tcp::1234"

_LOOPBACK_NAMES = ("localhost",)
# Chardev options QEMU accepts on these backends that mean nothing more for a listener that
# never blocks: QEMU itself appends "wait=off,nodelay=on,server=on" to tcp: devices.
_IGNORED_OPTIONS = {"wait", "nowait", "nodelay", "server", "ipv4", "ipv6", "reconnect"}


class GdbDeviceError(ValueError):
    """A gdbserver device string sevd cannot serve; the text is for the user."""


@dataclass(frozen=True)
class GdbDevice:
    """Where a gdbserver listens: a unix socket path, or a loopback host and TCP port."""

    kind: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


def _options(device: str, opts: list[str]) -> None:
    for opt in opts:
        key, _, value = opt.partition("=")
        if key not in _IGNORED_OPTIONS:
            raise GdbDeviceError(f"gdbserver: unsupported option '{opt}' in '{device}'")
        if (key == "server" and value in ("off", "no", "false")) or key == "reconnect":
            raise GdbDeviceError(f"gdbserver: '{device}' would connect out; sevd's "
                                 "gdbserver only listens")


def _loopback(device: str, host: str) -> str:
    if host == "":
        return "127.0.0.1"  # QEMU's "tcp::PORT" means every interface; sevd: loopback only
    if host.lower() in _LOOPBACK_NAMES:
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if addr is None or not addr.is_loopback:
        raise GdbDeviceError(
            f"gdbserver: refusing to listen on '{host}' ('{device}'): the gdb stub reads "
            "and writes guest memory in plaintext, so it listens on loopback only "
            "(tcp::PORT, tcp:127.0.0.1:PORT, tcp:localhost:PORT) or on a unix socket")
    return str(addr)


def parse_gdbserver_device(device: str | None) -> GdbDevice | None:
    """QEMU's gdbserver device string: None means stop (``none``); no argument means the
    default ``tcp::1234``. Raises GdbDeviceError for anything sevd will not serve."""
    if device is None:
        device = DEFAULT_DEVICE
    if device == "":
        raise GdbDeviceError("gdbstub: missing connection string")  # QEMU's text
    if device == "none":
        return None
    spec, *opts = device.split(",")
    if spec.startswith("unix:"):
        _options(device, opts)
        path = spec[5:]
        if not path:
            raise GdbDeviceError(f"gdbserver: '{device}' names no socket path")
        return GdbDevice("unix", path=path)
    if spec.startswith("tcp:"):
        _options(device, opts)
        rest = spec[4:]
        if rest.startswith("["):  # tcp:[::1]:1234
            host, sep, port_text = rest[1:].partition("]:")
        else:
            host, sep, port_text = rest.rpartition(":")
        if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise GdbDeviceError(f"gdbserver: '{device}' needs a TCP port (tcp::PORT)")
        return GdbDevice("tcp", host=_loopback(device, host), port=int(port_text))
    raise GdbDeviceError(f"gdbserver: unsupported device '{device}': use tcp::PORT, "
                         "tcp:127.0.0.1:PORT or unix:PATH")


class _GdbConnection(asyncio.Protocol):
    """One debugger's connection: bytes to the packet engine and its replies back."""

    def __init__(self, server: GdbServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.session: GdbSession | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.server.client is not None or self.server.closing:
            # QEMU's socket chardev serves one client; sevd says so at once instead of
            # leaving the second debugger waiting in the backlog.
            log.warning("gdbserver %s: refused a second debugger", self.server.device)
            transport.close()
            return
        try:
            target = self.server.target_factory()
        except Exception:
            log.exception("gdbserver %s: could not create the debug target",
                          self.server.device)
            transport.close()
            return
        self.session = GdbSession(target, monitor=self.server.monitor)
        self.server.client = self
        log.info("gdbserver %s: debugger connected", self.server.device)

    def data_received(self, data: bytes) -> None:
        session, transport = self.session, self.transport
        if session is None or transport is None:
            return
        out = session.receive(data)
        if out:
            transport.write(out)
        if session.closed:
            transport.close()  # flushes what was written (D's "OK") first

    def pause_writing(self) -> None:
        # A debugger that sends requests without reading the replies stops being read
        # from, so its replies cannot pile up without bound.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.server.client is self:
            self.server.client = None
            log.info("gdbserver %s: debugger disconnected", self.server.device)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.close()


class GdbServer:
    """A listening gdbserver; :meth:`close` stops it (and drops its debugger)."""

    def __init__(self, device: GdbDevice, target_factory: Callable[[], GdbTarget],
                 monitor: Callable[[str], str] | None) -> None:
        self.device = device
        self.target_factory = target_factory
        self.monitor = monitor
        self.client: _GdbConnection | None = None
        self.closing = False
        self._server: asyncio.AbstractServer | None = None
        self._sock: socket.socket | None = None
        self._inode: tuple[int, int] | None = None

    @property
    def address(self) -> str:
        """The device actually served (for TCP, the bound port)."""
        return str(self.device)

    @property
    def connected(self) -> bool:
        return self.client is not None

    def bind(self) -> None:
        """Create the listening socket now (synchronously), so that the monitor can print
        a failure at once, as QEMU's gdbserver_start() does."""
        if self.device.kind == "unix":
            try:
                sock = bind_unix(self.device.path, 0o600, 1)
            except SocketPathError as e:
                raise GdbDeviceError(f"gdbserver: {e}") from None
            st = os.stat(self.device.path)
            self._inode = (st.st_dev, st.st_ino)
            self._sock = sock
            return
        family = socket.AF_INET6 if ":" in self.device.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.device.host, self.device.port))
            sock.listen(1)
            sock.setblocking(False)
            # QEMU's tcp gdbstub adds nodelay=on: replies are small and latency-bound.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            sock.close()
            raise GdbDeviceError(f"gdbserver: cannot listen on {self.device}: "
                                 f"{e.strerror or e}") from None
        self.device = GdbDevice("tcp", host=self.device.host, port=sock.getsockname()[1])
        self._sock = sock

    async def serve(self) -> None:
        """Start accepting on the socket bind() created."""
        loop = asyncio.get_running_loop()
        sock, self._sock = self._sock, None
        assert sock is not None, "bind() first"
        if self.device.kind == "unix":
            self._server = await loop.create_unix_server(lambda: _GdbConnection(self),
                                                         sock=sock)
        else:
            self._server = await loop.create_server(lambda: _GdbConnection(self), sock=sock)

    async def _start(self) -> None:
        self.bind()
        await self.serve()

    def close(self) -> None:
        """Stop listening, disconnect the debugger, remove the unix socket file."""
        if self.closing:
            return
        self.closing = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._server is not None:
            self._server.close()
        if self.client is not None:
            self.client.abort()
        if self.device.kind == "unix" and self._inode is not None:
            # Only the file this server bound: another listener may have replaced it.
            with contextlib.suppress(OSError):
                st = os.stat(self.device.path)
                if (st.st_dev, st.st_ino) == self._inode:
                    os.unlink(self.device.path)

    async def wait_closed(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def __aenter__(self) -> GdbServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def serve_gdb(device: str, target_factory: Callable[[], GdbTarget], *,
                    monitor: Callable[[str], str] | None = None) -> GdbServer:
    """Listen for gdb on ``device`` (a QEMU gdbserver device string other than ``none``).

    ``target_factory`` is called once per debugger connection; if it raises, that
    connection is closed and the error logged. ``monitor`` serves gdb's ``monitor``
    command (``qRcmd``): it gets the HMP command line and returns the text to show.
    """
    parsed = parse_gdbserver_device(device)
    if parsed is None:
        raise GdbDeviceError("gdbserver: 'none' stops the gdbserver; there is nothing to "
                             "listen on")
    server = GdbServer(parsed, target_factory, monitor)
    await server._start()
    log.info("gdbserver listening on %s", server.address)
    return server
