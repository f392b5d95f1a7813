"""``info registers`` / ``info cpus``: sevd's text against what a real QEMU prints.

The golden strings below were captured from qemu-system-x86_64 7.2.22 (Debian) on q35/TCG:
the reset state (``-S``), and a tiny test firmware (``FIRMWARE``, assembled with GNU as)
stopped in 32-bit protected mode and in long mode, with and without AVX (``-cpu max``,
XCR0=7). sevd's formatter is fed the register values the firmware loaded and must print
the same text, byte for byte; fields sevd does not model (FPU, SSE) keep QEMU's reset
values unless the mapping says otherwise.

Where ``qemu-system-x86_64`` and binutils are installed, the live tests rebuild the
firmware, run it under QEMU and compare again, so the goldens cannot go stale unnoticed.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sevd.domain.machine import Vcpu
from sevd.hmp.cpudump import CPU_NOT_AVAILABLE, format_info_cpus, format_info_registers

# A 64 KiB "BIOS": real mode -> 32-bit protected mode (MODE32: spin there) -> long mode
# with OVMF's DXE selectors (data 0x30, 64-bit code 0x38, as sevd's simulated boot uses),
# distinct values in every register it can set, then spin. Build:
#   as --32 [--defsym MODE32=1|AVX=1] -o fw.o fw.S     (no symbol, or LONG=1: long mode)
#   ld -m elf_i386 -Ttext=0 --oformat binary -o fw.bin fw.o
FIRMWARE = r"""
    .section .text
    .code16
    .org 0
start16:
    cli
    lgdtl %cs:gdt_desc
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(start32 + 0xf0000)
    .code32
start32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    lidtl idt_desc + 0xf0000
.ifdef MODE32
    movl $0x11111111, %eax
    movl $0x22222222, %ebx
    movl $0x33333333, %ecx
    movl $0x44444444, %edx
    movl $0x55555555, %esi
    movl $0x66666666, %edi
    movl $0x77777777, %ebp
    movl $0x00080000, %esp
    std
    cmpl $1, %eax
spin32:
    jmp spin32
.endif
    /* PML4[0] -> PDPT (0x11000) -> PD (0x12000): PD[0] = 2 MiB page at 0 */
    movl $0x11003, 0x10000
    movl $0, 0x10004
    movl $0x12003, 0x11000
    movl $0, 0x11004
    movl $0x83, 0x12000
    movl $0, 0x12004
    movl $0x10000, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x620, %eax         /* PAE | OSFXSR | OSXMMEXCPT */
    movl %eax, %cr4
    movl $0xC0000080, %ecx
    rdmsr
    orl $0xD01, %eax         /* SCE | LME | NXE (LMA follows) */
    wrmsr
    movl %cr0, %eax
    orl $0x80010000, %eax    /* PG | WP */
    movl %eax, %cr0
    ljmpl $0x38, $(start64 + 0xf0000)
    .code64
start64:
    movw $0x30, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl $0xC0000100, %ecx
    movl $0x12345678, %eax
    movl $0x00009abc, %edx
    wrmsr
    movl $0xC0000101, %ecx
    movl $0x00001000, %eax
    movl $0xffff8880, %edx
    wrmsr
    movl $0xC0000102, %ecx
    movl $0x00002000, %eax
    movl $0x00000000, %edx
    wrmsr
    movabs $0x0000dead0000beef, %rax
    movq %rax, %cr2
    movq %rax, %dr0
    movabs $0x1000, %rax
    movq %rax, %dr1
    movabs $0x7fff00001234, %rax
    movq %rax, %dr3
    fld1                     /* TOP=7, FPR7 = 1.0, FTW bit 7 */
    pcmpeqd %xmm2, %xmm2     /* XMM2 all ones */
    movl $0x12345678, %eax
    movd %eax, %xmm9
.ifdef AVX
    movq %cr4, %rax
    orl $0x40000, %eax       /* OSXSAVE */
    movq %rax, %cr4
    xorl %ecx, %ecx
    xorl %edx, %edx
    movl $7, %eax            /* XCR0 = x87 | SSE | AVX */
    xsetbv
    vpcmpeqd %ymm3, %ymm3, %ymm3
