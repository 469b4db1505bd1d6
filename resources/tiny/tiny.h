/*
 * What the tiny kernel's C drivers share (lib.c): types, the polled serial port, the virtio-mmio
 * register map and bring-up, and a few string helpers. Everything is freestanding.
 */
#ifndef TINY_H
#define TINY_H

typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define QSZ 8
#define MAXDEV 4
#define DESC_F_NEXT 1
#define DESC_F_WRITE 2

struct desc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
};

struct used_ring {
    u16 flags;
    u16 idx;
    struct {
        u32 id;
        u32 len;
    } ring[QSZ];
    u16 avail_event;
};

/* virtio-mmio registers (virtio 1.2, 4.2.2). */
#define VIRTIO_STATUS 0x70
#define VIRTIO_QUEUE_NOTIFY 0x50
#define VIRTIO_INTERRUPT_STATUS 0x60
#define VIRTIO_INTERRUPT_ACK 0x64
#define VIRTIO_CONFIG 0x100
#define MMIO(m, off) ((m)[(off) / 4])

/* Plain RAM above the kernel image, for big buffers. */
#define BIG ((u8 *)0x400000)

void *memset(void *d, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

void putc(char c);
void puts(const char *s);
void puthex(u64 v);
void putdec(u64 v);
/* Waits for a byte on the serial port. */
u8 getc(void);

u64 fnv(const u8 *p, u64 n);
int starts(const char *s, const char *p);
int contains(const char *s, const char *p);
/* Finds the virtio-mmio devices on the command line; returns how many. */
int find_devices(const char *cmdline, u64 *bases);

/*
 * Resets the device at `m` and negotiates `want` (bits 0-31) plus VERSION_1; returns the
 * device's feature bits 0-31, -1 if it is not a version-2 device of type `type`, or -2/-3 if
 * negotiation fails.
 */
long virtio_begin(volatile u32 *m, u32 type, u32 want);
/* Gives queue `q` its rings; 0 on success, -4 if the device's queue is smaller than QSZ. */
int virtio_queue(volatile u32 *m, u32 q, struct desc *d, volatile u16 *avail,
                 volatile struct used_ring *used);
/* Sets DRIVER_OK; 0 on success, -5 if the device refused. */
int virtio_ready(volatile u32 *m);

void tiny_blk(const char *cmdline);
void tiny_net(const char *cmdline);
void tiny_counter(const char *cmdline);
void tiny_acpi(const char *cmdline);
void tiny_fill(const char *cmdline);
void tiny_rng(const char *cmdline);

#endif
