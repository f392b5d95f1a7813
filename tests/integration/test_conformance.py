"""The conformance table: reference/qmp.md §8 (QEMU 7.2 as observed), row by row, on the wire.

ONE parametrised table, run against a real sevd process over its unix sockets. Each row says
what a client writes (possibly in several writes, with pauses that must stay silent) and
the EXACT bytes sevd must answer, `\\r\\n` included. It covers:
- §8.1.1 framing and the id table (every id type echoed as QEMU re-serialises it), split,
  merged and byte-by-byte writes, a split inside UTF-8, 1 MiB of leading spaces, CRLF and
  pretty-printed input, single quotes;
- §8.1.2 negotiation mode, §8.1.3 envelope and argument errors, §8.1.4 every malformed-JSON
  case, §8.1.5 the limits at QEMU's own values (64 MiB token, 2M tokens, depth 1024: all
  run in a few seconds, no lower limit was needed), §8.1.6 OOB;
- §8.1.7 events: every row runs with two bystanders on the same socket, one negotiated and
  one not; the negotiated one must receive exactly the row's events and the other none, and
  events come before the reply of the command that caused them;
- §8.2 queries, §8.4 run-state events (no `data` on STOP/RESUME, reset-while-paused →
  prelaunch, no event when already in that state), §8.5 the HMP rows sevd supports.
After every row the same connection must still answer `query-version` (and `query-status`
on a guest socket). Rows where sevd deliberately differs from QEMU 7.2 say how and why in
their `deviation` column, citing DESIGN §8. Event timestamps are checked for plausibility
and then written as `TS`. A guest row runs on a fresh guest `cf` with a fixed UUID.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

import pytest

from sevd import __version__

QUIET = object()   # in `send`: nothing may arrive for a moment here
UUID = "6f2d0d1c-1a5e-4a52-9c0e-3b8d7c3f1e0a"
PKG = f"sevd {__version__}".encode()
GREETING = (b'{"QMP": {"version": {"qemu": {"major": 9, "minor": 2, "micro": 0}, "package": "'
            + PKG + b'"}, "capabilities": ["oob"]}}\r\n')
VERSION = b'{"return": {"qemu": {"major": 9, "minor": 2, "micro": 0}, "package": "' + PKG + b'"}'
PRE = b'{"return": {"running": false, "singlestep": false, "status": "prelaunch"}'
RUN = b'{"return": {"running": true, "singlestep": false, "status": "running"}'
PAUSED = b'{"return": {"running": false, "singlestep": false, "status": "paused"}'
QS = b'{"execute":"query-status","id":'
EV = b'{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}\r\n'
NOT_OBJ = b'{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}\r\n'
NEG = (b'{"error": {"class": "CommandNotFound", '
       b'"desc": "Expecting capabilities negotiation with \'qmp_capabilities\'"}')

# The deliberate differences (DESIGN §8), as the `deviation` column cites them.
ID_POS = 'DESIGN §8 key order: sevd {"error", "id"}, QEMU 7.2 {"id", "error"}'
ST_ORDER = 'DESIGN §8 key order: QEMU 7.2 writes {"status", "singlestep", "running"}'
VER = ('DESIGN §8: version 9.2.0 and package "sevd …" are cosmetic; QEMU 7.2 writes '
       '{"micro", "minor", "major"}')
KVM = "DESIGN §8: enabled/present as on an SEV host, plus the 2016 RFC's mem-encryption"
BIG = "DESIGN §8: QEMU writes inf (invalid JSON); sevd echoes the number as sent"
NAMED = "a sevd guest always has a name (QEMU's -name); QEMU 7.2 ran without -name"
U64 = ("DESIGN §8: 9.2 shapes, memsave val is uint64: 'expects uint64'; QEMU 7.2 (int) "
       "says 'Invalid parameter type for 'val', expected: integer'")
NO_MIGRATION = ("sevd has no migration commands yet: CommandNotFound, as QEMU answers for a "
                "command it lacks (DESIGN §3)")
POWERDOWN = ("DESIGN §4.5: the simulated guest obeys the power button at once; QEMU's guest "
             "shuts down later, after the return")
CONTROL = "DESIGN §3: the control socket has no QEMU counterpart; same framing and texts"


def both(*deviations: str) -> str:
    return "; ".join(deviations)


@dataclass(frozen=True)
class Row:
    id: str
    send: Any                       # bytes, or a tuple of writes (bytes or QUIET)
    expect: tuple[bytes, ...] | list[bytes]
    mode: str = "cmd"               # "neg": not negotiated; "cmd"; "oob": negotiated with oob
    sock: str = "guest"             # or "control"
    deviation: str = ""
    negotiates: bool = False        # a "neg" row that ends negotiated
    xfail: str = ""                 # a known bug outside the protocol layer (strict)


R = Row   # the table reads better with a short name


TABLE: list[Row] = [
    # -- §8.1.1 framing ----------------------------------------------------------------------
    R("8.1.1-greeting-then-negotiate", b'{"execute":"qmp_capabilities"}',
      [b'{"return": {}}\r\n'], mode="neg", negotiates=True, deviation=VER),
    R("8.1.1-no-newline", b'{"execute":"query-status","id":"nonl"}',
      [PRE + b', "id": "nonl"}\r\n'], deviation=ST_ORDER),
    R("8.1.1-back-to-back", QS + b'1}' + QS + b'2}',
      [PRE + b', "id": 1}\r\n', PRE + b', "id": 2}\r\n'], deviation=ST_ORDER),
    R("8.1.1-split-in-four", (b'{"execute":"qu', b'ery-status",', b'"id":"sp', b'lit"}'),
      [PRE + b', "id": "split"}\r\n'], deviation=ST_ORDER),
    R("8.1.1-byte-by-byte", tuple(bytes([b]) for b in b'{"execute":"query-status","id":"b"}'),
      [PRE + b', "id": "b"}\r\n'], deviation=ST_ORDER),
    R("8.1.1-split-inside-utf8", (QS + b'"\xc3', b'\xa9\xf0\x9f\x98', b'\x80"}'),
      [PRE + b', "id": "\\u00E9\\uD83D\\uDE00"}\r\n'], deviation=ST_ORDER),
    R("8.1.1-leading-whitespace", b' \t\r\n ' + QS + b'"ws"}',
      [PRE + b', "id": "ws"}\r\n'], deviation=ST_ORDER),
    R("8.1.1-1MiB-leading-spaces", (b" " * (1 << 20), QS + b'"sp"}'),
      [PRE + b', "id": "sp"}\r\n'], deviation=ST_ORDER),
    R("8.1.1-crlf-terminated", QS + b'"c1"}\r\n' + QS + b'"c2"}\r\n',
      [PRE + b', "id": "c1"}\r\n', PRE + b', "id": "c2"}\r\n'], deviation=ST_ORDER),
    R("8.1.1-pretty-printed",
      b'{\r\n  "execute": "query-status",\r\n  "id": "pp"\r\n}\r\n',
      [PRE + b', "id": "pp"}\r\n'], deviation=ST_ORDER),
    R("8.1.1-single-quotes", b"{'execute':'query-status','id':'sq'}",
      [PRE + b', "id": "sq"}\r\n'], deviation=ST_ORDER),
    R("8.1.1-id-before-execute", b'{"id":"first","execute":"query-status"}',
      [PRE + b', "id": "first"}\r\n'], deviation=ST_ORDER),
    R("8.1.1-raw-DEL-in-string", QS + b'"a\x7fb"}',
      [PRE + b', "id": "a\\u007Fb"}\r\n'], deviation=ST_ORDER),
    # -- §8.1.1 the id table: every id type, echoed ------------------------------------------
    *[R(f"8.1.1-id-{sent.decode('utf-8', 'replace')[:24]}", QS + sent + b"}",
        [PRE + b', "id": ' + echoed + b"}\r\n"], deviation=both(ST_ORDER, *dev))
      for sent, echoed, *dev in [
        (b"1", b"1"), (b"0", b"0"), (b"-3", b"-3"),
        (b"9223372036854775807", b"9223372036854775807"),
        (b"9223372036854775808", b"9223372036854775808"),
        (b"18446744073709551615", b"18446744073709551615"),
        (b"18446744073709551616", b"1.8446744073709552e+19"),
        (b"123456789012345678901234567890", b"1.2345678901234568e+29"),
        (b"-9223372036854775809", b"-9.2233720368547758e+18"),
        (b"1.5", b"1.5"), (b"1e3", b"1000"), (b"1E+2", b"100"), (b"-0.0", b"-0"),
        (b"0.1", b"0.10000000000000001"), (b"2.5e-8", b"2.4999999999999999e-08"),
        (b"1e300", b"1.0000000000000001e+300"),
        (b"1e400", b"1e400", BIG), (b"-1e400", b"-1e400", BIG),
        (b"9" * 5000, b"9" * 5000, BIG),
        (b'"abc"', b'"abc"'), (b'""', b'""'), (b"null", b"null"), (b"true", b"true"),
        (b"false", b"false"), (b"[]", b"[]"), (b"{}", b"{}"),
        (b'[1,"x",null]', b'[1, "x", null]'),
        ('"é"'.encode(), b'"\\u00E9"'), (b'"\\u00e9"', b'"\\u00E9"'),
        ('"😀"'.encode(), b'"\\uD83D\\uDE00"'), (b'"\\ud83d\\ude00"', b'"\\uD83D\\uDE00"'),
        (b'"\\u007f"', b'"\\u007F"'), (b'"\\u0001\\b\\f"', b'"\\u0001\\b\\f"'),
        (b'"a/b"', b'"a/b"'), (b'"\\/"', b'"/"'), (b'"a\\u0000b"', b'"a\\u0000b"'),
        (b'{"zeta":1,"alpha":2,"id":3,"return":4,"error":5}',
         b'{"zeta": 1, "alpha": 2, "id": 3, "return": 4, "error": 5}',
         "DESIGN §8 key order: QEMU 7.2 echoes {zeta, return, id, error, alpha}"),
      ]],
    # -- §8.1.2 negotiation mode -------------------------------------------------------------
    R("8.1.2-command-no-id", b'{"execute":"query-status"}', [NEG + b"}\r\n"], mode="neg"),
    R("8.1.2-command-id", b'{"execute":"query-status","id":1}', [NEG + b', "id": 1}\r\n'],
      mode="neg", deviation=ID_POS),
    R("8.1.2-unknown-command", b'{"execute":"no-such-command","id":"u"}',
      [NEG + b', "id": "u"}\r\n'], mode="neg", deviation=ID_POS),
    R("8.1.2-exec-oob", b'{"exec-oob":"query-status","id":"o"}',
      [b'{"error": {"class": "GenericError", "desc": "QMP input member \'exec-oob\' is '
       b'unexpected"}, "id": "o"}\r\n'], mode="neg", deviation=ID_POS),
    R("8.1.2-parse-error", b'{"execute":\n}', [EV], mode="neg"),
    R("8.1.2-not-an-object", b"[1,2]", [NOT_OBJ], mode="neg"),
    R("8.1.2-enable-bad-value",
      b'{"execute":"qmp_capabilities","arguments":{"enable":["foo"]},"id":"bad"}',
      [b'{"error": {"class": "GenericError", "desc": "Parameter \'null\' does not accept '
       b'value \'foo\'"}, "id": "bad"}\r\n'], mode="neg", deviation=ID_POS),
    R("8.1.2-enable-not-a-list",
      b'{"execute":"qmp_capabilities","arguments":{"enable":"oob"},"id":"t"}',
      [b'{"error": {"class": "GenericError", "desc": "Invalid parameter type for \'enable\', '
       b'expected: array"}, "id": "t"}\r\n'], mode="neg", deviation=ID_POS),
    R("8.1.2-caps-unexpected-argument",
      b'{"execute":"qmp_capabilities","arguments":{"foo":1},"id":"t"}',
      [b'{"error": {"class": "GenericError", "desc": "Parameter \'foo\' is unexpected"}, '
       b'"id": "t"}\r\n'], mode="neg", deviation=ID_POS),
    R("8.1.2-caps-empty-arguments", b'{"execute":"qmp_capabilities","arguments":{}}',
      [b'{"return": {}}\r\n'], mode="neg", negotiates=True),
    R("8.1.2-caps-oob", b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},'
      b'"id":"caps-oob"}', [b'{"return": {}, "id": "caps-oob"}\r\n'], mode="neg",
      negotiates=True),
    R("8.1.2-caps-again", b'{"execute":"qmp_capabilities","id":"again"}',
      [b'{"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already '
       b'complete, command ignored"}, "id": "again"}\r\n'], deviation=ID_POS),
    R("8.1.2-caps-again-with-enable",
      b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":"again"}',
      [b'{"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already '
       b'complete, command ignored"}, "id": "again"}\r\n'], deviation=ID_POS),
    # -- §8.1.3 command mode: envelope and arguments -----------------------------------------
    R("8.1.3-unknown-command", b'{"execute":"no-such-command","id":"unk"}',
      [b'{"error": {"class": "CommandNotFound", "desc": "The command no-such-command has not '
       b'been found"}, "id": "unk"}\r\n'], deviation=ID_POS),
    R("8.1.3-unknown-no-id", b'{"execute":"no-such-command"}',
      [b'{"error": {"class": "CommandNotFound", "desc": "The command no-such-command has not '
       b'been found"}}\r\n']),
    R("8.1.3-missing-argument", b'{"execute":"human-monitor-command","arguments":{},"id":"miss"}',
      [b'{"error": {"class": "GenericError", "desc": "Parameter \'command-line\' is missing"}, '
       b'"id": "miss"}\r\n'], deviation=ID_POS),
    R("8.1.3-missing-arguments-key", b'{"execute":"human-monitor-command","id":"miss"}',
      [b'{"error": {"class": "GenericError", "desc": "Parameter \'command-line\' is missing"}, '
       b'"id": "miss"}\r\n'], deviation=ID_POS),
    R("8.1.3-memsave-missing-size",
      b'{"execute":"memsave","arguments":{"val":0,"filename":"f"},"id":"m"}',
      [b'{"error": {"class": "GenericError", "desc": "Parameter \'size\' is missing"}, '
       b'"id": "m"}\r\n'], deviation=ID_POS),
    R("8.1.3-extra-argument", b'{"execute":"query-status","arguments":{"foo":1},"id":"x"}',
      [b'{"error": {"class": "GenericError", "desc": "Parameter \'foo\' is unexpected"}, '
       b'"id": "x"}\r\n'], deviation=ID_POS),
    R("8.1.3-extra-argument-hmp", b'{"execute":"human-monitor-command","arguments":'
      b'{"command-line":"info status","bar":true},"id":"x"}',
      [b'{"error": {"class": "GenericError", "desc": "Parameter \'bar\' is unexpected"}, '
       b'"id": "x"}\r\n'], deviation=ID_POS),
    R("8.1.3-two-extra-arguments", b'{"execute":"query-status","arguments":{"x":1,"y":2},'
      b'"id":"x"}',
      [b'{"error": {"class": "GenericError", "desc": "Parameter \'y\' is unexpected"}, '
       b'"id": "x"}\r\n'], deviation=ID_POS),
    R("8.1.3-two-extra-arguments-swapped", b'{"execute":"query-status","arguments":'
      b'{"y":2,"x":1},"id":"x"}',
      [b'{"error": {"class": "GenericError", "desc": "Parameter \'y\' is unexpected"}, '
       b'"id": "x"}\r\n'], deviation=ID_POS),
    R("8.1.3-wrong-type-string", b'{"execute":"human-monitor-command","arguments":'
      b'{"command-line":5},"id":"w"}',
      [b'{"error": {"class": "GenericError", "desc": "Invalid parameter type for '
       b'\'command-line\', expected: string"}, "id": "w"}\r\n'], deviation=ID_POS),
    R("8.1.3-memsave-val-string",
      b'{"execute":"memsave","arguments":{"val":"0","size":1,"filename":"f"},"id":"w"}',
      [b'{"error": {"class": "GenericError", "desc": "Parameter \'val\' expects uint64"}, '
       b'"id": "w"}\r\n'], deviation=both(ID_POS, U64)),
    R("8.1.3-memsave-val-double",
      b'{"execute":"memsave","arguments":{"val":1.5,"size":1,"filename":"f"},"id":"w"}',
      [b'{"error": {"class": "GenericError", "desc": "Parameter \'val\' expects uint64"}, '
       b'"id": "w"}\r\n'], deviation=both(ID_POS, U64)),
    R("8.1.3-cpu-index-string", b'{"execute":"human-monitor-command","arguments":'
      b'{"command-line":"info status","cpu-index":"0"},"id":"w"}',
      [b'{"error": {"class": "GenericError", "desc": "Invalid parameter type for '
       b'\'cpu-index\', expected: integer"}, "id": "w"}\r\n'], deviation=ID_POS),
    R("8.1.3-cpu-index-null", b'{"execute":"human-monitor-command","arguments":'
      b'{"command-line":"info status","cpu-index":null},"id":"w"}',
      [b'{"error": {"class": "GenericError", "desc": "Invalid parameter type for '
       b'\'cpu-index\', expected: integer"}, "id": "w"}\r\n'], deviation=ID_POS),
    *[R(f"8.1.3-arguments-{name}", b'{"execute":"query-status","arguments":' + value
        + b',"id":"ano"}',
        [b'{"error": {"class": "GenericError", "desc": "QMP input member \'arguments\' must '
         b'be an object"}, "id": "ano"}\r\n'], deviation=ID_POS)
      for name, value in [("array", b"[1]"), ("string", b'"x"'), ("null", b"null")]],
    R("8.1.3-empty-arguments-accepted", b'{"execute":"query-status","arguments":{},"id":"e"}',
      [PRE + b', "id": "e"}\r\n'], deviation=ST_ORDER),
    R("8.1.3-execute-not-a-string", b'{"execute":1,"id":"ens"}',
      [b'{"error": {"class": "GenericError", "desc": "QMP input member \'execute\' must be a '
       b'string"}, "id": "ens"}\r\n'], deviation=ID_POS),
    R("8.1.3-no-execute", b'{"id":"noexec"}',
      [b'{"error": {"class": "GenericError", "desc": "QMP input lacks member \'execute\'"}, '
       b'"id": "noexec"}\r\n'], deviation=ID_POS),
    R("8.1.3-empty-object", b"{}",
      [b'{"error": {"class": "GenericError", "desc": "QMP input lacks member \'execute\'"}}'
       b'\r\n']),
    R("8.1.3-unknown-member", b'{"execute":"query-status","foo":1,"id":"f"}',
      [b'{"error": {"class": "GenericError", "desc": "QMP input member \'foo\' is '
       b'unexpected"}, "id": "f"}\r\n'], deviation=ID_POS),
    R("8.1.3-control-member", b'{"execute":"query-status","control":{"run-oob":true},"id":"f"}',
      [b'{"error": {"class": "GenericError", "desc": "QMP input member \'control\' is '
       b'unexpected"}, "id": "f"}\r\n'], deviation=ID_POS),
    R("8.1.3-execute-and-exec-oob", b'{"execute":"query-status","exec-oob":"query-status",'
      b'"id":"f"}',
      [b'{"error": {"class": "GenericError", "desc": "QMP input member \'exec-oob\' is '
       b'unexpected"}, "id": "f"}\r\n'], deviation=ID_POS),
    R("8.1.3-exec-oob-without-oob", b'{"exec-oob":"query-status","id":"f"}',
      [b'{"error": {"class": "GenericError", "desc": "QMP input member \'exec-oob\' is '
       b'unexpected"}, "id": "f"}\r\n'], deviation=ID_POS),
    *[R(f"8.1.3-top-level-{name}", value, [NOT_OBJ])
      for name, value in [("int", b"1\n"), ("double", b"-2.5\n"), ("array", b"[1,2]"),
                          ("empty-array", b"[]"), ("string", b'"str"'), ("null", b"null\n"),
                          ("true", b"true\n")]],
    # Two faults at once: QEMU reports the first in its QDict order (checked on QEMU 7.2).
    R("8.1.3-two-faults-foo-execute", b'{"foo":1,"execute":1,"id":1}',
      [b'{"error": {"class": "GenericError", "desc": "QMP input member \'execute\' must be a '
       b'string"}, "id": 1}\r\n'], deviation=ID_POS),
    R("8.1.3-two-faults-foo-bar", b'{"foo":1,"bar":2,"execute":"query-status","id":2}',
      [b'{"error": {"class": "GenericError", "desc": "QMP input member \'bar\' is '
       b'unexpected"}, "id": 2}\r\n'], deviation=ID_POS),
    R("8.1.3-two-faults-arguments-execute", b'{"arguments":1,"execute":2,"id":3}',
      [b'{"error": {"class": "GenericError", "desc": "QMP input member \'execute\' must be a '
       b'string"}, "id": 3}\r\n'], deviation=ID_POS),
    # -- §8.1.4 malformed JSON ---------------------------------------------------------------
    R("8.1.4-trailing-garbage", QS + b'"tg"}xyz\n',
      [PRE + b', "id": "tg"}\r\n',
       b'{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword '
       b'\'xyz\'"}}\r\n'], deviation=ST_ORDER),
    R("8.1.4-extra-brace", QS + b'"tg2"}}', [PRE + b', "id": "tg2"}\r\n', EV],
      deviation=ST_ORDER),
    R("8.1.4-stray-bracket", b"]", [EV]),
    R("8.1.4-bare-word", b"hello\n",
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword '
       b'\'hello\'"}}\r\n']),
    R("8.1.4-missing-colon", b'{"execute" "query-status"}',
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, missing : in object '
       b'pair"}}\r\n']),
    R("8.1.4-trailing-comma", QS + b'"tc",}', [EV]),
    R("8.1.4-bad-escape", QS + b'"\\q"}',
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, invalid escape '
       b'sequence in string"}}\r\n']),
    R("8.1.4-duplicate-key", b'{"execute":"query-status","execute":"query-name","id":"d"}',
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, duplicate key"}}\r\n']),
    R("8.1.4-NaN", QS + b"NaN}",
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'N\'"}}\r\n',
       EV]),
    R("8.1.4-leading-zero", QS + b"01}",
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'01\'"}}\r\n',
       EV]),
    R("8.1.4-percent", QS + b"%d}",
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'%\'"}}\r\n',
       EV]),
    R("8.1.4-invalid-utf8-fffe", QS + b'"\xff\xfe"}',
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray '
       b'\'\\"\\uFFFD\'"}}\r\n',
       b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray '
       b'\'\\uFFFD\'"}}\r\n', EV]),
    *[R(f"8.1.4-invalid-utf8-{name}", QS + b'"' + raw + b'"}',
        [b'{"error": {"class": "GenericError", "desc": "JSON parse error, invalid UTF-8 '
         b'sequence in string"}}\r\n']) for name, raw in [("c328", b"\xc3\x28"),
                                                            ("overlong-c0af", b"\xc0\xaf")]],
    *[R(f"8.1.4-{name}-before-object", raw + QS + b'"after"}',
        [b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray '
         b'\'\\uFFFD\'"}}\r\n', PRE + b', "id": "after"}\r\n'], deviation=ST_ORDER)
      for name, raw in [("ff", b"\xff"), ("truncated-e2", b"\xe2")]],
    R("8.1.4-raw-control-in-string", QS + b'"a\x01"}',
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray '
       b'\'\\"a\\u0001\'"}}\r\n', EV]),
    # A NUL ends QEMU's %s-formatted stray text (not in §8.1.4; checked on QEMU 7.2).
    R("8.1.4-nul-byte", b"\x00",
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\'"}}\r\n']),
    R("8.1.4-nul-in-string", QS + b'"a\x00b"}',
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray '
       b'\'\\"a\'"}}\r\n', EV]),
    R("8.1.4-lone-surrogate", QS + b'"\\ud800"}',
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, \\\\ud800 is not a '
       b'valid Unicode character"}}\r\n']),
    R("8.1.4-noncharacter", QS + b'"\\uffff"}',
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, \\\\uffff is not a '
       b'valid Unicode character"}}\r\n']),
    R("8.1.4-unterminated-object",
      (QS + b'"unt"\n', QUIET, QS + b'"swallowed"}', QUIET, b"}"),
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, expected separator '
       b'in dict"}}\r\n']),
    R("8.1.4-unterminated-string", (QS + b'"abc\n', QS + b'"next"}'),
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray '
       b'\'\\"abc\\n\'"}}\r\n', PRE + b', "id": "next"}\r\n'], deviation=ST_ORDER),
    R("8.1.4-reset-by-control-char", b'\x1b' + QS + b'"after-reset"}',
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray '
       b'\'\\u001B\'"}}\r\n', PRE + b', "id": "after-reset"}\r\n'], deviation=ST_ORDER),
    R("8.1.4-at-sign", QS + b"@}",
      [b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'@\'"}}\r\n',
       EV]),
    # -- §8.1.5 stream and size limits -------------------------------------------------------
    R("8.1.5-three-in-one-write", QS + b"1}" + QS + b"2}" + QS + b"3}",
      [PRE + b', "id": 1}\r\n', PRE + b', "id": 2}\r\n', PRE + b', "id": 3}\r\n'],
      deviation=ST_ORDER),
    R("8.1.5-ten-in-one-write", b"".join(QS + b"%d}" % i for i in range(10)),
      [PRE + b', "id": %d}\r\n' % i for i in range(10)], deviation=ST_ORDER),
    R("8.1.5-bad-in-the-middle", QS + b'"g1"}{"execute":}' + QS + b'"g2"}',
      [PRE + b', "id": "g1"}\r\n', EV, PRE + b', "id": "g2"}\r\n'], deviation=ST_ORDER),
    R("8.1.5-1MiB-id", QS + b'"' + b"i" * (1 << 20) + b'"}',
      [PRE + b', "id": "' + b"i" * (1 << 20) + b'"}\r\n'], deviation=ST_ORDER),
    R("8.1.5-16MiB-id", QS + b'"' + b"j" * (16 << 20) + b'"}',
      # 16,777,302 bytes, as QEMU's reply (same members, another order).
      [PRE + b', "id": "' + b"j" * (16 << 20) + b'"}\r\n'], deviation=ST_ORDER),
    R("8.1.5-65MiB-id", QS + b'"' + b"x" * (65 << 20) + b'"}\n',
      [b'{"error": {"class": "GenericError", "desc": "JSON token size limit exceeded"}}\r\n',
       b'{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword \''
       + b"x" * 1006 + b'"}}\r\n',
       b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray '
       b'\'\\"}\\n\'"}}\r\n']),
    R("8.1.5-200000-element-array-id", QS + b"[" + b",".join([b"0"] * 200_000) + b"]}",
      [PRE + b', "id": [' + b", ".join([b"0"] * 200_000) + b"]}\r\n"], deviation=ST_ORDER),
    # 8 tokens before the array, then 2,097,144 more fit; the 2,097,145th array token (an
    # element) is refused, and each of the 102,854 tokens left is a message of its own.
    R("8.1.5-1100000-element-array-id", QS + b"[" + b",".join([b"0"] * 1_100_000) + b"]}",
      [b'{"error": {"class": "GenericError", "desc": "JSON token count limit exceeded"}}\r\n',
       *[EV, NOT_OBJ] * 51_427, EV, EV]),
    R("8.1.5-nesting-1000", QS + b"[" * 1000 + b"]" * 1000 + b"}",
      [PRE + b', "id": ' + b"[" * 1000 + b"]" * 1000 + b"}\r\n"], deviation=ST_ORDER),
    R("8.1.5-nesting-1030", QS + b"[" * 1030 + b"]" * 1030 + b"}",
      [b'{"error": {"class": "GenericError", "desc": "JSON nesting depth limit exceeded"}}\r\n',
       NOT_OBJ, *[EV] * 1025]),
    # -- §8.1.6 OOB --------------------------------------------------------------------------
    R("8.1.6-oob-not-allowed", b'{"exec-oob":"query-status","id":"o1"}',
      [b'{"error": {"class": "GenericError", "desc": "The command query-status does not '
       b'support OOB"}, "id": "o1"}\r\n'], mode="oob", deviation=ID_POS),
    R("8.1.6-oob-migrate-pause", b'{"exec-oob":"migrate-pause","id":"o2"}',
      [b'{"error": {"class": "CommandNotFound", "desc": "The command migrate-pause has not '
       b'been found"}, "id": "o2"}\r\n'], mode="oob", deviation=both(ID_POS, NO_MIGRATION)),
    R("8.1.6-oob-no-id", b'{"exec-oob":"query-status"}',
      [b'{"error": {"class": "GenericError", "desc": "The command query-status does not '
       b'support OOB"}}\r\n'], mode="oob"),
    R("8.1.6-x-oob-test", b'{"exec-oob":"x-oob-test","id":"o3"}',
      [b'{"error": {"class": "CommandNotFound", "desc": "The command x-oob-test has not been '
       b'found"}, "id": "o3"}\r\n'], mode="oob", deviation=ID_POS),
    R("8.1.6-execute-with-and-without-id", QS + b'"i"}{"execute":"query-status"}',
      [PRE + b', "id": "i"}\r\n', PRE + b"}\r\n"], mode="oob", deviation=ST_ORDER),
    R("8.1.6-12-pipelined", b"".join(QS + b"%d}" % i for i in range(12)),
      [PRE + b', "id": %d}\r\n' % i for i in range(12)], mode="oob", deviation=ST_ORDER),
    # With OOB enabled both keys are commands: QEMU names them in its QDict order.
    R("8.1.6-execute-clashes-with-exec-oob",
      b'{"execute":"query-status","exec-oob":"query-status","id":"a"}',
      [b'{"error": {"class": "GenericError", "desc": "QMP input member \'execute\' clashes '
       b'with \'exec-oob\'"}, "id": "a"}\r\n'], mode="oob", deviation=ID_POS),
    R("8.1.6-exec-oob-then-execute",
      b'{"exec-oob":"query-status","execute":"query-status","id":"b"}',
      [b'{"error": {"class": "GenericError", "desc": "QMP input member \'execute\' clashes '
       b'with \'exec-oob\'"}, "id": "b"}\r\n'], mode="oob", deviation=ID_POS),
    # -- §8.2 queries ------------------------------------------------------------------------
    R("8.2-query-version", b'{"execute":"query-version","id":"c2"}',
      [VERSION + b', "id": "c2"}\r\n'], deviation=VER),
    R("8.2-query-status", b'{"execute":"query-status","id":"c3"}',
      [PRE + b', "id": "c3"}\r\n'], deviation=ST_ORDER),
    R("8.2-query-kvm", b'{"execute":"query-kvm","id":"c4"}',
      [b'{"return": {"enabled": true, "present": true, "mem-encryption": false}, '
       b'"id": "c4"}\r\n'], deviation=KVM),
    R("8.2-query-name", b'{"execute":"query-name","id":"c5"}',
      [b'{"return": {"name": "cf"}, "id": "c5"}\r\n'], deviation=NAMED),
    R("8.2-query-uuid", b'{"execute":"query-uuid","id":"c6"}',
      [b'{"return": {"UUID": "' + UUID.encode() + b'"}, "id": "c6"}\r\n']),
    # -- §8.4 run state and events -----------------------------------------------------------
    R("8.4-cont", b'{"execute":"cont","id":"c71"}',
      [b'{"timestamp": TS, "event": "RESUME"}\r\n', b'{"return": {}, "id": "c71"}\r\n']),
    R("8.4-cont-then-status", b'{"execute":"cont","id":"c"}' + QS + b'"s"}',
      [b'{"timestamp": TS, "event": "RESUME"}\r\n', b'{"return": {}, "id": "c"}\r\n',
       RUN + b', "id": "s"}\r\n'], deviation=ST_ORDER),
    R("8.4-stop-while-running", b'{"execute":"cont","id":"c"}{"execute":"stop","id":"c73"}'
      + QS + b'"s"}',
      [b'{"timestamp": TS, "event": "RESUME"}\r\n', b'{"return": {}, "id": "c"}\r\n',
       b'{"timestamp": TS, "event": "STOP"}\r\n', b'{"return": {}, "id": "c73"}\r\n',
       PAUSED + b', "id": "s"}\r\n'], deviation=ST_ORDER),
    R("8.4-stop-while-paused-no-event", b'{"execute":"stop","id":"s1"}' + QS + b'"s"}',
      [b'{"return": {}, "id": "s1"}\r\n', PRE + b', "id": "s"}\r\n'], deviation=ST_ORDER),
    R("8.4-cont-while-running-no-event",
      b'{"execute":"cont","id":"c1"}{"execute":"cont","id":"c2"}',
      [b'{"timestamp": TS, "event": "RESUME"}\r\n', b'{"return": {}, "id": "c1"}\r\n',
       b'{"return": {}, "id": "c2"}\r\n']),
    R("8.4-reset-while-paused-gives-prelaunch",
      b'{"execute":"cont","id":"c"}{"execute":"stop","id":"s"}'
      b'{"execute":"system_reset","id":"c80"}' + QS + b'"q"}',
      [b'{"timestamp": TS, "event": "RESUME"}\r\n', b'{"return": {}, "id": "c"}\r\n',
       b'{"timestamp": TS, "event": "STOP"}\r\n', b'{"return": {}, "id": "s"}\r\n',
       b'{"timestamp": TS, "event": "RESET", "data": {"guest": false, '
       b'"reason": "host-qmp-system-reset"}}\r\n', b'{"return": {}, "id": "c80"}\r\n',
       PRE + b', "id": "q"}\r\n'], deviation=ST_ORDER),
    R("8.4-reset-while-running-stays-running",
      b'{"execute":"cont","id":"c"}{"execute":"system_reset","id":"r"}' + QS + b'"q"}',
      [b'{"timestamp": TS, "event": "RESUME"}\r\n', b'{"return": {}, "id": "c"}\r\n',
       b'{"timestamp": TS, "event": "RESET", "data": {"guest": false, '
       b'"reason": "host-qmp-system-reset"}}\r\n', b'{"return": {}, "id": "r"}\r\n',
       RUN + b', "id": "q"}\r\n'], deviation=ST_ORDER),
    R("8.4-powerdown-while-paused", b'{"execute":"system_powerdown","id":"p"}',
      [b'{"timestamp": TS, "event": "POWERDOWN"}\r\n', b'{"return": {}, "id": "p"}\r\n']),
    R("8.4-powerdown-while-running",
      b'{"execute":"cont","id":"c"}{"execute":"system_powerdown","id":"p"}'
      b'{"execute":"cont","id":"c2"}' + QS + b'"q"}',
      [b'{"timestamp": TS, "event": "RESUME"}\r\n', b'{"return": {}, "id": "c"}\r\n',
       b'{"timestamp": TS, "event": "POWERDOWN"}\r\n',
       b'{"timestamp": TS, "event": "SHUTDOWN", "data": {"guest": true, '
       b'"reason": "guest-shutdown"}}\r\n',
       b'{"timestamp": TS, "event": "STOP"}\r\n', b'{"return": {}, "id": "p"}\r\n',
       b'{"error": {"class": "GenericError", "desc": "Resetting the Virtual Machine is '
       b'required"}, "id": "c2"}\r\n',
       b'{"return": {"running": false, "singlestep": false, "status": "shutdown"}, '
       b'"id": "q"}\r\n'], deviation=both(POWERDOWN, ST_ORDER, ID_POS)),
    *[R(f"8.4-hmp-{cmd}", b'{"execute":"human-monitor-command","arguments":'
        b'{"command-line":"cont"},"id":"h1"}{"execute":"human-monitor-command",'
        b'"arguments":{"command-line":"' + cmd.encode() + b'"},"id":"h2"}',
        [b'{"timestamp": TS, "event": "RESUME"}\r\n', b'{"return": "", "id": "h1"}\r\n',
         *events, b'{"return": "", "id": "h2"}\r\n'])
      for cmd, events in [
          ("stop", [b'{"timestamp": TS, "event": "STOP"}\r\n']),
          ("system_reset", [b'{"timestamp": TS, "event": "RESET", "data": {"guest": false, '
                            b'"reason": "host-qmp-system-reset"}}\r\n'])]],
    # -- §8.5 human-monitor-command ----------------------------------------------------------
    *[R(f"8.5-{line.decode() or 'empty'}", b'{"execute":"human-monitor-command","arguments":'
        b'{"command-line":"' + line + b'"},"id":"h"}',
        [b'{"return": "' + ret + b'", "id": "h"}\r\n'], deviation=dev)
      for line, ret, dev in [
          (b"info status", b"VM status: paused (prelaunch)\\r\\n", ""),
          (b"info version", b"9.2.0" + PKG + b"\\r\\n", VER),
          (b"info name", b"cf\\r\\n", NAMED),
          (b"info kvm", b"kvm support: enabled\\r\\nmemory encryption: disabled\\r\\n", KVM),
          (b"info sev", b"SEV is not enabled\\r\\n", ""),
          (b"nosuchcommand", b"unknown command: 'nosuchcommand'\\r\\n", ""),
          (b"info nosuch", b"unknown command: 'info nosuch'\\r\\n", ""),
          (b"help nosuch", b"unknown command: 'nosuch'\\r\\n", ""),
          (b"help x", b"x /fmt addr -- virtual memory dump starting at 'addr'\\r\\n", ""),
          (b"help xp", b"xp /fmt addr -- physical memory dump starting at 'addr'\\r\\n", ""),
          (b"help memsave", b"memsave addr size file -- save to disk virtual memory dump "
                            b"starting at 'addr' of size 'size'\\r\\n", ""),
          (b"help pmemsave", b"pmemsave addr size file -- save to disk physical memory dump "
                             b"starting at 'addr' of size 'size'\\r\\n", ""),
          (b"", b"", ""),
          (b"   ", b"", ""),
          (b"info status extra", b"status: extraneous characters at the end of line\\r\\n"
                                 b"Try \\\"help info status\\\" for more information\\r\\n", ""),
      ]],
    R("8.5-info-status-running", b'{"execute":"cont","id":"c"}{"execute":'
      b'"human-monitor-command","arguments":{"command-line":"info status"},"id":"h"}',
      [b'{"timestamp": TS, "event": "RESUME"}\r\n', b'{"return": {}, "id": "c"}\r\n',
       b'{"return": "VM status: running\\r\\n", "id": "h"}\r\n']),
    R("8.5-info-status-paused", b'{"execute":"cont","id":"c"}{"execute":"stop","id":"s"}'
      b'{"execute":"human-monitor-command","arguments":{"command-line":"info status"},'
      b'"id":"h"}',
      [b'{"timestamp": TS, "event": "RESUME"}\r\n', b'{"return": {}, "id": "c"}\r\n',
       b'{"timestamp": TS, "event": "STOP"}\r\n', b'{"return": {}, "id": "s"}\r\n',
       b'{"return": "VM status: paused\\r\\n", "id": "h"}\r\n']),
    R("8.5-cpu-index-0", b'{"execute":"human-monitor-command","arguments":{"command-line":'
      b'"info status","cpu-index":0},"id":"h"}',
      [b'{"return": "VM status: paused (prelaunch)\\r\\n", "id": "h"}\r\n']),
    R("8.5-cpu-index-7", b'{"execute":"human-monitor-command","arguments":{"command-line":'
      b'"info status","cpu-index":7},"id":"c63"}',
      [b'{"error": {"class": "GenericError", "desc": "Parameter \'cpu-index\' expects a CPU '
       b'number"}, "id": "c63"}\r\n'], deviation=ID_POS),
    # -- the control socket (DESIGN §3): same framing, its own commands ----------------------
    R("control-greeting-then-negotiate", b'{"execute":"qmp_capabilities"}',
      [b'{"return": {}}\r\n'], mode="neg", sock="control", negotiates=True,
      deviation=CONTROL),
    R("control-not-negotiated", b'{"execute":"query-guests","id":1}',
      [NEG + b', "id": 1}\r\n'], mode="neg", sock="control", deviation=both(CONTROL, ID_POS)),
    R("control-query-version", b'{"execute":"query-version","id":"v"}',
      [VERSION + b', "id": "v"}\r\n'], sock="control", deviation=both(CONTROL, VER)),
    R("control-guest-command-not-found", b'{"execute":"query-status","id":"q"}',
      [b'{"error": {"class": "CommandNotFound", "desc": "The command query-status has not '
       b'been found"}, "id": "q"}\r\n'], sock="control", deviation=both(CONTROL, ID_POS)),
    R("control-hmp-info-version", b'{"execute":"human-monitor-command","arguments":'
      b'{"command-line":"info version"},"id":"h"}',
      [b'{"return": "9.2.0' + PKG + b'\\r\\n", "id": "h"}\r\n'], sock="control",
      deviation=both(CONTROL, VER)),
    R("control-hmp-info-status", b'{"execute":"human-monitor-command","arguments":'
      b'{"command-line":"info status"},"id":"h"}',
      [b'{"return": "unknown command: \'info status\'\\r\\n", "id": "h"}\r\n'],
      sock="control", deviation=CONTROL),
    R("control-parse-error", b"]", [EV], sock="control", deviation=CONTROL),
    R("control-1e400", b'{"execute":"query-version","id":1e400}',
      [VERSION + b', "id": 1e400}\r\n'], sock="control", deviation=both(CONTROL, VER, BIG)),
]


# -- running a row -----------------------------------------------------------------------------
_TS = re.compile(rb'\{"seconds": (\d+), "microseconds": (\d+)\}')


def normalise(line: bytes) -> bytes:
    """Check an event's timestamp is now-ish and well-formed, then write it as `TS`."""
    if not line.startswith(b'{"timestamp": '):
        return line
    m = _TS.match(line, len(b'{"timestamp": '))
    assert m, line
    assert abs(int(m.group(1)) - time.time()) < 300 and int(m.group(2)) < 1_000_000, line
    return line[:m.start()] + b"TS" + line[m.end():]


