"""HMP text of ``info registers`` and ``info cpus`` for x86_64 vCPUs, byte for byte as QEMU
prints them.

Ports of ``x86_cpu_dump_state``/``cpu_x86_dump_seg_cache`` (``target/i386/cpu-dump.c``),
called by ``hmp_info_registers`` with ``CPU_DUMP_FPU`` after a ``"\\nCPU#%d\\n"`` header,
and of ``hmp_info_cpus`` (``hw/core/machine-hmp-cmds.c``, 9.2). Pure functions: registers
come in as a mapping (``Vcpu.regs``), text goes out with ``\\n`` line ends (the monitor
turns them into ``\\r\\n``).

Register names (all optional except where QEMU's output would be meaningless without them;
a missing register reads as its x86 reset value, so a fresh vCPU needs no more than
``Vcpu.regs`` holds):

* ``rax`` … ``r15``, ``rip``, ``rflags``, ``cr0`` ``cr2`` ``cr3`` ``cr4``, ``efer``,
  ``dr0`` … ``dr3`` ``dr6`` ``dr7``;
* selectors ``es cs ss ds fs gs ldt tr``; descriptor caches ``<seg>_base``, ``<seg>_limit``
  and ``<seg>_attr`` (QEMU's ``SegmentCache.flags``: bits 8..23 of the descriptor's high
  dword, e.g. ``0x00af9a00`` for a 64-bit code segment); ``fs_base``/``gs_base`` are also
  the FS/GS base MSRs;
* ``gdt_base gdt_limit idt_base idt_limit``;
* FPU/SSE: ``fcw`` ``fsw`` (with TOP in bits 11..13) ``ftw`` (abridged: bit i set = physical
  register i valid), ``mxcsr``, ``fpr0`` … ``fpr7`` (80-bit), ``xmm0`` … ``xmm31`` (up to
  512 bits: the whole ZMM register), ``k0`` … ``k7``, ``xcr0``.

A descriptor cache without explicit keys is derived from its selector and the CPU mode, as
QEMU's caches look after a firmware that loaded that selector from OVMF's GDT (checked on a
real QEMU 7.2, see tests/hmp/test_hmp_cpudump_vs_qemu.py): in real mode base = selector*16,
limit 0xffff, attributes 0x9300 (CS keeps its reset 0x9b00 and its ``cs_base``); in
protected or long mode a non-null selector is flat (base 0, limit 0xffffffff; data
0x00cf9300, code 0x00cf9a00 or, with EFER.LMA, 64-bit code 0x00af9a00), and a null selector
keeps the reset cache (nothing reloaded it). So a simulated firmware that only sets
selectors, CR0/CR4/EFER and RIP still dumps as a real long-mode guest does.

This module must not import transports, the QMP protocol layer or the domain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "CPU_NOT_AVAILABLE",
    "NO_CPU",
    "descriptor_cache",
    "format_info_cpus",
    "format_info_registers",
    "long_mode_active",
]

#: hmp_info_registers() for ``info registers N`` when vCPU N does not exist.
CPU_NOT_AVAILABLE = "CPU#{index} not available\n"
#: hmp_info_registers() (and ``info mem``/``info tlb``) without any vCPU.
NO_CPU = "No CPU available\n"

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1

# target/i386/cpu.h
_CR0_PE = 1 << 0
_EFER_LMA = 1 << 10
_DESC_G = 1 << 23
_DESC_B = 1 << 22
_DESC_L = 1 << 21
_DESC_P = 1 << 15
_DESC_DPL_SHIFT = 13
_DESC_S = 1 << 12
_DESC_CS = 1 << 11
_DESC_C = 1 << 10  # conforming (code)
_DESC_E = 1 << 10  # expand-down (data)
_DESC_R = 1 << 9   # readable (code)
_DESC_W = 1 << 9   # writable (data)
_DESC_A = 1 << 8
_DESC_TYPE_SHIFT = 8
_VM = 1 << 17      # EFLAGS.VM

# EFLAGS bits shown between brackets, in QEMU's order: DF OF SF ZF AF PF CF.
_FLAG_CHARS = ((1 << 10, "D"), (1 << 11, "O"), (1 << 7, "S"), (1 << 6, "Z"), (1 << 4, "A"),
               (1 << 2, "P"), (1 << 0, "C"))

_SYS_TYPE_NAME = (
    ("Reserved", "TSS16-avl", "LDT", "TSS16-busy", "CallGate16", "TaskGate", "IntGate16",
     "TrapGate16", "Reserved", "TSS32-avl", "Reserved", "TSS32-busy", "CallGate32",
     "Reserved", "IntGate32", "TrapGate32"),
    ("<hiword>", "Reserved", "LDT", "Reserved", "Reserved", "Reserved", "Reserved",
     "Reserved", "Reserved", "TSS64-avl", "Reserved", "TSS64-busy", "CallGate64",
     "Reserved", "IntGate64", "TrapGate64"),
)

# XCR0 components (target/i386/cpu.h XSTATE_*_MASK).
_XSTATE_SSE, _XSTATE_YMM = 1 << 1, 1 << 2
_XSTATE_OPMASK, _XSTATE_ZMM_HI256, _XSTATE_HI16_ZMM = 1 << 5, 1 << 6, 1 << 7
_AVX_MASK = _XSTATE_YMM | _XSTATE_SSE
_AVX512_MASK = _AVX_MASK | _XSTATE_OPMASK | _XSTATE_ZMM_HI256 | _XSTATE_HI16_ZMM

# The x86 reset values of what Vcpu.regs may leave out (QEMU's x86_cpu_reset).
_RESET: dict[str, int] = {
    "rflags": 0x2, "cr0": 0x60000010, "dr6": 0xFFFF0FF0, "dr7": 0x400,
    "gdt_limit": 0xFFFF, "idt_limit": 0xFFFF, "fcw": 0x37F, "mxcsr": 0x1F80, "xcr0": 0x1,
}

_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs")


def _reg(regs: Mapping[str, int], name: str) -> int:
    return regs.get(name, _RESET.get(name, 0))


def long_mode_active(regs: Mapping[str, int]) -> bool:
    """EFER.LMA: QEMU's HF_LMA_MASK, which picks the 64-bit GDT/IDT/CR/DR lines."""
    return bool(_reg(regs, "efer") & _EFER_LMA)


