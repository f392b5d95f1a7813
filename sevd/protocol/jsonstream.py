"""QMP's input side: a JSON *stream* parser that behaves like QEMU's, byte for byte.

QEMU does not read lines. Its lexer (qobject/json-lexer.c, 3.1+), streamer
(qobject/json-streamer.c) and parser (qobject/json-parser.c) consume a byte stream and emit a
message whenever braces and brackets balance; errors are reported with exact texts and the
lexer resynchronises on structural or control characters. This module ports that machinery
(the *exact path*) and puts a *fast path* in front of it: when the next message is plain,
ASCII, standard JSON, the C decoder of the standard library parses it in a microsecond, and
every case the fast path cannot vouch for (an error, an extension such as single quotes, a
split message, a limit) is handed to the exact path from the same position. Both paths give
identical results for the inputs the fast path accepts.

Pure: no asyncio, no QMP semantics beyond "a message is one JSON value".
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

# QEMU's limits (json-lexer.c / json-streamer.c).
MAX_TOKEN_SIZE: Final = 64 << 20
MAX_TOKEN_COUNT: Final = 2 << 20
MAX_NESTING: Final = 1 << 10

# Token types (json-parser-int.h).
T_ERROR, T_LCURLY, T_RCURLY, T_LSQUARE, T_RSQUARE, T_COLON, T_COMMA = range(7)
T_INTEGER, T_FLOAT, T_KEYWORD, T_STRING, T_OVERSIZE = range(7, 12)

# Lexer states (json-lexer.c); LOOKAHEAD marks "terminal reached, re-lex this byte".
(S_RECOVERY, S_DQ_ESC, S_DQ, S_SQ_ESC, S_SQ, S_ZERO, S_EXP_DIGITS, S_EXP_SIGN, S_EXP_E,
 S_MANTISSA, S_MANTISSA_DIGITS, S_DIGITS, S_SIGN, S_KEYWORD, S_START) = range(100, 115)
LOOKAHEAD: Final = 0x1000


class JFloat(float):
    """A JSON number parsed as a double that remembers its source text.

    QEMU echoes an `id` of `1e400` as `inf` (invalid JSON); sevd echoes the original text
    instead (DESIGN §8), so the text must survive parsing.
    """

    text: str

    def __new__(cls, text: str) -> JFloat:
        obj = super().__new__(cls, float(text))
        obj.text = text
        return obj


@dataclass(frozen=True, slots=True)
class ParseError:
    """One `JSON parse error, …` (or limit) message; QEMU sends these without an id."""

    desc: str


def _build_table() -> list[list[int]]:
    """The transition table of json-lexer.c, one row of 256 entries per state."""
    err = T_ERROR
    table: dict[int, list[int]] = {}

    def row(default: int = err) -> list[int]:
        return [default] * 256

    def term(t: int) -> list[int]:
        return row(t | LOOKAHEAD)

    r = row(S_RECOVERY)
    for c in range(0x20):
        r[c] = S_START | LOOKAHEAD
    r[0xFE] = r[0xFF] = S_START | LOOKAHEAD
    r[ord("\t")] = S_RECOVERY
    for ch in "[]{}:,":
        r[ord(ch)] = S_START | LOOKAHEAD
    table[S_RECOVERY] = r

    for esc, body, quote in ((S_DQ_ESC, S_DQ, '"'), (S_SQ_ESC, S_SQ, "'")):
        r = row()
        for c in range(0x20, 0xFE):
            r[c] = body
        table[esc] = r
        r = row()
        for c in range(0x20, 0xFE):
            r[c] = body
        r[ord("\\")] = esc
        r[ord(quote)] = T_STRING
        table[body] = r

    r = term(T_INTEGER)
    for c in b"0123456789":
        r[c] = err
    r[ord(".")] = S_MANTISSA
    table[S_ZERO] = r

    r = term(T_FLOAT)
    for c in b"0123456789":
        r[c] = S_EXP_DIGITS
    table[S_EXP_DIGITS] = r

    r = row()
    for c in b"0123456789":
        r[c] = S_EXP_DIGITS
    table[S_EXP_SIGN] = r

    r = row()
    r[ord("-")] = r[ord("+")] = S_EXP_SIGN
    for c in b"0123456789":
        r[c] = S_EXP_DIGITS
    table[S_EXP_E] = r

    r = term(T_FLOAT)
    for c in b"0123456789":
        r[c] = S_MANTISSA_DIGITS
    r[ord("e")] = r[ord("E")] = S_EXP_E
    table[S_MANTISSA_DIGITS] = r

    r = row()
    for c in b"0123456789":
        r[c] = S_MANTISSA_DIGITS
    table[S_MANTISSA] = r

    r = term(T_INTEGER)
    for c in b"0123456789":
        r[c] = S_DIGITS
    r[ord("e")] = r[ord("E")] = S_EXP_E
    r[ord(".")] = S_MANTISSA
    table[S_DIGITS] = r

    r = row()
    r[ord("0")] = S_ZERO
    for c in b"123456789":
        r[c] = S_DIGITS
    table[S_SIGN] = r

    r = term(T_KEYWORD)
    for c in range(ord("a"), ord("z") + 1):
        r[c] = S_KEYWORD
    table[S_KEYWORD] = r

    r = row()
    r[ord('"')] = S_DQ
    r[ord("'")] = S_SQ
    r[ord("0")] = S_ZERO
    for c in b"123456789":
        r[c] = S_DIGITS
    r[ord("-")] = S_SIGN
    for ch, t in (("{", T_LCURLY), ("}", T_RCURLY), ("[", T_LSQUARE), ("]", T_RSQUARE),
                  (",", T_COMMA), (":", T_COLON)):
        r[ord(ch)] = t
    for c in range(ord("a"), ord("z") + 1):
        r[c] = S_KEYWORD
    for c in b" \t\r\n":
        r[c] = S_START
    table[S_START] = r
    return [table.get(s, row()) for s in range(S_RECOVERY, S_START + 1)]


_TABLE: Final = _build_table()
# Runs a state can swallow in one step (the lexer stays in the same state for all of them);
# this is what keeps a 16 MiB string from costing 16 million Python iterations.
_RUNS: Final = {
    S_DQ: re.compile(rb'[^"\\\x00-\x1f\xfe\xff]+'),
    S_SQ: re.compile(rb"[^'\\\x00-\x1f\xfe\xff]+"),
    S_RECOVERY: re.compile(rb"[^\x00-\x08\x0a-\x1f\xfe\xff\[\]{}:,]+"),
    S_KEYWORD: re.compile(rb"[a-z]+"),
    S_DIGITS: re.compile(rb"[0-9]+"),
}
_WS: Final = re.compile(rb"[ \t\r\n]*")
# In the fast path: `\u` escapes that name surrogates or noncharacters, which QEMU rejects
# (or pairs, which the exact path decodes as QEMU does).
_SUSPECT_ESCAPE: Final = re.compile(r"\\u(?:[dD][89a-fA-F]|[fF][dD][dDeE]|[fF][fF][fF][eEfF])")


class _DupKey(Exception):
    pass


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise _DupKey
    return d


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN / Infinity are not JSON to QEMU


def _integer(text: str) -> int | JFloat:
    """parse_literal(): int64 if possible, else uint64, else a double.

    Beyond 21 characters no sign and digits fit in 64 bits, so such a literal goes straight
    to the double; converting it to int first would fail for more than 4,300 digits (Python's
    int_max_str_digits guard), and must not take the session down.
    """
    if len(text) <= 21:
        v = int(text)
        if -(1 << 63) <= v < (1 << 64):
            return v
    return JFloat(text)


# The fast path's C scanners (scan_once: raw_decode without its Python wrapper). The plain
# one has no Python callback per object or integer: the C code builds dicts and ints itself.
# Only a literal of 19 or more digits can fall outside int64/uint64 (and must become a
# double), so a feed with such a digit run uses the one with `_integer`; and since a plain
# dict keeps the last of duplicate keys silently, `_try_fast` proves there were none or asks
# the checking scanner, which refuses them.
Scanner = Callable[[str, int], tuple[Any, int]]


def _scanner(**hooks: Any) -> Scanner:
    scan: Scanner = json.JSONDecoder(parse_float=JFloat, parse_constant=_reject_constant,
                                     **hooks).scan_once  # type: ignore[attr-defined]
    return scan


_FAST: Final = _scanner()
_FAST_LONG: Final = _scanner(parse_int=_integer)
_FAST_CHECKED: Final = _scanner(parse_int=_integer, object_pairs_hook=_pairs_hook)
_LONG_DIGITS: Final = re.compile(r"[0-9]{19}")


def _members(value: Any) -> int:
    """Members of every object in `value` (a parsed message)."""
    n = 0
    t = type(value)
    if t is dict:
        n = len(value)
        items = value.values()
    elif t is list:
        items = value
    else:
        return 0
    for v in items:
        t = type(v)
        if t is dict or t is list:
            n += _members(v)
    return n


class JsonStreamParser:
    """Feed bytes, get complete messages (any JSON value) and ParseErrors, in order."""

    def __init__(self, max_token_size: int = MAX_TOKEN_SIZE,
                 max_token_count: int = MAX_TOKEN_COUNT,
                 max_nesting: int = MAX_NESTING) -> None:
        self.max_token_size = max_token_size
        self.max_token_count = max_token_count
        self.max_nesting = max_nesting
        self._state = S_START
        self._token = bytearray()
        self._tokens: list[tuple[int, bytes]] = []
        self._token_size = 0
        self._braces = 0
        self._brackets = 0
        self._out: list[Any] = []

    @property
    def idle(self) -> bool:
        """True between messages: nothing buffered, the lexer at its start state."""
        return self._state == S_START and not self._tokens and not self._token

    def feed(self, data: bytes) -> list[Any]:
        """Consume `data`; return the messages and ParseErrors it completed, in order."""
        out = self._out = []
        pos = 0
        n = len(data)
        # The fast path reads a str; decode the ASCII prefix once per feed, not per message.
        ascii_end = n if data.isascii() else _first_non_ascii(data)
        text = data[:ascii_end].decode("ascii")
        scan = _FAST_LONG if _LONG_DIGITS.search(text) else _FAST
        while pos < n:
            # `idle`, inlined: this loop runs once per message.
            if self._state == S_START and not self._tokens and not self._token:
                if data[pos] != 0x7B:
                    pos = _WS.match(data, pos).end()  # type: ignore[union-attr]
                    if pos >= n:
                        break
                if data[pos] == 0x7B and pos < ascii_end:  # '{'
                    done = self._try_fast(scan, text, pos)
                    if done:
                        pos = done
                        continue
            pos = self._lex(data, pos)
        self._out = []
        return out

    def _try_fast(self, scan: Scanner, text: str, pos: int) -> int:
        """Parse one standard-JSON object at `pos` with the C decoder; 0 if not vouched for."""
        try:
            value, end = scan(text, pos)
        except (StopIteration, ValueError, RecursionError):
            return 0
        # Duplicate keys: every member written in the text has a ':' of its own, so with
        # C colons in the text, P members written and E members parsed, E <= P <= C. When
        # C == E there was no duplicate (len(value) is E when nothing nests). Otherwise a
        # colon sits inside a string or a key repeats: the checking scanner tells which.
        colons = text.count(":", pos, end)
        if colons != len(value) and colons != _members(value):
            try:
                value, end = _FAST_CHECKED(text, pos)
            except (StopIteration, ValueError, _DupKey, RecursionError):
                return 0
        # Accept only what QEMU would accept identically: within the size, token and
        # nesting limits (characters bound the tokens, counts of openers bound the depth)
        # and free of the escapes QEMU treats specially.
        # The streamer refuses a message once its token bytes + 1 exceed the size limit,
        # so a message of exactly max_token_size bytes is refused too.
        if end - pos >= self.max_token_size or end - pos > self.max_token_count:
            return 0
        if end - pos > self.max_nesting and \
                text.count("[", pos, end) + text.count("{", pos, end) > self.max_nesting:
            return 0
        if text.find("\\u", pos, end) >= 0 and _SUSPECT_ESCAPE.search(text, pos, end):
            return 0
        self._out.append(value)
        return end

    # -- the exact path: json-lexer.c ------------------------------------------------------

    def _lex(self, data: bytes, pos: int) -> int:
        """Lex from `pos` until the stream is idle again (or the data ends)."""
        table = _TABLE
        base = S_RECOVERY
        n = len(data)
        token = self._token
        while pos < n:
            state = self._state
            run = _RUNS.get(state)
            if run is not None:
                # Never let a run carry the token past the size limit: QEMU cuts the token
                # at exactly max+1 bytes and lexes the rest afresh.
                m = run.match(data, pos, min(n, pos + self.max_token_size + 1 - len(token)))
                if m is not None:
                    if state != S_RECOVERY:
                        token += m.group()
                    pos = m.end()
                    if len(token) > self.max_token_size:
                        self._oversize()
                        token = self._token
                    continue
            ch = data[pos]
            new = table[state - base][ch]
            consumed = not (new & LOOKAHEAD)
            new &= ~LOOKAHEAD
            if consumed:
                token.append(ch)
                pos += 1
            if new < S_RECOVERY:  # a token type: the token is complete
                if new == T_ERROR:
                    self._process(T_ERROR, bytes(token))
                    token.clear()
                    self._state = S_RECOVERY
                else:
                    self._process(new, bytes(token))
                    token.clear()
                    self._state = S_START
            elif new == S_START:
                token.clear()
                self._state = S_START
                if self.idle:
                    return pos
            elif new == S_RECOVERY:
                token.clear()
                self._state = S_RECOVERY
            else:
                self._state = new
            if len(token) > self.max_token_size:
                self._oversize()
                token = self._token
            if self._state == S_START and not self._tokens:
                return pos
        return pos

    def _oversize(self) -> None:
        # json-lexer.c hands an oversized token to the streamer with a non-token type;
        # the streamer then fails its size check.
        self._process(T_OVERSIZE, bytes(self._token))
        self._token.clear()
        self._state = S_START

    # -- json-streamer.c -------------------------------------------------------------------

    def _process(self, ttype: int, text: bytes) -> None:
        if ttype == T_LCURLY:
            self._braces += 1
        elif ttype == T_RCURLY:
            self._braces -= 1
        elif ttype == T_LSQUARE:
            self._brackets += 1
        elif ttype == T_RSQUARE:
            self._brackets -= 1
        elif ttype == T_ERROR:
            # QEMU formats the token with %s: a NUL byte ends the text (`stray ''` for a
            # lone NUL, `stray '"id'` for `"id<NUL>`).
            stray = text.split(b"\0", 1)[0]
            self._emit(ParseError("JSON parse error, stray '" + _text(stray) + "'"))
            return
        if self._token_size + len(text) + 1 > self.max_token_size:
            self._emit(ParseError("JSON token size limit exceeded"))
            return
        if len(self._tokens) + 1 > self.max_token_count:
            self._emit(ParseError("JSON token count limit exceeded"))
            return
        if self._brackets + self._braces > self.max_nesting:
            self._emit(ParseError("JSON nesting depth limit exceeded"))
            return
        self._tokens.append((ttype, text))
        self._token_size += len(text)
        if (self._braces > 0 or self._brackets > 0) and self._braces >= 0 \
                and self._brackets >= 0:
            return
        self._emit(_parse_tokens(self._tokens))

    def _emit(self, result: Any) -> None:
        self._braces = self._brackets = 0
        self._tokens = []
        self._token_size = 0
        self._out.append(result)


_NON_ASCII: Final = re.compile(rb"[\x80-\xff]")


def _first_non_ascii(b: bytes) -> int:
    # A regex, not a loop over the bytes: 64 KiB with one UTF-8 character near the end
    # cost 2 ms in Python.
    m = _NON_ASCII.search(b)
    return len(b) if m is None else m.start()


def _text(raw: bytes) -> str:
    """Bytes of the input as they appear in an error text (QEMU's writer: U+FFFD for bad UTF-8)."""
    return raw.decode("utf-8", errors="replace")


# -- json-parser.c --------------------------------------------------------------------------

class _Fail(Exception):
    pass


class _Parser:
    """Recursive descent over one message's tokens; the first error wins, as in QEMU."""

    def __init__(self, tokens: list[tuple[int, bytes]]) -> None:
        self.tokens = tokens
        self.i = 0
        self.err: str | None = None

    def error(self, msg: str) -> None:
        if self.err is None:
            # parse_error() formats into a 1024-byte buffer: messages are cut at 1023.
            self.err = "JSON parse error, " + msg.encode("utf-8", "surrogateescape")[
                :1023].decode("utf-8", "replace")

    def peek(self) -> tuple[int, bytes] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def pop(self) -> tuple[int, bytes] | None:
        tok = self.peek()
        if tok is not None:
            self.i += 1
        return tok

    def value(self) -> Any:
        tok = self.peek()
        if tok is None:
            self.error("premature EOI")
            raise _Fail
        t = tok[0]
        if t == T_LCURLY:
            return self.obj()
        if t == T_LSQUARE:
            return self.array()
        if t in (T_INTEGER, T_FLOAT, T_STRING):
            self.i += 1
            return self.literal(tok)
        if t == T_KEYWORD:
            self.i += 1
            kw = tok[1]
            if kw == b"true":
                return True
            if kw == b"false":
                return False
            if kw == b"null":
                return None
            self.error("invalid keyword '" + _text(kw) + "'")
            raise _Fail
        self.error("expecting value")
        raise _Fail

    def value_or_none(self) -> tuple[bool, Any]:
        try:
            return True, self.value()
        except _Fail:
            return False, None

    def pair(self, d: dict[str, Any]) -> None:
        if self.peek() is None:
            self.error("premature EOI")
            raise _Fail
        ok, key = self.value_or_none()
        if not ok or not isinstance(key, str):
            self.error("key is not a string in object")
            raise _Fail
        tok = self.pop()
        if tok is None:
            self.error("premature EOI")
            raise _Fail
        if tok[0] != T_COLON:
            self.error("missing : in object pair")
            raise _Fail
        ok, val = self.value_or_none()
        if not ok:
            self.error("Missing value in dict")
            raise _Fail
        if key in d:
            self.error("duplicate key")
            raise _Fail
        d[key] = val

    def obj(self) -> dict[str, Any]:
        self.i += 1
        d: dict[str, Any] = {}
        peek = self.peek()
        if peek is None:
            self.error("premature EOI")
            raise _Fail
        if peek[0] == T_RCURLY:
            self.i += 1
            return d
        self.pair(d)
        tok = self.pop()
        if tok is None:
            self.error("premature EOI")
            raise _Fail
        while tok[0] != T_RCURLY:
            if tok[0] != T_COMMA:
                self.error("expected separator in dict")
                raise _Fail
            self.pair(d)
            tok = self.pop()
            if tok is None:
                self.error("premature EOI")
                raise _Fail
        return d

    def array(self) -> list[Any]:
        self.i += 1
        items: list[Any] = []
        peek = self.peek()
        if peek is None:
            self.error("premature EOI")
            raise _Fail
        if peek[0] == T_RSQUARE:
            self.i += 1
            return items
        while True:
            ok, v = self.value_or_none()
            if not ok:
                self.error("expecting value")
                raise _Fail
            items.append(v)
            tok = self.pop()
            if tok is None:
                self.error("premature EOI")
                raise _Fail
            if tok[0] == T_RSQUARE:
                return items
            if tok[0] != T_COMMA:
                self.error("expected separator in list")
                raise _Fail

    def literal(self, tok: tuple[int, bytes]) -> Any:
        t, raw = tok
        if t == T_STRING:
            return self.string(raw)
        text = raw.decode("ascii")
        if t == T_INTEGER:
            return _integer(text)
        return JFloat(text)

    def string(self, raw: bytes) -> str:
        """parse_string(): escapes, QEMU's `\\'`, modified UTF-8 validation."""
        out: list[str] = []
        i = 1
        end = len(raw) - 1
        while i < end:
            m = _PLAIN.match(raw, i, end)
            if m is not None:
                out.append(m.group().decode("ascii"))
                i = m.end()
                continue
            c = raw[i]
            if c == 0x5C:  # backslash
                beg = i
                e = raw[i + 1] if i + 1 < end else 0
                i += 2
                simple = _ESCAPES.get(e)
                if simple is not None:
                    out.append(simple)
                elif e == 0x75:  # \uXXXX
                    cp = _hex4(raw, i, end)
                    i += 4
                    if 0xD800 <= cp <= 0xDBFF and raw[i:i + 2] == b"\\u":
                        cp = 0x10000 + ((cp & 0x3FF) << 10)
                        trail = _hex4(raw, i + 2, end)
                        if 0xDC00 <= trail <= 0xDFFF:
                            cp |= trail & 0x3FF
                            i += 6
                        else:
                            cp = -1
                    if not _valid_codepoint(cp):
                        self.error(_text(raw[beg:i]) + " is not a valid Unicode character")
                        raise _Fail
                    out.append(chr(cp))
                else:
                    self.error("invalid escape sequence in string")
                    raise _Fail
            else:
                cp, i = _mod_utf8_codepoint(raw, i, min(i + 6, end))
                if cp < 0:
                    self.error("invalid UTF-8 sequence in string")
                    raise _Fail
                out.append(chr(cp))
        return "".join(out)


_PLAIN: Final = re.compile(rb"[\x20-\x5b\x5d-\x7f]+")  # no backslash, ASCII
_ESCAPES: Final = {0x22: '"', 0x27: "'", 0x5C: "\\", 0x2F: "/", 0x62: "\b", 0x66: "\f",
                   0x6E: "\n", 0x72: "\r", 0x74: "\t"}
_MIN_CP: Final = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)


