"""One QMP connection: greeting, negotiation, the envelope rules, ordering, events.

A session is an `asyncio.Protocol`: bytes arrive in `data_received`, go through the stream
parser, and each complete message is checked as QEMU's `qmp_dispatch()` checks it before the
command is handed to the injected `Dispatcher` (this layer knows no command and nothing of
SEV). Replies are written in request order: a command whose handler is a coroutine pauses
reading until its reply is out, so in-band commands never overtake each other.

Output is bounded: a client that stops reading first stops being read from (back-pressure),
and is disconnected once its unread output passes the session's limit, so it can never stall
the event loop or other clients.

Turns are bounded too, so that one client's pipelined batch cannot hold the event loop
(QEMU's main loop runs one command per iteration): a session reads at most `READ_SIZE`
bytes at a time, and once it has spent `TURN` seconds on a batch it queues the rest and
stops reading until the loop's next iteration.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sevd.protocol import jsonwrite
from sevd.protocol.errors import COMMAND_NOT_FOUND, GENERIC, QmpError
from sevd.protocol.jsonstream import MAX_NESTING, MAX_TOKEN_SIZE, JsonStreamParser, ParseError

log = logging.getLogger("sevd.qmp")

_NOT_NEGOTIATED = "Expecting capabilities negotiation with 'qmp_capabilities'"

# Bytes read (and parsed) per turn: a 64 KiB of garbage costs the exact parser 25-100 ms;
# asyncio's own reads are 256 KiB.
READ_SIZE = 64 << 10
# Seconds of command handling per turn before the rest of a batch waits for the next one.
TURN = 0.005
# One read buffer for every session: asyncio fills it and hands it over in one synchronous
# step (get_buffer, recv_into, buffer_updated) on the loop's thread, and buffer_updated
# copies the bytes out; 64 KiB per session would cost 64 MiB for 1,000 clients.
_READ_BUFFER = memoryview(bytearray(READ_SIZE))


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end of a unix socket (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


@dataclass(slots=True)
class Limits:
    """Per-endpoint limits; every one has a tested behaviour (see docs/architecture.md)."""

    max_message: int = MAX_TOKEN_SIZE        # bytes in one message (QEMU's ceiling: 64 MiB)
    max_nesting: int = MAX_NESTING           # JSON nesting depth (QEMU: 1024)
    max_output: int = 64 << 20               # unread reply/event bytes before disconnecting
    negotiation_timeout: float | None = None  # seconds; None = wait forever, as QEMU does


class Dispatcher(Protocol):
    """What the commands layer offers a session (injected; see sevd.commands.registry)."""

    def dispatch(self, session: QmpSession, name: str, args: dict[str, Any] | None,
                 oob: bool) -> str | Awaitable[str]:
        """Run a command; return its `return` value as JSON text, or raise QmpError."""
        ...


class EventHub:
    """The negotiated sessions of one scope; events go to each of them, never to others."""

    def __init__(self) -> None:
        self.sessions: set[QmpSession] = set()
        self.listeners: list[Callable[[bytes], None]] = []

    def broadcast(self, line: bytes) -> None:
        for s in list(self.sessions):
            s.write(line)
        for listener in self.listeners:
            listener(line)


class Endpoint(Protocol):
    """The listening side a session belongs to (sevd.transports.unix implements it)."""

    dispatcher: Dispatcher
    hub: EventHub
    limits: Limits
    greeting: bytes

    def admit(self, session: QmpSession) -> str | None:
        """Return a refusal text, or None to admit the session."""
        ...

    def closed(self, session: QmpSession) -> None: ...


class QmpSession(asyncio.BufferedProtocol):
    """One client connection on a QMP socket."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.negotiated = False
        self.oob_enabled = False
        self.peer: Peer | None = None
        self.transport: asyncio.Transport | None = None
        self._parser = JsonStreamParser(max_token_size=endpoint.limits.max_message,
                                        max_nesting=endpoint.limits.max_nesting)
        self._queue: collections.deque[Any] = collections.deque()
        self._busy = False           # an async command is in flight, or the turn is over
        self._write_paused = False   # the transport's buffer is over its high-water mark
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closing = False

    # -- connection lifecycle ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = _peer_of(transport)
        refusal = self.endpoint.admit(self)
        if refusal is not None:
            # A refused peer gets no greeting: one error line, then the connection closes.
            transport.write(jsonwrite.reply_error(GENERIC, refusal, None))
            self.closing = True
            transport.close()
            return
        limit = self.endpoint.limits
        # Let the kernel buffer absorb bursts, but pause reading a client that does not read.
        transport.set_write_buffer_limits(high=min(limit.max_output, 1 << 20))
        transport.write(self.endpoint.greeting)
        if limit.negotiation_timeout:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(limit.negotiation_timeout, self._negotiation_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.endpoint.hub.sessions.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._queue.clear()
        self.endpoint.closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.transport is not None and not self._busy and not self.closing:
            self.transport.resume_reading()

    def close(self) -> None:
        """Close after what has been written is flushed."""
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.close()

    def _negotiation_expired(self) -> None:
        if not self.negotiated:
            log.info("closing %s: capabilities not negotiated in time", self.describe())
            self.close()

    def describe(self) -> str:
        p = self.peer
        return f"client pid={p.pid} uid={p.uid}" if p else "client"

    # -- called by the commands layer -------------------------------------------------------

    def complete_negotiation(self, oob: bool) -> None:
        self.negotiated = True
        self.oob_enabled = oob
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.endpoint.hub.sessions.add(self)

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is None or self.closing:
            return
        t.write(data)
        if t.get_write_buffer_size() > self.endpoint.limits.max_output:
            log.warning("disconnecting %s: %d bytes of output unread",
                        self.describe(), t.get_write_buffer_size())
            self.closing = True
            t.abort()

    # -- input ------------------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_READ_BUFFER[:nbytes]))

    def data_received(self, data: bytes) -> None:
        msgs = self._parser.feed(data)
        if self._busy:
            self._queue.extend(msgs)
            return
        self._run(msgs)

    def _run(self, msgs: list[Any]) -> None:
        """Handle `msgs` in order; an async command, or the end of the turn, queues the rest."""
        deadline = time.perf_counter() + TURN if len(msgs) > 1 else 0.0
        for i, msg in enumerate(msgs):
            if self.closing:
                return
            pending = self._handle(msg)
            if pending is not None:
                self._queue.extend(msgs[i + 1:])
                self._start_async(pending)
                return
            if deadline and i + 1 < len(msgs) and time.perf_counter() > deadline:
                self._queue.extend(msgs[i + 1:])
                self._end_turn()
                return

    def _end_turn(self) -> None:
        # Other clients get the loop; this one reads nothing more until its queue is done,
        # so its replies stay in order.
        self._busy = True
        assert self.transport is not None
        self.transport.pause_reading()
        asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        if self.closing:
            return
        msgs = list(self._queue)
        self._queue.clear()
        self._busy = False
        self._run(msgs)
        if not self._busy and not self.closing and not self._write_paused \
                and self.transport is not None:
            self.transport.resume_reading()

    def _start_async(self, pending: tuple[Awaitable[str], str | None]) -> None:
        self._busy = True
        assert self.transport is not None
        self.transport.pause_reading()
        self._task = asyncio.get_running_loop().create_task(self._finish_async(*pending))
        # A connection lost before the task ran cancels it unstarted: the command's own
        # coroutine was then never awaited; close it rather than leave it to the collector.
        self._task.add_done_callback(functools.partial(_close_unstarted, pending[0]))

    async def _finish_async(self, result: Awaitable[str], id_json: str | None) -> None:
        self._reply(await _settle(result), id_json)
        while self._queue and not self.closing:
            pending = self._handle(self._queue.popleft())
            if pending is not None:
                self._reply(await _settle(pending[0]), pending[1])
        self._busy = False
        if not self.closing and not self._write_paused and self.transport is not None:
            self.transport.resume_reading()

    def _reply(self, outcome: tuple[bool, Any], id_json: str | None) -> None:
        ok, value = outcome
        if ok:
            self.write(jsonwrite.reply_ok(value, id_json))
        else:
            self.write(jsonwrite.reply_error(value.cls, value.desc, id_json))

    def _handle(self, msg: Any) -> tuple[Awaitable[str], str | None] | None:
        """Answer one parsed message; return (awaitable, id) when the answer is not ready."""
        if type(msg) is not dict:
            desc = msg.desc if isinstance(msg, ParseError) else "QMP input must be a JSON object"
            self.write(jsonwrite.reply_error(GENERIC, desc, None))
            return None
        id_json = jsonwrite.encode_value(msg["id"]) if "id" in msg else None
        try:
            name, args, oob = self._check_envelope(msg)
            result = self.endpoint.dispatcher.dispatch(self, name, args, oob)
        except QmpError as e:
            self.write(jsonwrite.reply_error(e.cls, e.desc, id_json))
            return None
        except Exception:
            # A bug, whatever the input: asyncio would drop the connection if it escaped
            # data_received. The client gets an error reply, the session goes on (DESIGN §7).
            log.exception("handling a message failed")
            self.write(jsonwrite.reply_error(GENERIC, "internal error", id_json))
            return None
        if type(result) is str:
            self.write(jsonwrite.reply_ok(result, id_json))
            return None
        return result, id_json  # type: ignore[return-value]

    def _check_envelope(self, msg: dict[str, Any]) -> tuple[str, dict[str, Any] | None, bool]:
        """qmp_dispatch_check_obj() and the negotiation gate, with QEMU's texts."""
        try:
            exec_key = self._check_members(msg)
        except QmpError:
            # QEMU checks the members in its QDict's iteration order, not the order they
            # were sent in; with two faults that order decides the text (`execute` with
            # `exec-oob` always gives "'execute' clashes with 'exec-oob'"). Without a fault
            # the order does not matter, so only a faulty message pays for computing it.
            self._check_members(msg, qdict_order(msg))
            raise
        if exec_key is None:
            raise QmpError("QMP input lacks member 'execute'")
        name: str = msg[exec_key]
        if not self.negotiated and name != "qmp_capabilities":
            raise QmpError(_NOT_NEGOTIATED, COMMAND_NOT_FOUND)
        return name, msg.get("arguments"), exec_key == "exec-oob"

    def _check_members(self, msg: dict[str, Any], order: Iterable[str] | None = None
                       ) -> str | None:
        """The member checks of qmp_dispatch_check_obj(); the key of the command name."""
        exec_key: str | None = None
        for key in msg if order is None else order:
            value = msg[key]
            if key == "execute" or (key == "exec-oob" and self.oob_enabled):
                if type(value) is not str:
                    raise QmpError(f"QMP input member '{key}' must be a string")
                if exec_key is not None:
                    raise QmpError(f"QMP input member '{key}' clashes with '{exec_key}'")
                exec_key = key
            elif key == "arguments":
                if type(value) is not dict:
                    raise QmpError("QMP input member 'arguments' must be an object")
            elif key != "id":
                raise QmpError(f"QMP input member '{key}' is unexpected")
        return exec_key


def _tdb_hash(key: str) -> int:
    """tdb_hash() of qobject/qdict.c, in 32-bit unsigned arithmetic."""
    raw = key.encode("utf-8", "surrogatepass")
    value = (0x238F13AF * len(raw)) & 0xFFFFFFFF
    for i, c in enumerate(raw):
        value = (value + (c << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * value + 12345) & 0xFFFFFFFF


def qdict_order(keys: Iterable[str]) -> list[str]:
    """Keys in the order QEMU's qdict_first()/qdict_next() visit them.

    Buckets (`tdb_hash % 512`) in ascending order; inside a bucket the key inserted last
    comes first (QLIST_INSERT_HEAD). Only the envelope check uses it: sevd's own output keeps
    its declared order (DESIGN §8).
    """
    indexed = list(enumerate(keys))
    indexed.sort(key=lambda ik: (_tdb_hash(ik[1]) % 512, -ik[0]))
    return [k for _, k in indexed]


def _close_unstarted(aw: Awaitable[str], _task: object) -> None:
    if inspect.iscoroutine(aw) and inspect.getcoroutinestate(aw) == inspect.CORO_CREATED:
        aw.close()


async def _settle(result: Awaitable[str]) -> tuple[bool, Any]:
    try:
        return True, await result
    except QmpError as e:
        return False, e
    except asyncio.CancelledError:
        raise
    except Exception:  # the commands layer already logs; never let a session die of it
        log.exception("command failed unexpectedly")
        return False, QmpError("internal error")


_PEERCRED = struct.Struct("3i")


def _peer_of(transport: asyncio.Transport) -> Peer | None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        pid, uid, gid = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    except OSError:
        return None
    return Peer(pid, uid, gid)
