"""Unix-socket listeners (bound here or inherited from systemd) that serve QMP sessions.

An `UnixEndpoint` is one listening socket of one scope: the control socket or a guest's
monitor socket. It admits or refuses each connection (peer credentials, connection limits)
before the greeting, and on close removes its socket file and closes its sessions. A socket
inherited from systemd's socket unit is served as it is and never unlinked: the unit owns
the file and keeps listening on it while the daemon restarts.

Sockets are created 0660 (configurable) under a umask, so the file never exists with looser
permissions; a stale file left by a crashed daemon is replaced only after a connect() finds
nobody listening on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from dataclasses import dataclass, field

from sevd.protocol.session import Dispatcher, EventHub, Limits, QmpSession

log = logging.getLogger("sevd.transport")

SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


class SocketPathError(Exception):
    """A socket path that cannot be used; the text is for the user."""


@dataclass
class AccessPolicy:
    """Who may connect: root always; otherwise the listed uids/gids (empty = anyone)."""

    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()

    def allows(self, uid: int, gid: int) -> bool:
        if uid == 0 or (not self.uids and not self.gids):
            return True
        return uid in self.uids or gid in self.gids


@dataclass
class ConnectionBudget:
    """Connections across every socket of the daemon."""

    max_total: int = 4096
    current: int = 0


@dataclass
class EndpointOptions:
    limits: Limits = field(default_factory=Limits)
    access: AccessPolicy = field(default_factory=AccessPolicy)
    max_clients: int = 1024
    backlog: int = 2048       # >= 1,000 clients connecting at once, as the issue demands
    socket_mode: int = 0o660


def check_path(path: str) -> None:
    n = len(os.fsencode(path))
    if n > SUN_PATH_MAX:
        raise SocketPathError(f"Socket path '{path}' is {n} bytes long, over the "
                              f"{SUN_PATH_MAX}-byte limit of unix sockets")


def bind_unix(path: str, mode: int, backlog: int) -> socket.socket:
    """Bind a listening socket at `path`, recovering a stale socket file left by a crash."""
    check_path(path)
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketPathError(f"'{path}' exists and is not a socket")
        # Non-blocking, so that a live listener with a full backlog (EAGAIN) counts as live
        # instead of blocking the daemon's start.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            probe.connect(path)
        except OSError as e:
            if e.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN):
                raise
            if e.errno == errno.EAGAIN:
                raise SocketPathError(f"'{path}' is in use by another process") from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # nobody listens: a stale file from a crash
            log.info("removed stale socket %s", path)
        else:
            raise SocketPathError(f"'{path}' is in use by another process")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Bind under a umask so the file never exists with looser permissions than `mode`.
        old = os.umask(0o777 & ~mode)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, mode)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class UnixEndpoint:
    """One listening socket and its sessions (implements protocol.session.Endpoint)."""

    def __init__(self, path: str, dispatcher: Dispatcher, hub: EventHub, greeting: bytes,
                 options: EndpointOptions, budget: ConnectionBudget) -> None:
        self.path = path
        self.dispatcher = dispatcher
        self.hub = hub
        self.greeting = greeting
        self.options = options
        self.limits = options.limits
        self.budget = budget
        self.sessions: set[QmpSession] = set()
        self.server: asyncio.AbstractServer | None = None
        self.owns_file = True

    async def start(self, sock: socket.socket | None = None) -> None:
        """Serve on `sock` (inherited from systemd) or on a socket bound at `self.path`."""
        if sock is None:
            sock = bind_unix(self.path, self.options.socket_mode, self.options.backlog)
        else:
            self.owns_file = False  # systemd's socket unit owns the file
            bound = sock.getsockname()
            if isinstance(bound, str) and bound:
                self.path = bound  # the unit's ListenStream= path is the truth
            sock.setblocking(False)
            log.info("serving %s on a socket inherited from the service manager (fd %d)",
                     self.path, sock.fileno())
        loop = asyncio.get_running_loop()
        # asyncio calls listen(backlog) again, also on an inherited socket: the configured
        # backlog applies either way.
        self.server = await loop.create_unix_server(lambda: QmpSession(self), sock=sock,
                                                    backlog=self.options.backlog)

    def admit(self, session: QmpSession) -> str | None:
        peer = session.peer
        if peer is not None and not self.options.access.allows(peer.uid, peer.gid):
            log.warning("refused connection on %s from pid=%d uid=%d gid=%d",
                        self.path, peer.pid, peer.uid, peer.gid)
            return f"Access denied: uid {peer.uid} is not allowed on this socket"
        if len(self.sessions) >= self.options.max_clients:
            log.warning("refused connection on %s: %d clients (limit)", self.path,
                        len(self.sessions))
            return f"Too many clients on this socket (limit {self.options.max_clients})"
        if self.budget.current >= self.budget.max_total:
            log.warning("refused connection on %s: %d clients in total (limit)", self.path,
                        self.budget.current)
            return f"Too many clients (limit {self.budget.max_total})"
        self.sessions.add(session)
        self.budget.current += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s connected to %s", session.describe(), self.path)
        return None

    def closed(self, session: QmpSession) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self.budget.current -= 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s left %s", session.describe(), self.path)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def close(self, unlink: bool = True) -> None:
        """Stop listening, close every session (flushing what was written), remove the file."""
        self.stop_accepting()
        for s in list(self.sessions):
            s.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
        if unlink and self.owns_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
