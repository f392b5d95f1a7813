"""The GDB remote serial protocol, as QEMU's gdbstub speaks it, for sevd's simulated vCPUs.

A sans-I/O packet engine: the transport feeds received bytes to :meth:`GdbSession.receive`
and writes back what it returns; everything about the guest goes through an injected
:class:`GdbTarget` (registers as ``Vcpu.regs`` names, memory by virtual address through
the debug path). The 2016 SEV RFC added DBG_ENCRYPT for exactly this client: a debugger
reading and writing an SEV guest's memory in plaintext when the guest's policy allows it.

Behaviour follows QEMU's ``gdbstub/gdbstub.c`` and ``target/i386/gdbstub.c`` (checked
packet by packet against a real QEMU 7.2, see tests/gdb/): framing ``$data#cs`` with
``+``/``-`` acknowledgements and retransmission, ``}`` escapes and ``*`` run-length
encoding accepted on input, the x86-64 target description and its 66 core registers in
``i386-64bit.xml`` order, multiprocess thread ids (``p01.01``) when gdb offers
``multiprocess+``, and QEMU's error replies (``E14`` when memory or a register cannot be
accessed, ``E22`` for bad arguments, ``E00`` for a bad ``qXfer`` annex, an empty packet for
what is not supported). QEMU's error numbers are decimal errno values written as two digits
(``E14`` is EFAULT), so :class:`GdbError` carries an errno and is sent the same way.

Where sevd goes beyond or against QEMU 7.2/9.2, on purpose:

* ``QStartNoAckMode`` is offered and honoured (QEMU answers it with an empty packet), and
  ``X`` (binary memory write) is accepted (QEMU has no ``X``; gdb probes it and falls back
  to ``M`` on an empty reply, so clients that work here work there);
* the simulated CPU does not execute: ``s`` (and a ``vCont`` that steps) reports its stop
  at once, ``T05``, with the registers unchanged; ``c`` waits for gdb's interrupt byte
  (0x03) and then reports ``T02`` as QEMU does when interrupted; breakpoints and
  watchpoints are accepted and never hit;
* a few malformed packets that QEMU leaves unanswered (so the client hangs: ``G`` without
  data, ``vCont`` without actions, ``qThreadExtraInfo`` for a missing thread; QEMU drops
  the connection on ``D;pid`` for another process) get ``E22`` or an empty packet;
* ``st0``-``st7`` are written as they are read, physical register (i + TOP) % 8 (QEMU 9.2
  reads them so but writes physical register i; 7.2 did both without TOP);
* ``D``, ``k`` and ``vKill`` end the connection (QEMU exits on ``k``; sevd never kills
  a guest from the debugger);
* ``qemu.PhyMemMode`` is not offered (the target reads virtual memory only); ``qRcmd``
  (gdb's ``monitor`` command) works when the session is given a ``monitor`` callback.

This module is pure: it must not import asyncio, sockets, the transports, the QMP session,
``sevd.commands`` or ``sevd.domain``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "FEATURE_XML",
    "FEATURE_XML_NAME",
    "MAX_PACKET_LENGTH",
    "REGISTERS",
    "TARGET_XML",
    "GdbError",
    "GdbRegister",
    "GdbRunControl",
    "GdbSession",
    "GdbTarget",
    "checksum",
    "encode_packet",
]

log = logging.getLogger("sevd.gdb")

#: QEMU's MAX_PACKET_LENGTH: the PacketSize offered, the longest packet read, and the
#: bound on ``m`` (``MAX_PACKET_LENGTH / 2`` bytes, as hex doubles them).
MAX_PACKET_LENGTH = 4096

EFAULT = 14
EINVAL = 22
_SIGTRAP = 5
_SIGINT = 2
_M64 = (1 << 64) - 1


class GdbError(Exception):
    """A target operation that failed; sent as ``E`` + the errno as two decimal digits
    (QEMU's ``E14`` for memory it cannot access is EFAULT, 14)."""

    def __init__(self, errno: int = EFAULT, message: str = "") -> None:
        super().__init__(message or f"errno {errno}")
        self.errno = errno


class GdbTarget(Protocol):
    """What the stub needs from a guest. ``cpu`` is a vCPU index (gdb thread id - 1)."""

    def vcpu_count(self) -> int: ...

    def registers(self, cpu: int) -> Mapping[str, int]:
        """The vCPU's registers, named as ``Vcpu.regs`` (and sevd.hmp.cpudump) name them;
        a missing register reads as zero."""
        ...

    def read_memory(self, vaddr: int, length: int, cpu: int) -> bytes:
        """``length`` bytes at virtual address ``vaddr`` as that vCPU sees them; raises
        GdbError (EFAULT) when it cannot (unmapped, debug refused by the policy)."""
        ...

    def write_memory(self, vaddr: int, data: bytes, cpu: int) -> None:
        """Store ``data`` at virtual address ``vaddr``; raises GdbError when it cannot."""
        ...

    def set_register(self, cpu: int, name: str, value: int) -> None:
        """Set one register (a ``Vcpu.regs`` name); may raise GdbError."""
        ...


@runtime_checkable
class GdbRunControl(Protocol):
    """Optional: a target that also has these methods is paused and resumed as QEMU pauses
    and resumes the VM for its debugger (paused when gdb connects and on its interrupt,
    resumed by ``c``/``vCont;c`` and on detach)."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


# ------------------------------------------------------------------ target description


@dataclass(frozen=True)
class GdbRegister:
    """One core register: gdb's name, size in bits, XML type, and its ``Vcpu.regs`` name."""

    name: str
    bits: int
    type: str
    key: str


def _core_registers() -> tuple[GdbRegister, ...]:
    # The order of QEMU's i386-64bit.xml and x86_cpu_gdb_read_register(): 16 GPRs, rip,
    # eflags, 6 selectors, fs_base gs_base k_gs_base, cr0 cr2 cr3 cr4 cr8 efer, st0-7,
    # 8 x87 control registers, xmm0-15, mxcsr.
    regs = [GdbRegister(n, 64, {"rbp": "data_ptr", "rsp": "data_ptr"}.get(n, "int64"), n)
            for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                      *(f"r{i}" for i in range(8, 16)))]
    regs += [GdbRegister("rip", 64, "code_ptr", "rip"),
             GdbRegister("eflags", 32, "i386_eflags", "rflags")]
    regs += [GdbRegister(s, 32, "int32", s) for s in ("cs", "ss", "ds", "es", "fs", "gs")]
    regs += [GdbRegister("fs_base", 64, "int64", "fs_base"),
             GdbRegister("gs_base", 64, "int64", "gs_base"),
             GdbRegister("k_gs_base", 64, "int64", "kernel_gs_base")]
    regs += [GdbRegister(c, 64, t, c) for c, t in (
        ("cr0", "i386_cr0"), ("cr2", "int64"), ("cr3", "i386_cr3"), ("cr4", "i386_cr4"),
        ("cr8", "int64"), ("efer", "i386_efer"))]
    regs += [GdbRegister(f"st{i}", 80, "i387_ext", f"st{i}") for i in range(8)]
    regs += [GdbRegister(n, 32, "int", k) for n, k in (
        ("fctrl", "fcw"), ("fstat", "fsw"), ("ftag", "ftag"), ("fiseg", "fiseg"),
        ("fioff", "fioff"), ("foseg", "foseg"), ("fooff", "fooff"), ("fop", "fop"))]
    regs += [GdbRegister(f"xmm{i}", 128, "vec128", f"xmm{i}") for i in range(16)]
    regs += [GdbRegister("mxcsr", 32, "i386_mxcsr", "mxcsr")]
    return tuple(regs)


