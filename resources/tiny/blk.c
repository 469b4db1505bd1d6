/*
 * A minimal virtio-mmio (version 2) block driver for the tiny PVH kernel, polled, one request
 * at a time, with interrupts left masked. tiny_blk(cmdline) runs for `tiny.mode=blk` (the test
 * sequence below) and `tiny.mode=blkbench` (timed bulk I/O).
 *
 * Devices come from the command line's `virtio_mmio.device=<size>@<addr>:<irq>` entries, as
 * fennec (and QEMU's microvm) pass them. Output, one fact per line, prefixed "TINY blk<N> ":
 *   id=<GET_ID string> sectors=<capacity> ro=<0|1> irq=<status bits after a request>
 *   read fnv=<FNV-1a 64 of sectors 0..3>      write status=<s>      flush status=<s>
 *   readback fnv=<FNV of sector 1>            zeroes status=<s>
 *   bad=<case> status=<s|none> used=<len> then=<ok|broken>   (after each, sector 0 is re-read)
 *   reset fnv=<FNV of sector 0 after a device reset and a fresh bring-up>
 * then "TINY blk done". `tiny.mode=disk` is the image-store tests' guest (see tiny_disk below).
 * The hostile cases are the ones a VMM must survive: buffers outside
 * guest memory, wrong directions, short status, past the end, absurd lengths, loops.
 */
#include "tiny.h"

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_WRITE_ZEROES 13
#define F_RO (1u << 5)
#define F_FLUSH (1u << 9)
#define F_WRITE_ZEROES (1u << 14)
#define NO_STATUS 0xee

struct dev {
    volatile u32 *mmio;
    u32 features;
    u64 sectors;
    u16 avail_idx, used_idx;
};

static struct desc descs[MAXDEV][QSZ] __attribute__((aligned(16)));
static volatile u16 avail[MAXDEV][QSZ + 3] __attribute__((aligned(4)));
static volatile struct used_ring used[MAXDEV] __attribute__((aligned(4)));
static struct dev devs[MAXDEV];
static u8 hdr[16] __attribute__((aligned(16)));
static volatile u8 status;
static u8 buf[4096] __attribute__((aligned(4096)));
static u8 sector0[512];

/* The benchmark's 1 MiB buffer. */
#define BIG_LEN (1u << 20)

static void line(int d, const char *what)
{
    puts("TINY blk");
    putdec((u64)d);
    putc(' ');
    puts(what);
}

#define R(off) (d->mmio[(off) / 4])

/* Resets the device and brings it up with one 8-entry queue; 0 on success. */
static int bring_up(int i)
{
    struct dev *d = &devs[i];
    long features = virtio_begin(d->mmio, 2, F_RO | F_FLUSH | F_WRITE_ZEROES | 6);
    if (features < 0)
        return (int)features;
    d->features = (u32)features;
    int r = virtio_queue(d->mmio, 0, descs[i], avail[i], &used[i]);
    if (r || (r = virtio_ready(d->mmio)))
        return r;
    d->sectors = (u64)R(0x100) | ((u64)R(0x104) << 32);
    d->avail_idx = 0;
    d->used_idx = 0;
    return 0;
}

static void set(int i, int n, u64 addr, u32 len, u16 flags, u16 next)
{
    descs[i][n].addr = addr;
    descs[i][n].len = len;
    descs[i][n].flags = flags;
    descs[i][n].next = next;
}

/* Makes the chain at descriptor 0 available, notifies, waits; returns the used length, or -1
 * if the device never returned the chain. */
static long submit(int i)
{
    struct dev *d = &devs[i];
    avail[i][2 + d->avail_idx % QSZ] = 0;
    barrier();
    avail[i][1] = ++d->avail_idx;
    barrier();
    R(0x50) = 0;
    for (u64 spin = 0; spin < 400000000ul; spin++) {
        barrier();
        if (used[i].idx != d->used_idx) {
            long len = used[i].ring[d->used_idx % QSZ].len;
            d->used_idx++;
            return len;
        }
    }
    return -1;
}

