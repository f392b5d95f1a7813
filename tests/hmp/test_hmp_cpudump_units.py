"""Unit tests of sevd.hmp.cpudump beyond the states a real QEMU was captured in
(test_hmp_cpudump_golden.py): mode corners, descriptor texts, vector layouts, purity, and
the registers sevd's simulated boot leaves behind."""

from __future__ import annotations

import json
import subprocess
import sys

from sevd.domain.boot import GuestOS, Workload
from sevd.domain.machine import Machine, Vcpu
from sevd.hmp.cpudump import (
    NO_CPU,
    descriptor_cache,
    format_info_cpus,
    format_info_registers,
    long_mode_active,
)


def reset_regs(**changes: int) -> dict[str, int]:
    v = Vcpu(0)
    v.reset()
    v.regs.update(changes)
    return v.regs


def line(text: str, prefix: str) -> str:
    [found] = [ln for ln in text.split("\n") if ln.startswith(prefix)]
    return found


LONG = {"cr0": 0x80050033, "cr4": 0x668, "efer": 0xD01, "cs": 0x38, "cs_base": 0,
        "ds": 0x30, "es": 0x30, "ss": 0x30, "fs": 0x30, "gs": 0x30}


def test_header_and_line_ends() -> None:
    text = format_info_registers(reset_regs(), 3)
    assert text.startswith("\nCPU#3\nEAX=")
    assert text.endswith("XMM07=0000000000000000 0000000000000000\n")
    assert "\r" not in text  # the monitor adds the \r


def test_real_mode_masks_registers_to_32_bits() -> None:
    text = format_info_registers(reset_regs(rax=0x1_0000_0001, rip=0xDEAD_0000_FFF0), 0)
    assert line(text, "EAX=").startswith("EAX=00000001 ")
    assert line(text, "EIP=").startswith("EIP=0000fff0 ")


def test_real_mode_segment_bases_follow_selectors() -> None:
    text = format_info_registers(reset_regs(ds=0x1234, cs=0xF000, cs_base=0xF0000), 0)
    assert line(text, "DS =") == "DS =1234 00012340 0000ffff 00009300"
    assert line(text, "CS =") == "CS =f000 000f0000 0000ffff 00009b00"


def test_compatibility_mode_mixes_layouts() -> None:
    # EFER.LMA with a 32-bit code segment: 32-bit registers and segment bases
    # (HF_CS64 clear), 64-bit GDT/IDT/CR lines (HF_LMA set), "DS  " for data in long mode.
    regs = reset_regs(**{**LONG, "cs_attr": 0x00CF9B00, "rax": 0x1_2345_6789,
                         "cr2": 0x1_0000_0000})
    assert long_mode_active(regs)
    text = format_info_registers(regs, 0)
    assert line(text, "EAX=").startswith("EAX=23456789 ")
    assert "R8 =" not in text
    assert line(text, "CS =") == "CS =0038 00000000 ffffffff 00cf9b00 DPL=0 CS32 [-RA]"
    assert line(text, "DS =") == "DS =0030 00000000 ffffffff 00cf9300 DPL=0 DS   [-WA]"
    assert line(text, "GDT=") == "GDT=     0000000000000000 0000ffff"
    assert line(text, "CR0=") == ("CR0=80050033 CR2=0000000100000000 CR3=0000000000000000 "
                                  "CR4=00000668")
    assert "XMM08" not in text  # 8 XMM registers outside 64-bit code


def test_descriptor_texts() -> None:
    regs = reset_regs(**LONG)
    regs.update(
        es_attr=0x00C09500,   # data, expand-down, read-only, accessed, DPL 0
        ds_attr=0x00C07300,   # present bit clear: no description at all
        fs_attr=0x00C0F300,   # DPL 3
        gs_attr=0x00409F00,   # conforming readable code, 32-bit
        tr_attr=0x00008900,   # TSS64-avl
        ldt_attr=0x00008C00,  # CallGate64 (a system type QEMU names)
        ss_attr=0x00009300,   # 16-bit data in long mode is still "DS  " (LMA)
    )
    text = format_info_registers(regs, 0)
    assert line(text, "ES =").endswith(" 00c09500 DPL=0 DS   [E-A]")
    assert line(text, "DS =") == "DS =0030 0000000000000000 ffffffff 00c07300"
    assert line(text, "FS =").endswith(" 00c0f300 DPL=3 DS   [-WA]")
    assert line(text, "GS =").endswith(" 00409f00 DPL=0 CS32 [CRA]")
    assert line(text, "TR =").endswith(" 00008900 DPL=0 TSS64-avl")
    assert line(text, "LDT=").endswith(" 00008c00 DPL=0 CallGate64")
    assert line(text, "SS =").endswith(" 00009300 DPL=0 DS   [-WA]")


def test_protected_mode_names_system_segments_32_bit() -> None:
    regs = reset_regs(cr0=0x11, cs=8, cs_base=0, tr=0x28, tr_attr=0x00008900,
                      ds_attr=0x00009300)
    text = format_info_registers(regs, 0)
    assert line(text, "TR =") == "TR =0028 00000000 0000ffff 00008900 DPL=0 TSS32-avl"
    assert line(text, "DS =").endswith("DPL=0 DS16 [-WA]")
    assert line(text, "CS =") == "CS =0008 00000000 ffffffff 00cf9a00 DPL=0 CS32 [-R-]"