#: The core registers in target-description (and ``g`` packet) order.
REGISTERS = _core_registers()
_REG_INDEX = {r.name: i for i, r in enumerate(REGISTERS)}
_GPR_COUNT = 16
_RIP = _REG_INDEX["rip"]
_FS_BASE = _REG_INDEX["fs_base"]
_ST0 = _REG_INDEX["st0"]
_FCTRL = _REG_INDEX["fctrl"]

FEATURE_XML_NAME = "i386-64bit.xml"


def _flags(ident: str, size: int, fields: list[tuple[str, int, int]]) -> str:
    body = "".join(f'<field name="{n}" start="{s}" end="{e}"/>' for n, s, e in fields)
    return f'<flags id="{ident}" size="{size}">{body}</flags>'


def _feature_xml() -> str:
    eflags = [("CF", 0, 0), ("", 1, 1), ("PF", 2, 2), ("AF", 4, 4), ("ZF", 6, 6),
              ("SF", 7, 7), ("TF", 8, 8), ("IF", 9, 9), ("DF", 10, 10), ("OF", 11, 11),
              ("NT", 14, 14), ("RF", 16, 16), ("VM", 17, 17), ("AC", 18, 18),
              ("VIF", 19, 19), ("VIP", 20, 20), ("ID", 21, 21)]
    cr0 = [("PE", 0, 0), ("MP", 1, 1), ("EM", 2, 2), ("TS", 3, 3), ("ET", 4, 4),
           ("NE", 5, 5), ("WP", 16, 16), ("AM", 18, 18), ("NW", 29, 29), ("CD", 30, 30),
           ("PG", 31, 31)]
    cr3 = [("PCID", 0, 11), ("PDBR", 12, 63)]
    cr4 = [("VME", 0, 0), ("PVI", 1, 1), ("TSD", 2, 2), ("DE", 3, 3), ("PSE", 4, 4),
           ("PAE", 5, 5), ("MCE", 6, 6), ("PGE", 7, 7), ("PCE", 8, 8), ("OSFXSR", 9, 9),
           ("OSXMMEXCPT", 10, 10), ("UMIP", 11, 11), ("LA57", 12, 12), ("VMXE", 13, 13),
           ("SMXE", 14, 14), ("FSGSBASE", 16, 16), ("PCIDE", 17, 17),
           ("OSXSAVE", 18, 18), ("SMEP", 20, 20), ("SMAP", 21, 21), ("PKE", 22, 22)]
    efer = [("SCE", 0, 0), ("LME", 8, 8), ("LMA", 10, 10), ("NXE", 11, 11),
            ("SVME", 12, 12), ("LMSLE", 13, 13), ("FFXSR", 14, 14), ("TCE", 15, 15)]
    mxcsr = [("IE", 0, 0), ("DE", 1, 1), ("ZE", 2, 2), ("OE", 3, 3), ("UE", 4, 4),
             ("PE", 5, 5), ("DAZ", 6, 6), ("IM", 7, 7), ("DM", 8, 8), ("ZM", 9, 9),
             ("OM", 10, 10), ("UM", 11, 11), ("PM", 12, 12), ("FZ", 15, 15)]
    vectors = [("v4f", "ieee_single", 4), ("v2d", "ieee_double", 2), ("v16i8", "int8", 16),
               ("v8i16", "int16", 8), ("v4i32", "int32", 4), ("v2i64", "int64", 2)]
    union = "".join(f'<field name="{n}" type="{t}"/>' for n, t in (
        ("v4_float", "v4f"), ("v2_double", "v2d"), ("v16_int8", "v16i8"),
        ("v8_int16", "v8i16"), ("v4_int32", "v4i32"), ("v2_int64", "v2i64"),
        ("uint128", "uint128")))
    parts = [
        '<?xml version="1.0"?><!DOCTYPE feature SYSTEM "gdb-target.dtd">',
        '<feature name="org.gnu.gdb.i386.core">',
        _flags("i386_eflags", 4, eflags), _flags("i386_cr0", 8, cr0),
        _flags("i386_cr3", 8, cr3), _flags("i386_cr4", 8, cr4),
        _flags("i386_efer", 8, efer), _flags("i386_mxcsr", 4, mxcsr),
        *(f'<vector id="{i}" type="{t}" count="{c}"/>' for i, t, c in vectors),
        f'<union id="vec128">{union}</union>',
    ]
    for i, r in enumerate(REGISTERS):
        group = ' group="float"' if r.type == "int" else (
            ' group="vector"' if r.name == "mxcsr" else "")
        num = ' regnum="0"' if i == 0 else ""
        parts.append(f'<reg name="{r.name}" bitsize="{r.bits}" type="{r.type}"{num}{group}/>')
    parts.append("</feature>")
    return "".join(parts)


