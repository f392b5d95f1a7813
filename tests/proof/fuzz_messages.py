"""A seeded generator of QMP input, valid and hostile, for the daemon fuzz test.

Every message comes from one `random.Random`, so a seed reproduces a run exactly. Kinds:

* valid commands with random argument values, drawn from each command's schema (types,
  ranges and enums, mostly right, sometimes wrong, sometimes with an extra member), written
  in one of the styles clients use (compact, spaced, pretty, single quotes, raw UTF-8,
  `\\u` escapes), with random ids of every JSON type;
* HMP command lines for `human-monitor-command` (QEMU's rows with random formats, counts,
  addresses and expressions, plus garbage);
* mutations of those: bit flips, byte insertions and deletions, truncation, splices of two
  messages, duplicated members, values replaced by huge or odd numbers, deep nesting, odd
  and invalid escapes, control characters, NUL, invalid and overlong UTF-8, lone
  surrogates;
* random bytes and random JSON-ish token soup.

What the generator avoids, and why (these are not input problems but orders): `quit` on
either socket (it ends the daemon or the guest), HMP `quit`/`q` and `gdbserver` (a
listener on a random device), `guest-remove` of the fuzzed guest, and dump sizes between
1 MiB and the 4 GiB limit (a valid 4 GiB `pmemsave` really writes 4 GiB). `guest-add` and
`guest-remove` use a small pool of names, so that the guests the fuzz adds stay few.
"""

from __future__ import annotations

import collections
import json
import random
from typing import Any

from sevd.commands.schema import Schema

# Commands never sent (see the module docstring).
FORBIDDEN = {"quit"}
GUEST_POOL = [f"fa{i}" for i in range(4)]
MAX_SAFE_DUMP = 1 << 20

_HMP_INFO = ["status", "name", "uuid", "kvm", "sev", "mem", "tlb", "registers", "cpus",
             "version", "x-sevd-memory", "nosuch", "", "status extra"]
_HMP_FORMATS = "xduoctaiz"
_HMP_SIZES = ["", "b", "h", "w", "g", "q"]
_ODD_STRINGS = ["", " ", "\u00e9", "\U0001f600", "a\u0000b", "\u007f", "\\", '"', "'",
                "/", "\b\f\n\r\t", "\u2028", "\ufffd", "x" * 300, "..", "../../etc/passwd",
                "/etc/passwd", "/dev/zero", "dumps/../x", "a:b", "{", "}", "[", "]"]
_ODD_NUMBERS = ["0", "-0", "-1", "1e400", "-1e400", "1.5", "2.0", "1E+2", "0.1",
                "9223372036854775807", "9223372036854775808", "18446744073709551615",
                "18446744073709551616", "-9223372036854775809", "1" * 60, "-" + "9" * 30,
                "1e-400", "123456789012345678901234567890"]
_ODD_ESCAPES = ["\\u0000", "\\ud800", "\\udc00", "\\ud83d\\ude00", "\\uffff", "\\ufdd0",
                "\\u00E9", "\\q", "\\x41", "\\u12", "\\'", "\\/", "\\u0041\\u0042", "\\"]
_BAD_UTF8 = [b"\xff", b"\xfe", b"\xc3\x28", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80",
             b"\xf4\x90\x80\x80", b"\x80", b"\xf0\x9f\x98", b"\xef\xbf\xbf"]
_TOKENS = [b"{", b"}", b"[", b"]", b":", b",", b'"execute"', b'"arguments"', b'"id"',
           b'"exec-oob"', b'"query-status"', b"true", b"false", b"null", b"nul", b"1",
           b"-", b"01", b"1.", b"1e", b"'x'", b"\"", b"'", b" ", b"\n", b"\t", b"\x00",
           b"\x1b", b"@", b"NaN", b"Infinity", b"\\", b"\xff"]


