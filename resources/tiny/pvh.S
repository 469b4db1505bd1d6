/*
 * Tiny test kernel entered through PVH: an ELF whose XEN_ELFNOTE_PHYS32_ENTRY note names
 * pvh_start. Entered in 32-bit protected mode, paging off, %ebx = hvm_start_info. It builds an
 * identity map of the first 4 GiB, enters long mode and runs the shared body (common.S).
 */

#include "common.S"

.intel_syntax noprefix

/* The PVH note: name "Xen", type 18, descriptor = 32-bit entry address. */
.section .note.Xen, "a", @note
.balign 4
.long 4
.long 4
.long 18
.asciz "Xen"
.long pvh_start

.section .rodata
s_pvh:     .asciz "pvh"
s_pvh_bad: .asciz "pvh-bad-magic"

.section .data
.balign 8
gdt64:
    .quad 0
    .quad 0x00af9a000000ffff    /* 64-bit code */
    .quad 0x00cf92000000ffff    /* data */
gdt64_ptr:
    .word gdt64_ptr - gdt64 - 1
    .long gdt64
start_info: .long 0

/* Page tables live in .bss, which is never in the file: guest RAM starts out zeroed. */
.section .bss
.balign 4096
pml4:     .skip 4096
pdpt:     .skip 4096
pds:      .skip 4 * 4096
stack:    .skip 16384
stack_top:

.section .text
.code32
.global pvh_start
.global _start
.set _start, pvh_start
pvh_start:
    cli
    mov [start_info], ebx
    /* 2048 2 MiB pages: entry i maps i << 21 */
    xor ecx, ecx
1:  mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov [pds + ecx * 8], eax
    mov edx, ecx
    shr edx, 11
    mov [pds + ecx * 8 + 4], edx
    inc ecx
    cmp ecx, 2048
    jb 1b
    mov dword ptr [pdpt + 0], offset pds + 0x0003
    mov dword ptr [pdpt + 8], offset pds + 0x1003
    mov dword ptr [pdpt + 16], offset pds + 0x2003
    mov dword ptr [pdpt + 24], offset pds + 0x3003
    mov dword ptr [pml4], offset pdpt + 3
    mov eax, cr4
    or eax, 0x20                /* PAE */
    mov cr4, eax
    mov eax, offset pml4
    mov cr3, eax
    mov ecx, 0xc0000080         /* EFER */
    rdmsr
    or eax, 0x100               /* LME */
    wrmsr
    mov eax, cr0
    or eax, 0x80000001          /* PG | PE */
    mov cr0, eax
    lgdt [gdt64_ptr]
    .att_syntax
    ljmp $0x08, $long_mode
    .intel_syntax noprefix

.code64
long_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    lea rsp, [rip + stack_top]
    mov ebx, [rip + start_info]
    lea rax, [rip + s_pvh]
    cmp dword ptr [rbx], 0x336ec578
    je 1f
    lea rax, [rip + s_pvh_bad]
1:  mov [rip + info_boot], rax
    mov rax, [rbx + 24]         /* cmdline_paddr */
    mov [rip + info_cmdline], rax
    mov rax, [rbx + 40]         /* memmap_paddr */
    mov [rip + info_e820_ptr], rax
    mov eax, [rbx + 48]         /* memmap_entries */
    mov [rip + info_e820_count], rax
    mov qword ptr [rip + info_e820_stride], 24
    mov eax, [rbx + 12]         /* nr_modules */
    test eax, eax
    jz 2f
    mov rcx, [rbx + 16]         /* modlist_paddr */
    mov rax, [rcx]
    mov [rip + info_initrd_addr], rax
    mov rax, [rcx + 8]
    mov [rip + info_initrd_size], rax
2:  jmp tiny_main