/* A request with the usual framing: header, optional data, 1-byte status. */
static long request(int i, u32 type, u64 sector, void *data, u32 len, int dev_writes)
{
    for (int k = 0; k < 16; k++)
        hdr[k] = 0;
    *(u32 *)hdr = type;
    *(u64 *)(hdr + 8) = sector;
    status = NO_STATUS;
    set(i, 0, (u64)hdr, 16, DESC_F_NEXT, 1);
    if (len) {
        set(i, 1, (u64)data, len, DESC_F_NEXT | (dev_writes ? DESC_F_WRITE : 0), 2);
        set(i, 2, (u64)&status, 1, DESC_F_WRITE, 0);
    } else {
        set(i, 1, (u64)&status, 1, DESC_F_WRITE, 0);
    }
    return submit(i);
}

static void put_result(long used_len)
{
    puts(" status=");
    if (status == NO_STATUS)
        puts("none");
    else
        putdec(status);
    puts(" used=");
    if (used_len < 0)
        puts("none");
    else
        putdec((u64)used_len);
}

/* After a bad request: is sector 0 still served, with the same bytes? */
static void then_ok(int i)
{
    long n = request(i, T_IN, 0, buf, 512, 1);
    int ok = n == 513 && status == 0 && fnv(buf, 512) == fnv(sector0, 512);
    puts(ok ? " then=ok\n" : " then=broken\n");
}

static void bad(int i, const char *name, long used_len)
{
    line(i, "bad=");
    puts(name);
    put_result(used_len);
    then_ok(i);
}

static void hostile(int i)
{
    struct dev *d = &devs[i];

    /* Header far outside guest memory. */
    status = NO_STATUS;
    set(i, 0, 0x7ffff0000000ul, 16, DESC_F_NEXT, 1);
    set(i, 1, (u64)&status, 1, DESC_F_WRITE, 0);
    bad(i, "hdr_oob", submit(i));

    /* Data buffer far outside guest memory. */
    bad(i, "data_oob", request(i, T_IN, 0, (void *)0x1000000000ul, 512, 1));

    /* A read whose buffer the device may only read. */
    bad(i, "wrong_dir", request(i, T_IN, 0, buf, 512, 0));

    /* Status descriptor of length 0: nothing to answer with. */
    request(i, T_FLUSH, 0, 0, 0, 0); /* warm up: known-good */
    status = NO_STATUS;
    set(i, 0, (u64)hdr, 16, DESC_F_NEXT, 1);
    set(i, 1, (u64)buf, 512, DESC_F_NEXT | DESC_F_WRITE, 2);
    set(i, 2, (u64)&status, 0, DESC_F_WRITE, 0);
    *(u32 *)hdr = T_IN;
    bad(i, "short_status", submit(i));

    /* One sector past the end. */
    bad(i, "past_end", request(i, T_IN, d->sectors, buf, 512, 1));

    /* Two gigabytes into a 4 KiB buffer. */
    bad(i, "absurd_len", request(i, T_IN, 0, buf, 0x7ffffe00u, 1));

    /* Not a whole sector. */
    bad(i, "unaligned", request(i, T_IN, 0, buf, 100, 1));

    /* A chain that loops on itself. */
    status = NO_STATUS;
    *(u32 *)hdr = T_IN;
    set(i, 0, (u64)hdr, 16, DESC_F_NEXT, 1);
    set(i, 1, (u64)buf, 512, DESC_F_NEXT | DESC_F_WRITE, 1);
    bad(i, "loop", submit(i));

    /* A next index past the queue. */
    status = NO_STATUS;
    set(i, 0, (u64)hdr, 16, DESC_F_NEXT, 200);
    bad(i, "bad_next", submit(i));

    /* A request type no device knows. */
    bad(i, "unknown_type", request(i, 0x77, 0, 0, 0, 0));

    /* A header the device could write: wrong direction. */
    status = NO_STATUS;
    set(i, 0, (u64)hdr, 16, DESC_F_NEXT | DESC_F_WRITE, 1);
    set(i, 1, (u64)&status, 1, DESC_F_WRITE, 0);
    bad(i, "writable_hdr", submit(i));
}