def descriptor_cache(regs: Mapping[str, int], seg: str) -> tuple[int, int, int, int]:
    """(selector, base, limit, flags) of segment ``seg`` (``es``…``gs``, ``ldt``, ``tr``):
    the explicit ``<seg>_base``/``_limit``/``_attr`` keys where present, else derived as the
    module docstring says."""
    sel = _reg(regs, seg) & 0xFFFF
    protected = bool(_reg(regs, "cr0") & _CR0_PE) and not _reg(regs, "rflags") & _VM
    if seg in ("ldt", "tr"):
        # Never reloaded by a firmware that runs without tasks: the reset caches.
        base, limit, flags = 0, 0xFFFF, 0x8200 if seg == "ldt" else 0x8B00
    elif not protected:
        # Real mode (and vm86) loads change selector and base only; CS keeps the reset
        # attributes (and its reset base until a far jump sets cs_base).
        base = sel << 4 if seg != "cs" else _reg(regs, "cs_base")
        limit, flags = 0xFFFF, 0x9B00 if seg == "cs" else 0x9300
    elif sel == 0 and seg != "cs":
        # A null selector nothing reloaded keeps the real-mode cache (QEMU shows these as
        # "DS16 [-WA]" in protected mode; observed on QEMU 7.2).
        base, limit, flags = 0, 0xFFFF, 0x9300
    else:
        base, limit = 0, 0xFFFFFFFF
        if seg != "cs":
            flags = 0x00CF9300
        elif long_mode_active(regs):
            flags = 0x00AF9A00
        else:
            flags = 0x00CF9A00
    if seg in ("fs", "gs"):
        # The FS/GS base MSRs are the cache's base (QEMU keeps one field for both).
        base = regs.get(f"{seg}_base", base)
    elif seg == "cs":
        base = regs.get("cs_base", base)
    else:
        base = regs.get(f"{seg}_base", base)
    limit = regs.get(f"{seg}_limit", limit)
    flags = regs.get(f"{seg}_attr", flags)
    return sel, base & _M64, limit & _M32, flags & _M32


def _cs64(regs: Mapping[str, int]) -> bool:
    # HF_CS64_MASK: long mode active and CS.L (cpu_x86_load_seg_cache).
    return long_mode_active(regs) and bool(descriptor_cache(regs, "cs")[3] & _DESC_L)


