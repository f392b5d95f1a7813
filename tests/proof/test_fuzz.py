"""Fuzzing a real daemon: at least 100,000 random and mutated messages, zero crashes.

Proves, against `python -m sevd` over its unix sockets (with `--validate-returns`, so a
reply that breaks its command's schema is reported too), that for any input:

- the process stays alive and logs no traceback;
- no reply says "internal error" (a bug, not bad input) or breaks its schema;
- every line the daemon writes is one QMP message in QEMU's writer form (checked byte for
  byte by an independent encoder, `proof_support.qmp_line`): a reply (`return`, or
  `error` with exactly `class` and `desc`) or an event;
- the stream stays in sync: after each batch of messages the client sends QEMU's documented
  reset (a control character, ESC) and a marker command; every marker is answered, in
  order, so nothing was swallowed, reordered or lost (a lost marker fails with the batch
  that preceded it);
- at the end the daemon still answers `query-status` on a guest socket and
  `query-version` on the control socket;
- every command of both scopes (query-commands) was sent with random arguments, at least
  100 times, valid or mutated.

A finding fails the test with the batch of input that preceded it, unless it is reported
and pinned by a strict xfail in test_findings.py, which lists its reply text and traceback
signature in `KNOWN` until it is fixed.

Three streams run at once: the guest socket (guest-scope commands, HMP with random
formats and expressions), the control socket (host-scope commands, guests added and removed
from a small pool of names), and a series of fresh connections that never negotiate.
Messages come from `fuzz_messages.Generator` (seeded); batches are pipelined, many
messages per write. `SEVD_FUZZ_SEED` and `SEVD_FUZZ_MESSAGES` override the seed
(default fixed, for a reproducible suite) and the count.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import re
import time
from typing import Any

from fuzz_messages import Generator
from proof_support import Sevd, internal_failure, qmp_line, spawn, tracebacks

from sevd.commands.schema import Schema

SEED = int(os.environ.get("SEVD_FUZZ_SEED", "20261127"))
MESSAGES = int(os.environ.get("SEVD_FUZZ_MESSAGES", "100000"))
BATCH = 16
FUZZ_GUEST = "fz"
# QEMU's documented way back to a known lexer state (qmp-spec: any control character
# other than \t \r \n), then a command whose reply marks the end of the batch.
RESET = b"\x1b"


def marker(stream: str, k: int) -> bytes:
    return b'{"execute":"query-version","id":"#mk:%s:%d"}' % (stream.encode(), k)


# Findings reported to their owners and not yet fixed, each pinned by a strict xfail in
# test_findings.py (which turns red when the bug is fixed: then delete its patterns here).
# Patterns match the reply a client gets and the traceback signature in the daemon's log.
# Every finding so far is fixed; test_findings.py keeps them as regression tests.
KNOWN: dict[str, str] = {}


def known(finding: str) -> bool:
    return any(re.match(pattern, finding) for pattern in KNOWN)


class Fuzzed(AssertionError):
    """A finding: what the daemon wrote, and the batch of input that preceded it."""


class Stream:
    """One socket fed with batches of fuzz messages and read concurrently."""

    def __init__(self, name: str, path: str, gen: Generator, messages: int,
                 rng: random.Random, negotiate: bool = True) -> None:
        self.name = name
        self.path = path
        self.gen = gen
        self.messages = messages
        self.rng = rng
        self.negotiate = negotiate
        self.sent = 0
        self.lines = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.recent: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=4)
        self.findings: dict[str, str] = {}  # internal errors: desc -> where first seen
        self.seen: dict[bytes, dict[str, Any]] = {}

    def batch(self, k: int) -> bytes:
        n = min(BATCH, self.messages - self.sent)
        parts = []
        for _ in range(n):
            parts.append(self.gen.message())
            # Back to back, or separated by whitespace: both are one stream to QEMU.
            parts.append(self.rng.choice([b"", b"", b"\n", b" ", b"\r\n"]))
        self.sent += n
        data = b"".join(parts) + RESET + marker(self.name, k)
        self.recent.append((k, data))
        return data

    def check(self, line: bytes, expect: int) -> dict[str, Any]:
        # Parse errors repeat by the thousand (a limit error is followed by one line per
        # leftover token): a line already proven well-formed needs no second proof.
        cached = self.seen.get(line)
        if cached is not None:
            self.lines += 1
            if "error" in cached:
                self.errors[cached["error"]["desc"][:60]] += 1
            return cached
        try:
            msg = qmp_line(line)
        except (AssertionError, ValueError) as e:
            raise Fuzzed(f"{self.name}: malformed line before marker {expect}: {e}\n"
                         f"{self.context()}") from None
        bug = internal_failure(msg)
        if bug is not None and bug not in self.findings:
            self.findings[bug] = f"{self.name}, before marker {expect}\n{self.context()}"
        if "error" in msg:
            self.errors[msg["error"]["desc"][:60]] += 1
        self.lines += 1
        if len(line) < 200 and len(self.seen) < 20000:
            self.seen[line] = msg
        return msg

    def context(self) -> str:
        batches = "\n".join(f"  #{k}: {data[:3000]!r}" for k, data in self.recent)
        return f"recent batches (seed {SEED}):\n{batches}"

    async def read_until(self, reader: asyncio.StreamReader, k: int,
                         must_succeed: bool) -> None:
        """Read and check lines until marker `k` is answered."""
        want = f"#mk:{self.name}:{k}"
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), 60)
            except TimeoutError:
                raise Fuzzed(f"{self.name}: marker {k} not answered in 60 s\n"
                             f"{self.context()}") from None
            if not line:
                raise Fuzzed(f"{self.name}: connection closed before marker {k}\n"
                             f"{self.context()}")
            msg = self.check(line, k)
            mid = msg.get("id")
            if isinstance(mid, str) and mid.startswith(f"#mk:{self.name}:"):
                if mid != want:
                    raise Fuzzed(f"{self.name}: marker {mid} arrived while waiting for "
                                 f"{want}\n{self.context()}")
                if must_succeed and "return" not in msg:
                    raise Fuzzed(f"{self.name}: marker {k} failed: {msg}")
                return

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_unix_connection(self.path, limit=1 << 26)
        self.check(await reader.readline(), 0)
        if self.negotiate:
            writer.write(b'{"execute":"qmp_capabilities"}')
            assert self.check(await reader.readline(), 0) == {"return": {}}
        return reader, writer

    async def run_pipelined(self) -> None:
        """One connection; the writer may run ahead of the reader (back-pressure aside)."""
        reader, writer = await self.connect()
        batches = -(-self.messages // BATCH)

        async def write() -> None:
            for k in range(batches):
                writer.write(self.batch(k))
                await writer.drain()

        async def read() -> None:
            for k in range(batches):
                await self.read_until(reader, k, must_succeed=True)

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(write())
                tg.create_task(read())
        finally:
            writer.close()

    async def run_fresh_connections(self) -> None:
        """A new, never negotiated connection per batch (the marker then gets
        CommandNotFound, or a return if the fuzz itself negotiated)."""
        k = 0
        while self.sent < self.messages:
            reader, writer = await self.connect()
            writer.write(self.batch(k))
            await self.read_until(reader, k, must_succeed=False)
            writer.close()
            k += 1


async def _call(path: str, command: bytes) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 26)
    try:
        qmp_line(await reader.readline())
        writer.write(b'{"execute":"qmp_capabilities"}' + command)
        assert qmp_line(await reader.readline()) == {"return": {}}
        while True:
            msg = qmp_line(await asyncio.wait_for(reader.readline(), 30))
            if "event" not in msg:
                return msg
    finally:
        writer.close()


async def test_fuzz_real_daemon() -> None:
    d: Sevd = spawn("--log-level", "warning", "--validate-returns")
    try:
        # The fuzzed guest runs from the start: a `cont` then never runs LAUNCH_FINISH,
        # whose failure (under an injected fault) would end the instance, as QEMU exits.
        added = await _call(d.control, b'{"execute":"guest-add","arguments":{"name":"%s",'
                            b'"start":true,"sev-guest":{"policy":1,"cbitpos":51,'
                            b'"reduced-phys-bits":1}}}' % FUZZ_GUEST.encode())
        assert "return" in added, added
        guest_path = d.guest_socket(FUZZ_GUEST)
        commands = {}
        for scope, path in (("host", d.control), ("guest", guest_path)):
            reply = await _call(path, b'{"execute":"query-commands"}')
            commands[scope] = sorted(c["name"] for c in reply["return"])
        schema = Schema()
        rng = random.Random(SEED)

        def stream(name: str, scope: str, path: str, share: float,
                   negotiate: bool = True) -> Stream:
            gen = Generator(random.Random(rng.random()), schema, commands[scope], scope,
                            FUZZ_GUEST)
            return Stream(name, path, gen, int(MESSAGES * share) + 1,
                          random.Random(rng.random()), negotiate)

        guest = stream("guest", "guest", guest_path, 0.5)
        host = stream("host", "host", d.control, 0.4)
        fresh = stream("fresh", "guest", guest_path, 0.1, negotiate=False)
        t0 = time.monotonic()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(guest.run_pipelined())
                tg.create_task(host.run_pipelined())
                tg.create_task(fresh.run_fresh_connections())
        except* (OSError, EOFError) as eg:
            # A connection the daemon dropped: show why, with the input that preceded it.
            raise Fuzzed(f"{eg.exceptions}; daemon alive: {d.alive()}; log:\n"
                         f"{d.log()[-4000:]}\n" + "\n".join(
                             s.context()[:6000] for s in (guest, host, fresh))) from None
        elapsed = time.monotonic() - t0
        streams = (guest, host, fresh)
        total = sum(s.sent for s in streams)
        assert total >= MESSAGES
        # Every command of both scopes was sent, valid or mutated, many times over.
        for scope, gens in (("host", [host.gen]), ("guest", [guest.gen, fresh.gen])):
            sent: collections.Counter[str] = collections.Counter()
            for g in gens:
                sent.update(g.per_command)
            rare = {c: sent[c] for c in commands[scope] if c != "quit" and sent[c] < 100}
            assert not rare, f"{scope} commands seldom sent: {rare}"

        # Still serving, on both kinds of socket.
        status = await _call(guest_path, b'{"execute":"query-status","id":"end"}')
        assert status["id"] == "end" and isinstance(status["return"]["status"], str), status
        version = await _call(d.control, b'{"execute":"query-version","id":"end"}')
        assert version["return"]["qemu"]["major"].isdigit(), version  # kept as text
        assert d.alive()
        findings: dict[str, str] = {}
        for s in streams:
            for desc, where in s.findings.items():
                findings.setdefault(desc, where)
        for signature, text in tracebacks(d.log()).items():
            findings.setdefault(signature, text)
        unknown = {k: v for k, v in findings.items() if not known(k)}
        assert not unknown, "\n\n".join(f"{k}\n{v}" for k, v in unknown.items())

        kinds: collections.Counter[str] = collections.Counter()
        errors: collections.Counter[str] = collections.Counter()
        for s in streams:
            kinds.update(s.gen.kinds)
            errors.update(s.errors)
        cpu = os.times()
        print(f"\nclient cpu {cpu.user + cpu.system:.1f} s, daemon cpu {d.cpu_seconds():.1f} s")
        print(f"\nfuzz (seed {SEED}): {total} messages in {elapsed:.1f} s "
              f"({total / elapsed:.0f}/s), {sum(s.lines for s in streams)} lines checked; "
              f"kinds {dict(kinds)}")
        print("most frequent errors: " + "; ".join(
            f"{n}x {desc!r}" for desc, n in errors.most_common(8)))
    finally:
        code = d.stop()
        log = d.log()
        d.cleanup()
    assert code == 0, f"sevd exited with {code}:\n{log[-3000:]}"