.endif
    xorl %eax, %eax
    std
    cmpl $1, %eax
    movabs $0x1111111111111111, %rax
    movabs $0x2222222222222222, %rbx
    movabs $0x3333333333333333, %rcx
    movabs $0x4444444444444444, %rdx
    movabs $0x5555555555555555, %rsi
    movabs $0x6666666666666666, %rdi
    movabs $0x7777777777777777, %rbp
    movabs $0x0000000000080000, %rsp
    movabs $0x8888888888888888, %r8
    movabs $0x9999999999999999, %r9
    movabs $0xaaaaaaaaaaaaaaaa, %r10
    movabs $0xbbbbbbbbbbbbbbbb, %r11
    movabs $0xcccccccccccccccc, %r12
    movabs $0xdddddddddddddddd, %r13
    movabs $0xeeeeeeeeeeeeeeee, %r14
    movabs $0xffffffffffffffff, %r15
spin64:
    jmp spin64
    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff   /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff   /* 0x10: data */
    .quad 0, 0, 0
    .quad 0x00cf92000000ffff   /* 0x30: data (OVMF LINEAR_DATA64_SEL) */
    .quad 0x00af9a000000ffff   /* 0x38: 64-bit code (OVMF LINEAR_CODE64_SEL) */
gdt_desc:
    .word 63
    .long gdt + 0xf0000
idt_desc:
    .word 0x0fff
    .long 0x20000
    .org 0xfff0
    .code16
reset:
    ljmp $0xf000, $start16
    .org 0x10000