def _seg_line(regs: Mapping[str, int], name: str, seg: str, cs64: bool, pe: bool,
              lma: bool) -> str:
    sel, base, limit, flags = descriptor_cache(regs, seg)
    if cs64:
        line = f"{name:<3}={sel:04x} {base:016x} {limit:08x} {flags & 0x00FFFF00:08x}"
    else:
        line = f"{name:<3}={sel:04x} {base & _M32:08x} {limit:08x} {flags & 0x00FFFF00:08x}"
    if not pe or not flags & _DESC_P:
        return line + "\n"
    line += f" DPL={(flags >> _DESC_DPL_SHIFT) & 3} "
    if flags & _DESC_S:
        if flags & _DESC_CS:
            line += "CS64" if flags & _DESC_L else ("CS32" if flags & _DESC_B else "CS16")
            line += f" [{'C' if flags & _DESC_C else '-'}{'R' if flags & _DESC_R else '-'}"
        else:
            line += "DS  " if flags & _DESC_B or lma else "DS16"
            line += f" [{'E' if flags & _DESC_E else '-'}{'W' if flags & _DESC_W else '-'}"
        line += f"{'A' if flags & _DESC_A else '-'}]"
    else:
        line += _SYS_TYPE_NAME[1 if lma else 0][(flags >> _DESC_TYPE_SHIFT) & 15]
    return line + "\n"


def _q(value: int, index: int) -> int:
    """ZMM_Q(index): the index-th little-endian quadword of a vector register."""
    return (value >> (64 * index)) & _M64


def format_info_registers(
    regs: Mapping[str, int],
    cpu_index: int,
    *,
    halted: bool = False,
    a20: bool = True,
    smm: bool = False,
    inhibit_irq: bool = False,
) -> str:
    """What ``info registers`` prints for one vCPU: ``"\\nCPU#%d\\n"`` and
    x86_cpu_dump_state(CPU_DUMP_FPU).

    The layout follows QEMU's hflags: the general registers (and segment bases) are shown
    64-bit when CS is a 64-bit code segment in long mode (HF_CS64), the GDT/IDT/CR/DR lines
    when EFER.LMA is set (HF_LMA); protected mode (CR0.PE) adds ``DPL=… CS64 [-R-]``
    descriptions to present segments. 16 XMM lines in 64-bit code, 8 otherwise; YMM or
    ZMM lines instead when XCR0 enables AVX or AVX-512, as QEMU does.
    """
    lma = long_mode_active(regs)
    cs64 = _cs64(regs)
    pe = bool(_reg(regs, "cr0") & _CR0_PE)
    eflags = _reg(regs, "rflags") & _M32
    flag_text = "".join(c if eflags & bit else "-" for bit, c in _FLAG_CHARS)
    ss_flags = descriptor_cache(regs, "ss")[3]
    # HF_CPL follows SS.DPL in protected mode (cpu_x86_load_seg_cache); 3 in vm86.
    cpl = (3 if eflags & _VM else (ss_flags >> _DESC_DPL_SHIFT) & 3) if pe else 0
    tail = (f" CPL={cpl} II={int(inhibit_irq)} A20={int(a20)} SMM={int(smm)}"
            f" HLT={int(halted)}\n")
    out = [f"\nCPU#{cpu_index}\n"]
    r = {name: _reg(regs, name) for name in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "rip",
        *(f"r{i}" for i in range(8, 16)))}
    if cs64:
        out.append(
            f"RAX={r['rax']:016x} RBX={r['rbx']:016x} RCX={r['rcx']:016x} RDX={r['rdx']:016x}\n"
            f"RSI={r['rsi']:016x} RDI={r['rdi']:016x} RBP={r['rbp']:016x} RSP={r['rsp']:016x}\n"
            f"R8 ={r['r8']:016x} R9 ={r['r9']:016x} R10={r['r10']:016x} R11={r['r11']:016x}\n"
            f"R12={r['r12']:016x} R13={r['r13']:016x} R14={r['r14']:016x} R15={r['r15']:016x}\n"
            f"RIP={r['rip']:016x} RFL={eflags:08x} [{flag_text}]" + tail)
    else:
        e = {k: v & _M32 for k, v in r.items()}
        out.append(
            f"EAX={e['rax']:08x} EBX={e['rbx']:08x} ECX={e['rcx']:08x} EDX={e['rdx']:08x}\n"
            f"ESI={e['rsi']:08x} EDI={e['rdi']:08x} EBP={e['rbp']:08x} ESP={e['rsp']:08x}\n"
            f"EIP={e['rip']:08x} EFL={eflags:08x} [{flag_text}]" + tail)
    for seg in _SEGMENTS:
        out.append(_seg_line(regs, seg.upper(), seg, cs64, pe, lma))
    out.append(_seg_line(regs, "LDT", "ldt", cs64, pe, lma))
    out.append(_seg_line(regs, "TR", "tr", cs64, pe, lma))
    gdt_base, gdt_limit = _reg(regs, "gdt_base"), _reg(regs, "gdt_limit") & _M32
    idt_base, idt_limit = _reg(regs, "idt_base"), _reg(regs, "idt_limit") & _M32
    cr0, cr2, cr3, cr4 = (_reg(regs, f"cr{i}") for i in (0, 2, 3, 4))
    dr = [_reg(regs, f"dr{i}") & _M64 for i in range(8)]
    if lma:
        out.append(f"GDT=     {gdt_base & _M64:016x} {gdt_limit:08x}\n")
        out.append(f"IDT=     {idt_base & _M64:016x} {idt_limit:08x}\n")
        out.append(f"CR0={cr0 & _M32:08x} CR2={cr2 & _M64:016x} CR3={cr3 & _M64:016x}"
                   f" CR4={cr4 & _M32:08x}\n")
    else:
        out.append(f"GDT=     {gdt_base & _M32:08x} {gdt_limit:08x}\n")
        out.append(f"IDT=     {idt_base & _M32:08x} {idt_limit:08x}\n")
        out.append(f"CR0={cr0 & _M32:08x} CR2={cr2 & _M32:08x} CR3={cr3 & _M32:08x}"
                   f" CR4={cr4 & _M32:08x}\n")
    # Both branches print the debug registers with 16 digits on x86_64 (TARGET_FMT_lx), and
    # QEMU leaves a space before the newline after DR3.
    out.append("".join(f"DR{i}={dr[i]:016x} " for i in range(4)) + "\n")
    out.append(f"DR6={dr[6]:016x} DR7={dr[7]:016x}\n")
    out.append(f"EFER={_reg(regs, 'efer') & _M64:016x}\n")
    out.append(_fpu_lines(regs, cs64))
    return "".join(out)


