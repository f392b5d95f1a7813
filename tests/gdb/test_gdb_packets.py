"""The gdb packet engine (sevd.protocol.gdb) against a fake target: framing, every command,
QEMU's replies and error codes, the simulated CPU's run control. No sockets."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Callable

import pytest
from gdb_fakes import FakeTarget, RunControlTarget, reset_regs, unescape
from hypothesis import given, settings
from hypothesis import strategies as st

from sevd.protocol.gdb import (
    FEATURE_XML,
    MAX_PACKET_LENGTH,
    REGISTERS,
    TARGET_XML,
    GdbError,
    GdbSession,
    encode_packet,
)

Ask = Callable[[str], str]


def reg_offsets() -> dict[str, tuple[int, int]]:
    """name -> (byte offset in a `g` reply, size)."""
    out, pos = {}, 0
    for r in REGISTERS:
        out[r.name] = (pos, r.bits // 8)
        pos += r.bits // 8
    return out


def reg_value(g_reply: str, name: str) -> int:
    pos, size = reg_offsets()[name]
    return int.from_bytes(bytes.fromhex(g_reply)[pos:pos + size], "little")


# ------------------------------------------------------------------------------ framing


def test_ack_and_reply(session: GdbSession) -> None:
    assert session.receive(b"$?#3f") == b"+$T05thread:01;#07"


def test_bad_checksum_is_nacked_and_not_run(session: GdbSession, target: FakeTarget) -> None:
    assert session.receive(b"$m100000,8#00") == b"-"
    assert target.calls == []
    assert session.receive(b"$?#3f").startswith(b"+$T05")


def test_retransmits_on_nack_until_acked(session: GdbSession) -> None:
    reply = session.receive(b"$?#3f")[1:]
    assert session.receive(b"-") == reply
    assert session.receive(b"-") == reply
    assert session.receive(b"+") == b""
    assert session.receive(b"-") == b""  # nothing pending any more


def test_new_packet_abandons_the_pending_reply(session: GdbSession) -> None:
    session.receive(b"$?#3f")
    assert session.receive(b"$qC#b4") == b"+" + encode_packet(b"QC01")


def test_garbage_and_early_acks_are_ignored(session: GdbSession) -> None:
    assert session.receive(b"+++junk\x03\r\n") == b""
    assert session.receive(b"$?#3f").startswith(b"+$T05")


def test_escapes_and_run_length_on_input(session: GdbSession, target: FakeTarget) -> None:
    # "M100000,4:" + "00" * 4 with six zeros run-length encoded: '0', then '*' and a count
    # byte of 5 + 29 ('"') repeat it 5 more times. (Counts of 6 and 7 would encode as '#'
    # and '$', which gdb never sends and QEMU rejects.) The checksum covers what is sent.
    body = b'M100000,4:0*"00'
    assert session.receive(b"$" + body + b"#%02x" % (sum(body) & 0xFF)) == b"+$OK#9a"
    assert target.calls[-1] == ("write", (0x100000, bytes(4), 0))
    session.receive(b"+")
    # '}' escapes: X with the bytes '#', '$', '}' and '*' in its binary payload.
    payload = b"#$}*"
    escaped = b"".join(b"}" + bytes((c ^ 0x20,)) for c in payload)
    body = b"X100010,4:" + escaped
    assert session.receive(b"$" + body + b"#%02x" % (sum(body) & 0xFF)) == b"+$OK#9a"
    assert target.calls[-1] == ("write", (0x100010, payload, 0))


def test_overlong_packet_is_dropped(session: GdbSession, target: FakeTarget) -> None:
    assert session.receive(b"$" + b"m" * MAX_PACKET_LENGTH + b"#00") == b""
    assert session.receive(b"$?#3f").startswith(b"+$T05")


def test_encode_packet_escapes_specials() -> None:
    assert encode_packet(b"a#b$c}d*e") == b"$a}\x03b}\x04c}]d}\x0ae#" + b"%02x" % (
        sum(b"a}\x03b}\x04c}]d}\x0ae") & 0xFF)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_split_invariance(cuts: list[int]) -> None:
    """Any split of the input stream gives the same output as one write."""
    stream = b"".join(encode_packet(p.encode()) + b"+" for p in
                      ["qSupported:multiprocess+", "?", "m100000,10", "g", "p10", "qC",
                       "M100000,2:abcd", "m100000,4", "qfThreadInfo", "qsThreadInfo"])

    def run(chunks: list[bytes]) -> bytes:
        t = FakeTarget()
        t.map(0x100000, bytes(32))
        s = GdbSession(t)
        return b"".join(s.receive(c) for c in chunks)

    whole = run([stream])
    pieces, pos, i = [], 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        pieces.append(stream[pos:pos + n])
        pos += n
        i += 1
    assert run(pieces) == whole


def test_no_ack_mode(session: GdbSession, ask: Ask) -> None:
    assert "QStartNoAckMode+" in ask("qSupported")
    assert session.receive(encode_packet(b"QStartNoAckMode")) == b"+$OK#9a"
    session.receive(b"+")
    assert session.no_ack
    assert session.receive(b"$?#3f") == b"$T05thread:01;#07"
    assert session.receive(b"-") == b""          # nothing is resent
    assert session.receive(b"$?#00") == b""      # a bad checksum is dropped silently


# ---------------------------------------------------------------- queries and threads


def test_qsupported(ask: Ask, session: GdbSession) -> None:
    assert ask("qSupported") == ("PacketSize=1000;qXfer:features:read+;vContSupported+;"
                                 "multiprocess+;QStartNoAckMode+")
    assert not session.multiprocess
    ask("qSupported:multiprocess+;swbreak+;xmlRegisters=i386")
    assert session.multiprocess
    assert ask("?") == "T05thread:p01.01;"
    assert ask("qSupportedX") == ""


def test_target_xml_is_qemus(ask: Ask) -> None:
    assert TARGET_XML == (
        '<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target>'
        '<architecture>i386:x86-64</architecture><xi:include href="i386-64bit.xml"/>'
        "</target>")
    assert ask("qXfer:features:read:target.xml:0,ffb") == "l" + TARGET_XML
    assert ask("qXfer:features:read:target.xml:10,20") == "m" + TARGET_XML[0x10:0x30]
    assert ask("qXfer:features:read:target.xml:0,0") == "m"
    assert ask(f"qXfer:features:read:target.xml:{len(TARGET_XML):x},10") == "l"
    assert ask(f"qXfer:features:read:target.xml:{len(TARGET_XML) + 1:x},10") == "E00"
    assert ask("qXfer:features:read:target:0,10") == "m" + TARGET_XML[:0x10]  # strncmp
    assert ask("qXfer:features:read:nosuch.xml:0,10") == "E00"
    assert ask("qXfer:features:read:i386-64bit:0,10") == "E00"
    assert ask("qXfer:features:read:target.xml:0") == "E22"
    assert ask("qXfer:features:read:target.xml,0,10") == "E22"


def test_feature_xml_chunks_reassemble(ask: Ask) -> None:
    got, offset = "", 0
    while True:
        chunk = ask(f"qXfer:features:read:i386-64bit.xml:{offset:x},ffb")
        assert len(chunk) - 1 <= (MAX_PACKET_LENGTH - 5) // 2
        got += chunk[1:]
        offset += len(chunk) - 1
        if chunk[0] == "l":
            break
        assert chunk[0] == "m"
    assert got == FEATURE_XML
    assert FEATURE_XML.count("<reg ") == len(REGISTERS) == 66
    assert 'name="org.gnu.gdb.i386.core"' in FEATURE_XML


def test_threads_with_three_cpus() -> None:
    t = FakeTarget(cpus=3)
    s = GdbSession(t)

    def ask(p: str) -> str:
        out = s.receive(encode_packet(p.encode()) + b"")
        s.receive(b"+")
        return unescape(out[2:out.rindex(b"#")]).decode()

    assert [ask("qfThreadInfo"), ask("qsThreadInfo"), ask("qsThreadInfo"),
            ask("qsThreadInfo"), ask("qsThreadInfo")] == ["m01", "m02", "m03", "l", "l"]
    assert ask("qC") == "QC01"
    assert ask("Hg3") == "OK" and s.g_cpu == 2
    assert ask("Hg4") == "E22"
    assert ask("Hc2") == "OK" and s.c_cpu == 1
    assert ask("?") == "T05thread:02;"
    assert ask("qC") == "QC01"  # QEMU: always the first thread of the process
    assert ask("Hg0") == "OK" and s.g_cpu == 0
    assert ask("T3") == "OK"
    assert ask("T4") == "E22"
    assert ask("qThreadExtraInfo,3") == b"CPU#2 [running]".hex()
    assert ask("qThreadExtraInfo,9") == "E22"
    assert ask("qThreadExtraInfo,zz") == "E22"
    t.regs[2]["rax"] = 0xABCDEF
    ask("Hg3")
    assert ask("p0") == (0xABCDEF).to_bytes(8, "little").hex()
    ask("m100000,1")
    assert t.calls[-1] == ("read", (0x100000, 1, 2))


@pytest.mark.parametrize(("packet", "reply"), [
    ("Hg0", "OK"), ("Hg1", "OK"), ("Hg2", "E22"), ("Hc-1", "OK"), ("Hx1", "E22"),
    ("H", "E22"), ("Hg", "E22"), ("Hgzz", "E22"), ("Hgp1.0", "OK"), ("Hgp2.1", "E22"),
    ("Hgp1.-1", "OK"), ("Hgp-1.-1", "OK"),
    ("T1", "OK"), ("T2", "E22"), ("Tzz", "E22"), ("T p1.1", "E22"),
    ("qAttached", "1"), ("qAttached:1", "1"), ("vMustReplyEmpty", ""), ("qTStatus", ""),
    ("qOffsets", ""), ("!", "OK"), ("vCont?", "vCont;c;C;s;S"),
    ("qqemu.Supported", "sstepbits;sstep"), ("qqemu.sstepbits", "ENABLE=1,NOIRQ=2,NOTIMER=4"),
    ("qqemu.sstep", "0x7"), ("Qqemu.sstep=ff", "E22"), ("qRcmd,696e666f", ""),
    ("F1,2,3", ""), ("bc", "E22"), ("y", ""), ("vFlashErase:0,1", ""),
])
def test_replies_as_qemu(ask: Ask, packet: str, reply: str) -> None:
    # Each pair as a real QEMU 7.2 answered it (see test_gdb_vs_qemu.py), except qRcmd
    # (no monitor given here) and qemu.Supported (no PhyMemMode).
    assert ask(packet) == reply


def test_sstep_flags(ask: Ask) -> None:
    assert ask("Qqemu.sstep=1") == "OK"
    assert ask("qqemu.sstep") == "0x1"
    assert ask("Qqemu.sstep:5") == "OK"
    assert ask("qqemu.sstep") == "0x5"


# ------------------------------------------------------------------------- registers


def test_g_layout_long_mode(ask: Ask, target: FakeTarget) -> None:
    target.regs[0].update(rax=0x1111111111111111, r15=0xFFFFFFFFFFFFFFFF,
                          fs_base=0x9ABC12345678, kernel_gs_base=0x2000, cr8=0x7,
                          xmm9=0x12345678, xmm15=(1 << 128) - 2, mxcsr=0x1F81)
    g = ask("g")
    assert len(g) == 2 * sum(r.bits // 8 for r in REGISTERS) == 1216
    expect = {"rax": 0x1111111111111111, "r15": 0xFFFFFFFFFFFFFFFF, "rip": 0x101000,
              "eflags": 0x246, "cs": 0x38, "ss": 0x30, "gs": 0x30,
              "fs_base": 0x9ABC12345678, "k_gs_base": 0x2000, "cr0": 0x80050033,
              "cr3": 0x9000, "cr4": 0x668, "cr8": 7, "efer": 0xD01, "fctrl": 0x37F,
              "fstat": 0, "ftag": 0, "xmm9": 0x12345678, "xmm15": (1 << 128) - 2,
              "mxcsr": 0x1F81, "rdx": 0x00A00F11}
    for name, value in expect.items():
        assert reg_value(g, name) == value, name
    for i, r in enumerate(REGISTERS):
        pos, size = reg_offsets()[r.name]
        assert ask(f"p{i:x}") == g[2 * pos:2 * (pos + size)], r.name


def test_real_mode_shows_low_halves_as_qemu(ask: Ask, target: FakeTarget) -> None:
    # x86_cpu_gdb_read_register outside 64-bit code: GPRs and RIP masked to 32 bits,
    # r8-r15 read as zero; the bases stay 64-bit (GDB_FORCE_64).
    target.regs[0] = reset_regs(rax=0x1_2345_6789, r8=0x55, fs_base=0x1_0000_0000)
    g = ask("g")
    assert reg_value(g, "rax") == 0x23456789
    assert reg_value(g, "r8") == 0
    assert reg_value(g, "rip") == 0xFFF0
    assert reg_value(g, "cs") == 0xF000
    assert reg_value(g, "fs_base") == 0x1_0000_0000
    assert reg_value(g, "cr0") == 0x60000010


def test_st_registers_follow_top(ask: Ask, target: FakeTarget) -> None:
    one = 0x3FFF << 64 | 1 << 63  # 1.0 in physical register 7, TOP = 7 (after fld1)
    target.regs[0].update(fsw=0x3800, ftw=0x80, fpr7=one)
    g = ask("g")
    assert reg_value(g, "st0") == one
    assert reg_value(g, "st1") == 0
    assert reg_value(g, "fstat") == 0x3800
    assert ask("P21=" + (2 << 64 | 5).to_bytes(10, "little").hex()) == "OK"  # st0
    assert target.regs[0]["fpr7"] == 2 << 64 | 5


def test_register_writes(ask: Ask, target: FakeTarget) -> None:
    assert ask("P0=8877665544332211") == "OK"
    assert target.regs[0]["rax"] == 0x1122334455667788
    assert ask("P11=47020000") == "OK"
    assert target.regs[0]["rflags"] == 0x247
    assert ask("P1a=0020000000000000") == "OK"
    assert target.regs[0]["kernel_gs_base"] == 0x2000
    assert ask("P29=7f030000") == "OK"
    assert target.regs[0]["fcw"] == 0x37F
    assert ask("P2b=ffff0000") == "OK"  # ftag: accepted and ignored, as QEMU does
    assert ask("P99=00") == "OK"        # a register QEMU lacks: OK all the same
    assert ask("P") == "E22"
    assert ask("Pzz=00") == ""
    assert ask("P0=zz") == "E22"
    assert ask("p42") == "E14"
    assert ask("p") == "E14"
    assert ask("pzz") == ""


def test_register_writes_in_real_mode_are_masked(ask: Ask, target: FakeTarget) -> None:
    target.regs[0] = reset_regs()
    ask("P0=8877665544332211")
    assert target.regs[0]["rax"] == 0x55667788
    before = dict(target.regs[0])
    ask("P8=0100000000000000")  # r8 outside 64-bit code: ignored
    assert target.regs[0] == before


def test_G_writes_every_register_in_order(ask: Ask, target: FakeTarget) -> None:
    g = bytearray(bytes.fromhex(ask("g")))
    pos, size = reg_offsets()["rbx"]
    g[pos:pos + size] = (0xCAFE).to_bytes(8, "little")
    pos, size = reg_offsets()["xmm1"]
    g[pos:pos + size] = (0xAB << 120).to_bytes(16, "little")
    assert ask("G" + g.hex()) == "OK"
    assert target.regs[0]["rbx"] == 0xCAFE
    assert target.regs[0]["xmm1"] == 0xAB << 120
    assert ask("G00") == "OK"  # too short for any register: nothing written
    assert ask("G") == "E22"
    assert ask("Gzz") == "E22"


def test_set_register_errors_reach_gdb() -> None:
    class Stubborn(FakeTarget):
        def set_register(self, cpu: int, name: str, value: int) -> None:
            raise GdbError(1)

    s = GdbSession(Stubborn())
    assert s.receive(encode_packet(b"P0=00")) == b"+" + encode_packet(b"E01")


# ---------------------------------------------------------------------------- memory


def test_memory_read(ask: Ask, target: FakeTarget) -> None:
    assert ask("m100000,8") == b"SEVDHB01".hex()
    assert ask("m0x100000,2") == b"SE".hex()
    assert ask("m 100000,2") == b"SE".hex()   # strtoull skips blanks, as in QEMU
    assert ask("m5000,8") == "E14"           # unmapped
    assert ask("m-1,4") == "E14"             # wraps to 0xffffffffffffffff
    assert ask("m100000,801") == "E22"       # over MAX_PACKET_LENGTH / 2
    assert len(ask("m100000,800")) == 0x1000
    assert ask("m100000,0") == ""            # QEMU's empty hex string
    assert ask("m10,-1") == "E22"
    assert ask("m0") == "E22"
    assert ask("m") == "E22"
    assert ask("mzz,4") == ""


def test_memory_write(ask: Ask, target: FakeTarget) -> None:
    assert ask("M100000,4:deadbeef") == "OK"
    assert ask("m100000,4") == "deadbeef"
    assert ask("M100000,2:cafebabe") == "OK"  # QEMU writes the first `length` bytes
    assert ask("m100000,4") == "cafebeef"
    assert ask("M100000,4:dead") == "E22"
    assert ask("M0,0:") == "E22"
    assert ask("Mzz") == ""
    assert ask("M5000,1:00") == "E14"
    assert ask("M100000,1:zz") == "E22"


def test_binary_write(ask: Ask, target: FakeTarget) -> None:
    assert ask("X100000,0:") == "OK"  # gdb's probe
    assert ask("X100000,3:abc") == "OK"
    assert ask("m100000,3") == b"abc".hex()
    assert ask("X100000,4:abc") == "E22"
    assert ask("X100000") == "E22"
    assert ask("X5000,1:a") == "E14"


def test_refused_debug_access_is_a_gdb_error(ask: Ask, target: FakeTarget) -> None:
    target.refuse = True  # NODBG / security policy debug=off, as the adapter reports it
    assert ask("m100000,8") == "E14"
    assert ask("M100000,1:00") == "E14"
    assert ask("X100000,1:a") == "E14"
    assert ask("g").startswith("0")  # registers stay readable


def test_short_read_is_an_error() -> None:
    class Short(FakeTarget):
        def read_memory(self, vaddr: int, length: int, cpu: int) -> bytes:
            return b"\0"

    s = GdbSession(Short())
    assert s.receive(encode_packet(b"m0,4")) == b"+" + encode_packet(b"E14")


def test_target_faults_do_not_end_the_session(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FakeTarget):
        def read_memory(self, vaddr: int, length: int, cpu: int) -> bytes:
            raise RuntimeError("boom")

    s = GdbSession(Broken())
    assert s.receive(encode_packet(b"m0,4")) == b"+" + encode_packet(b"E14")
    assert "boom" in caplog.text
    s.receive(b"+")
    assert s.receive(encode_packet(b"?")).startswith(b"+$T05")


def test_breakpoints(ask: Ask) -> None:
    assert ask("Z0,100000,1") == "OK"
    assert ask("z0,100000,1") == "OK"
    assert ask("z0,100000,1") == "E22"
    assert ask("Z2,100000,4") == "OK"
    assert ask("Z5,100000,4") == ""
    assert ask("Z0,1") == "E22"
    assert ask("?").startswith("T05")      # gdb (re)starting: breakpoints dropped
    assert ask("z2,100000,4") == "E22"


# ---------------------------------------------------------------- execution control


def test_step_reports_at_once_and_changes_nothing(ask: Ask, target: FakeTarget) -> None:
    before = dict(target.regs[0])
    assert ask("s") == "T05thread:01;"
    assert target.regs[0] == before
    assert ask("s101234") == "T05thread:01;"
    assert target.regs[0]["rip"] == 0x101234


def test_continue_waits_for_the_interrupt(session: GdbSession, target: FakeTarget) -> None:
    assert session.receive(encode_packet(b"c")) == b"+"
    assert session.running
    assert session.receive(b"\x03") == encode_packet(b"T02thread:01;")
    assert not session.running
    session.receive(b"+")
    # Any other byte stops the CPU too, without a stop reply (QEMU's gdb_read_byte).
    session.receive(encode_packet(b"c100000"))
    assert target.regs[0]["rip"] == 0x100000
    assert session.receive(b"$") == b""
    assert not session.running
    assert session.receive(encode_packet(b"C05")) == b"+"
    assert session.receive(b"\x03") == encode_packet(b"T02thread:01;")


@pytest.mark.parametrize(("packet", "reply"), [
    ("vCont;s", "T05thread:01;"), ("vCont;s:1", "T05thread:01;"),
    ("vCont;S05:1", "T05thread:01;"), ("vCont;s:1;c", "T05thread:01;"),
    ("vCont;c:9", "E22"), ("vCont;s:zz", "E22"), ("vCont;x", ""), ("vCont", ""),
    ("vCont:c", ""), ("vCont;Czz", "E22"),
])
def test_vcont(ask: Ask, packet: str, reply: str) -> None:
    assert ask(packet) == reply


def test_vcont_step_names_the_stepping_thread() -> None:
    s = GdbSession(FakeTarget(cpus=2))
    s.receive(encode_packet(b"qSupported:multiprocess+") + b"+")
    out = s.receive(encode_packet(b"vCont;s:p1.2;c:p1.-1"))
    assert out == b"+" + encode_packet(b"T05thread:p01.02;")


def test_vcont_continue_then_interrupt(session: GdbSession) -> None:
    assert session.receive(encode_packet(b"vCont;c")) == b"+"
    assert session.receive(b"\x03") == encode_packet(b"T02thread:01;")


def test_run_control_is_used_when_offered() -> None:
    t = RunControlTarget()
    s = GdbSession(t)
    assert (t.paused, t.resumed) == (1, 0)   # QEMU stops the VM when gdb connects
    s.receive(encode_packet(b"c"))
    assert (t.paused, t.resumed) == (1, 1)
    s.receive(b"\x03")
    assert (t.paused, t.resumed) == (2, 1)
    s.receive(b"+" + encode_packet(b"s"))
    assert (t.paused, t.resumed) == (2, 1)   # a step of a CPU that does not run
    s.receive(b"+" + encode_packet(b"D"))
    assert (t.paused, t.resumed) == (2, 2)   # detaching lets the guest run on
    assert s.closed


# ------------------------------------------------------------------- ending a session


def test_detach(session: GdbSession) -> None:
    assert session.receive(encode_packet(b"D")) == b"+" + encode_packet(b"OK")
    assert session.closed
    assert session.receive(encode_packet(b"?")) == b""


def test_detach_multiprocess_needs_our_pid(session: GdbSession, ask: Ask) -> None:
    ask("qSupported:multiprocess+")
    assert ask("D") == "E22"
    assert ask("D;2") == "E22"
    assert not session.closed
    assert ask("D;1") == "OK"
    assert session.closed


def test_kill_closes_without_reply(session: GdbSession) -> None:
    assert session.receive(encode_packet(b"k")) == b"+"
    assert session.closed


def test_vkill_and_vattach(ask: Ask, session: GdbSession) -> None:
    assert ask("vAttach;2") == "E22"
    assert ask("vAttach;1") == "T05thread:01;"
    assert ask("vKill;1") == "OK"
    assert session.closed


def test_monitor_command() -> None:
    lines: list[str] = []

    def monitor(line: str) -> str:
        lines.append(line)
        return "VM status: paused (prelaunch)\n"

    s = GdbSession(FakeTarget(), monitor=monitor)
    out = s.receive(encode_packet(b"qRcmd," + b"info status".hex().encode()))
    assert lines == ["info status"]
    text = b"VM status: paused (prelaunch)\r\n".hex().encode()
    assert out == b"+" + encode_packet(b"O" + text) + encode_packet(b"OK")
    s.receive(b"+")
    assert s.receive(encode_packet(b"qRcmd,4")) == b"+" + encode_packet(b"E01")
    s.receive(b"+")
    assert s.receive(encode_packet(b"qRcmd,")) == b"+" + encode_packet(b"E22")


def test_module_imports_nothing_it_must_not() -> None:
    code = (
        "import importlib, sys\n"
        "before = set(sys.modules)\n"
        "importlib.import_module('sevd.protocol.gdb')\n"
        "import json\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                       text=True, check=True).stdout)
    assert "sevd.protocol.gdb" in loaded
    forbidden = ("sevd.transports", "sevd.commands", "sevd.domain", "sevd.hmp", "asyncio",
                 "socket", "sevd.protocol.session")
    assert [m for m in loaded if m.startswith(forbidden)] == []


def test_struct_heartbeat_roundtrip(ask: Ask, target: FakeTarget) -> None:
    # The workload's heartbeat record, as a debugger would read and patch it.
    target.map(0x200000, struct.pack("<8sQQ", b"SEVDHB01", 41, 2))
    magic, beats, boots = struct.unpack("<8sQQ", bytes.fromhex(ask("m200000,18")))
    assert (magic, beats, boots) == (b"SEVDHB01", 41, 2)
    assert ask("M200008,8:" + struct.pack("<Q", 42).hex()) == "OK"
    assert struct.unpack("<Q", bytes.fromhex(ask("m200008,8"))) == (42,)