static void test_device(int i)
{
    struct dev *d = &devs[i];
    long n;

    /* Identity. */
    for (int k = 0; k < 21; k++)
        buf[k] = 0;
    n = request(i, T_GET_ID, 0, buf, 20, 1);
    line(i, "id=");
    puts((const char *)buf);
    puts(" sectors=");
    putdec(d->sectors);
    puts(" ro=");
    putdec((d->features & F_RO) ? 1 : 0);
    puts(" irq=");
    putdec(R(0x60));
    R(0x64) = R(0x60);
    puts(" getid");
    put_result(n);
    putc('\n');

    /* Sectors 0..3. */
    n = request(i, T_IN, 0, buf, 2048, 1);
    for (int k = 0; k < 512; k++)
        sector0[k] = buf[k];
    line(i, "read fnv=");
    puthex(fnv(buf, 2048));
    put_result(n);
    putc('\n');

    /* Write sector 1 (refused on a read-only drive), flush, read it back. */
    for (int k = 0; k < 512; k++)
        buf[k] = (u8)("fennec-tiny-write:"[k % 18]);
    n = request(i, T_OUT, 1, buf, 512, 0);
    line(i, "write");
    put_result(n);
    putc('\n');
    n = request(i, T_FLUSH, 0, 0, 0, 0);
    line(i, "flush");
    put_result(n);
    putc('\n');
    for (int k = 0; k < 512; k++)
        buf[k] = 0;
    n = request(i, T_IN, 1, buf, 512, 1);
    line(i, "readback fnv=");
    puthex(fnv(buf, 512));
    put_result(n);
    putc('\n');

    /* Zero sector 2. */
    if (d->features & F_WRITE_ZEROES) {
        u64 *seg = (u64 *)(buf + 1024);
        seg[0] = 2;
        seg[1] = 1; /* one sector, no flags */
        n = request(i, T_WRITE_ZEROES, 0, seg, 16, 0);
        line(i, "zeroes");
        put_result(n);
        putc('\n');
    }

    hostile(i);

    /* A reset must really reset: bring the device up again from scratch and read sector 0. */
    if (bring_up(i) == 0) {
        n = request(i, T_IN, 0, buf, 512, 1);
        line(i, "reset fnv=");
        puthex(fnv(buf, 512));
        put_result(n);
        putc('\n');
    } else {
        line(i, "reset failed\n");
    }
}

/* tiny.mode=blkbench: sequential 1 MiB reads and writes over the first drive's first
 * `blkbench.mib` MiB, then 4 KiB reads at pseudo-random offsets. The host times the lines. */
static void bench(int i, const char *cmdline)
{
    struct dev *d = &devs[i];
    u64 mib = 64, ios = 2000;
    for (const char *s = cmdline; *s; s++) {
        if (starts(s, "blkbench.mib=")) {
            s += 13;
            mib = 0;
            while (*s >= '0' && *s <= '9')
                mib = mib * 10 + (u64)(*s++ - '0');
            break;
        }
    }
    if (mib * 2048 > d->sectors)
        mib = d->sectors / 2048;
    puts("TINY bench seqread start\n");
    for (u64 m = 0; m < mib; m++)
        if (request(i, T_IN, m * 2048, BIG, BIG_LEN, 1) != BIG_LEN + 1 || status)
            puts("TINY bench error\n");
    puts("TINY bench seqread done\n");
    puts("TINY bench seqwrite start\n");
    for (u64 m = 0; m < mib; m++)
        if (request(i, T_OUT, m * 2048, BIG, BIG_LEN, 0) != 1 || status)
            puts("TINY bench error\n");
    request(i, T_FLUSH, 0, 0, 0, 0);
    puts("TINY bench seqwrite done\n");
    puts("TINY bench randread start\n");
    u64 x = 88172645463325252ul, blocks = mib * 256;
    for (u64 k = 0; k < ios; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (request(i, T_IN, (x % blocks) * 8, buf, 4096, 1) != 4097 || status)
            puts("TINY bench error\n");
    }
    puts("TINY bench randread done mib=");
    putdec(mib);
    puts(" ios=");
    putdec(ios);
    putc('\n');
}