async def read_lines(client: Any, n: int) -> list[bytes]:
    async def read() -> list[bytes]:
        return [normalise(await client.reader.readline()) for _ in range(n)]
    return await asyncio.wait_for(read(), 20)


async def admin(raw_qmp: Any, path: str, command: bytes) -> bytes:
    """One command on the control socket; returns its reply (events skipped)."""
    c = await raw_qmp.connect(path, negotiate=True)
    try:
        await c.send(command)
        while True:
            line = await c.line()
            if not line.startswith(b'{"timestamp"'):
                return bytes(line)
    finally:
        await c.close()


def compare(got: list[bytes], want: list[bytes]) -> None:
    """Exact comparison, reported compactly for the rows with 100,000 lines or 16 MiB ones."""
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g != w:
            raise AssertionError(f"line {i}: got {g[:300]!r}… ({len(g)} bytes), "
                                 f"want {w[:300]!r}… ({len(w)} bytes)")


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=[pytest.mark.xfail(
    strict=True, reason="BUG " + r.xfail)] if r.xfail else []) for r in TABLE])
async def test_conformance(row: Row, module_daemon: Any, raw_qmp: Any) -> None:
    d = module_daemon
    if row.sock == "guest":
        reply = await admin(raw_qmp, d.control, b'{"execute":"guest-add","arguments":'
                            b'{"name":"cf","uuid":"' + UUID.encode() + b'"},"id":"add"}')
        assert reply.startswith(b'{"return": {"name": "cf"'), reply
        path = d.guest_socket("cf")
    else:
        path = d.control
    clients = []
    try:
        watcher = await raw_qmp.connect(path, negotiate=True)     # sees every event
        stranger = await raw_qmp.connect(path)                     # never negotiates
        c = await raw_qmp.connect(path)
        clients += [watcher, stranger, c]
        assert c.greeting == GREETING
        if row.mode in ("cmd", "oob"):
            enable = b',"arguments":{"enable":["oob"]}' if row.mode == "oob" else b""
            assert await c.cmd(b'{"execute":"qmp_capabilities"' + enable + b"}") == \
                b'{"return": {}}\r\n'

        # The row itself.
        writes = (row.send,) if isinstance(row.send, bytes) else row.send
        for i, w in enumerate(writes):
            if w is QUIET:
                assert await c.silent(0.2), "a reply came before the message was complete"
                continue
            if i:
                await asyncio.sleep(0.002)    # let the daemon see each write on its own
            await c.send(w)
        compare(await read_lines(c, len(row.expect)), list(row.expect))

        # Still alive, and nothing more was sent (the next line is the answer to this).
        negotiated = row.mode != "neg" or row.negotiates
        if not negotiated:
            assert await c.cmd(b'{"execute":"query-version","id":"alive"}') == \
                NEG + b', "id": "alive"}\r\n'
            assert await c.cmd(b'{"execute":"qmp_capabilities"}') == b'{"return": {}}\r\n'
        assert await c.cmd(b'{"execute":"query-version","id":"alive"}') == \
            VERSION + b', "id": "alive"}\r\n'
        if row.sock == "guest":
            assert re.fullmatch(rb'\{"return": \{"running": (true|false), "singlestep": false, '
                                rb'"status": "[a-z-]+"\}, "id": "alive"\}\r\n',
                                await c.cmd(b'{"execute":"query-status","id":"alive"}'))

        # §8.1.7: the negotiated bystander got exactly the row's events, the other none.
        events = [line for line in row.expect if line.startswith(b'{"timestamp"')]
        await watcher.send(b'{"execute":"query-version","id":"w"}')
        seen = await read_lines(watcher, len(events) + 1)
        assert seen == [*events, VERSION + b', "id": "w"}\r\n']
        assert await stranger.cmd(b'{"execute":"query-version","id":"s"}') == \
            NEG + b', "id": "s"}\r\n'
    finally:
        for cl in clients:
            await cl.close()
        if row.sock == "guest":
            assert await admin(raw_qmp, d.control, b'{"execute":"guest-remove","arguments":'
                               b'{"name":"cf"},"id":"rm"}') == b'{"return": {}, "id": "rm"}\r\n'


def test_the_table_covers_every_section() -> None:
    sections = {r.id.split("-")[0] for r in TABLE}
    assert {"8.1.1", "8.1.2", "8.1.3", "8.1.4", "8.1.5", "8.1.6", "8.2", "8.4", "8.5",
            "control"} <= sections
    assert len({r.id for r in TABLE}) == len(TABLE), "row ids must be unique"