#: The x86-64 core feature (gdb's org.gnu.gdb.i386.core), generated from REGISTERS so the
#: ``g`` layout and the description cannot disagree.
FEATURE_XML = _feature_xml()
#: QEMU's target.xml for x86_64, byte for byte.
TARGET_XML = ('<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target>'
              "<architecture>i386:x86-64</architecture>"
              f'<xi:include href="{FEATURE_XML_NAME}"/></target>')

# ------------------------------------------------------------------------ framing


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def _escape(data: bytes) -> bytes:
    # gdb_memtox(): '#', '$', '*' and '}' become '}' + (byte ^ 0x20). Harmless elsewhere,
    # since gdb unescapes every packet.
    if not any(c in data for c in b"#$*}"):
        return data
    out = bytearray()
    for c in data:
        if c in b"#$*}":
            out += bytes((0x7D, c ^ 0x20))
        else:
            out.append(c)
    return bytes(out)


def encode_packet(data: bytes) -> bytes:
    """``$`` + escaped data + ``#`` + two hex digits of checksum."""
    body = _escape(data)
    return b"$" + body + b"#" + b"%02x" % checksum(body)


# ------------------------------------------------------------- QEMU's argument parsing

_ONE_THREAD, _ALL_THREADS, _ALL_PROCESSES, _THREAD_ERR = range(4)
_HEX = frozenset("0123456789abcdefABCDEF")


def _strtoul(s: str, i: int) -> tuple[int, int] | None:
    """qemu_strtou64(s, &end, 16): leading blanks, a sign, ``0x``; None without digits or
    beyond 64 bits. A minus sign wraps, as strtoull's does."""
    n = len(s)
    while i < n and s[i] in " \t\n\v\f\r":
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    if s[i:i + 2] in ("0x", "0X") and i + 2 < n and s[i + 2] in _HEX:
        i += 2
    j = i
    while j < n and s[j] in _HEX:
        j += 1
    if j == i:
        return None
    value = int(s[i:j], 16)
    if value > _M64:
        return None
    return ((-value) & _M64 if neg else value), j


def _next_param(s: str, i: int, delim: str) -> int:
    """cmd_next_param(): past the next delimiter (``?`` = any of ``,;:=``, ``0`` = end,
    ``.`` = one character)."""
    if delim == "0":
        return len(s)
    if delim == ".":
        return i + 1 if i < len(s) else i
    delims = ",;:=" if delim == "?" else delim
    while i < len(s) and s[i] not in delims:
        i += 1
    return i + 1 if i < len(s) else i


Thread = tuple[int, int, int]  # (kind, pid, tid)
Param = int | str | Thread


