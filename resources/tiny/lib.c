/*
 * The tiny PVH kernel's C support: serial output, string helpers and virtio-mmio bring-up
 * shared by the block (blk.c) and network (net.c) drivers, and tiny_virtio, which common.S
 * calls for `tiny.mode=blk*`, `tiny.mode=net*`, `counter`, `disk`, `acpi`, `fill` and `rng`.
 */
#include "tiny.h"

void *memset(void *d, int c, unsigned long n)
{
    u8 *p = d;
    while (n--)
        *p++ = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
    u8 *p = d;
    const u8 *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

void putc(char c)
{
    while (!(inb(0x3f8 + 5) & 0x20))
        ;
    outb(0x3f8, (u8)c);
}
void puts(const char *s)
{
    while (*s)
        putc(*s++);
}
void puthex(u64 v)
{
    puts("0x");
    for (int i = 60; i >= 0; i -= 4)
        putc("0123456789abcdef"[(v >> i) & 0xf]);
}
void putdec(u64 v)
{
    char b[24];
    int n = 0;
    do {
        b[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        putc(b[--n]);
}
u64 fnv(const u8 *p, u64 n)
{
    u64 h = 0xcbf29ce484222325ul;
    while (n--) {
        h ^= *p++;
        h *= 0x100000001b3ul;
    }
    return h;
}

int starts(const char *s, const char *p)
{
    while (*p)
        if (*s++ != *p++)
            return 0;
    return 1;
}

static u64 parse_hex(const char **s)
{
    u64 v = 0;
    if (starts(*s, "0x"))
        *s += 2;
    for (;; (*s)++) {
        char c = **s;
        if (c >= '0' && c <= '9')
            v = v * 16 + (u64)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = v * 16 + (u64)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v = v * 16 + (u64)(c - 'A' + 10);
        else
            return v;
    }
}

/* Finds the virtio-mmio devices on the command line; returns how many. */
int find_devices(const char *cmdline, u64 *bases)
{
    int n = 0;
    for (const char *s = cmdline; s && *s && n < MAXDEV; s++) {
        if (!starts(s, "virtio_mmio.device="))
            continue;
        while (*s && *s != '@' && *s != ' ')
            s++;
        if (*s != '@')
            continue;
        s++;
        bases[n++] = parse_hex(&s);
    }
    return n;
}

u8 getc(void)
{
    while (!(inb(0x3f8 + 5) & 1))
        ;
    return inb(0x3f8);
}

int contains(const char *s, const char *p)
{
    for (; *s; s++)
        if (starts(s, p))
            return 1;
    return 0;
}

long virtio_begin(volatile u32 *m, u32 type, u32 want)
{
    MMIO(m, VIRTIO_STATUS) = 0;
    if (MMIO(m, 0x000) != 0x74726976 || MMIO(m, 0x004) != 2 || MMIO(m, 0x008) != type)
        return -1;
    MMIO(m, VIRTIO_STATUS) = 1;
    MMIO(m, VIRTIO_STATUS) = 3;
    MMIO(m, 0x14) = 0;
    u32 features = MMIO(m, 0x10);
    MMIO(m, 0x14) = 1;
    if (!(MMIO(m, 0x10) & 1))
        return -2;
    MMIO(m, 0x24) = 0;
    MMIO(m, 0x20) = features & want;
    MMIO(m, 0x24) = 1;
    MMIO(m, 0x20) = 1; /* VIRTIO_F_VERSION_1 */
    MMIO(m, VIRTIO_STATUS) = 0xb;
    if (!(MMIO(m, VIRTIO_STATUS) & 8))
        return -3;
    return features;
}

int virtio_queue(volatile u32 *m, u32 q, struct desc *d, volatile u16 *avail,
                 volatile struct used_ring *used)
{
    /* Fresh rings, as a driver allocating new ones would have. */
    memset(d, 0, sizeof(struct desc) * QSZ);
    memset((void *)avail, 0, 2 * (QSZ + 3));
    memset((void *)used, 0, sizeof(*used));
    MMIO(m, 0x30) = q;
    if (MMIO(m, 0x34) < QSZ)
        return -4;
    MMIO(m, 0x38) = QSZ;
    MMIO(m, 0x80) = (u32)(u64)d;
    MMIO(m, 0x84) = 0;
    MMIO(m, 0x90) = (u32)(u64)avail;
    MMIO(m, 0x94) = 0;
    MMIO(m, 0xa0) = (u32)(u64)used;
    MMIO(m, 0xa4) = 0;
    MMIO(m, 0x44) = 1;
    return 0;
}

int virtio_ready(volatile u32 *m)
{
    MMIO(m, VIRTIO_STATUS) = 0xf;
    return MMIO(m, VIRTIO_STATUS) == 0xf ? 0 : -5;
}

void tiny_virtio(const char *cmdline)
{
    if (contains(cmdline, "tiny.mode=net"))
        tiny_net(cmdline);
    else if (contains(cmdline, "tiny.mode=counter"))
        tiny_counter(cmdline);
    else if (contains(cmdline, "tiny.mode=acpi"))
        tiny_acpi(cmdline);
    else if (contains(cmdline, "tiny.mode=fill"))
        tiny_fill(cmdline);
    else if (contains(cmdline, "tiny.mode=rng"))
        tiny_rng(cmdline);
    else
        tiny_blk(cmdline);
}