def _hex4(raw: bytes, i: int, end: int) -> int:
    digits = raw[i:min(i + 4, end)]
    if len(digits) != 4 or not all(c in b"0123456789abcdefABCDEF" for c in digits):
        return -1
    return int(digits, 16)


def _valid_codepoint(cp: int) -> bool:
    """is_valid_codepoint() of util/unicode.c: no surrogates, no noncharacters."""
    if cp < 0 or cp > 0x10FFFF:
        return False
    if (cp & 0xFFFFF800) == 0xD800:
        return False
    return not (0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE)


def _mod_utf8_codepoint(raw: bytes, i: int, n: int) -> tuple[int, int]:
    """mod_utf8_codepoint() of util/unicode.c: (code point or -1, next index)."""
    byte = raw[i]
    i += 1
    if byte < 0x80:
        return byte, i
    if byte >= 0xFE or not byte & 0x40:
        return -1, i
    length = 0
    mask = 0x80
    while byte & mask:
        length += 1
        mask >>= 1
    cp = byte & (mask - 1)
    for _ in range(1, length):
        nxt = raw[i] if i < n else 0
        if nxt & 0xC0 != 0x80:
            return -1, i
        i += 1
        cp = (cp << 6) | (nxt & 0x3F)
    if cp > 0x10FFFF or 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
        return -1, i
    if 0xD800 <= cp <= 0xDFFF:
        return -1, i
    if cp < _MIN_CP[length - 2] and not (cp == 0 and length == 2):
        return -1, i
    return cp, i


# Nesting is capped at MAX_NESTING by the streamer; the recursive descent needs about two
# frames per level, more than CPython's default limit allows. Raised once, at import, rather
# than in the middle of whatever code first meets a deep message.
if sys.getrecursionlimit() < 4 * MAX_NESTING + 500:
    sys.setrecursionlimit(4 * MAX_NESTING + 500)


def _parse_tokens(tokens: list[tuple[int, bytes]]) -> Any:
    p = _Parser(tokens)
    try:
        return p.value()
    except _Fail:
        assert p.err is not None
        return ParseError(p.err)