def _read_thread_id(s: str, i: int) -> tuple[Thread, int]:
    pid = 0
    if i < len(s) and s[i] == "p":
        got = _strtoul(s, i + 1)
        if got is None:
            return (_THREAD_ERR, 0, 0), i
        pid, i = got
        i += 1  # the '.'
    got = _strtoul(s, i)
    if got is None:
        return (_THREAD_ERR, 0, 0), i
    tid, i = got
    if pid == _M64:
        return (_ALL_PROCESSES, 0, 0), i
    if tid == _M64:
        return (_ALL_THREADS, pid, 0), i
    return (_ONE_THREAD, pid, tid), i


def _parse(data: str, schema: str) -> list[Param] | None:
    """cmd_parse_params(): None when a number does not parse (QEMU then sends an empty
    packet); fewer parameters when the data ends early (the handler decides)."""
    params: list[Param] = []
    i = 0
    k = 0
    while k + 1 < len(schema) and i < len(data):
        kind, delim = schema[k], schema[k + 1]
        if kind in "lL":
            got = _strtoul(data, i)
            if got is None:
                return None
            value, i = got
            params.append(value)
        elif kind == "s":
            params.append(data[i:])
        elif kind == "o":
            params.append(data[i])
        elif kind == "t":
            thread, i = _read_thread_id(data, i)
            params.append(thread)
        i = _next_param(data, i, delim)
        k += 2
    return params


def _num(param: Param) -> int:
    assert isinstance(param, int)
    return param


def _thread(param: Param) -> Thread:
    assert isinstance(param, tuple)
    return param


# -------------------------------------------------------------------------- session

_IDLE, _GETLINE, _GETLINE_ESC, _GETLINE_RLE, _CHKSUM1, _CHKSUM2 = range(6)


def _hex(data: bytes) -> str:
    return data.hex()


def _error(errno: int) -> str:
    return f"E{errno:02d}"


