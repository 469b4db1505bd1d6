/*
 * Tiny test kernel entered through the Linux 64-bit boot protocol as an ELF without a PVH
 * note: long mode, the VMM's identity map, %rsi = zero page (struct boot_params).
 */

#include "common.S"
#include "zeropage.S"

.section .text
.code64
.global _start
_start:
    jmp zeropage_entry
