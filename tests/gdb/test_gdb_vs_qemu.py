"""The same gdb packets to a real QEMU's gdbstub and to sevd's, reply by reply.

Runs where ``qemu-system-x86_64`` is installed. QEMU is started paused (``-S``) with
``-gdb unix:…``; sevd's engine gets a fake target holding the same state (the x86 reset
registers, zeroed RAM below 2 MiB, nothing mapped at 256 MiB). The long-mode comparison
also needs GNU binutils: it runs the test firmware of tests/hmp/test_hmp_cpudump_golden.py
and compares every register, FPU and SSE included.

Deliberate differences (sevd/protocol/gdb.py's docstring) are checked on sevd's side only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from gdb_fakes import FakeTarget, RawClient, reset_regs

from sevd.protocol.gdb import REGISTERS, GdbSession, encode_packet

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")

# Packets whose replies must be identical (in this order, on one connection each side,
# after qSupported with multiprocess+). Reading the target description comes first: QEMU
# 7.2 answers p/P only after it (9.2 always does).
SAME = [
    "qXfer:features:read:target.xml:0,ffb",
    "qXfer:features:read:target.xml:10,20", "qXfer:features:read:target.xml:0,0",
    "qXfer:features:read:target.xml:9a,10", "qXfer:features:read:target.xml:9b,10",
    "qXfer:features:read:target:0,10", "qXfer:features:read:nosuch.xml:0,20",
    "qXfer:features:read:target.xml:0", "qXfer:features:read:target.xml,0,10",
    "?", "qC", "qfThreadInfo", "qsThreadInfo", "qsThreadInfo", "qAttached", "qAttached:1",
    "Hg0", "Hg1", "Hg2", "Hc-1", "Hx1", "H", "Hgzz", "Hgp1.0", "Hgp2.1", "Hgp1.-1",
    "T1", "T2", "Tzz", "T p1.1", "g",
    *(f"p{n:x}" for n in range(len(REGISTERS) + 2)), "pzz", "p",
    "m0,4", "m100000,10", "m10000000,4", "mfffffffffffffff0,4", "m-1,4", "m0,801",
    "m0,800", "m0", "m", "mzz,4", "m0,0", "m0x10,4", "m 10,4", "m10,-1",
    "M100000,4:deadbeef", "m100000,4", "M100000,4:dead", "M100000,2:cafebabe",
    "m100000,4", "M0,0:", "Mzz",
    "Z0,100000,1", "z0,100000,1", "z0,100000,1", "Z2,100000,4", "Z5,100000,4",
    "vCont?", "vMustReplyEmpty", "vCont;x", "vCont;c:p1.3", "vAttach;2",
    "qThreadExtraInfo,1", "qThreadExtraInfo,p1.1", "qThreadExtraInfo,zz",
    "qqemu.sstepbits", "qqemu.sstep", "Qqemu.sstep=1", "qqemu.sstep", "Qqemu.sstep=ff",
    "qOffsets", "qTStatus", "!", "P0=1122334455667788", "p0", "P99=00", "P", "Pzz=00",
    "G00", "s",
]
# Deliberate differences: packet -> sevd's reply.
SEVD_ONLY = {
    "qSupported:multiprocess+": ("PacketSize=1000;qXfer:features:read+;vContSupported+;"
                                 "multiprocess+;QStartNoAckMode+"),
    "qqemu.Supported": "sstepbits;sstep",   # no PhyMemMode: the target is virtual-only
    "X100000,0:": "OK",                     # QEMU has no X packet
}


def qemu_version() -> tuple[int, int]:
    assert QEMU is not None
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"version (\d+)\.(\d+)", out)
    assert match is not None, out
    return int(match.group(1)), int(match.group(2))


@contextlib.contextmanager
def qemu_gdb(work: Path, extra: list[str]) -> Iterator[RawClient]:
    """A QEMU with ``-gdb unix:…`` and a raw client connected to it."""
    assert QEMU is not None
    sock = work / f"g{len(list(work.iterdir()))}.sock"
    proc = subprocess.Popen(
        [QEMU, "-machine", "q35,accel=tcg", "-m", "256", "-display", "none", "-nodefaults",
         "-nic", "none", *extra, "-gdb", f"unix:{sock},server=on,wait=off"],
        cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        with socket.socket(socket.AF_UNIX) as s:
            while True:
                # The file appears at bind(), a moment before QEMU listens on it.
                try:
                    s.connect(str(sock))
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    assert proc.poll() is None, "QEMU exited at start-up"
                    assert time.monotonic() < deadline, "QEMU's gdb socket never listened"
                    time.sleep(0.02)
            yield RawClient(s)
    finally:
        proc.kill()
        proc.wait()


class EngineClient:
    """The same interface as RawClient, on sevd's engine without a socket."""

    def __init__(self, session: GdbSession) -> None:
        self.session = session

    def command(self, payload: str) -> bytes:
        out = self.session.receive(encode_packet(payload.encode("latin-1")))
        assert out[:1] == b"+", out
        self.session.receive(b"+")
        body = out[2:out.rindex(b"#")]
        return body