def test_cpl_follows_ss_dpl_and_vm86_is_cpl3() -> None:
    user = reset_regs(**{**LONG, "ss_attr": 0x00CFF300, "cs_attr": 0x00AFFB00})
    assert " CPL=3 " in line(format_info_registers(user, 0), "RIP=")
    vm86 = reset_regs(cr0=0x11, rflags=0x20002, cs_base=0)
    assert " CPL=3 " in line(format_info_registers(vm86, 0), "EIP=")
    assert " CPL=0 " in line(format_info_registers(reset_regs(), 0), "EIP=")


def test_status_flags_and_keywords() -> None:
    text = format_info_registers(reset_regs(rflags=0xCD7), 0, halted=True, a20=False,
                                 smm=True, inhibit_irq=True)
    assert line(text, "EIP=") == ("EIP=0000fff0 EFL=00000cd7 [DOSZAPC] CPL=0 II=1 A20=0 "
                                  "SMM=1 HLT=1")


def test_fpu_top_and_tags() -> None:
    text = format_info_registers(
        reset_regs(fsw=0x2841, ftw=0x30, fpr5=0x4000 << 64 | 0xC000000000000000), 0)
    assert line(text, "FCW=") == "FCW=037f FSW=2841 [ST=5] FTW=30 MXCSR=00001f80"
    assert line(text, "FPR4=") == "FPR4=0000000000000000 0000 FPR5=c000000000000000 4000"


def test_avx512_layout() -> None:
    # XCR0 with OPMASK|ZMM_Hi256|Hi16_ZMM|YMM|SSE: opmask lines, then 32 ZMM lines in 64-bit
    # code (x86_cpu_dump_state; no QEMU capture: TCG in 7.2 has no AVX-512).
    zmm31 = int.from_bytes(bytes(range(64)), "little")
    text = format_info_registers(
        reset_regs(**{**LONG, "xcr0": 0xE7, "k3": 0xFF, "xmm31": zmm31}), 0)
    assert line(text, "Opmask00=") == ("Opmask00=0000000000000000 Opmask01=0000000000000000 "
                                       "Opmask02=0000000000000000 Opmask03=00000000000000ff")
    assert line(text, "ZMM31=") == "ZMM31=" + " ".join(
        bytes(range(8 * q, 8 * q + 8))[::-1].hex() for q in range(7, -1, -1))
    assert "XMM00" not in text and "YMM00" not in text
    assert text.count("\nZMM") == 32
    assert format_info_registers(reset_regs(xcr0=0xE7), 0).count("\nZMM") == 8


def test_ymm_count_follows_mode() -> None:
    assert format_info_registers(reset_regs(xcr0=7), 0).count("\nYMM") == 8
    assert format_info_registers(reset_regs(**LONG, xcr0=7), 0).count("\nYMM") == 16


def test_missing_registers_read_as_reset_values() -> None:
    assert format_info_registers({}, 0) == format_info_registers(
        reset_regs(rdx=0, rip=0, cs=0, cs_base=0), 0)


def test_descriptor_cache_overrides_and_derivation() -> None:
    regs = reset_regs(**LONG)
    assert descriptor_cache(regs, "cs") == (0x38, 0, 0xFFFFFFFF, 0x00AF9A00)
    assert descriptor_cache({**regs, "fs_base": 0x1234}, "fs") == (0x30, 0x1234, 0xFFFFFFFF,
                                                                     0x00CF9300)
    assert descriptor_cache({**regs, "ds_limit": 0xFFFFF, "ds_base": 5}, "ds")[1:3] == (
        5, 0xFFFFF)
    assert descriptor_cache({**regs, "es": 0}, "es") == (0, 0, 0xFFFF, 0x9300)


def test_info_cpus() -> None:
    assert format_info_cpus([]) == ""
    assert format_info_cpus([(0, False, 0, 10), (1, True, 0, 11)]) == (
        "  CPU #0: thread_id=10\n* CPU #1: thread_id=11\n")
    assert NO_CPU == "No CPU available\n"


def test_after_the_simulated_boot_the_dump_is_long_mode() -> None:
    # sevd's boot sets selectors, CR0/CR3/CR4/EFER and RIP only; the derived descriptor
    # caches make the dump look like a firmware that loaded OVMF's GDT.
    machine = Machine(64 << 20, 2, 0)
    GuestOS(machine, None, 51, Workload(heartbeat=False)).boot()
    text = format_info_registers(machine.vcpus[1].regs, 1)
    assert text.startswith("\nCPU#1\nRAX=")
    assert line(text, "RIP=").startswith("RIP=0000000000101000 RFL=00000246 [---Z-P-] CPL=0")
    assert line(text, "CS =") == "CS =0038 0000000000000000 ffffffff 00af9a00 DPL=0 CS64 [-R-]"
    assert line(text, "SS =") == "SS =0030 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]"
    assert line(text, "CR0=") == ("CR0=80050033 CR2=0000000000000000 CR3=0000000000009000 "
                                  "CR4=00000668")
    assert line(text, "EFER=") == "EFER=0000000000000d01"
    assert text.count("\nXMM") == 8  # two per line, 16 registers


def test_module_imports_nothing_it_must_not() -> None:
    code = (
        "import importlib, sys\n"
        "before = set(sys.modules)\n"
        "importlib.import_module('sevd.hmp.cpudump')\n"
        "import json\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                       text=True, check=True).stdout)
    assert "sevd.hmp.cpudump" in loaded
    forbidden = ("sevd.transports", "sevd.protocol", "sevd.commands", "sevd.domain",
                 "asyncio", "socket")
    assert [m for m in loaded if m.startswith(forbidden)] == []
