"""Test doubles for the gdb stub tests: an in-memory GdbTarget, and a raw packet client."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sevd.domain.machine import Vcpu
from sevd.protocol.gdb import EFAULT, GdbError, encode_packet

PAGE = 4096


def reset_regs(**changes: int) -> dict[str, int]:
    v = Vcpu(0)
    v.reset()
    v.regs.update(changes)
    return v.regs


#: A vCPU as sevd's simulated boot leaves it: long mode, OVMF's selectors.
LONG_MODE = {"cr0": 0x80050033, "cr3": 0x9000, "cr4": 0x668, "efer": 0xD01,
             "rip": 0x101000, "rsp": 0x80000, "rflags": 0x246, "cs": 0x38, "cs_base": 0,
             "ds": 0x30, "es": 0x30, "ss": 0x30, "fs": 0x30, "gs": 0x30}


@dataclass
class FakeTarget:
    """Virtual memory as a set of mapped pages (identity-mapped for simplicity, but each
    vCPU may see an offset), registers per vCPU, and a record of every call."""

    cpus: int = 1
    pages: dict[int, bytearray] = field(default_factory=dict)
    regs: list[dict[str, int]] = field(default_factory=list)
    refuse: bool = False            # as an SEV guest with NODBG: every access fails
    readonly: bool = False
    calls: list[tuple[str, object]] = field(default_factory=list)
    paused: int = 0
    resumed: int = 0

    def __post_init__(self) -> None:
        if not self.regs:
            self.regs = [reset_regs(**LONG_MODE) for _ in range(self.cpus)]

    def map(self, vaddr: int, data: bytes | int) -> None:
        """Map the pages under `data` (bytes, or that many zero bytes) and store it."""
        raw = bytes(data)
        end = vaddr + len(raw)
        for page in range(vaddr & ~(PAGE - 1), end, PAGE):
            self.pages.setdefault(page, bytearray(PAGE))
        self._store(vaddr, raw)

    def _store(self, vaddr: int, data: bytes) -> None:
        for i, b in enumerate(data):
            a = vaddr + i
            self.pages[a & ~(PAGE - 1)][a & (PAGE - 1)] = b

    def _check(self, vaddr: int, length: int) -> None:
        if self.refuse:
            raise GdbError(EFAULT, "debug access refused")
        for page in range(vaddr & ~(PAGE - 1), vaddr + max(length, 1), PAGE):
            if page not in self.pages:
                raise GdbError(EFAULT, "unmapped")

    # -- GdbTarget -------------------------------------------------------------------

    def vcpu_count(self) -> int:
        return self.cpus

    def registers(self, cpu: int) -> Mapping[str, int]:
        return self.regs[cpu]

    def read_memory(self, vaddr: int, length: int, cpu: int) -> bytes:
        self.calls.append(("read", (vaddr, length, cpu)))
        self._check(vaddr, length)
        return bytes(self.pages[(vaddr + i) & ~(PAGE - 1)][(vaddr + i) & (PAGE - 1)]
                     for i in range(length))

    def write_memory(self, vaddr: int, data: bytes, cpu: int) -> None:
        self.calls.append(("write", (vaddr, bytes(data), cpu)))
        self._check(vaddr, len(data))
        if self.readonly:
            raise GdbError(EFAULT, "read-only")
        self._store(vaddr, data)

    def set_register(self, cpu: int, name: str, value: int) -> None:
        self.calls.append(("set", (cpu, name, value)))
        self.regs[cpu][name] = value


@dataclass
class RunControlTarget(FakeTarget):
    """A FakeTarget that is also a GdbRunControl."""

    def pause(self) -> None:
        self.paused += 1

    def resume(self) -> None:
        self.resumed += 1


def unescape(body: bytes) -> bytes:
    """Undo the '}' escapes of a packet's payload."""
    out = bytearray()
    it = iter(body)
    for c in it:
        out.append(next(it) ^ 0x20 if c == 0x7D else c)
    return bytes(out)


class RawClient:
    """A gdb client at packet level, over a connected socket (for raw exchanges)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self.buf = b""
        self.no_ack = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def packet(self) -> bytes:
        """The next packet's payload (acknowledged unless in no-ack mode)."""
        while True:
            start = self.buf.find(b"$")
            end = self.buf.find(b"#", start + 1) if start >= 0 else -1
            if start >= 0 and end >= 0 and len(self.buf) >= end + 3:
                body = self.buf[start + 1:end]
                self.buf = self.buf[end + 3:]
                if not self.no_ack:
                    self.sock.sendall(b"+")
                return body
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def command(self, payload: str | bytes) -> bytes:
        raw = payload.encode("latin-1") if isinstance(payload, str) else payload
        self.sock.sendall(encode_packet(raw))
        return self.packet()

    def commands(self, payloads: Iterable[str]) -> list[bytes]:
        return [self.command(p) for p in payloads]
