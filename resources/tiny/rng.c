/*
 * A minimal virtio-mmio entropy (virtio-rng) driver for the tiny PVH kernel, polled, for
 * `tiny.mode=rng`. It finds the type-4 device among the command line's virtio_mmio.device=
 * entries and prints, one fact a line, prefixed "TINY rng ":
 *   found
 *   req used=<len> fnv=<FNV-1a 64 of the 64 bytes>      (twice: two requests over 16+48 bytes)
 *   differ=<1 if the two requests' bytes differ>
 *   bad=wrong_dir used=<len>      (a buffer the device may only read)
 *   bad=oob used=<len>            (a buffer outside guest memory)
 *   then used=<len>               (a good request after them)
 * then "TINY rng done", or "TINY rng none" without such a device.
 */
#include "tiny.h"

static struct desc descs[QSZ] __attribute__((aligned(16)));
static volatile u16 avail[QSZ + 3] __attribute__((aligned(4)));
static volatile struct used_ring used __attribute__((aligned(4)));
static u8 bytes[2][64] __attribute__((aligned(64)));
static u16 avail_idx, used_idx;

static void say(const char *what)
{
    puts("TINY rng ");
    puts(what);
}

/* Offers descriptors 0..n-1 as one chain; returns the used length, or -1 if never used. */
static long submit(volatile u32 *m)
{
    avail[2 + avail_idx % QSZ] = 0;
    barrier();
    avail[1] = ++avail_idx;
    barrier();
    MMIO(m, VIRTIO_QUEUE_NOTIFY) = 0;
    for (u64 spin = 0; spin < 400000000ul; spin++) {
        barrier();
        if (used.idx != used_idx) {
            long len = used.ring[used_idx % QSZ].len;
            used_idx++;
            return len;
        }
    }
    return -1;
}

static void set(int n, u64 addr, u32 len, u16 flags, u16 next)
{
    descs[n].addr = addr;
    descs[n].len = len;
    descs[n].flags = flags;
    descs[n].next = next;
}

static void putlen(long n)
{
    if (n < 0)
        puts("none");
    else
        putdec((u64)n);
}

void tiny_rng(const char *cmdline)
{
    u64 bases[MAXDEV];
    int n = find_devices(cmdline, bases);
    volatile u32 *m = 0;
    for (int i = 0; i < n && !m; i++) {
        volatile u32 *c = (volatile u32 *)bases[i];
        if (virtio_begin(c, 4, 0) >= 0)
            m = c;
    }
    if (!m || virtio_queue(m, 0, descs, avail, &used) || virtio_ready(m)) {
        say("none\n");
        return;
    }
    say("found\n");
    for (int r = 0; r < 2; r++) {
        set(0, (u64)bytes[r], 16, DESC_F_NEXT | DESC_F_WRITE, 1);
        set(1, (u64)bytes[r] + 16, 48, DESC_F_WRITE, 0);
        long len = submit(m);
        say("req used=");
        putlen(len);
        puts(" fnv=");
        puthex(fnv(bytes[r], 64));
        putc('\n');
    }
    int differ = 0;
    for (int k = 0; k < 64; k++)
        differ |= bytes[0][k] != bytes[1][k];
    say(differ ? "differ=1\n" : "differ=0\n");

    set(0, (u64)bytes[0], 64, 0, 0);
    say("bad=wrong_dir used=");
    putlen(submit(m));
    putc('\n');
    set(0, 0x7ffff0000000ul, 64, DESC_F_WRITE, 0);
    say("bad=oob used=");
    putlen(submit(m));
    putc('\n');
    set(0, (u64)bytes[0], 32, DESC_F_WRITE, 0);
    say("then used=");
    putlen(submit(m));
    putc('\n');
    say("done\n");
}
