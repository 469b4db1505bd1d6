/*
 * The body shared by fennec's tiny test kernels: 64-bit code that reports on the serial port
 * (COM1, polled) what the VMM handed it, then does what its command line asks.
 *
 * Each entry file fills the `info_*` variables from its boot protocol and jumps to tiny_main.
 * Output, one fact per line, every line starting with "TINY ":
 *   TINY boot=<pvh|linux64>
 *   TINY cmdline=<the command line>
 *   TINY e820 <addr> <size> <type>        one per memory-map entry (hex, type decimal)
 *   TINY mem=<sum of RAM entries, hex>
 *   TINY initrd addr=<hex> size=<hex> fnv=<FNV-1a 64 of its bytes, hex>  |  TINY initrd none
 *   TINY cpus=<enabled processors in the MP table> mptable=<ok|bad|missing>
 *   TINY ready
 * and writes 123 to the VMM's boot timer (0xc0000000). Then, by `tiny.mode=` on the command line:
 *   echo    echo every byte received until 'q', then reset through the i8042
 *   halt    cli; hlt forever (the VMM should notice it can never run again)
 *   idle    sti; hlt forever: idle, waiting for an interrupt that nothing sends
 *   flood   print "TINY flood ..." lines forever, as fast as the serial port takes them
 *   triple  triple-fault (load an empty IDT and trap)
 *   spin    run a 5,000,000-iteration loop, then reset (to time how fast guest code runs)
 *   blk     (pvh.elf) drive the virtio-mmio block devices, see virtio.c, then triple-fault
 *   blkbench  (pvh.elf) time bulk I/O on the first block device, then triple-fault
 *   net     (pvh.elf) drive the first virtio-mmio network device, see net.c, then triple-fault
 *   counter (pvh.elf) print a tick counter until the keyboard sends Ctrl-Alt-Del, see counter.c
 *   disk    (pvh.elf) read and stamp the first block device for the image-store tests, see blk.c
 *   acpi    (pvh.elf) read and check the ACPI tables, then power off or reset through them, see acpi.c
 *   fill    (pvh.elf) write to every page up to fill.mib MiB, then idle, see fill.c
 *   rng     (pvh.elf) drive the virtio-mmio entropy device, see rng.c, then triple-fault
 *   (none)  reset through the i8042
 */

#define COM1 0x3f8
#define KBD_CMD 0x64

.intel_syntax noprefix

.section .data
.balign 8
info_boot:        .quad 0
info_cmdline:     .quad 0
info_initrd_addr: .quad 0
info_initrd_size: .quad 0
info_e820_ptr:    .quad 0
info_e820_count:  .quad 0
info_e820_stride: .quad 0
empty_idt:        .word 0
                  .quad 0

.section .rodata
s_prefix:   .asciz "TINY "
s_boot:     .asciz "TINY boot="
s_cmdline:  .asciz "TINY cmdline="
s_e820:     .asciz "TINY e820 "
s_mem:      .asciz "TINY mem="
s_initrd:   .asciz "TINY initrd addr="
s_size:     .asciz " size="
s_fnv:      .asciz " fnv="
s_noinitrd: .asciz "TINY initrd none\n"
s_cpus:     .asciz "TINY cpus="
s_mp_ok:    .asciz " mptable=ok\n"
s_mp_bad:   .asciz " mptable=bad\n"
s_mp_none:  .asciz "TINY cpus=0 mptable=missing\n"
s_ready:    .asciz "TINY ready\n"
s_bye:      .asciz "\nTINY bye\n"
s_m_echo:   .asciz "tiny.mode=echo"
s_m_halt:   .asciz "tiny.mode=halt"
s_m_idle:   .asciz "tiny.mode=idle"
s_m_flood:  .asciz "tiny.mode=flood"
s_flood:    .asciz "TINY flood 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
s_m_triple: .asciz "tiny.mode=triple"
s_m_spin:   .asciz "tiny.mode=spin"
s_m_blk:    .asciz "tiny.mode=blk"
s_m_net:    .asciz "tiny.mode=net"
s_m_counter: .asciz "tiny.mode=counter"
s_m_fill:   .asciz "tiny.mode=fill"
s_m_disk:   .asciz "tiny.mode=disk"
s_m_acpi:   .asciz "tiny.mode=acpi"
s_m_rng:    .asciz "tiny.mode=rng"
s_nl:       .asciz "\n"
hexdigits:  .ascii "0123456789abcdef"

.section .text
.code64

/* putc: al = byte. Waits for THR empty. Clobbers dx, ah. */
putc:
    mov ah, al
    mov dx, COM1 + 5
1:  in al, dx
    test al, 0x20
    jz 1b
    mov al, ah
    mov dx, COM1
    out dx, al
    ret

