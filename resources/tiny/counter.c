/*
 * tiny.mode=counter: a guest that is visibly alive. It prints `TINY tick N` on the serial port
 * in a loop, a busy-wait apart, so a test can see whether the VM runs or is paused. Between
 * ticks it polls the i8042: when the keyboard sends Ctrl-Alt-Del (scan code set 2: 0x14 Ctrl,
 * 0x11 Alt, 0xe0 0x71 Delete, as a VMM's SendCtrlAltDel injects them) it prints
 * `TINY ctrl-alt-del` and resets the machine through the i8042, as Linux does on `reboot=k`.
 *   counter.delay=N  busy-wait iterations between ticks (default 20000)
 */
#include "tiny.h"

#define KBD_DATA 0x60
#define KBD_STATUS 0x64
#define KBD_OBF 1

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static u64 parse_dec(const char *s)
{
    u64 v = 0;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (u64)(*s++ - '0');
    return v;
}

/* Returns 1 once the keyboard has sent Ctrl, Alt and Delete, in any order. */
static int saw_ctrl_alt_del(void)
{
    static int ctrl, alt, del, extended;
    while (inb(KBD_STATUS) & KBD_OBF) {
        u8 code = inb(KBD_DATA);
        if (code == 0xe0) {
            extended = 1;
            continue;
        }
        if (code == 0x14 && !extended)
            ctrl = 1;
        else if (code == 0x11 && !extended)
            alt = 1;
        else if (code == 0x71 && extended)
            del = 1;
        extended = 0;
    }
    return ctrl && alt && del;
}

void tiny_counter(const char *cmdline)
{
    u64 delay = 20000;
    for (const char *p = cmdline; *p; p++)
        if (starts(p, "counter.delay="))
            delay = parse_dec(p + 14);
    for (u64 tick = 0;; tick++) {
        puts("TINY tick ");
        putdec(tick);
        putc('\n');
        for (volatile u64 i = 0; i < delay; i++)
            ;
        if (saw_ctrl_alt_del()) {
            puts("TINY ctrl-alt-del\n");
            for (;;)
                outb(KBD_STATUS, 0xfe);
        }
    }
}
