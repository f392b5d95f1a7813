"""Load on a real daemon: 1,000 concurrent clients, a client that never reads, clients that
leave in the middle of a reply; the daemon keeps serving and its memory stays bounded.

Proves, against `python -m sevd` (limits raised for the test: `--max-clients 2048` per
socket, since 1,000 clients plus the others exceed the default 1,024; the total limit and
the listen backlog keep their defaults, 4,096 and 2,048):

- 1,000 clients connect to one guest socket at once (the listen backlog takes the burst),
  each negotiates, and all are connected at the same moment before any runs a command;
  then each runs `query-status`, `human-monitor-command` `info status`, `stop`, `cont`
  and `query-status` again, and gets the right reply for each (events from the others'
  stop/cont arrive in between and are skipped);
- meanwhile a client floods cheap commands and never reads (the daemon stops reading it:
  back-pressure), another floods commands with 1.4 MB replies and never reads (the daemon
  disconnects it once its unread output passes `qmp.max_output`), and 100 clients send a
  command with a large reply and close at once (the reply is cut, nothing breaks);
- a probe client's round trip stays bounded throughout;
- the daemon's resident memory (VmRSS) stays within a stated bound of its baseline while
  all this happens, and returns close to the baseline once the clients have left;
- at the end it still answers, and has logged no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import statistics
import time
from typing import Any

import pytest
from proof_support import Probe, Sevd, qmp_line, spawn, tracebacks

CLIENTS = 1000
LEAVERS = 100
GUEST = "ld"
MAX_OUTPUT = 64 << 20  # qmp.max_output's default
BIG = b'{"execute":"x-sevd-query-memory","arguments":{"gpa":0,"size":1048576}}'
# Bounds on VmRSS growth over the baseline, in KiB. An idle negotiated session costs about
# 3 KiB (measured); the peak allows 16 KiB per client, the flooding client's unread output up
# to qmp.max_output before it is cut off, every big reply of a wave's leavers in memory at
# once (1.4 MB each), and 32 MiB for the allocator. Afterwards: within 24 MiB of the
# baseline (what the allocator keeps), and no growth from one wave to the next beyond 8 MiB.
PEAK_KIB = CLIENTS * 16 + MAX_OUTPUT // 1024 + LEAVERS // 2 * 1400 + 32 * 1024
AFTER_KIB = 24 * 1024
WAVE_GROWTH_KIB = 8 * 1024
PROBE_MAX_S = 1.0  # worst probe round trip while everything runs (2 cores, noisy)
WAVES = 3


@pytest.fixture
def files_for_clients() -> None:
    """1,000 clients need more descriptors than a default soft limit of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < CLIENTS + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for {CLIENTS} clients")
    if soft != resource.RLIM_INFINITY and soft < CLIENTS + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Conn:
    """A negotiated client connection that reads replies by id, skipping events."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.events = 0

    @classmethod
    async def open(cls, path: str) -> Conn:
        reader, writer = await asyncio.open_unix_connection(path, limit=1 << 24)
        c = cls(reader, writer)
        assert "QMP" in qmp_line(await asyncio.wait_for(reader.readline(), 60))
        writer.write(b'{"execute":"qmp_capabilities"}')
        assert await c.reply() == {"return": {}}
        return c

    async def reply(self) -> dict[str, Any]:
        while True:
            msg = qmp_line(await asyncio.wait_for(self.reader.readline(), 60))
            if "event" not in msg:
                return msg
            self.events += 1

    async def call(self, name: str, args: dict[str, Any] | None = None,
                   cid: str = "x") -> dict[str, Any]:
        msg: dict[str, Any] = {"execute": name, "id": cid}
        if args is not None:
            msg["arguments"] = args
        self.writer.write(json.dumps(msg).encode())
        reply = await self.reply()
        assert reply.get("id") == cid and "return" in reply, reply
        return reply

    def close(self) -> None:
        self.writer.close()


async def client(path: str, n: int, connected: asyncio.Barrier,
                 done: asyncio.Barrier) -> int:
    """One of the 1,000: connect, wait for all the others, run its commands, wait again."""
    c = await Conn.open(path)
    try:
        await connected.wait()
        status = await c.call("query-status", cid=f"{n}-a")
        assert status["return"]["status"] in ("prelaunch", "running", "paused"), status
        hmp = await c.call("human-monitor-command", {"command-line": "info status"}, f"{n}-b")
        assert hmp["return"].startswith("VM status: "), hmp
        await c.call("stop", cid=f"{n}-c")
        await c.call("cont", cid=f"{n}-d")
        await c.call("query-status", cid=f"{n}-e")
        await done.wait()
        return c.events
    finally:
        c.close()


async def flood(path: str, command: bytes, stop: asyncio.Event) -> str:
    """Send `command` over and over and never read a byte; say how it ended."""
    c = await Conn.open(path)
    chunk = command * 256
    try:
        while not stop.is_set():
            c.writer.write(chunk)
            try:
                await asyncio.wait_for(c.writer.drain(), 0.5)
            except TimeoutError:
                continue  # the daemon stopped reading us: keep the pressure on
        return "still connected"
    except (ConnectionError, BrokenPipeError):
        return "disconnected"
    finally:
        c.writer.transport.abort()


async def leave_mid_reply(path: str, command: bytes) -> None:
    """Ask for a large reply and close at once (RST: unread data is discarded)."""
    c = await Conn.open(path)
    c.writer.write(command)
    await c.writer.drain()
    c.writer.transport.abort()


async def sample_rss(d: Sevd, stop: asyncio.Event, samples: list[int]) -> None:
    while not stop.is_set():
        samples.append(d.rss_kib())
        await asyncio.sleep(0.05)


async def test_load_1000_clients(files_for_clients: None) -> None:
    d = spawn("--log-level", "warning", "--max-clients", "2048")
    probe: Probe | None = None
    try:
        setup = await Conn.open(d.control)
        await setup.call("guest-add", {"name": GUEST, "sev-guest": {
            "policy": 1, "cbitpos": 51, "reduced-phys-bits": 1}})
        setup.close()
        path = d.guest_socket(GUEST)
        # Warm up (first-use compilation, allocator pools), then the baseline.
        await wave(path, 50, 5)
        await asyncio.sleep(0.5)
        baseline = d.rss_kib()
        hwm_reset = d.reset_peak()

        stop = asyncio.Event()
        samples: list[int] = []
        sampler = asyncio.create_task(sample_rss(d, stop, samples))
        probe = Probe(path)
        floods = [asyncio.create_task(flood(path, b'{"execute":"query-status"}', stop)),
                  asyncio.create_task(flood(path, BIG, stop))]
        t0 = time.monotonic()
        events = 0
        after_wave = []
        for _ in range(WAVES):
            events += await wave(path, CLIENTS, LEAVERS)
            await asyncio.sleep(0.3)
            after_wave.append(d.rss_kib())
        elapsed = time.monotonic() - t0
        rtts = probe.finish()
        probe = None
        stop.set()
        cheap, big = [await f for f in floods]
        await sampler
        peak = max([*samples, d.rss_kib("VmHWM") if hwm_reset else 0])

        # Everyone has left: memory comes back close to the baseline.
        after = d.rss_kib()
        deadline = time.monotonic() + 10
        while after > baseline + AFTER_KIB and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            after = d.rss_kib()
        end = await Conn.open(path)
        final = await end.call("query-status", cid="end")
        end.close()
        log = d.log()

        mib = [f"{x / 1024:.0f}" for x in after_wave]
        print(f"\nload: {WAVES} waves of {CLIENTS} clients + {LEAVERS} leaving mid-reply in "
              f"{elapsed:.1f} s, {events} events read; probe: {len(rtts)} round trips, "
              f"median {statistics.median(rtts) * 1000:.1f} ms, max {max(rtts) * 1000:.0f} ms; "
              f"VmRSS (MiB): baseline {baseline / 1024:.0f}, peak {peak / 1024:.0f}, after "
              f"each wave {', '.join(mib)}, at the end {after / 1024:.0f}; flood of cheap "
              f"commands: {cheap}; flood of big replies: {big}")
        assert d.alive()
        assert "return" in final
        assert max(rtts) <= PROBE_MAX_S, f"probe round trip {max(rtts):.2f} s"
        assert peak <= baseline + PEAK_KIB, (peak, baseline)
        assert after <= baseline + AFTER_KIB, (after, baseline)
        # No growth from wave to wave: sessions leave nothing behind.
        assert after_wave[-1] <= after_wave[0] + WAVE_GROWTH_KIB, after_wave
        # Back-pressure kept the cheap flood connected; the big one passed qmp.max_output.
        assert cheap == "still connected"
        assert big == "disconnected"
        assert "bytes of output unread" in log
        assert not tracebacks(log), "\n\n".join(tracebacks(log).values())
    finally:
        if probe is not None:
            probe.proc.kill()
        with contextlib.suppress(Exception):
            d.stop()
        d.cleanup()


async def wave(path: str, clients: int, leavers: int) -> int:
    """`clients` clients connected at once running their commands, and `leavers` leaving in
    the middle of a large reply (half query-qmp-schema, half 1.4 MB); the events read."""
    connected, done = asyncio.Barrier(clients), asyncio.Barrier(clients)
    gone = [leave_mid_reply(path, BIG if i % 2 else b'{"execute":"query-qmp-schema"}')
            for i in range(leavers)]
    results = await asyncio.gather(*(client(path, i, connected, done) for i in range(clients)),
                                   *gone)
    return sum(r for r in results[:clients] if r)
