/* The test firmware behind tests/hmp/test_hmp_paging_golden.py. Build and run:
 *   as --32 -o bios.o paging_bios.S && ld -m elf_i386 -Ttext=0 --oformat binary -o bios.bin bios.o
 *   qemu-system-x86_64 -machine q35,accel=tcg -m 256 -display none -nodefaults -nic none -bios bios.bin
 * then 'info mem' / 'info tlb' once it halts. */
/* A 64 KiB "BIOS" that builds 4-level page tables, enables long mode paging and halts. */
.macro PTE addr, lo, hi=0
    movl $\lo, \addr
    movl $\hi, \addr+4
.endm
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
    PTE 0x10000, 0x11007
    PTE 0x10000+511*8, 0x12003
    PTE 0x11000, 0x13007
    PTE 0x11000+1*8, 0x400000e7
    PTE 0x13000, 0x14007
    PTE 0x13000+1*8, 0x200187
    PTE 0x13000+2*8, 0x400081, 0x80000000
    PTE 0x14000, 0x00003
    PTE 0x14000+1*8, 0x0101b
    PTE 0x14000+2*8, 0x02007
    PTE 0x14000+5*8, 0x05001, 0x80000000
    PTE 0x14000+0x100*8, 0x1000e3
    movl $0xf0, %ecx
1:  movl %ecx, %eax
    shll $12, %eax
    orl $1, %eax
    movl %eax, 0x14000(,%ecx,8)
    incl %ecx
    cmpl $0x100, %ecx
    jne 1b
    PTE 0x12000+510*8, 0x15003
    PTE 0x15000, 0x183
    PTE 0x15000+1*8, 0x200083, 0x80000000
    movl $0x10000, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x900, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax
    movl %eax, %cr0
2:  hlt
    jmp 2b
    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
gdt_desc:
    .word 23
    .long gdt + 0xf0000
    .org 0xfff0
    .code16
reset:
    ljmp $0xf000, $start16
    .org 0x10000