def _fpu_lines(regs: Mapping[str, int], cs64: bool) -> str:
    fsw = _reg(regs, "fsw") & 0xFFFF
    top = (fsw >> 11) & 7
    out = [f"FCW={_reg(regs, 'fcw') & 0xFFFF:04x} FSW={fsw:04x} [ST={top}]"
           f" FTW={_reg(regs, 'ftw') & 0xFF:02x} MXCSR={_reg(regs, 'mxcsr') & _M32:08x}\n"]
    for i in range(8):
        fpr = _reg(regs, f"fpr{i}")
        out.append(f"FPR{i}={fpr & _M64:016x} {(fpr >> 64) & 0xFFFF:04x}")
        out.append("\n" if i & 1 else " ")
    xcr0 = _reg(regs, "xcr0")
    if xcr0 & _AVX512_MASK == _AVX512_MASK:
        for i in range(8):
            out.append(f"Opmask{i:02d}={_reg(regs, f'k{i}') & _M64:016x}")
            out.append("\n" if i & 3 == 3 else " ")
        for i in range(32 if cs64 else 8):
            v = _reg(regs, f"xmm{i}")
            out.append(f"ZMM{i:02d}=" + " ".join(f"{_q(v, q):016x}" for q in range(7, -1, -1))
                       + "\n")
    elif xcr0 & _AVX_MASK == _AVX_MASK:
        for i in range(16 if cs64 else 8):
            v = _reg(regs, f"xmm{i}")
            out.append(f"YMM{i:02d}=" + " ".join(f"{_q(v, q):016x}" for q in range(3, -1, -1))
                       + "\n")
    else:
        for i in range(16 if cs64 else 8):
            v = _reg(regs, f"xmm{i}")
            out.append(f"XMM{i:02d}={_q(v, 1):016x} {_q(v, 0):016x}")
            out.append("\n" if i & 1 else " ")
    return "".join(out)


def format_info_cpus(cpus: Sequence[tuple[int, bool, int, int]]) -> str:
    """hmp_info_cpus() of QEMU 9.2: one ``"%c CPU #%d: thread_id=%d\\n"`` line per vCPU,
    ``*`` marking the monitor's current CPU.

    Each entry is ``(cpu_index, current, pc, thread_id)``. ``pc`` is accepted for callers
    that track it but not printed: QEMU stopped printing ``pc=0x…`` when ``info cpus``
    moved to query-cpus-fast (5.0); 9.2 prints the thread id only. No vCPU, no output.
    """
    return "".join(f"{'*' if current else ' '} CPU #{index}: thread_id={thread_id}\n"
                   for index, current, _pc, thread_id in cpus)