/* Prints the start of a sector as text: printable bytes up to the first other one (at most 48). */
static void put_text(const u8 *p)
{
    for (int k = 0; k < 48 && p[k] >= 0x20 && p[k] < 0x7f; k++)
        putc((char)p[k]);
}

/* Writes "<prefix><word>\n" padded with '.' to `sector` and flushes; prints the statuses. */
static void stamp(int i, u64 sector, const char *prefix, const char *word)
{
    int n = 0;
    for (const char *p = prefix; *p; p++)
        buf[n++] = (u8)*p;
    for (const char *p = word; *p && *p != ' ' && n < 100; p++)
        buf[n++] = (u8)*p;
    buf[n++] = '\n';
    while (n < 512)
        buf[n++] = '.';
    long w = request(i, T_OUT, sector, buf, 512, 0);
    int ws = status;
    long f = request(i, T_FLUSH, 0, 0, 0, 0);
    puts("TINY disk wrote s");
    putdec(sector);
    puts(w == 1 && ws == 0 && f == 1 && status == 0 ? " ok\n" : " failed\n");
}

/*
 * tiny.mode=disk, on the first drive:
 *   "TINY disk s1=<text of sector 1> s2=<text of sector 2> fnv=<FNV-1a of sectors 0..7>"
 * then with disk.stamp=WORD, writes "fennec-stamp:WORD" to sector 1 and flushes, and with
 * disk.wait as well, prints "TINY disk waiting", waits for a byte on the serial port, and
 * writes "fennec-later:WORD" to sector 2. Ends with "TINY disk done".
 */
static void tiny_disk(const char *cmdline)
{
    long n = request(0, T_IN, 0, buf, 4096, 1);
    puts("TINY disk s1=");
    put_text(buf + 512);
    puts(" s2=");
    put_text(buf + 1024);
    puts(" fnv=");
    puthex(fnv(buf, 4096));
    puts(n == 4097 && status == 0 ? " read=ok\n" : " read=failed\n");
    const char *word = 0;
    for (const char *s = cmdline; *s; s++)
        if (starts(s, "disk.stamp="))
            word = s + 11;
    if (word) {
        stamp(0, 1, "fennec-stamp:", word);
        if (contains(cmdline, "disk.wait")) {
            puts("TINY disk waiting\n");
            getc();
            stamp(0, 2, "fennec-later:", word);
        }
    }
    puts("TINY disk done\n");
}

void tiny_blk(const char *cmdline)
{
    u64 bases[MAXDEV];
    int n = find_devices(cmdline, bases), found = 0;
    int benchmark = 0;
    if (contains(cmdline, "tiny.mode=blkbench"))
        benchmark = 1;
    for (int i = 0; i < n; i++) {
        devs[i].mmio = (volatile u32 *)bases[i];
        int r = bring_up(i);
        if (r == -1)
            continue; /* not a block device (or an empty transport) */
        if (r) {
            line(i, "bring-up failed step=");
            putdec((u64)-r);
            putc('\n');
            continue;
        }
        found++;
        if (contains(cmdline, "tiny.mode=disk")) {
            tiny_disk(cmdline);
            break;
        }
        if (benchmark) {
            bench(i, cmdline);
            break;
        }
        test_device(i);
    }
    if (!found)
        puts("TINY blk none\n");
    puts("TINY blk done\n");
}
