/*
 * Entry for the Linux 64-bit boot protocol, shared by the ELF and bzImage tiny kernels:
 * reads the zero page at %rsi into the info_* variables of common.S.
 */

.intel_syntax noprefix

.section .rodata
s_linux64: .asciz "linux64"

.section .bss
.balign 16
zp_stack:     .skip 4096
zp_stack_top:

.section .text
.code64
zeropage_entry:
    cli
    lea rsp, [rip + zp_stack_top]
    lea rax, [rip + s_linux64]
    mov [rip + info_boot], rax
    mov eax, [rsi + 0x228]           /* hdr.cmd_line_ptr */
    mov [rip + info_cmdline], rax
    mov eax, [rsi + 0x218]           /* hdr.ramdisk_image */
    mov ecx, [rsi + 0x0c0]           /* ext_ramdisk_image */
    shl rcx, 32
    or rax, rcx
    mov [rip + info_initrd_addr], rax
    mov eax, [rsi + 0x21c]           /* hdr.ramdisk_size */
    mov ecx, [rsi + 0x0c4]           /* ext_ramdisk_size */
    shl rcx, 32
    or rax, rcx
    mov [rip + info_initrd_size], rax
    lea rax, [rsi + 0x2d0]           /* e820_table */
    mov [rip + info_e820_ptr], rax
    movzx eax, byte ptr [rsi + 0x1e8] /* e820_entries */
    mov [rip + info_e820_count], rax
    mov qword ptr [rip + info_e820_stride], 20
    jmp tiny_main
