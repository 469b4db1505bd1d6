/*
 * tiny.mode=fill: makes guest memory resident, the way a busy guest does. It writes one byte
 * in every 4 KiB page from 16 MiB up to fill.mib MiB (default 64), printing `TINY filled N MiB`
 * every 16 MiB and `TINY fill done` at the end, then idles with interrupts on. A test that
 * limits the VMM's memory below that sees the limit hit.
 */
#include "tiny.h"

#define START_MIB 16

void tiny_fill(const char *cmdline)
{
    u64 mib = 64;
    for (const char *p = cmdline; *p; p++)
        if (starts(p, "fill.mib=")) {
            mib = 0;
            for (const char *d = p + 9; *d >= '0' && *d <= '9'; d++)
                mib = mib * 10 + (u64)(*d - '0');
        }
    for (u64 at = START_MIB; at < mib; at++) {
        for (u64 page = 0; page < 256; page++)
            *(volatile u8 *)((at << 20) + (page << 12)) = 1;
        if ((at + 1) % 16 == 0) {
            puts("TINY filled ");
            putdec(at + 1);
            puts(" MiB\n");
        }
    }
    puts("TINY fill done\n");
    for (;;)
        __asm__ volatile("sti; hlt");
}
