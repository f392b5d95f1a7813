"""systemd integration: readiness and watchdog notification, socket activation, journald logs.

- `Notifier` speaks the sd_notify(3) protocol: one datagram of `KEY=VALUE` lines on the
  AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
- `Supervisor` is the daemon's side of `Type=notify`: READY=1 with a STATUS= line once every
  socket listens, WATCHDOG=1 pings from the event loop at (at most) half of `$WATCHDOG_USEC`
  (so a blocked loop misses them and systemd restarts the service), STATUS= refreshed when it
  changes, STOPPING=1 when shutdown begins.
- `listen_fds()` is sd_listen_fds(3) with names (`$LISTEN_FDS`, `$LISTEN_PID`,
  `$LISTEN_FDNAMES`, descriptors from 3), and `take_socket()` picks the one meant for a given
  listener, by name or by the path it is bound to.
- `setup_logging()` writes one line per record to stderr; when stderr is the journal
  (`$JOURNAL_STREAM` names stderr's device and inode) lines carry a `<N>` syslog priority
  prefix instead of a timestamp, which journald turns into the entry's level and time.

Why the standard library rather than `sdnotify` or `systemd-python`: both protocols are small
stable interfaces that systemd documents for reimplementation (the notify protocol is one
`sendto()`, activation is three environment variables); `systemd-python` needs libsystemd's
headers and a C compiler (it ships no wheels), and `sdnotify` covers neither the abstract
namespace nor activation nor the watchdog. A hundred lines tested against a real datagram
listener and `systemd-socket-activate` cost less than either dependency.

Imports nothing from the rest of sevd; the daemon wires it in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import ClassVar

log = logging.getLogger("sevd.systemd")

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): passed descriptors start at 3
STATUS_PERIOD = 1.0      # seconds between checks of the STATUS= line (sent only when changed)


# -- sd_notify -------------------------------------------------------------------------------


class Notifier:
    """Sends sd_notify messages; a no-op when the service manager did not ask for them."""

    def __init__(self, address: str | None) -> None:
        self.address: str | bytes | None = None
        self._sock: socket.socket | None = None
        if not address:
            return
        if address.startswith("@"):
            # Abstract namespace: '@' stands for the leading NUL byte (sd_notify(3)).
            self.address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self.address = address
        else:
            # e.g. "vsock:CID:PORT" (systemd ≥ 254, for VMs); not a case sevd runs in.
            log.warning("NOTIFY_SOCKET=%s: unsupported address, not notifying", address)
            return
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=VALUE` fields as one message; False if not sent (never raises)."""
        if self._sock is None or self.address is None:
            return False
        data = "\n".join(fields).encode()
        try:
            self._sock.sendto(data, self.address)
        except OSError as e:
            # The manager may be gone (e.g. during its own shutdown); the daemon carries on.
            log.debug("sd_notify %r failed: %s", fields, e)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None
                      ) -> float | None:
    """sd_watchdog_enabled(3): the watchdog timeout in seconds, or None when it is off.

    `$WATCHDOG_PID`, when set, must name this process (the variable may have been inherited
    by a child that is not the service's main process).
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    wpid = env.get("WATCHDOG_PID", "")
    if wpid and wpid != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 1_000_000


class Supervisor:
    """The daemon's conversation with its service manager over its lifetime.

    `status` returns the one-line summary for STATUS= (e.g. "3 guests, 5 clients"); it is
    called on the event loop and must be cheap.
    """

    def __init__(self, status: Callable[[], str], env: Mapping[str, str] | None = None,
                 notifier: Notifier | None = None) -> None:
        self.notifier = notifier if notifier is not None else Notifier.from_env(env)
        self.watchdog = watchdog_interval(env) if self.notifier.enabled else None
        self.status = status
        self._last_status = ""
        self._task: asyncio.Task[None] | None = None

    def ready(self) -> None:
        """READY=1 (call once every socket listens) and start the watchdog/status loop."""
        if not self.notifier.enabled:
            return
        self._last_status = self.status()
        self.notifier.send("READY=1", f"STATUS={self._last_status}")
        # The pings come from a task on the daemon's own loop: if the loop blocks, the pings
        # stop and systemd's watchdog notices — which is the point of WatchdogSec=.
        self._task = asyncio.get_running_loop().create_task(self._tick(), name="sd-notify")

    @property
    def period(self) -> float:
        """Seconds between ticks: half the watchdog timeout (systemd's advice), at most 1 s."""
        return STATUS_PERIOD if self.watchdog is None else min(self.watchdog / 2, STATUS_PERIOD)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            fields = ["WATCHDOG=1"] if self.watchdog is not None else []
            status = self.status()
            if status != self._last_status:
                self._last_status = status
                fields.append(f"STATUS={status}")
            if fields:
                self.notifier.send(*fields)

    def stopping(self, status: str = "Shutting down") -> None:
        """STOPPING=1: shutdown has begun (the watchdog keeps being fed until aclose)."""
        self._last_status = status
        self.notifier.send("STOPPING=1", f"STATUS={status}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.notifier.close()


# -- socket activation -----------------------------------------------------------------------


class ActivationError(Exception):
    """An inherited descriptor cannot serve as the socket it was meant for."""


@dataclass
class Inherited:
    """One descriptor passed by the service manager."""

    sock: socket.socket
    name: str           # from $LISTEN_FDNAMES; "unknown" when not named (as sd_listen_fds)
    path: str | None    # the AF_UNIX path it is bound to, if any


def listen_fds(env: MutableMapping[str, str] | None = None, pid: int | None = None,
               unset: bool = True) -> list[Inherited]:
    """sd_listen_fds_with_names(3): the sockets systemd passed to this process.

    The variables are removed afterwards (`unset`) so that nothing this process starts
    mistakes them for its own, as sd_listen_fds(unset_environment=1) does.
    """
    env = os.environ if env is None else env
    try:
        if env.get("LISTEN_PID", "") != str(os.getpid() if pid is None else pid):
            return []  # meant for another process (e.g. our parent)
        count = int(env.get("LISTEN_FDS", "0"))
        names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    except ValueError:
        return []
    finally:
        if unset:
            for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                env.pop(key, None)
    if len(names) != count:
        names = ["unknown"] * count
    out: list[Inherited] = []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        os.set_inheritable(fd, False)  # FD_CLOEXEC, as sd_listen_fds does
        try:
            sock = socket.socket(fileno=fd)  # family and type are read from the descriptor
        except OSError:
            log.warning("inherited descriptor %d (%s) is not a socket; ignored", fd, names[i])
            continue
        path: str | None = None
        if sock.family == socket.AF_UNIX:
            name = sock.getsockname()
            if isinstance(name, str) and name.startswith("/"):
                path = name
        out.append(Inherited(sock, names[i], path))
    return out


def take_socket(inherited: list[Inherited], name: str, path: str) -> socket.socket | None:
    """Remove and return the inherited socket named `name` or bound at `path`, if any.

    It must be a listening AF_UNIX stream socket; anything else is an ActivationError (a
    misconfigured socket unit should fail loudly, not serve nothing).
    """
    want = os.path.abspath(path)
    for i, item in enumerate(inherited):
        if item.name == name or (item.path is not None and os.path.abspath(item.path) == want):
            sock = item.sock
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
                raise ActivationError(
                    f"inherited descriptor {sock.fileno()} ({item.name}) is not a listening "
                    "unix stream socket; use ListenStream=<path> and Accept=no")
            del inherited[i]
            return sock
    return None


# -- logging ---------------------------------------------------------------------------------


def stderr_is_journal(env: Mapping[str, str] | None = None) -> bool:
    """True when stderr is connected to journald ($JOURNAL_STREAM = "<device>:<inode>")."""
    env = os.environ if env is None else env
    dev, _, ino = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (int(dev), int(ino)) == (st.st_dev, st.st_ino)
    except (ValueError, OSError):
        return False


class JournalFormatter(logging.Formatter):
    """`<N>logger: message` — the syslog priority prefix journald reads (SyslogLevelPrefix=)."""

    PRIORITY: ClassVar[dict[int, int]] = {logging.DEBUG: 7, logging.INFO: 6,
                                          logging.WARNING: 4, logging.ERROR: 3,
                                          logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        prio = self.PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        # One journal entry per record: continuation lines (tracebacks) keep the priority.
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def setup_logging(level: str, env: Mapping[str, str] | None = None) -> None:
    """Log records at `level` and above to stderr, shaped for the journal when it is there."""
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal(env):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
