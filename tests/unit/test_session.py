"""One QMP session, driven in memory: greeting, negotiation, envelope, order, events, limits.

`QmpSession` runs here against a fake transport, a fake endpoint and a fake dispatcher (no
sockets, no commands layer), which proves what the protocol layer alone guarantees:
- the greeting, and a refused peer's single error line without one (DESIGN §7);
- the negotiation gate and every envelope check of reference/qmp.md §1.4/§8.1.2/§8.1.3 with
  QEMU's texts, id echo rules (no id on parse errors or non-objects), and, when a message has
  two faults, QEMU's choice of which to report (its QDict iteration order);
- strict request order: a command whose answer is not ready pauses reading, and everything
  queued behind it (commands, parse errors) is answered in order afterwards;
- events go to negotiated sessions only, and are written before the reply of the command
  that caused them (§8.1.7);
- back-pressure and the output limit, the negotiation timeout, teardown on connection loss,
  and that nothing a command raises can kill the session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, ClassVar

import pytest

from sevd.protocol import jsonwrite
from sevd.protocol.errors import COMMAND_NOT_FOUND, QmpError
from sevd.protocol.session import EventHub, Limits, QmpSession, qdict_order

GREETING = b'{"QMP": {"version": {"qemu": {"major": 9, "minor": 2, "micro": 0}, ' \
           b'"package": ""}, "capabilities": ["oob"]}}\r\n'


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.buffered = 0           # what get_write_buffer_size() reports
        self.limits: tuple[Any, Any] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def take(self) -> list[bytes]:
        lines = bytes(self.out).splitlines(keepends=True)
        self.out.clear()
        return lines


class FakeDispatcher:
    """A handful of commands that exercise the session, nothing more."""

    ALLOW_OOB: ClassVar[set[str]] = {"oob-ok"}

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any] | None, bool]] = []
        self.gate = asyncio.Event()
        self.hub: EventHub | None = None

    def dispatch(self, session: QmpSession, name: str, args: dict[str, Any] | None,
                 oob: bool) -> str | Awaitable[str]:
        self.calls.append((name, args, oob))
        if oob and name not in self.ALLOW_OOB:
            raise QmpError(f"The command {name} does not support OOB")
        if name == "qmp_capabilities":
            if session.negotiated:
                raise QmpError("Capabilities negotiation is already complete, command "
                               "ignored", COMMAND_NOT_FOUND)
            session.complete_negotiation(oob="oob" in (args or {}).get("enable", []))
            return "{}"
        if name in ("echo", "oob-ok"):
            return jsonwrite.encode_value(args or {})
        if name == "fail":
            raise QmpError("it failed")
        if name == "emit":
            assert self.hub is not None
            self.hub.broadcast(b'{"event": "E"}\r\n')
            return "{}"
        if name == "slow":
            return self._slow()
        if name == "slow-fail":
            return self._slow_fail()
        if name == "crash":
            return self._crash()
        raise QmpError(f"The command {name} has not been found", COMMAND_NOT_FOUND)

    async def _slow(self) -> str:
        await self.gate.wait()
        return '"slow"'

    async def _slow_fail(self) -> str:
        await self.gate.wait()
        raise QmpError("slow failure")

    async def _crash(self) -> str:
        raise RuntimeError("a bug")


class FakeEndpoint:
    def __init__(self, limits: Limits | None = None, refusal: str | None = None) -> None:
        self.dispatcher = FakeDispatcher()
        self.hub = EventHub()
        self.dispatcher.hub = self.hub
        self.limits = limits or Limits()
        self.greeting = GREETING
        self.refusal = refusal
        self.admitted: list[QmpSession] = []
        self.gone: list[QmpSession] = []

    def admit(self, session: QmpSession) -> str | None:
        if self.refusal is None:
            self.admitted.append(session)
        return self.refusal

    def closed(self, session: QmpSession) -> None:
        self.gone.append(session)


def connect(endpoint: FakeEndpoint | None = None, *, negotiate: bool = False,
            oob: bool = False) -> tuple[QmpSession, FakeTransport]:
    ep = endpoint or FakeEndpoint()
    s = QmpSession(ep)  # type: ignore[arg-type]
    t = FakeTransport()
    s.connection_made(t)
    assert t.take() == [GREETING] or ep.refusal
    if negotiate:
        enable = b',"arguments":{"enable":["oob"]}' if oob else b""
        s.data_received(b'{"execute":"qmp_capabilities"' + enable + b"}")
        assert t.take() == [b'{"return": {}}\r\n']
    return s, t


def run(data: bytes, *, negotiate: bool = True, oob: bool = False) -> list[bytes]:
    s, t = connect(negotiate=negotiate, oob=oob)
    s.data_received(data)
    return t.take()


def err(desc: str, id_json: str | None = None, cls: str = "GenericError") -> bytes:
    return jsonwrite.reply_error(cls, desc, id_json)


# -- connection --------------------------------------------------------------------------------

def test_greeting_first_and_write_buffer_bounded() -> None:
    ep = FakeEndpoint(Limits(max_output=4 << 20))
    s = QmpSession(ep)  # type: ignore[arg-type]
    t = FakeTransport()
    s.connection_made(t)
    assert t.take() == [GREETING]
    assert t.limits == (1 << 20, None)
    assert ep.admitted == [s] and not s.negotiated


def test_refused_peer_gets_one_error_line_and_no_greeting() -> None:
    ep = FakeEndpoint(refusal="Access denied: uid 1000 is not allowed on this socket")
    s = QmpSession(ep)  # type: ignore[arg-type]
    t = FakeTransport()
    s.connection_made(t)
    assert t.take() == [err("Access denied: uid 1000 is not allowed on this socket")]
    assert t.closed and s.closing
    s.data_received(b'{"execute":"qmp_capabilities"}')
    assert t.take() == [] and ep.dispatcher.calls == []


# -- negotiation (reference §8.1.2) -----------------------------------------------------------
NOT_NEGOTIATED = "Expecting capabilities negotiation with 'qmp_capabilities'"
NEGOTIATION: list[tuple[str, bytes, list[bytes]]] = [
    ("command-no-id", b'{"execute":"echo"}', [err(NOT_NEGOTIATED, cls=COMMAND_NOT_FOUND)]),
    ("command-id", b'{"execute":"echo","id":1}', [err(NOT_NEGOTIATED, "1", COMMAND_NOT_FOUND)]),
    ("unknown-command", b'{"execute":"nope","id":"u"}',
     [err(NOT_NEGOTIATED, '"u"', COMMAND_NOT_FOUND)]),
    ("exec-oob", b'{"exec-oob":"echo","id":"o"}',
     [err("QMP input member 'exec-oob' is unexpected", '"o"')]),
    ("parse-error", b'{"execute":\n}', [err("JSON parse error, expecting value")]),
    ("not-an-object", b"[1,2]", [err("QMP input must be a JSON object")]),
    ("envelope-before-gate", b'{"execute":"echo","arguments":[1],"id":2}',
     [err("QMP input member 'arguments' must be an object", "2")]),
]


@pytest.mark.parametrize(("data", "expected"), [pytest.param(d, e, id=i)
                                                for i, d, e in NEGOTIATION])
def test_before_negotiation(data: bytes, expected: list[bytes]) -> None:
    s, t = connect()
    s.data_received(data)
    assert t.take() == expected
    assert not s.negotiated


def test_negotiation_joins_the_hub_once() -> None:
    ep = FakeEndpoint()
    s, t = connect(ep, negotiate=True)
    assert s.negotiated and not s.oob_enabled and ep.hub.sessions == {s}
    s.data_received(b'{"execute":"qmp_capabilities","id":"again"}')
    assert t.take() == [err("Capabilities negotiation is already complete, command ignored",
                            '"again"', COMMAND_NOT_FOUND)]


def test_negotiation_with_oob() -> None:
    s, _ = connect(negotiate=True, oob=True)
    assert s.oob_enabled


# -- the envelope (reference §1.4, §8.1.3) ----------------------------------------------------
ENVELOPE: list[tuple[str, bytes, bool, list[bytes]]] = [
    ("no-arguments", b'{"execute":"echo","id":1}', False, [b'{"return": {}, "id": 1}\r\n']),
    ("arguments", b'{"execute":"echo","arguments":{"a":1},"id":1}', False,
     [b'{"return": {"a": 1}, "id": 1}\r\n']),
    ("id-first", b'{"id":"f","execute":"echo"}', False, [b'{"return": {}, "id": "f"}\r\n']),
    ("id-null", b'{"execute":"echo","id":null}', False, [b'{"return": {}, "id": null}\r\n']),
    ("id-object", b'{"execute":"echo","id":{"b":[1,"\xc3\xa9"]}}', False,
     [b'{"return": {}, "id": {"b": [1, "\\u00E9"]}}\r\n']),
    ("unknown", b'{"execute":"nope","id":"unk"}', False,
     [err("The command nope has not been found", '"unk"', COMMAND_NOT_FOUND)]),
    ("handler-error", b'{"execute":"fail"}', False, [err("it failed")]),
    ("arguments-array", b'{"execute":"echo","arguments":[1],"id":"ano"}', False,
     [err("QMP input member 'arguments' must be an object", '"ano"')]),
    ("arguments-string", b'{"execute":"echo","arguments":"x","id":"ano"}', False,
     [err("QMP input member 'arguments' must be an object", '"ano"')]),
    ("arguments-null", b'{"execute":"echo","arguments":null,"id":"ano"}', False,
     [err("QMP input member 'arguments' must be an object", '"ano"')]),
    ("execute-not-string", b'{"execute":1,"id":"ens"}', False,
     [err("QMP input member 'execute' must be a string", '"ens"')]),
    ("no-execute", b'{"id":"noexec"}', False, [err("QMP input lacks member 'execute'",
                                                  '"noexec"')]),
    ("empty-object", b"{}", False, [err("QMP input lacks member 'execute'")]),
    ("unexpected-member", b'{"execute":"echo","foo":1}', False,
     [err("QMP input member 'foo' is unexpected")]),
    ("control-member", b'{"execute":"echo","control":{"run-oob":true}}', False,
     [err("QMP input member 'control' is unexpected")]),
    ("exec-oob-without-oob", b'{"exec-oob":"echo","id":1}', False,
     [err("QMP input member 'exec-oob' is unexpected", "1")]),
    ("both-without-oob", b'{"execute":"echo","exec-oob":"echo","id":1}', False,
     [err("QMP input member 'exec-oob' is unexpected", "1")]),
    ("not-an-object", b"1 -2.5 [] \"str\" null true ", False,
     [err("QMP input must be a JSON object")] * 6),
    ("parse-error-no-id", b'{"execute":"echo","id":"x",}', False,
     [err("JSON parse error, expecting value")]),
    # With OOB enabled.
    ("oob-not-allowed", b'{"exec-oob":"echo","id":"o1"}', True,
     [err("The command echo does not support OOB", '"o1"')]),
    ("oob-allowed-no-id", b'{"exec-oob":"oob-ok"}', True, [b'{"return": {}}\r\n']),
    ("oob-execute-still-works", b'{"execute":"echo","id":2}', True,
     [b'{"return": {}, "id": 2}\r\n']),
    ("exec-oob-not-a-string", b'{"exec-oob":1,"id":3}', True,
     [err("QMP input member 'exec-oob' must be a string", "3")]),
    # Two faults: QEMU reports the first in its QDict order (checked on QEMU 7.2), which is
    # exec-oob < execute < arguments < id < foo, and bar < execute.
    ("clash-execute-first", b'{"execute":"echo","exec-oob":"echo","id":"a"}', True,
     [err("QMP input member 'execute' clashes with 'exec-oob'", '"a"')]),
    ("clash-exec-oob-first", b'{"exec-oob":"echo","execute":"echo","id":"b"}', True,
     [err("QMP input member 'execute' clashes with 'exec-oob'", '"b"')]),
    ("exec-oob-then-bad-execute", b'{"exec-oob":"x","execute":1,"id":"c"}', True,
     [err("QMP input member 'execute' must be a string", '"c"')]),
    ("foo-then-bad-execute", b'{"foo":1,"execute":1,"id":1}', False,
     [err("QMP input member 'execute' must be a string", "1")]),
    ("foo-bar", b'{"foo":1,"bar":2,"execute":"echo","id":2}', False,
     [err("QMP input member 'bar' is unexpected", "2")]),
    ("bad-arguments-bad-execute", b'{"arguments":1,"execute":2,"id":3}', False,
     [err("QMP input member 'execute' must be a string", "3")]),
]


@pytest.mark.parametrize(("data", "oob", "expected"),
                         [pytest.param(d, o, e, id=i) for i, d, o, e in ENVELOPE])
def test_envelope(data: bytes, oob: bool, expected: list[bytes]) -> None:
    assert run(data, oob=oob) == expected


def test_dispatcher_sees_name_arguments_and_oob_flag() -> None:
    ep = FakeEndpoint()
    s, _ = connect(ep, negotiate=True, oob=True)
    ep.dispatcher.calls.clear()
    s.data_received(b'{"execute":"echo"}{"execute":"echo","arguments":{}}'
                    b'{"exec-oob":"oob-ok","arguments":{"x":1}}')
    assert ep.dispatcher.calls == [("echo", None, False), ("echo", {}, False),
                                   ("oob-ok", {"x": 1}, True)]


def test_qdict_order_is_qemus() -> None:
    # reference/qmp.md §8.1.1: an echoed id object comes back in this order from QEMU 7.2.
    assert qdict_order(["zeta", "alpha", "id", "return", "error"]) == [
        "zeta", "return", "id", "error", "alpha"]
    # query-status members, inserted in QAPI order, come out as QEMU writes them.
    assert qdict_order(["running", "singlestep", "status"]) == [
        "status", "singlestep", "running"]
    assert qdict_order(["major", "minor", "micro"]) == ["micro", "minor", "major"]


# -- order -------------------------------------------------------------------------------------

async def test_a_pending_command_holds_everything_behind_it_in_order() -> None:
    ep = FakeEndpoint()
    s, t = connect(ep, negotiate=True)
    s.data_received(b'{"execute":"slow","id":1}{"execute":"echo","id":2}xyz\n'
                    b'{"execute":"fail","id":3}')
    assert t.take() == [] and not t.reading          # nothing overtakes the slow command
    s.data_received(b'{"execute":"echo","id":4}')      # arrives while busy: queued
    assert t.take() == []
    ep.dispatcher.gate.set()
    assert s._task is not None
    await s._task
    assert t.take() == [b'{"return": "slow", "id": 1}\r\n',
                        b'{"return": {}, "id": 2}\r\n',
                        err("JSON parse error, invalid keyword 'xyz'"),
                        err("it failed", "3"),
                        b'{"return": {}, "id": 4}\r\n']
    assert t.reading


async def test_two_pending_commands_in_one_chunk_run_one_after_the_other() -> None:
    ep = FakeEndpoint()
    s, t = connect(ep, negotiate=True)
    ep.dispatcher.gate.set()
    s.data_received(b'{"execute":"slow","id":1}{"execute":"slow-fail","id":2}'
                    b'{"execute":"echo","id":3}')
    assert s._task is not None
    await s._task
    assert t.take() == [b'{"return": "slow", "id": 1}\r\n', err("slow failure", "2"),
                        b'{"return": {}, "id": 3}\r\n']


async def test_an_unexpected_exception_is_an_error_reply_not_a_dead_session() -> None:
    ep = FakeEndpoint()
    s, t = connect(ep, negotiate=True)
    s.data_received(b'{"execute":"crash","id":"c"}')
    assert s._task is not None
    await s._task
    assert t.take() == [err("internal error", '"c"')]
    s.data_received(b'{"execute":"echo","id":"after"}')
    assert t.take() == [b'{"return": {}, "id": "after"}\r\n']


def test_a_message_split_over_reads() -> None:
    s, t = connect(negotiate=True)
    for b in b'{"execute":"echo","id":"\xc3\xa9"}':
        s.data_received(bytes([b]))
    assert t.take() == [b'{"return": {}, "id": "\\u00E9"}\r\n']


async def test_closing_a_session_stops_its_processing() -> None:
    # What guest-remove does to the sessions of the guest it removes.
    ep = FakeEndpoint()
    s, t = connect(ep, negotiate=True)
    s.data_received(b'{"execute":"slow","id":1}{"execute":"echo","id":2}')
    s.close()
    assert t.closed
    ep.dispatcher.gate.set()
    assert s._task is not None
    await s._task
    assert t.take() == []
    assert [c[0] for c in ep.dispatcher.calls] == ["qmp_capabilities", "slow"]


# -- events (reference §8.1.7) -----------------------------------------------------------------

def test_events_reach_negotiated_sessions_only_and_precede_the_reply() -> None:
    ep = FakeEndpoint()
    a, ta = connect(ep, negotiate=True)
    _b, tb = connect(ep, negotiate=True)
    c, tc = connect(ep)                                 # still negotiating
    a.data_received(b'{"execute":"emit","id":"e"}')
    assert ta.take() == [b'{"event": "E"}\r\n', b'{"return": {}, "id": "e"}\r\n']
    assert tb.take() == [b'{"event": "E"}\r\n']
    assert tc.take() == []
    # Not queued for later either: negotiating now brings no old event.
    c.data_received(b'{"execute":"qmp_capabilities"}')
    assert tc.take() == [b'{"return": {}}\r\n']


def test_listeners_see_every_event() -> None:
    hub = EventHub()
    seen: list[bytes] = []
    hub.listeners.append(seen.append)
    hub.broadcast(b"x\r\n")
    assert seen == [b"x\r\n"]


# -- limits and teardown -----------------------------------------------------------------------

def test_a_client_that_does_not_read_is_disconnected_past_max_output() -> None:
    ep = FakeEndpoint(Limits(max_output=1000))
    s, t = connect(ep, negotiate=True)
    t.buffered = 1001
    s.data_received(b'{"execute":"echo"}{"execute":"echo"}')
    assert t.aborted and s.closing
    assert t.take() == [b'{"return": {}}\r\n']         # the second reply is never written


async def test_back_pressure_pauses_reading_until_the_client_reads() -> None:
    ep = FakeEndpoint()
    s, t = connect(ep, negotiate=True)
    s.pause_writing()
    assert not t.reading
    s.resume_writing()
    assert t.reading
    # While a command is pending, draining the output does not resume reading early.
    s.data_received(b'{"execute":"slow"}')
    s.pause_writing()
    s.resume_writing()
    assert not t.reading
    ep.dispatcher.gate.set()
    assert s._task is not None
    await s._task
    assert t.reading


async def test_connection_lost_cancels_the_pending_command_and_leaves_the_hub() -> None:
    ep = FakeEndpoint()
    s, t = connect(ep, negotiate=True)
    s.data_received(b'{"execute":"slow"}{"execute":"echo"}')
    task = s._task
    assert task is not None
    s.connection_lost(None)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ep.gone == [s] and s not in ep.hub.sessions
    assert t.take() == []
    s.write(b"late\r\n")                                # writes after the end are dropped
    assert t.take() == []


async def test_negotiation_timeout_closes_only_unnegotiated_sessions() -> None:
    ep = FakeEndpoint(Limits(negotiation_timeout=0.02))
    _lazy, tl = connect(ep)
    _prompt, tp = connect(ep, negotiate=True)
    await asyncio.sleep(0.06)
    assert tl.closed and not tp.closed


def test_no_negotiation_timeout_by_default() -> None:
    s, _ = connect()
    assert s._timer is None
