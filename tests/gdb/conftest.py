"""Fixtures for the gdb stub tests (the doubles themselves are in gdb_fakes.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from gdb_fakes import FakeTarget, unescape

from sevd.protocol.gdb import GdbSession, encode_packet


@pytest.fixture
def target() -> FakeTarget:
    t = FakeTarget()
    t.map(0x100000, b"SEVDHB01" + bytes(range(1, 25)))
    return t


@pytest.fixture
def session(target: FakeTarget) -> GdbSession:
    return GdbSession(target)


@pytest.fixture
def ask(session: GdbSession) -> Callable[[str], str]:
    """``ask("m100000,8")`` -> the reply payload (the ack and framing checked and removed)."""

    def run(payload: str) -> str:
        out = session.receive(encode_packet(payload.encode("latin-1")))
        ack = b"" if session.no_ack else b"+"
        assert out.startswith(ack + b"$"), out
        body, _, cs = out[len(ack) + 1:].rpartition(b"#")
        assert int(cs, 16) == sum(body) & 0xFF
        session.receive(b"+")  # acknowledge, as gdb does
        return unescape(body).decode("latin-1")

    return run
