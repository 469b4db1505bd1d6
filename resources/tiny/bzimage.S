/*
 * Tiny test kernel in bzImage form: a 512-byte boot sector holding the setup header at 0x1f1,
 * one setup sector, then the protected-mode kernel, loaded at code32_start (1 MiB). The VMM
 * enters it through the 64-bit boot protocol at code32_start + 0x200.
 * Linked at 0 for the two setup sectors; the kernel part at 0x100000 (see bzimage.ld).
 */

.intel_syntax noprefix

.section .setup, "ax"
.code16
setup_start:
    .fill 0x1f1, 1, 0
hdr_setup_sects:   .byte 1                 /* 0x1f1: one setup sector after the boot sector */
hdr_root_flags:    .word 0
hdr_syssize:       .long 0                 /* 0x1f4 */
hdr_ram_size:      .word 0
hdr_vid_mode:      .word 0
hdr_root_dev:      .word 0
hdr_boot_flag:     .word 0xaa55            /* 0x1fe */
hdr_jump:          .word 0                 /* 0x200 */
hdr_header:        .ascii "HdrS"           /* 0x202 */
hdr_version:       .word 0x020f            /* 0x206: boot protocol 2.15 */
hdr_realmode_swtch: .long 0
hdr_start_sys_seg: .word 0
hdr_kernel_version: .word 0
hdr_type_of_loader: .byte 0
hdr_loadflags:     .byte 0x01              /* 0x211: LOADED_HIGH */
hdr_setup_move_size: .word 0
hdr_code32_start:  .long 0x100000          /* 0x214 */
hdr_ramdisk_image: .long 0
hdr_ramdisk_size:  .long 0
hdr_bootsect_kludge: .long 0
hdr_heap_end_ptr:  .word 0
hdr_ext_loader_ver: .byte 0
hdr_ext_loader_type: .byte 0
hdr_cmd_line_ptr:  .long 0                 /* 0x228 */
hdr_initrd_addr_max: .long 0x7fffffff      /* 0x22c */
hdr_kernel_alignment: .long 0x200000
hdr_relocatable:   .byte 0
hdr_min_alignment: .byte 0
hdr_xloadflags:    .word 0x0001            /* 0x236: XLF_KERNEL_64 */
hdr_cmdline_size:  .long 2047
    .fill 1024 - (. - setup_start), 1, 0

#include "common.S"
#include "zeropage.S"

/* The protected-mode kernel begins here; its 64-bit entry is 0x200 bytes in. */
.section .text.head, "ax"
.code64
kernel_start:
    .fill 0x200, 1, 0xcc
.global startup_64
startup_64:
    jmp zeropage_entry