/* puts: rsi = NUL-terminated string. Clobbers rsi, rax, rdx. */
puts:
1:  mov al, [rsi]
    test al, al
    jz 2f
    call putc
    inc rsi
    jmp 1b
2:  ret

/* puthex: rdi = value, printed as 0x + 16 digits. Clobbers rax, rcx, rdx, rbx. */
puthex:
    mov al, '0'
    call putc
    mov al, 'x'
    call putc
    mov ecx, 16
1:  rol rdi, 4
    mov rbx, rdi
    and ebx, 0xf
    lea rax, [rip + hexdigits]
    mov al, [rax + rbx]
    push rcx
    call putc
    pop rcx
    dec ecx
    jnz 1b
    ret

/* putdec: rdi = value (< 10^20), decimal. Clobbers rax, rcx, rdx, rbx, rdi. */
putdec:
    mov rax, rdi
    mov rbx, 10
    xor ecx, ecx
1:  xor edx, edx
    div rbx
    push rdx
    inc ecx
    test rax, rax
    jnz 1b
2:  pop rax
    add al, '0'
    push rcx
    call putc
    pop rcx
    dec ecx
    jnz 2b
    ret

/* contains: rdi = haystack, rsi = needle (both NUL-terminated); rax = 1 if found. */
contains:
    test rdi, rdi
    jz 4f
1:  xor ecx, ecx
2:  mov al, [rsi + rcx]
    test al, al
    jz 3f
    cmp al, [rdi + rcx]
    jne 5f
    inc rcx
    jmp 2b
5:  cmp byte ptr [rdi], 0
    je 4f
    inc rdi
    jmp 1b
3:  mov eax, 1
    ret
4:  xor eax, eax
    ret

reset:
    mov al, 0xfe
    out KBD_CMD, al
1:  cli
    hlt
    jmp 1b

tiny_main:
    /* boot= */
    lea rsi, [rip + s_boot]
    call puts
    mov rsi, [rip + info_boot]
    call puts
    lea rsi, [rip + s_nl]
    call puts

    /* cmdline= */
    lea rsi, [rip + s_cmdline]
    call puts
    mov rsi, [rip + info_cmdline]
    test rsi, rsi
    jz 1f
    call puts
1:  lea rsi, [rip + s_nl]
    call puts

    /* e820 entries, summing RAM into r12 */
    xor r12, r12
    mov r13, [rip + info_e820_ptr]
    mov r14, [rip + info_e820_count]
2:  test r14, r14
    jz 3f
    lea rsi, [rip + s_e820]
    call puts
    mov rdi, [r13]
    call puthex
    mov al, ' '
    call putc
    mov rdi, [r13 + 8]
    call puthex
    mov al, ' '
    call putc
    mov edi, [r13 + 16]
    cmp edi, 1
    jne 4f
    add r12, [r13 + 8]
4:  call putdec
    lea rsi, [rip + s_nl]
    call puts
    add r13, [rip + info_e820_stride]
    dec r14
    jmp 2b
3:  lea rsi, [rip + s_mem]
    call puts
    mov rdi, r12
    call puthex
    lea rsi, [rip + s_nl]
    call puts

    /* initrd: FNV-1a 64 over its bytes */
    mov rcx, [rip + info_initrd_size]
    test rcx, rcx
    jnz 5f
    lea rsi, [rip + s_noinitrd]
    call puts
    jmp 7f
5:  mov rsi, [rip + info_initrd_addr]
    mov rax, 0xcbf29ce484222325
    mov r8, 0x100000001b3
6:  movzx rdx, byte ptr [rsi]
    xor rax, rdx
    imul rax, r8
    inc rsi
    dec rcx
    jnz 6b
    mov r12, rax
    lea rsi, [rip + s_initrd]
    call puts
    mov rdi, [rip + info_initrd_addr]
    call puthex
    lea rsi, [rip + s_size]
    call puts
    mov rdi, [rip + info_initrd_size]
    call puthex
    lea rsi, [rip + s_fnv]
    call puts
    mov rdi, r12
    call puthex
    lea rsi, [rip + s_nl]
    call puts