class GdbSession:
    """One gdb connection. Feed it bytes; send what it returns; close when :attr:`closed`.

    ``monitor``, when given, runs an HMP command line for gdb's ``monitor`` command
    (``qRcmd``) and returns its text.
    """

    def __init__(self, target: GdbTarget, *,
                 monitor: Callable[[str], str] | None = None) -> None:
        self.target = target
        self.monitor = monitor
        self.closed = False
        #: True between a continue and gdb's interrupt: the stub owes gdb a stop reply.
        self.running = False
        self.no_ack = False
        self.multiprocess = False
        self.g_cpu = 0
        self.c_cpu = 0
        self.sstep_flags = 0x7
        self._query_cpu: int | None = None
        self._breakpoints: set[tuple[int, int, int]] = set()
        self._state = _IDLE
        self._line = bytearray()
        self._sum = 0
        self._csum = 0
        self._last_packet = b""
        self._out = bytearray()
        self._control = target if isinstance(target, GdbRunControl) else None
        if self._control is not None:
            # gdb_chr_event(CHR_EVENT_OPENED): QEMU stops the VM for its debugger.
            self._control.pause()

    # -- bytes in, bytes out -------------------------------------------------------------

    def receive(self, data: bytes) -> bytes:
        """Consume bytes from gdb; return the bytes to send back."""
        for ch in data:
            if self.closed:
                break
            self._byte(ch)
        out = bytes(self._out)
        self._out.clear()
        return out

    def _put(self, reply: str | bytes) -> None:
        raw = reply.encode("latin-1") if isinstance(reply, str) else reply
        packet = encode_packet(raw)
        self._out += packet
        # Kept for a '-' from gdb (gdb_put_packet_binary waits for the ack); not in
        # no-ack mode, where nothing is acknowledged or resent.
        self._last_packet = b"" if self.no_ack else packet

    def _byte(self, ch: int) -> None:
        if self._last_packet:
            # gdb_read_byte(): waiting for the ack of our last packet.
            if ch == 0x2D:  # '-': resend
                self._out += self._last_packet
            if ch in (0x2B, 0x24):  # '+' or the start of a new packet
                self._last_packet = b""
            if ch != 0x24:
                return
        if self.running:
            # A running VM stops on any byte; only gdb's interrupt (0x03) earns a stop
            # reply, SIGINT, as QEMU's gdb_vm_state_change sends it.
            self.running = False
            if self._control is not None:
                self._control.pause()
            if ch == 0x03:
                self._stop_reply(_SIGINT)
            return
        state = self._state
        if state == _IDLE:
            if ch == 0x24:  # '$'
                self._line.clear()
                self._sum = 0
                self._state = _GETLINE
            # '+' (gdb acks early on connect) and garbage are ignored.
        elif state == _GETLINE:
            if ch == 0x7D:  # '}'
                self._state = _GETLINE_ESC
                self._sum += ch
            elif ch == 0x2A:  # '*'
                self._state = _GETLINE_RLE
                self._sum += ch
            elif ch == 0x23:  # '#'
                self._state = _CHKSUM1
            elif len(self._line) >= MAX_PACKET_LENGTH - 1:
                self._state = _IDLE  # overrun: the packet is dropped, as QEMU drops it
            else:
                self._line.append(ch)
                self._sum += ch
        elif state == _GETLINE_ESC:
            if ch == 0x23:
                self._state = _CHKSUM1
            elif len(self._line) >= MAX_PACKET_LENGTH - 1:
                self._state = _IDLE
            else:
                self._line.append(ch ^ 0x20)
                self._sum += ch
                self._state = _GETLINE
        elif state == _GETLINE_RLE:
            if ch < 0x20 or ch in (0x23, 0x24) or ch > 126:
                self._state = _GETLINE  # invalid count: ignored
            else:
                repeat = ch - 0x20 + 3
                if len(self._line) + repeat >= MAX_PACKET_LENGTH - 1:
                    self._state = _IDLE
                elif not self._line:
                    self._state = _GETLINE
                else:
                    self._line += bytes((self._line[-1],)) * repeat
                    self._sum += ch
                    self._state = _GETLINE
        elif state == _CHKSUM1:
            if chr(ch) not in _HEX:
                self._state = _GETLINE
                return
            self._csum = int(chr(ch), 16) << 4
            self._state = _CHKSUM2
        elif state == _CHKSUM2:
            if chr(ch) not in _HEX:
                self._state = _GETLINE
                return
            self._csum |= int(chr(ch), 16)
            self._state = _IDLE
            if self._csum != self._sum & 0xFF:
                if not self.no_ack:
                    self._out += b"-"  # gdb resends; without acks the packet is lost
                return
            if not self.no_ack:
                self._out += b"+"
            self._handle(bytes(self._line).decode("latin-1"))

    # -- threads -------------------------------------------------------------------------

    def _count(self) -> int:
        return max(0, self.target.vcpu_count())

    def _thread_id(self, cpu: int) -> str:
        return f"p01.{cpu + 1:02x}" if self.multiprocess else f"{cpu + 1:02x}"

    def _cpu_for(self, pid: int, tid: int) -> int | None:
        """gdb_get_cpu(): one process (pid 1) whose threads are the vCPUs (tid = index+1);
        0 means any."""
        if pid not in (0, 1):
            return None
        if tid == 0:
            return 0 if self._count() else None
        return tid - 1 if 1 <= tid <= self._count() else None

    def _stop_reply(self, signal: int) -> None:
        self._put(f"T{signal:02x}thread:{self._thread_id(self.c_cpu)};")

    # -- registers -----------------------------------------------------------------------

    def _cs64(self, regs: Mapping[str, int]) -> bool:
        # HF_CS64: EFER.LMA and CS.L. Without an explicit CS cache, a long-mode vCPU runs
        # 64-bit code (as sevd.hmp.cpudump derives it).
        lma = bool(regs.get("efer", 0) & (1 << 10))
        return lma and bool(regs.get("cs_attr", 1 << 21) & (1 << 21))

    def _read_register(self, regs: Mapping[str, int], n: int) -> bytes:
        reg = REGISTERS[n]
        if _ST0 <= n < _ST0 + 8:
            # st(i) is physical register (i + TOP) % 8, as x86_cpu_gdb_read_register maps it.
            top = (regs.get("fsw", 0) >> 11) & 7
            value = regs.get(f"fpr{(n - _ST0 + top) % 8}", 0)
        elif n < _GPR_COUNT or n == _RIP:
            value = regs.get(reg.key, 0)
            if not self._cs64(regs):
                # Outside 64-bit code QEMU shows the low halves and r8-r15 as zero.
                value = 0 if 8 <= n < _GPR_COUNT else value & 0xFFFFFFFF
        elif reg.key in ("ftag", "fiseg", "fioff", "foseg", "fooff", "fop"):
            value = 0  # QEMU does not track these and always reads 0
        elif reg.key == "fcw":
            value = regs.get("fcw", 0x37F)
        elif reg.key == "mxcsr":
            value = regs.get("mxcsr", 0x1F80)
        else:
            value = regs.get(reg.key, 0)
        return (value & ((1 << reg.bits) - 1)).to_bytes(reg.bits // 8, "little")

    def _write_register(self, cpu: int, regs: Mapping[str, int], n: int, raw: bytes) -> None:
        reg = REGISTERS[n]
        value = int.from_bytes(raw[:reg.bits // 8].ljust(reg.bits // 8, b"\0"), "little")
        if n < _GPR_COUNT or n == _RIP:
            if not self._cs64(regs):
                if 8 <= n < _GPR_COUNT:
                    return  # QEMU ignores r8-r15 outside 64-bit code
                value &= 0xFFFFFFFF
            self.target.set_register(cpu, reg.key, value)
        elif _ST0 <= n < _ST0 + 8:
            top = (regs.get("fsw", 0) >> 11) & 7
            self.target.set_register(cpu, f"fpr{(n - _ST0 + top) % 8}", value)
        elif reg.key in ("ftag", "fiseg", "fioff", "foseg", "fooff", "fop"):
            return  # accepted and ignored, as QEMU does
        else:
            self.target.set_register(cpu, reg.key, value)

    # -- dispatch ------------------------------------------------------------------------

    def _handle(self, line: str) -> None:
        if not line:
            self._put("")
            return
        cmd, rest = line[0], line[1:]
        handler = _HANDLERS.get(cmd)
        if handler is None:
            self._put("")
            return
        try:
            handler(self, rest)
        except GdbError as e:
            self._put(_error(e.errno))
        except Exception:
            # A fault in the target must not end the debugging session (DESIGN §7: the
            # traceback goes to the log, never on the wire); gdb sees an access error.
            log.exception("gdb packet %r failed", line[:64])
            self._put(_error(EFAULT))

    def _with(self, data: str, schema: str) -> list[Param] | None:
        params = _parse(data, schema)
        if params is None:
            self._put("")  # QEMU: a command whose arguments do not parse is "unsupported"
        return params

    def _h_bang(self, data: str) -> None:
        self._put("OK")

    def _h_halt_reason(self, data: str) -> None:
        # handle_target_halt(): the stop reply, and gdb is (re)starting: drop breakpoints.
        self._breakpoints.clear()
        self._stop_reply(_SIGTRAP)

    def _continue(self, addr: int | None) -> None:
        if addr is not None:
            self.target.set_register(self.c_cpu, "rip", addr)
        self.running = True
        if self._control is not None:
            self._control.resume()

    def _step(self, addr: int | None) -> None:
        if addr is not None:
            self.target.set_register(self.c_cpu, "rip", addr)
        # The simulated CPU executes nothing: the step is over at once.
        self._stop_reply(_SIGTRAP)

    def _h_continue(self, data: str) -> None:
        params = self._with(data, "L0")
        if params is not None:
            self._continue(_num(params[0]) if params else None)

    def _h_continue_sig(self, data: str) -> None:
        if self._with(data, "l0") is not None:
            self._continue(None)

    def _h_step(self, data: str) -> None:
        params = self._with(data, "L0")
        if params is not None:
            self._step(_num(params[0]) if params else None)

    def _h_detach(self, data: str) -> None:
        params = self._with(data, "?.l0")
        if params is None:
            return
        if self.multiprocess and (not params or params[0] != 1):
            self._put(_error(EINVAL))
            return
        self._breakpoints.clear()
        self._put("OK")
        if self._control is not None:
            self._control.resume()  # QEMU continues a VM no debugger is attached to
        self.closed = True

    def _h_kill(self, data: str) -> None:
        self.closed = True

    def _h_read_all(self, data: str) -> None:
        regs = self.target.registers(self.g_cpu)
        self._put("".join(_hex(self._read_register(regs, n)) for n in range(len(REGISTERS))))

    def _h_write_all(self, data: str) -> None:
        params = self._with(data, "s0")
        if params is None:
            return
        raw = _unhex(str(params[0])) if params else None
        if raw is None:
            self._put(_error(EINVAL))
            return
        regs = self.target.registers(self.g_cpu)
        pos = 0
        for n, reg in enumerate(REGISTERS):
            size = reg.bits // 8
            if pos + size > len(raw):
                break
            self._write_register(self.g_cpu, regs, n, raw[pos:pos + size])
            pos += size
        self._put("OK")

    def _h_read_reg(self, data: str) -> None:
        params = self._with(data, "L0")
        if params is None:
            return
        if not params or not 0 <= _num(params[0]) < len(REGISTERS):
            self._put(_error(EFAULT))
            return
        regs = self.target.registers(self.g_cpu)
        self._put(_hex(self._read_register(regs, _num(params[0]))))

    def _h_write_reg(self, data: str) -> None:
        params = self._with(data, "L?s0")
        if params is None:
            return
        if len(params) != 2:
            self._put(_error(EINVAL))
            return
        n = _num(params[0])
        raw = _unhex(str(params[1]))
        if raw is None:
            self._put(_error(EINVAL))
            return
        if 0 <= n < len(REGISTERS):
            self._write_register(self.g_cpu, self.target.registers(self.g_cpu), n, raw)
        self._put("OK")  # QEMU acknowledges writes to registers it does not have

    def _h_read_mem(self, data: str) -> None:
        params = self._with(data, "L,L0")
        if params is None:
            return
        if len(params) != 2:
            self._put(_error(EINVAL))
            return
        addr, length = _num(params[0]), _num(params[1])
        if length > MAX_PACKET_LENGTH // 2:
            self._put(_error(EINVAL))
            return
        if length == 0:
            self._put("")  # QEMU's zero-length read: an empty hex string
            return
        self._put(_hex(self._read_memory(addr, length)))

    def _read_memory(self, addr: int, length: int) -> bytes:
        data = self.target.read_memory(addr & _M64, length, self.g_cpu)
        if len(data) != length:
            raise GdbError(EFAULT, "short read")
        return data

    def _h_write_mem(self, data: str) -> None:
        params = self._with(data, "L,L:s0")
        if params is None:
            return
        if len(params) != 3:
            self._put(_error(EINVAL))
            return
        addr, length = _num(params[0]), _num(params[1])
        text = str(params[2])
        if length > len(text) // 2:
            self._put(_error(EINVAL))
            return
        raw = _unhex(text[:2 * length])
        if raw is None:
            self._put(_error(EINVAL))
            return
        self.target.write_memory(addr & _M64, raw, self.g_cpu)
        self._put("OK")

    def _h_write_mem_binary(self, data: str) -> None:
        # X addr,length:binary (not in QEMU; see the module docstring). The framing
        # already removed the escapes.
        head, sep, body = data.partition(":")
        params = _parse(head, "L,L0")
        if not sep or params is None or len(params) != 2:
            self._put(_error(EINVAL))
            return
        addr, length = _num(params[0]), _num(params[1])
        raw = body.encode("latin-1")
        if length != len(raw):
            self._put(_error(EINVAL))
            return
        if length:
            self.target.write_memory(addr & _M64, raw, self.g_cpu)
        self._put("OK")

    def _h_breakpoint(self, data: str, insert: bool) -> None:
        params = self._with(data, "l?L?L0")
        if params is None:
            return
        if len(params) != 3:
            self._put(_error(EINVAL))
            return
        kind, addr, length = (_num(p) for p in params)
        if kind > 4:
            self._put("")  # -ENOSYS: gdb falls back or gives up
            return
        key = (kind, addr, length)
        if insert:
            self._breakpoints.add(key)
        elif key in self._breakpoints:
            self._breakpoints.discard(key)
        else:
            self._put(_error(EINVAL))  # -ENOENT
            return
        self._put("OK")

    def _h_insert_bp(self, data: str) -> None:
        self._h_breakpoint(data, True)

    def _h_remove_bp(self, data: str) -> None:
        self._h_breakpoint(data, False)

    def _h_set_thread(self, data: str) -> None:
        params = self._with(data, "o.t0")
        if params is None:
            return
        if len(params) != 2:
            self._put(_error(EINVAL))
            return
        op = params[0]
        kind, pid, tid = _thread(params[1])
        if kind == _THREAD_ERR:
            self._put(_error(EINVAL))
            return
        if kind != _ONE_THREAD:
            self._put("OK")
            return
        cpu = self._cpu_for(pid, tid)
        if cpu is None or op not in ("c", "g"):
            self._put(_error(EINVAL))
            return
        if op == "c":
            self.c_cpu = cpu
        else:
            self.g_cpu = cpu
        self._put("OK")

    def _h_thread_alive(self, data: str) -> None:
        params = self._with(data, "t0")
        if params is None:
            return
        if not params:
            self._put(_error(EINVAL))
            return
        kind, pid, tid = _thread(params[0])
        ok = kind != _THREAD_ERR and self._cpu_for(pid, tid) is not None
        self._put("OK" if ok else _error(EINVAL))

    def _h_backward(self, data: str) -> None:
        self._put(_error(EINVAL))  # no reverse execution (QEMU without record/replay)

    def _h_v(self, data: str) -> None:
        if data.startswith("Cont?"):
            self._put("vCont;c;C;s;S")
        elif data.startswith("Cont"):
            self._vcont(data[4:])
        elif data.startswith("Attach;"):
            params = _parse(data[7:], "l0")
            if not params or params[0] != 1:
                self._put(_error(EINVAL))
                return
            self.g_cpu = self.c_cpu = 0
            self._stop_reply(_SIGTRAP)
        elif data.startswith("Kill;"):
            self._put("OK")
            self.closed = True
        else:
            self._put("")

    def _vcont(self, data: str) -> None:
        """gdb_handle_vcont(): ``;action[:thread]`` with c, C sig, s, S sig."""
        if not data:
            self._put("")  # QEMU leaves it unanswered
            return
        count = self._count()
        state: dict[int, str] = {}
        last: int | None = None
        i = 0
        while i < len(data):
            if data[i] != ";":
                self._put("")
                return
            i += 1
            action = data[i] if i < len(data) else ""
            i += 1
            if action in ("C", "S"):
                got = _strtoul(data, i)
                if got is None:
                    self._put(_error(EINVAL))
                    return
                i = got[1]
                action = action.lower()
            elif action not in ("c", "s"):
                self._put("")  # unknown action: unsupported
                return
            targets: list[int]
            if i >= len(data) or data[i] == ";":
                targets = list(range(count))
            elif data[i] == ":":
                (kind, pid, tid), i = _read_thread_id(data, i + 1)
                if kind == _THREAD_ERR:
                    self._put(_error(EINVAL))
                    return
                if kind == _ALL_PROCESSES:
                    targets = list(range(count))
                elif kind == _ALL_THREADS:
                    if pid not in (0, 1):
                        self._put(_error(EINVAL))
                        return
                    targets = list(range(count))
                else:
                    cpu = self._cpu_for(pid, tid)
                    if cpu is None:
                        self._put(_error(EINVAL))
                        return
                    targets = [cpu]
            else:
                self._put("")
                return
            for cpu in targets:
                if cpu not in state:  # the first action naming a thread wins
                    state[cpu] = action
                    last = cpu
        if last is not None:
            self.c_cpu = last
        steppers = [cpu for cpu, action in state.items() if action == "s"]
        if steppers:
            self.c_cpu = steppers[-1]
            self._step(None)
        elif state:
            self._continue(None)

    # -- q / Q ---------------------------------------------------------------------------

    def _h_query(self, data: str) -> None:
        if data == "C":
            self._put("QC" + self._thread_id(0))
        elif data == "fThreadInfo":
            self._query_cpu = 0 if self._count() else None
            self._next_thread()
        elif data == "sThreadInfo":
            self._next_thread()
        elif data.startswith("ThreadExtraInfo,"):
            params = _parse(data[16:], "t0")
            if not params:
                self._put(_error(EINVAL))
                return
            kind, pid, tid = _thread(params[0])
            cpu = None if kind == _THREAD_ERR else self._cpu_for(pid, tid)
            if cpu is None:
                self._put(_error(EINVAL))  # QEMU does not answer a missing thread
                return
            self._put(_hex(f"CPU#{cpu} [running]".encode()))
        elif data == "Supported" or data.startswith("Supported:"):
            if "multiprocess+" in data:
                self.multiprocess = True
            self._put(f"PacketSize={MAX_PACKET_LENGTH:x};qXfer:features:read+;"
                      "vContSupported+;multiprocess+;QStartNoAckMode+")
        elif data.startswith("Xfer:features:read:"):
            self._xfer_features(data[len("Xfer:features:read:"):])
        elif data == "Attached" or data.startswith("Attached:"):
            self._put("1")
        elif data.startswith("Rcmd,"):
            self._rcmd(data[5:])
        elif data == "qemu.Supported":
            self._put("sstepbits;sstep")
        elif data == "qemu.sstepbits":
            self._put("ENABLE=1,NOIRQ=2,NOTIMER=4")
        elif data == "qemu.sstep":
            self._put(f"0x{self.sstep_flags:x}")
        elif data.startswith("qemu.sstep="):
            self._set_sstep(data[len("qemu.sstep="):])
        else:
            self._put("")

    def _next_thread(self) -> None:
        if self._query_cpu is None or self._query_cpu >= self._count():
            self._query_cpu = None
            self._put("l")
            return
        self._put("m" + self._thread_id(self._query_cpu))
        self._query_cpu += 1

    def _xfer_features(self, data: str) -> None:
        params = _parse(data, "s:l,l0")
        if params is None:
            self._put("")
            return
        if len(params) < 3:
            self._put(_error(EINVAL))
            return
        annex = str(params[0]).split(":", 1)[0]
        offset, length = _num(params[1]), _num(params[2])
        # get_feature_xml(): target.xml matches as a prefix (QEMU's strncmp), feature files
        # by their exact name.
        if "target.xml".startswith(annex):
            xml = TARGET_XML
        elif annex == FEATURE_XML_NAME:
            xml = FEATURE_XML
        else:
            self._put(_error(0))
            return
        if offset > len(xml):
            self._put(_error(0))
            return
        length = min(length, (MAX_PACKET_LENGTH - 5) // 2)
        if length < len(xml) - offset:
            self._put(("m" + xml[offset:offset + length]).encode())
        else:
            self._put(("l" + xml[offset:]).encode())

    def _rcmd(self, data: str) -> None:
        if self.monitor is None:
            self._put("")
            return
        if not data:
            self._put(_error(EINVAL))
            return
        raw = _unhex(data)
        if raw is None:
            self._put(_error(1))  # QEMU: odd length is E01
            return
        text = self.monitor(raw.decode("latin-1"))
        if text:
            # Console output packets; QEMU's monitor sends its text with \r\n line ends.
            out = text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
            step = (MAX_PACKET_LENGTH - 2) // 2
            for pos in range(0, len(out), step):
                self._out += encode_packet(b"O" + out[pos:pos + step].hex().encode())
        self._put("OK")

    def _set_sstep(self, data: str) -> None:
        got = _strtoul(data, 0)
        if got is None:
            self._put("")
            return
        if got[0] & ~0x7:
            self._put(_error(EINVAL))
            return
        self.sstep_flags = got[0]
        self._put("OK")

    def _h_set(self, data: str) -> None:
        if data == "StartNoAckMode":
            self._put("OK")  # acknowledged like any packet; nothing after it is
            self.no_ack = True
            self._last_packet = b""
        elif data.startswith("qemu.sstep:") or data.startswith("qemu.sstep="):
            self._set_sstep(data[len("qemu.sstep="):])
        else:
            self._put("")


def _unhex(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text) if len(text) % 2 == 0 else None
    except ValueError:
        return None


_HANDLERS: dict[str, Callable[[GdbSession, str], None]] = {
    "!": GdbSession._h_bang,
    "?": GdbSession._h_halt_reason,
    "c": GdbSession._h_continue,
    "C": GdbSession._h_continue_sig,
    "s": GdbSession._h_step,
    "D": GdbSession._h_detach,
    "k": GdbSession._h_kill,
    "g": GdbSession._h_read_all,
    "G": GdbSession._h_write_all,
    "p": GdbSession._h_read_reg,
    "P": GdbSession._h_write_reg,
    "m": GdbSession._h_read_mem,
    "M": GdbSession._h_write_mem,
    "X": GdbSession._h_write_mem_binary,
    "Z": GdbSession._h_insert_bp,
    "z": GdbSession._h_remove_bp,
    "H": GdbSession._h_set_thread,
    "T": GdbSession._h_thread_alive,
    "b": GdbSession._h_backward,
    "v": GdbSession._h_v,
    "q": GdbSession._h_query,
    "Q": GdbSession._h_set,
}