class Generator:
    """Messages for one scope's socket ("host" or "guest")."""

    def __init__(self, rng: random.Random, schema: Schema, commands: list[str],
                 scope: str, fuzz_guest: str) -> None:
        self.rng = rng
        self.schema = schema
        self.scope = scope
        self.fuzz_guest = fuzz_guest
        self.commands = [c for c in commands if c not in FORBIDDEN]
        # Every command's arguments resolved once (schema, its document).
        self.arguments = {c: schema.resolve(schema.commands[c].arguments,
                                            schema.commands[c].base)
                          for c in self.commands if c in schema.commands}
        self.kinds = {"valid": 0, "mutated": 0, "random": 0, "soup": 0, "special": 0}
        self.per_command: collections.Counter[str] = collections.Counter()

    # -- top level ------------------------------------------------------------------------

    def message(self) -> bytes:
        r = self.rng.random()
        if r < 0.40:
            self.kinds["valid"] += 1
            return self.valid()
        if r < 0.80:
            self.kinds["mutated"] += 1
            return self.mutate(self.valid())
        if r < 0.88:
            self.kinds["random"] += 1
            return self.rng.randbytes(self.rng.randint(1, 40))
        if r < 0.95:
            self.kinds["soup"] += 1
            return b"".join(self.rng.choice(_TOKENS) for _ in range(self.rng.randint(1, 20)))
        self.kinds["special"] += 1
        return self.special()

    def valid(self) -> bytes:
        """A command of this scope with random arguments, serialised in a random style."""
        rng = self.rng
        name = rng.choice(self.commands)
        self.per_command[name] += 1
        msg: dict[str, Any] = {"execute": name}
        args = self.arguments_for(name)
        if args is not None:
            msg["arguments"] = args
        if rng.random() < 0.7:
            msg["id"] = self.any_value(2)
        if rng.random() < 0.5:
            items = list(msg.items())
            rng.shuffle(items)
            msg = dict(items)
        return self.serialise(msg)

    # -- argument values from the schema ----------------------------------------------------

    def arguments_for(self, name: str) -> dict[str, Any] | None:
        rng = self.rng
        schema, base = self.arguments[name]
        if not schema.get("properties") and rng.random() < 0.8:
            return None if rng.random() < 0.7 else {}
        args = self.object(schema, base, 0)
        # Keep the fuzz from ordering what the module docstring lists.
        if name in ("guest-add", "guest-remove") and rng.random() < 0.97:
            args["name"] = rng.choice(GUEST_POOL)
        if name == "guest-remove" and args.get("name") == self.fuzz_guest:
            args["name"] = GUEST_POOL[0]
        if name in ("memsave", "pmemsave") and isinstance(args.get("size"), int) \
                and MAX_SAFE_DUMP < args["size"] <= 4 << 30:
            args["size"] = rng.randint(0, 4096)
        if name == "human-monitor-command" and rng.random() < 0.9:
            args["command-line"] = self.hmp_line()
        return args

    def object(self, schema: dict[str, Any], base: str, depth: int) -> dict[str, Any]:
        rng = self.rng
        out: dict[str, Any] = {}
        required = set(schema.get("required", ()))
        for key, sub in schema.get("properties", {}).items():
            if rng.random() < (0.97 if key in required else 0.4):
                out[key] = self.value(sub, base, depth + 1)
        if rng.random() < 0.04:
            out[self.string()] = self.any_value(1)
        return out

    def value(self, sub: dict[str, Any], base: str, depth: int) -> Any:
        rng = self.rng
        s, base = self.schema.resolve(sub, base)
        if rng.random() < 0.05 or depth > 6:
            return self.any_value(1)  # the wrong type, now and then
        if "enum" in s:
            return rng.choice(s["enum"]) if rng.random() < 0.9 else self.string()
        qtype = s.get("x-qapi-type")
        if qtype is not None and qtype not in ("str", "bool", "number", "any", "null"):
            lo, hi = s.get("minimum", -(1 << 63)), s.get("maximum", (1 << 64) - 1)
            r = rng.random()
            if r < 0.6:
                return rng.randint(max(lo, -4096), min(hi, 1 << 16))
            if r < 0.8:
                return rng.choice([lo, hi, lo - 1, hi + 1, 0, -1, 1 << 32, 1 << 63])
            return rng.randint(lo, hi)
        if qtype == "str" or s.get("type") == "string":
            return self.string()
        if qtype == "bool" or s.get("type") == "boolean":
            return rng.random() < 0.5
        if qtype == "number":
            return rng.choice([0, 1.5, -2, 1e300, 0.1])
        if s.get("type") == "object":
            return self.object(s, base, depth)
        if s.get("type") == "array":
            return [self.value(s.get("items", {}), base, depth + 1)
                    for _ in range(rng.randint(0, 3))]
        return self.any_value(2)

    def string(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.3:
            return rng.choice(_ODD_STRINGS)
        if r < 0.5:
            return "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(0, 12)))
        if r < 0.6:
            return base64ish(rng)
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_."
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 16)))

    def any_value(self, depth: int) -> Any:
        rng = self.rng
        r = rng.random()
        if depth <= 0 or r < 0.55:
            return rng.choice([None, True, False, rng.randint(-(1 << 70), 1 << 70),
                               rng.randint(-1000, 1000), rng.random() * 1e6, self.string()])
        if r < 0.8:
            return [self.any_value(depth - 1) for _ in range(rng.randint(0, 3))]
        return {self.string(): self.any_value(depth - 1) for _ in range(rng.randint(0, 3))}

    # -- HMP --------------------------------------------------------------------------------

    def hmp_line(self) -> str:
        rng = self.rng
        if self.scope == "host":
            return rng.choice(["info version", "help", "help info", "info status", "",
                               "info", self.string()])
        r = rng.random()
        addr = self.hmp_expr()
        if r < 0.15:
            return "info " + rng.choice(_HMP_INFO)
        if r < 0.45:
            cmd = rng.choice(["x", "xp"])
            fmt = ""
            if rng.random() < 0.9:
                fmt = "/" + (str(rng.randint(0, 64)) if rng.random() < 0.8 else "") \
                    + rng.choice(_HMP_FORMATS + "qv!") + rng.choice(_HMP_SIZES)
            return f"{cmd} {fmt} {addr}".strip()
        if r < 0.55:
            return f"gva2gpa {addr}"
        if r < 0.65:
            size = rng.choice([0, 1, 16, 4096, -1, "0x10"])
            quoted = rng.choice(['"d.bin"', "d.bin", '"../x"', '"/tmp"', "", '"'])
            return f"{rng.choice(['memsave', 'pmemsave'])} {addr} {size} {quoted}"
        if r < 0.75:
            return rng.choice(["stop", "cont", "s", "c", "system_reset", "system_powerdown",
                               "help", "help x", "help info", "?", "", "   ", "info"])
        line = self.string()
        if line.split(" ", 1)[0] in ("q", "quit", "gdbserver"):
            line = "x" + line
        return line

    def hmp_expr(self) -> str:
        rng = self.rng
        parts = [rng.choice(["0", "0x1000", "0xfffff000", "$pc", "$rip", "$eax", "$nosuch",
                             str(rng.randint(0, 1 << 40)), hex(rng.randint(0, 1 << 64)),
                             "(1+2)", "-1", "zz", "1/0", "1%0", "'a'", "((((1))))"])
                 for _ in range(rng.randint(1, 3))]
        return rng.choice(["+", "-", "*", "&", "|", " "]).join(parts)

    # -- serialisation ----------------------------------------------------------------------

    def serialise(self, msg: Any) -> bytes:
        rng = self.rng
        style = rng.random()
        if style < 0.45:
            text = json.dumps(msg, separators=(",", ":"))
        elif style < 0.6:
            text = json.dumps(msg)
        elif style < 0.7:
            text = json.dumps(msg, indent=rng.choice([1, 2]))
        elif style < 0.85:
            return json.dumps(msg, ensure_ascii=False).encode("utf-8", "surrogatepass")
        else:
            text = _single_quoted(msg, rng)
        return text.encode("utf-8", "surrogatepass")

    # -- mutations --------------------------------------------------------------------------

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        b = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(12)
            if not b:
                b += rng.randbytes(4)
            i = rng.randrange(len(b))
            if op == 0:  # bit flips
                for _ in range(rng.randint(1, 4)):
                    j = rng.randrange(len(b))
                    b[j] ^= 1 << rng.randrange(8)
            elif op == 1:  # truncation
                del b[rng.randrange(len(b)):]
            elif op == 2:  # insert bytes
                b[i:i] = rng.randbytes(rng.randint(1, 4))
            elif op == 3:  # delete bytes
                del b[i:i + rng.randint(1, 4)]
            elif op == 4:  # splice with another message
                other = self.valid()
                b = b[:i] + other[rng.randrange(len(other) + 1):]
            elif op == 5:  # duplicate a member
                k = b.find(b",")
                if k > 0:
                    j = b.rfind(b"{", 0, k) + 1
                    b[k:k] = b"," + b[j:k]
            elif op == 6:  # a number where a value was
                j = b.find(b":")
                if j >= 0:
                    end = _value_end(b, j + 1)
                    b[j + 1:end] = rng.choice(_ODD_NUMBERS).encode()
            elif op == 7:  # deep nesting; past QEMU's limit now and then (after the limit
                # error every leftover token gets an error line of its own: ~1,000 lines)
                depth = rng.choice([2, 10, 100, 1000] if rng.random() < 0.9
                                   else [1023, 1024, 1025, 1100])
                opener = rng.choice([b"[", b"{\"a\":"])
                closer = b"]" if opener == b"[" else b"}"
                j = b.find(b":")
                nest = opener * depth + b"1" + closer * (depth - rng.choice([0, 0, 1]))
                b[j + 1:j + 1] = nest + b","
            elif op == 8:  # an odd escape inside a string
                j = b.find(b'"', i)
                if j >= 0:
                    b[j + 1:j + 1] = rng.choice(_ODD_ESCAPES).encode()
            elif op == 9:  # a control character
                b[i:i] = bytes([rng.choice([0, 1, 8, 9, 10, 13, 27, 31, 127])])
            elif op == 10:  # invalid UTF-8
                b[i:i] = rng.choice(_BAD_UTF8)
            else:  # a long string
                j = b.find(b'"', i)
                if j >= 0:
                    b[j + 1:j + 1] = b"y" * rng.choice([1000, 70000])
        return bytes(b)

    def special(self) -> bytes:
        rng = self.rng
        r = rng.randrange(6)
        if r == 0:  # deep nesting, over QEMU's limit or not
            depth = rng.choice([500, 1000, 1022, 1023, 1024, 1030])
            return b'{"execute":"query-version","id":' + b"[" * depth + b"]" * depth + b"}"
        if r == 1:  # a long id
            return b'{"execute":"query-version","id":"' + b"z" * (1 << 17) + b'"}'
        if r == 2:  # huge numbers
            return b'{"execute":"query-version","id":' + rng.choice(
                [b"1" * 5000, b"-" + b"9" * 400, b"1e99999", b"0." + b"1" * 800]) + b"}"
        if r == 3:  # a message split by a control character
            return b'{"execute":"query-\x01version"}'
        if r == 4:  # an unterminated object (swallows what follows until the reset)
            return b'{"execute":"query-version","id":"unt"\n'
        return b'{"exec-oob":"query-version","id":"oob"}'


def _value_end(b: bytearray, start: int) -> int:
    """Where a scalar value starting at `start` ends (a rough cut is enough)."""
    end = start
    while end < len(b) and b[end] not in b",}]":
        end += 1
    return end


def _single_quoted(v: Any, rng: random.Random) -> str:
    """QEMU's extension: strings in single quotes (chosen per string)."""
    if isinstance(v, str):
        if rng.random() < 0.5:
            return json.dumps(v)
        body = json.dumps(v)[1:-1].replace('\\"', '"').replace("'", "\\'")
        return "'" + body + "'"
    if isinstance(v, dict):
        return "{" + ",".join(_single_quoted(k, rng) + ":" + _single_quoted(x, rng)
                              for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_single_quoted(x, rng) for x in v) + "]"
    return json.dumps(v)


def base64ish(rng: random.Random) -> str:
    import base64

    return base64.b64encode(rng.randbytes(rng.choice([0, 1, 16, 32, 64]))).decode()