"""

# Addresses in the assembled images (nm), as the goldens saw them.
GOLDEN_SYMBOLS = {
    "reset": {},
    "pm32": {"spin32": 0x57, "gdt": 0x1F0},
    "long": {"spin64": 0x1BB, "gdt": 0x1C0},
    "avx": {"spin64": 0x1D6, "gdt": 0x1D8},
}
QEMU64_RESET_EDX = 0x00060FB1  # CPUID.1.EAX of QEMU's default qemu64 model


def _reset() -> dict[str, int]:
    v = Vcpu(0)
    v.reset()
    return v.regs


def regs_for(scenario: str, symbols: dict[str, int], reset_edx: int = QEMU64_RESET_EDX
             ) -> dict[str, int]:
    """The registers the test firmware leaves in ``scenario``, as a Vcpu.regs mapping."""
    regs = _reset()
    if scenario == "reset":
        regs["rdx"] = reset_edx
        return regs
    base = 0xF0000  # the image runs from the BIOS alias below 1 MiB
    common = {"cs_base": 0, "gdt_base": base + symbols["gdt"], "gdt_limit": 63,
              "idt_base": 0x20000, "idt_limit": 0xFFF}
    if scenario == "pm32":
        regs.update(common, rax=0x11111111, rbx=0x22222222, rcx=0x33333333, rdx=0x44444444,
                    rsi=0x55555555, rdi=0x66666666, rbp=0x77777777, rsp=0x80000,
                    rip=base + symbols["spin32"], rflags=0x402, cr0=0x60000011,
                    cs=0x08, ds=0x10, es=0x10, ss=0x10)
        return regs
    regs.update(common, **{f"r{i}": int(f"{i:x}" * 16, 16) for i in range(8, 16)})
    regs.update(rax=0x1111111111111111, rbx=0x2222222222222222, rcx=0x3333333333333333,
                rdx=0x4444444444444444, rsi=0x5555555555555555, rdi=0x6666666666666666,
                rbp=0x7777777777777777, rsp=0x80000, rip=base + symbols["spin64"],
                rflags=0x497, cr0=0xE0010011, cr2=0xDEAD0000BEEF, cr3=0x10000, cr4=0x620,
                efer=0xD01, dr0=0xDEAD0000BEEF, dr1=0x1000, dr3=0x7FFF00001234,
                cs=0x38, ds=0x30, es=0x30, ss=0x30, fs=0x30, gs=0x30,
                fs_base=0x9ABC12345678, gs_base=0xFFFF888000001000,
                kernel_gs_base=0x2000,  # not in `info registers`, but gdb shows it
                # fld1: TOP=7, physical register 7 = 1.0, valid
                fsw=0x3800, ftw=0x80, fpr7=0x3FFF << 64 | 1 << 63,
                xmm2=(1 << 128) - 1, xmm9=0x12345678)
    if scenario == "avx":
        regs.update(cr4=0x40620, xcr0=0x7, xmm3=(1 << 256) - 1)
    return regs


GOLDEN: dict[str, str] = {
    "reset": (
        "\n"
        "CPU#0\n"
        "EAX=00000000 EBX=00000000 ECX=00000000 EDX=00060fb1\n"
        "ESI=00000000 EDI=00000000 EBP=00000000 ESP=00000000\n"
        "EIP=0000fff0 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n"
        "ES =0000 00000000 0000ffff 00009300\n"
        "CS =f000 ffff0000 0000ffff 00009b00\n"
        "SS =0000 00000000 0000ffff 00009300\n"
        "DS =0000 00000000 0000ffff 00009300\n"
        "FS =0000 00000000 0000ffff 00009300\n"
        "GS =0000 00000000 0000ffff 00009300\n"
        "LDT=0000 00000000 0000ffff 00008200\n"
        "TR =0000 00000000 0000ffff 00008b00\n"
        "GDT=     00000000 0000ffff\n"
        "IDT=     00000000 0000ffff\n"
        "CR0=60000010 CR2=00000000 CR3=00000000 CR4=00000000\n"
        "DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 \n"
        "DR6=00000000ffff0ff0 DR7=0000000000000400\n"
        "EFER=0000000000000000\n"
        "FCW=037f FSW=0000 [ST=0] FTW=00 MXCSR=00001f80\n"
        "FPR0=0000000000000000 0000 FPR1=0000000000000000 0000\n"
        "FPR2=0000000000000000 0000 FPR3=0000000000000000 0000\n"
        "FPR4=0000000000000000 0000 FPR5=0000000000000000 0000\n"
        "FPR6=0000000000000000 0000 FPR7=0000000000000000 0000\n"
        "XMM00=0000000000000000 0000000000000000 XMM01=0000000000000000 0000000000000000\n"
        "XMM02=0000000000000000 0000000000000000 XMM03=0000000000000000 0000000000000000\n"
        "XMM04=0000000000000000 0000000000000000 XMM05=0000000000000000 0000000000000000\n"
        "XMM06=0000000000000000 0000000000000000 XMM07=0000000000000000 0000000000000000\n"
    ),
    "pm32": (
        "\n"
        "CPU#0\n"
        "EAX=11111111 EBX=22222222 ECX=33333333 EDX=44444444\n"
        "ESI=55555555 EDI=66666666 EBP=77777777 ESP=00080000\n"
        "EIP=000f0057 EFL=00000402 [D------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n"
        "ES =0010 00000000 ffffffff 00cf9300 DPL=0 DS   [-WA]\n"
        "CS =0008 00000000 ffffffff 00cf9a00 DPL=0 CS32 [-R-]\n"
        "SS =0010 00000000 ffffffff 00cf9300 DPL=0 DS   [-WA]\n"
        "DS =0010 00000000 ffffffff 00cf9300 DPL=0 DS   [-WA]\n"
        "FS =0000 00000000 0000ffff 00009300 DPL=0 DS16 [-WA]\n"
        "GS =0000 00000000 0000ffff 00009300 DPL=0 DS16 [-WA]\n"
        "LDT=0000 00000000 0000ffff 00008200 DPL=0 LDT\n"
        "TR =0000 00000000 0000ffff 00008b00 DPL=0 TSS32-busy\n"
        "GDT=     000f01f0 0000003f\n"
        "IDT=     00020000 00000fff\n"
        "CR0=60000011 CR2=00000000 CR3=00000000 CR4=00000000\n"
        "DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 \n"
        "DR6=00000000ffff0ff0 DR7=0000000000000400\n"
        "EFER=0000000000000000\n"
        "FCW=037f FSW=0000 [ST=0] FTW=00 MXCSR=00001f80\n"
        "FPR0=0000000000000000 0000 FPR1=0000000000000000 0000\n"
        "FPR2=0000000000000000 0000 FPR3=0000000000000000 0000\n"
        "FPR4=0000000000000000 0000 FPR5=0000000000000000 0000\n"
        "FPR6=0000000000000000 0000 FPR7=0000000000000000 0000\n"
        "XMM00=0000000000000000 0000000000000000 XMM01=0000000000000000 0000000000000000\n"
        "XMM02=0000000000000000 0000000000000000 XMM03=0000000000000000 0000000000000000\n"
        "XMM04=0000000000000000 0000000000000000 XMM05=0000000000000000 0000000000000000\n"
        "XMM06=0000000000000000 0000000000000000 XMM07=0000000000000000 0000000000000000\n"
    ),
    "long": (
        "\n"
        "CPU#0\n"
        "RAX=1111111111111111 RBX=2222222222222222 RCX=3333333333333333 RDX=4444444444444444\n"
        "RSI=5555555555555555 RDI=6666666666666666 RBP=7777777777777777 RSP=0000000000080000\n"
        "R8 =8888888888888888 R9 =9999999999999999 R10=aaaaaaaaaaaaaaaa R11=bbbbbbbbbbbbbbbb\n"
        "R12=cccccccccccccccc R13=dddddddddddddddd R14=eeeeeeeeeeeeeeee R15=ffffffffffffffff\n"
        "RIP=00000000000f01bb RFL=00000497 [D-S-APC] CPL=0 II=0 A20=1 SMM=0 HLT=0\n"
        "ES =0030 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]\n"
        "CS =0038 0000000000000000 ffffffff 00af9a00 DPL=0 CS64 [-R-]\n"
        "SS =0030 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]\n"
        "DS =0030 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]\n"
        "FS =0030 00009abc12345678 ffffffff 00cf9300 DPL=0 DS   [-WA]\n"
        "GS =0030 ffff888000001000 ffffffff 00cf9300 DPL=0 DS   [-WA]\n"
        "LDT=0000 0000000000000000 0000ffff 00008200 DPL=0 LDT\n"
        "TR =0000 0000000000000000 0000ffff 00008b00 DPL=0 TSS64-busy\n"
        "GDT=     00000000000f01c0 0000003f\n"
        "IDT=     0000000000020000 00000fff\n"
        "CR0=e0010011 CR2=0000dead0000beef CR3=0000000000010000 CR4=00000620\n"
        "DR0=0000dead0000beef DR1=0000000000001000 DR2=0000000000000000 DR3=00007fff00001234 \n"
        "DR6=00000000ffff0ff0 DR7=0000000000000400\n"
        "EFER=0000000000000d01\n"
        "FCW=037f FSW=3800 [ST=7] FTW=80 MXCSR=00001f80\n"
        "FPR0=0000000000000000 0000 FPR1=0000000000000000 0000\n"
        "FPR2=0000000000000000 0000 FPR3=0000000000000000 0000\n"
        "FPR4=0000000000000000 0000 FPR5=0000000000000000 0000\n"
        "FPR6=0000000000000000 0000 FPR7=8000000000000000 3fff\n"
        "XMM00=0000000000000000 0000000000000000 XMM01=0000000000000000 0000000000000000\n"
        "XMM02=ffffffffffffffff ffffffffffffffff XMM03=0000000000000000 0000000000000000\n"
        "XMM04=0000000000000000 0000000000000000 XMM05=0000000000000000 0000000000000000\n"
        "XMM06=0000000000000000 0000000000000000 XMM07=0000000000000000 0000000000000000\n"
        "XMM08=0000000000000000 0000000000000000 XMM09=0000000000000000 0000000012345678\n"
        "XMM10=0000000000000000 0000000000000000 XMM11=0000000000000000 0000000000000000\n"
        "XMM12=0000000000000000 0000000000000000 XMM13=0000000000000000 0000000000000000\n"
        "XMM14=0000000000000000 0000000000000000 XMM15=0000000000000000 0000000000000000\n"
    ),
    "avx": (
        "\n"
        "CPU#0\n"
        "RAX=1111111111111111 RBX=2222222222222222 RCX=3333333333333333 RDX=4444444444444444\n"
        "RSI=5555555555555555 RDI=6666666666666666 RBP=7777777777777777 RSP=0000000000080000\n"
        "R8 =8888888888888888 R9 =9999999999999999 R10=aaaaaaaaaaaaaaaa R11=bbbbbbbbbbbbbbbb\n"
        "R12=cccccccccccccccc R13=dddddddddddddddd R14=eeeeeeeeeeeeeeee R15=ffffffffffffffff\n"
        "RIP=00000000000f01d6 RFL=00000497 [D-S-APC] CPL=0 II=0 A20=1 SMM=0 HLT=0\n"
        "ES =0030 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]\n"
        "CS =0038 0000000000000000 ffffffff 00af9a00 DPL=0 CS64 [-R-]\n"
        "SS =0030 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]\n"
        "DS =0030 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]\n"
        "FS =0030 00009abc12345678 ffffffff 00cf9300 DPL=0 DS   [-WA]\n"
        "GS =0030 ffff888000001000 ffffffff 00cf9300 DPL=0 DS   [-WA]\n"
        "LDT=0000 0000000000000000 0000ffff 00008200 DPL=0 LDT\n"
        "TR =0000 0000000000000000 0000ffff 00008b00 DPL=0 TSS64-busy\n"
        "GDT=     00000000000f01d8 0000003f\n"
        "IDT=     0000000000020000 00000fff\n"
        "CR0=e0010011 CR2=0000dead0000beef CR3=0000000000010000 CR4=00040620\n"
        "DR0=0000dead0000beef DR1=0000000000001000 DR2=0000000000000000 DR3=00007fff00001234 \n"
        "DR6=00000000ffff0ff0 DR7=0000000000000400\n"
        "EFER=0000000000000d01\n"
        "FCW=037f FSW=3800 [ST=7] FTW=80 MXCSR=00001f80\n"
        "FPR0=0000000000000000 0000 FPR1=0000000000000000 0000\n"
        "FPR2=0000000000000000 0000 FPR3=0000000000000000 0000\n"
        "FPR4=0000000000000000 0000 FPR5=0000000000000000 0000\n"
        "FPR6=0000000000000000 0000 FPR7=8000000000000000 3fff\n"
        "YMM00=0000000000000000 0000000000000000 0000000000000000 0000000000000000\n"
        "YMM01=0000000000000000 0000000000000000 0000000000000000 0000000000000000\n"
        "YMM02=0000000000000000 0000000000000000 ffffffffffffffff ffffffffffffffff\n"
        "YMM03=ffffffffffffffff ffffffffffffffff ffffffffffffffff ffffffffffffffff\n"
        "YMM04=0000000000000000 0000000000000000 0000000000000000 0000000000000000\n"
        "YMM05=0000000000000000 0000000000000000 0000000000000000 0000000000000000\n"
        "YMM06=0000000000000000 0000000000000000 0000000000000000 0000000000000000\n"
        "YMM07=0000000000000000 0000000000000000 0000000000000000 0000000000000000\n"
        "YMM08=0000000000000000 0000000000000000 0000000000000000 0000000000000000\n"
        "YMM09=0000000000000000 0000000000000000 0000000000000000 0000000012345678\n"
        "YMM10=0000000000000000 0000000000000000 0000000000000000 0000000000000000\n"
        "YMM11=0000000000000000 0000000000000000 0000000000000000 0000000000000000\n"
        "YMM12=0000000000000000 0000000000000000 0000000000000000 0000000000000000\n"
        "YMM13=0000000000000000 0000000000000000 0000000000000000 0000000000000000\n"
        "YMM14=0000000000000000 0000000000000000 0000000000000000 0000000000000000\n"
        "YMM15=0000000000000000 0000000000000000 0000000000000000 0000000000000000\n"
    ),
}

SCENARIOS = ["reset", "pm32", "long", "avx"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_info_registers_matches_qemu_golden(scenario: str) -> None:
    regs = regs_for(scenario, GOLDEN_SYMBOLS[scenario])
    assert format_info_registers(regs, 0) == GOLDEN[scenario]


def test_info_cpus_matches_qemu_golden() -> None:
    # -smp 2 -S, the monitor's current CPU is 0; thread ids as that QEMU printed them.
    assert format_info_cpus([(0, True, 0xFFFFFFF0, 28119), (1, False, 0xFFFFFFF0, 28120)]) == (
        "* CPU #0: thread_id=28119\n  CPU #1: thread_id=28120\n")


def test_application_processor_at_reset_is_halted() -> None:
    # `info registers 1` on that -smp 2 QEMU: the AP waits for SIPI (HLT=1), else as CPU 0.
    text = format_info_registers(regs_for("reset", {}), 1, halted=True)
    assert text.startswith(
        "\nCPU#1\n"
        "EAX=00000000 EBX=00000000 ECX=00000000 EDX=00060fb1\n"
        "ESI=00000000 EDI=00000000 EBP=00000000 ESP=00000000\n"
        "EIP=0000fff0 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1\n")
    assert text.split("\n", 5)[5] == GOLDEN["reset"].split("\n", 5)[5]


def test_cpu_not_available_text() -> None:
    # `info registers 5` on that QEMU
    assert CPU_NOT_AVAILABLE.format(index=5) == "CPU#5 not available\n"


# ------------------------------------------------------------------------ live comparison

QEMU = shutil.which("qemu-system-x86_64")
BINUTILS = all(shutil.which(tool) for tool in ("as", "ld", "nm"))
live = pytest.mark.skipif(QEMU is None or not BINUTILS,
                          reason="needs qemu-system-x86_64 and GNU binutils (as, ld, nm)")

_DEFSYM = {"reset": None, "pm32": "MODE32", "long": "LONG", "avx": "AVX"}
_CPU = {"avx": ["-cpu", "max"]}


def build_firmware(work: Path, defsym: str) -> tuple[Path, dict[str, int]]:
    """Assemble FIRMWARE with ``--defsym defsym=1``: (image, symbol addresses)."""
    src, obj, elf, image = (work / f"fw-{defsym}.{ext}" for ext in ("S", "o", "elf", "bin"))
    src.write_text(FIRMWARE)

    def run(*argv: str) -> str:
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    run("as", "--32", "--defsym", f"{defsym}=1", "-o", str(obj), str(src))
    run("ld", "-m", "elf_i386", "-Ttext=0", "--oformat", "binary", "-o", str(image), str(obj))
    run("ld", "-m", "elf_i386", "-Ttext=0", "-e", "0", "-o", str(elf), str(obj))
    nm = run("nm", str(elf))
    symbols = {name: int(addr, 16) for addr, _kind, name in
               (line.split() for line in nm.splitlines() if len(line.split()) == 3)}
    return image, symbols


class Qemu:
    """A QEMU process with a minimal synchronous QMP client (events skipped)."""

    def __init__(self, work: Path, args: list[str]) -> None:
        assert QEMU is not None
        sock = work / f"q{len(list(work.iterdir()))}.sock"
        self.proc = subprocess.Popen(
            [QEMU, "-machine", "q35,accel=tcg", "-m", "256", "-display", "none",
             "-nodefaults", "-nic", "none", *args, "-qmp", f"unix:{sock},server=on,wait=off"],
            cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(20)
        while True:
            # The file appears at bind(), a moment before QEMU listens on it.
            try:
                self.sock.connect(str(sock))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.sock.close()
                    self.proc.kill()
                    raise AssertionError("QEMU's QMP socket never listened") from None
                time.sleep(0.02)
        self.file = self.sock.makefile("rwb")
        json.loads(self.file.readline())
        self.execute("qmp_capabilities")

    def execute(self, name: str, **arguments: Any) -> Any:
        self.file.write(json.dumps({"execute": name, "arguments": arguments}).encode() + b"\n")
        self.file.flush()
        while True:
            msg = json.loads(self.file.readline())
            if "event" not in msg:
                assert "error" not in msg, msg
                return msg["return"]

    def hmp(self, line: str) -> str:
        # human-monitor-command ends lines with \r\n; sevd's formatters with \n.
        return str(self.execute("human-monitor-command", **{"command-line": line})
                   ).replace("\r\n", "\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()
        self.proc.kill()
        self.proc.wait()


def capture(work: Path, scenario: str) -> tuple[str, dict[str, int], str]:
    """(info registers, symbols, info cpus) of the test firmware stopped in ``scenario``."""
    defsym = _DEFSYM[scenario]
    if defsym is None:
        qemu = Qemu(work, ["-S"])
        symbols: dict[str, int] = {}
    else:
        image, symbols = build_firmware(work, defsym)
        qemu = Qemu(work, ["-bios", str(image), *_CPU.get(scenario, [])])
    try:
        if defsym is not None:
            # Wait until the CPU spins at the end of the firmware, then freeze it there.
            spin = 0xF0000 + symbols["spin32" if scenario == "pm32" else "spin64"]
            deadline = time.monotonic() + 20
            while f"IP={spin:0{8 if scenario == 'pm32' else 16}x}" not in qemu.hmp(
                    "info registers"):
                assert time.monotonic() < deadline, "the test firmware did not reach its end"
                time.sleep(0.05)
            qemu.execute("stop")
        return qemu.hmp("info registers"), symbols, qemu.hmp("info cpus")
    finally:
        qemu.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("cpudump")


@live
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_info_registers_matches_live_qemu(work: Path, scenario: str) -> None:
    text, symbols, _ = capture(work, scenario)
    edx = QEMU64_RESET_EDX
    if scenario == "reset":
        # CPUID.1.EAX of the default CPU model is the one value QEMU versions may change.
        edx = int(re.search(r"EDX=([0-9a-f]{8})", text).group(1), 16)  # type: ignore[union-attr]
    ours = format_info_registers(regs_for(scenario, symbols, edx), 0)
    assert ours.splitlines() == text.splitlines()
    assert ours == text


@live
def test_info_cpus_matches_live_qemu(work: Path) -> None:
    qemu = Qemu(work, ["-S", "-smp", "2"])
    try:
        text = qemu.hmp("info cpus")
        tids = [t["thread-id"] for t in qemu.execute("query-cpus-fast")]
    finally:
        qemu.close()
    assert format_info_cpus([(0, True, 0, tids[0]), (1, False, 0, tids[1])]) == text