7:
    call report_mptable

    lea rsi, [rip + s_ready]
    call puts
    /* Booted: tell the VMM's boot timer (123 to its byte at the start of the MMIO hole). */
    mov rax, 0xc0000000
    mov byte ptr [rax], 123

    /* what next */
    mov rdi, [rip + info_cmdline]
    lea rsi, [rip + s_m_echo]
    call contains
    test eax, eax
    jnz echo_loop
    mov rdi, [rip + info_cmdline]
    lea rsi, [rip + s_m_halt]
    call contains
    test eax, eax
    jnz halt_forever
    mov rdi, [rip + info_cmdline]
    lea rsi, [rip + s_m_idle]
    call contains
    test eax, eax
    jnz idle_forever
    mov rdi, [rip + info_cmdline]
    lea rsi, [rip + s_m_flood]
    call contains
    test eax, eax
    jnz flood_forever
    mov rdi, [rip + info_cmdline]
    lea rsi, [rip + s_m_triple]
    call contains
    test eax, eax
    jnz triple_fault
    mov rdi, [rip + info_cmdline]
    lea rsi, [rip + s_m_blk]            /* also matches tiny.mode=blkbench */
    call contains
    test eax, eax
    jnz virtio_mode
    mov rdi, [rip + info_cmdline]
    lea rsi, [rip + s_m_net]
    call contains
    test eax, eax
    jnz virtio_mode
    mov rdi, [rip + info_cmdline]
    lea rsi, [rip + s_m_counter]
    call contains
    test eax, eax
    jnz virtio_mode
    mov rdi, [rip + info_cmdline]
    lea rsi, [rip + s_m_disk]
    call contains
    test eax, eax
    jnz virtio_mode
    mov rdi, [rip + info_cmdline]
    lea rsi, [rip + s_m_acpi]
    call contains
    test eax, eax
    jnz virtio_mode
    mov rdi, [rip + info_cmdline]
    lea rsi, [rip + s_m_fill]
    call contains
    test eax, eax
    jnz virtio_mode
    mov rdi, [rip + info_cmdline]
    lea rsi, [rip + s_m_rng]
    call contains
    test eax, eax
    jnz virtio_mode
    mov rdi, [rip + info_cmdline]
    lea rsi, [rip + s_m_spin]
    call contains
    test eax, eax
    jz reset
    mov ecx, 5000000
1:  dec ecx
    jnz 1b
    jmp reset

echo_loop:
    mov dx, COM1 + 5
1:  in al, dx
    test al, 1
    jz 1b
    mov dx, COM1
    in al, dx
    cmp al, 'q'
    je 2f
    call putc
    jmp echo_loop
2:  lea rsi, [rip + s_bye]
    call puts
    jmp reset

/* The C virtio drivers exist only in pvh.elf; elsewhere the weak symbol is 0. */
.weak tiny_virtio
virtio_mode:
    lea rax, [rip + tiny_virtio]
    test rax, rax
    jz reset
    mov rdi, [rip + info_cmdline]
    and rsp, -16
    call rax
    jmp triple_fault            /* ends QEMU's microvm too, which has no i8042 */

halt_forever:
    cli
    hlt
    jmp halt_forever

idle_forever:
    sti
    hlt
    jmp idle_forever

flood_forever:
    lea rsi, [rip + s_flood]
    call puts
    jmp flood_forever

triple_fault:
    lidt [rip + empty_idt]
    ud2
    jmp reset

/* Finds the MP floating pointer in the BIOS area, checks both checksums, counts enabled CPUs. */
report_mptable:
    mov rsi, 0xf0000
1:  cmp dword ptr [rsi], 0x5f504d5f   /* "_MP_" */
    je 2f
    add rsi, 16
    cmp rsi, 0x100000
    jb 1b
    lea rsi, [rip + s_mp_none]
    jmp puts
2:  xor r15, r15                      /* r15 = 0 while checksums are good */
    mov rdi, rsi
    mov ecx, 16
    call sum_bytes
    or r15b, al
    mov ebx, [rsi + 4]                /* configuration table */
    cmp dword ptr [rbx], 0x504d4350   /* "PCMP" */
    je 3f
    or r15b, 1
3:  mov rdi, rbx
    movzx ecx, word ptr [rbx + 4]
    call sum_bytes
    or r15b, al
    movzx ecx, word ptr [rbx + 34]    /* entry count */
    lea rdi, [rbx + 44]
    xor r12, r12                      /* enabled processors */
4:  test ecx, ecx
    jz 7f
    cmp byte ptr [rdi], 0
    jne 6f
    test byte ptr [rdi + 3], 1
    jz 5f
    inc r12
5:  add rdi, 20
    dec ecx
    jmp 4b
6:  add rdi, 8
    dec ecx
    jmp 4b
7:  lea rsi, [rip + s_cpus]
    call puts
    mov rdi, r12
    call putdec
    lea rsi, [rip + s_mp_ok]
    test r15b, r15b
    jz 8f
    lea rsi, [rip + s_mp_bad]
8:  jmp puts

/* sum_bytes: rdi = start, ecx = length; al = byte sum. Keeps rdi. */
sum_bytes:
    xor eax, eax
    xor edx, edx
1:  test ecx, ecx
    jz 2f
    add al, [rdi + rdx]
    inc edx
    dec ecx
    jmp 1b
2:  ret
