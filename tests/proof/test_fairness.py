"""One client's pipelined batch cannot hold the event loop (sevd.protocol.session turns).

Proves that a session:
- handles a batch for at most `TURN` seconds, then stops reading and lets the loop serve
  others, and finishes the batch on later iterations with every reply in request order,
  reading again only once its queue is empty;
- reads through one shared buffer of `READ_SIZE` bytes (asyncio's BufferedProtocol), so
  that one read of a client's garbage costs the exact parser a bounded time;
- on a real daemon, keeps a probe client's round trip short while another client floods
  commands that each cost half a millisecond (without turns, one 64 KiB read of them would
  hold the loop for a third of a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any

from proof_support import Probe, spawn

from sevd.protocol import jsonwrite
from sevd.protocol.errors import QmpError
from sevd.protocol.session import (
    READ_SIZE,
    TURN,
    Dispatcher,
    EventHub,
    Limits,
    QmpSession,
)


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def lines(self) -> list[bytes]:
        return bytes(self.out).splitlines()


class Endpoint:
    """Commands: `qmp_capabilities`, and `spin` that takes a millisecond of CPU."""

    def __init__(self) -> None:
        self.dispatcher: Dispatcher = self
        self.hub = EventHub()
        self.limits = Limits()
        self.greeting = b'{"QMP": {}}\r\n'

    def admit(self, session: QmpSession) -> str | None:
        return None

    def closed(self, session: QmpSession) -> None:
        pass

    def dispatch(self, session: QmpSession, name: str, args: dict[str, Any] | None,
                 oob: bool) -> str | Awaitable[str]:
        if name == "qmp_capabilities":
            session.complete_negotiation(False)
            return "{}"
        if name == "spin":
            end = time.perf_counter() + 0.001
            while time.perf_counter() < end:
                pass
            return jsonwrite.encode_value(args or {})
        raise QmpError(f"The command {name} has not been found")


async def test_a_long_batch_is_split_into_turns_in_order() -> None:
    t = Transport()
    s = QmpSession(Endpoint())
    s.connection_made(t)
    s.data_received(b'{"execute":"qmp_capabilities"}')
    n = int(TURN / 0.001) * 4
    t.out.clear()
    s.data_received(b"".join(b'{"execute":"spin","arguments":{"n":%d}}' % i for i in range(n)))
    first = len(t.lines())
    # The first turn ended after about TURN seconds of 1 ms commands; reading is paused.
    assert 1 <= first < n
    assert not t.reading
    turns = 1
    while len(t.lines()) < n:
        await asyncio.sleep(0)
        turns += 1
        assert turns < 10 * n
    assert turns >= 3
    assert t.lines() == [b'{"return": {"n": %d}}' % i for i in range(n)]
    assert t.reading


async def test_what_arrives_during_a_turn_break_waits_its_turn() -> None:
    t = Transport()
    s = QmpSession(Endpoint())
    s.connection_made(t)
    s.data_received(b'{"execute":"qmp_capabilities"}')
    t.out.clear()
    n = int(TURN / 0.001) * 3
    s.data_received(b'{"execute":"spin","arguments":{"n":0}}' * n)
    assert not t.reading
    # Already read when reading paused (asyncio may still deliver one buffer): queued.
    s.data_received(b'{"execute":"spin","arguments":{"n":1}}')
    while not t.reading:
        await asyncio.sleep(0)
    assert t.lines() == [b'{"return": {"n": 0}}'] * n + [b'{"return": {"n": 1}}']


def test_reads_go_through_one_bounded_buffer() -> None:
    a, b = QmpSession(Endpoint()), QmpSession(Endpoint())
    buf = a.get_buffer(-1)
    assert len(buf) == READ_SIZE <= 64 << 10
    assert b.get_buffer(1 << 20) is buf  # shared: 1,000 sessions do not cost 64 MiB


async def test_a_flood_of_costly_commands_does_not_stall_others() -> None:
    d = spawn("--log-level", "warning")
    probe: Probe | None = None
    try:
        reader, writer = await asyncio.open_unix_connection(d.control)
        await reader.readline()
        writer.write(b'{"execute":"qmp_capabilities"}{"execute":"guest-add",'
                     b'"arguments":{"name":"fair"}}')
        await reader.readline()
        line = await reader.readline()
        while b'"event"' in line:
            line = await reader.readline()
        assert b'"return"' in line, line
        writer.close()
        path = d.guest_socket("fair")
        probe = Probe(path, interval=0.01)
        await asyncio.sleep(0.3)
        # Each reads and encodes 64 KiB of guest memory: about half a millisecond. The
        # flooder never reads; the daemon works through its batch, turn by turn, until its
        # unread output passes qmp.max_output (64 MiB: about 750 replies) and cuts it off.
        costly = b'{"execute":"x-sevd-query-memory","arguments":{"gpa":0,"size":65536}}'
        reader, writer = await asyncio.open_unix_connection(path)
        await reader.readline()
        t0 = time.monotonic()
        writer.write(b'{"execute":"qmp_capabilities"}' + costly * 2000)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        while "bytes of output unread" not in d.log() and time.monotonic() - t0 < 30:
            await asyncio.sleep(0.01)
        flood = time.monotonic() - t0
        writer.transport.abort()
        rtts = probe.finish()
        probe = None
        assert flood > 0.15, f"the flood lasted only {flood:.2f} s: nothing to prove"
        assert len(rtts) > 10
        assert max(rtts) < 0.15, f"probe round trip {max(rtts) * 1000:.0f} ms during the flood"
    finally:
        if probe is not None:
            probe.proc.kill()
        d.stop()
        d.cleanup()
