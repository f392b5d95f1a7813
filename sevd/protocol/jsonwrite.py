"""QMP's output side: JSON text exactly as QEMU's json-writer.c writes it.

One message per line ending in CRLF, `", "` and `": "` separators, ASCII only, every code
point >= 0x7F and every control character as `\\uXXXX` with upper-case hex, `/` never
escaped, doubles as `%.17g`, int64/uint64 kept as integers. The standard library's C encoder
does nearly all of this; the differences (hex case, doubles, integers beyond uint64) are
fixed up only when they can occur, so the common reply costs one C call.
"""

from __future__ import annotations

import json
import math
import re
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Final

from sevd.protocol.jsonstream import JFloat

_ENCODE: Final = json.JSONEncoder(ensure_ascii=True, check_circular=False,
                                  allow_nan=False).encode
# JSONEncoder.encode() builds a new C encoder on every call (about a microsecond, a quarter
# of a small reply's cost); one built once, with the same settings, does not.
_C_ITER: Final = None if c_make_encoder is None else c_make_encoder(
    None, json.JSONEncoder().default, encode_basestring_ascii, None, ": ", ", ", False, False,
    False)


def _encode_plain(value: Any) -> str:
    if _C_ITER is None:  # an interpreter without the C accelerator
        return _ENCODE(value)
    return "".join(_C_ITER(value, 0))
# An escaped backslash pair is consumed first, so `\\u00e9` (a literal backslash) stays.
_HEX_ESCAPE: Final = re.compile(r"(\\\\)|\\u([0-9a-f]{4})")
_INT_MIN: Final = -(1 << 63)
_UINT_MAX: Final = (1 << 64) - 1


def _upper(m: re.Match[str]) -> str:
    return m.group(1) or "\\u" + m.group(2).upper()


def _fix_case(text: str) -> str:
    return _HEX_ESCAPE.sub(_upper, text) if "\\u" in text else text


def _plain(value: Any) -> bool:
    """True when the C encoder writes `value` exactly as QEMU would."""
    t = type(value)
    if t is dict:
        items: Any = value.values()
    elif t is list:
        items = value
    elif t is str or t is bool or value is None:
        return True
    elif t is int:
        return bool(_INT_MIN <= value <= _UINT_MAX)
    else:
        return False
    # A loop rather than all(generator): replies are mostly flat objects of strings and
    # booleans, and this runs for every reply.
    for v in items:
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int:
            if not _INT_MIN <= v <= _UINT_MAX:
                return False
        elif t is dict or t is list:
            if not _plain(v):
                return False
        else:
            return False
    return True


def _double(value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        # QEMU prints `inf`, which is not JSON; echo what the client sent (DESIGN §8).
        return value.text if isinstance(value, JFloat) else "null"
    return format(value, ".17g")


def _slow(value: Any) -> str:
    t = type(value)
    if t is dict:
        return "{" + ", ".join(encode_value(k) + ": " + _slow(v)
                               for k, v in value.items()) + "}"
    if t is list:
        return "[" + ", ".join(_slow(v) for v in value) + "]"
    if t is int and not _INT_MIN <= value <= _UINT_MAX:
        # Beyond uint64 the parser has made a double of it (parse_literal()).
        try:
            return _double(float(value))
        except OverflowError:
            return str(value)
    if isinstance(value, float):
        return _double(value)
    return _fix_case(_ENCODE(value))


def encode_value(value: Any) -> str:
    """One JSON value as QEMU writes it (no line end)."""
    t = type(value)
    # The ids clients send are strings or small integers: one C call, no walk.
    if t is str:
        return _fix_case(encode_basestring_ascii(value))
    if t is int and _INT_MIN <= value <= _UINT_MAX:
        return int.__repr__(value)
    if _plain(value):
        return _fix_case(_encode_plain(value))
    return _slow(value)


def reply_ok(ret_json: str, id_json: str | None) -> bytes:
    """`{"return": …, "id": …}` with already-encoded parts."""
    if id_json is None:
        return ('{"return": ' + ret_json + "}\r\n").encode("ascii")
    return ('{"return": ' + ret_json + ', "id": ' + id_json + "}\r\n").encode("ascii")


def reply_error(cls: str, desc: str, id_json: str | None) -> bytes:
    """`{"error": {"class": …, "desc": …}, "id": …}` (sevd's key order, DESIGN §8)."""
    err = '{"error": {"class": ' + encode_value(cls) + ', "desc": ' + encode_value(desc) + "}"
    if id_json is not None:
        err += ', "id": ' + id_json
    return (err + "}\r\n").encode("ascii")


def message(obj: dict[str, Any]) -> bytes:
    """Any server message (greeting, event) as one CRLF-terminated line."""
    return (encode_value(obj) + "\r\n").encode("ascii")