@pytest.fixture
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("gdbq")


def test_packets_match_qemu_at_reset(work: Path) -> None:
    with qemu_gdb(work, ["-S"]) as qemu:
        qemu.command("qSupported:multiprocess+")
        qemu.command(SAME[0])
        edx = int.from_bytes(bytes.fromhex(qemu.command("p3").decode()), "little")
        target = FakeTarget(regs=[reset_regs(rdx=edx)])
        target.map(0, bytes(0x200000))
        ours = EngineClient(GdbSession(target))
        ours.command("qSupported:multiprocess+")
        mismatches = []
        for packet in SAME:
            theirs, mine = qemu.command(packet), ours.command(packet)
            if theirs != mine:
                mismatches.append((packet, theirs, mine))
        assert mismatches == []
        assert qemu.command("D;1") == ours.command("D;1") == b"OK"


@pytest.mark.parametrize(("packet", "reply"), sorted(SEVD_ONLY.items()))
def test_deliberate_differences(packet: str, reply: str) -> None:
    t = FakeTarget()
    t.map(0x100000, bytes(16))
    assert EngineClient(GdbSession(t)).command(packet).decode() == reply


def test_interrupt_after_continue_matches_qemu(work: Path) -> None:
    with qemu_gdb(work, ["-S"]) as qemu:
        qemu.command("qSupported:multiprocess+")
        theirs = []
        for packet in (b"c", b"vCont;c"):
            qemu.send(encode_packet(packet))
            time.sleep(0.2)
            qemu.send(b"\x03")
            theirs.append(qemu.packet())
    session = GdbSession(FakeTarget())
    EngineClient(session).command("qSupported:multiprocess+")
    ours = []
    for packet in (b"c", b"vCont;c"):
        assert session.receive(encode_packet(packet)) == b"+"  # nothing until interrupted
        ours.append(session.receive(b"\x03"))
        session.receive(b"+")
    assert [encode_packet(p) for p in theirs] == ours
    assert theirs == [b"T02thread:p01.01;"] * 2


def _golden_module() -> ModuleType:
    # The long-mode firmware and its register values live with the info registers goldens.
    path = Path(__file__).parents[1] / "hmp" / "test_hmp_cpudump_golden.py"
    spec = importlib.util.spec_from_file_location("cpudump_golden_for_gdb", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not all(shutil.which(t) for t in ("as", "ld", "nm")),
                    reason="needs GNU binutils (as, ld, nm)")
@pytest.mark.parametrize("scenario", ["long", "pm32"])
def test_registers_match_qemu_running_the_test_firmware(work: Path, scenario: str) -> None:
    golden = _golden_module()
    defsym = {"long": "LONG", "pm32": "MODE32"}[scenario]
    image, symbols = golden.build_firmware(work, defsym)
    # Paused from the start (-S), so connecting sends no stop reply of its own.
    with qemu_gdb(work, ["-S", "-bios", str(image)]) as qemu:
        spin = 0xF0000 + symbols["spin64" if scenario == "long" else "spin32"]
        qemu.command("qXfer:features:read:target.xml:0,ffb")
        deadline = time.monotonic() + 20
        while True:
            # Run the firmware in short bursts until it spins at its end.
            qemu.send(encode_packet(b"c"))
            time.sleep(0.1)
            qemu.send(b"\x03")
            assert qemu.packet().startswith(b"T02")
            rip = int.from_bytes(bytes.fromhex(qemu.command("p10").decode()), "little")
            if rip == spin:
                break
            assert time.monotonic() < deadline, "the test firmware did not reach its end"
        regs = golden.regs_for(scenario, symbols)
        ours = EngineClient(GdbSession(FakeTarget(regs=[regs])))
        st0 = next(n for n, r in enumerate(REGISTERS) if r.name == "st0")
        top = (regs["fsw"] >> 11) & 7
        for n, reg in enumerate(REGISTERS):
            mine, theirs = ours.command(f"p{n:x}"), qemu.command(f"p{n:x}")
            if mine != theirs and st0 <= n < st0 + 8 and qemu_version() < (8, 0):
                # Before QEMU 8.0 ("target/i386/gdbstub: Fix a bug about order of FPU
                # stack in 'g' packets") st(i) was physical register i; sevd follows
                # 9.2: st(i) is physical register (i + TOP) % 8.
                theirs = qemu.command(f"p{st0 + (n - st0 + top) % 8:x}")
            assert mine == theirs, reg.name
        if qemu_version() >= (8, 0):
            assert ours.command("g") == qemu.command("g")
