/*
 * A minimal virtio-mmio network driver for the tiny PVH kernel, polled, for `tiny.mode=net`.
 * It drives the first network device through a fixed sequence that a test on the other side
 * of the TAP follows. Frames use the local experimental EtherType 0x88b5 and carry text:
 * the guest sends "fennec tiny tx <n>", the host sends "fennec host <n>" and "fennec host end".
 * Output, one fact per line, prefixed "TINY net ":
 *   mac=<xx:..> link=<status> features=<accepted bits 0-31, hex>
 *   tx used=<len>                    frame 0, header and frame in two descriptors
 *   bad=<case> used=<len|none>       a hostile transmit chain, then a good frame (1, 2, ...)
 *   idle                             no receive buffer posted; waits for 'g' on the serial port
 *   rx frames=<n> first=<n> inorder=<0|1> nbufs=<num_buffers> other=<frames not ours>
 *   badrx posted                     unusable receive buffers posted before a good one
 *   badrx used=<id>:<len>,... got=<payload of the good one>
 *   reset tx used=<len>              after a corrupted transmit ring, a reset and bring-up
 * then "TINY net done".
 *
 * `tiny.mode=netbench netbench.frames=N` instead times bulk traffic (resources/bench/net.py):
 * N transmitted 1514-byte frames, one in flight, between "TINY bench tx start" and "... done";
 * then "TINY bench rx ready", and N received frames, reported every 256 as "TINY bench rx <n>"
 * (the host sends in batches of 256 so the TAP's queue never overflows), and "TINY bench rx done".
 */
#include "tiny.h"

#define F_MAC (1u << 5)
#define F_MRG_RXBUF (1u << 15)
#define F_STATUS (1u << 16)
#define HDR 12
#define ETH 14
#define FRAME 60 /* the shortest Ethernet frame, without FCS */
#define RXBUF 2048
#define SPINS 20000000ul

static struct desc rxd[QSZ] __attribute__((aligned(16)));
static volatile u16 rxa[QSZ + 3] __attribute__((aligned(4)));
static volatile struct used_ring rxu __attribute__((aligned(4)));
static struct desc txd[QSZ] __attribute__((aligned(16)));
static volatile u16 txa[QSZ + 3] __attribute__((aligned(4)));
static volatile struct used_ring txu __attribute__((aligned(4)));
static u8 rxbuf[QSZ][RXBUF] __attribute__((aligned(64)));
static u8 txbuf[HDR + FRAME] __attribute__((aligned(64)));
static volatile u32 *m;
static u8 mac[6];
static u16 rx_avail, rx_used, tx_avail, tx_used;
static u32 features;

static void say(const char *what)
{
    puts("TINY net ");
    puts(what);
}

static int bring_up(void)
{
    long f = virtio_begin(m, 1, F_MAC | F_MRG_RXBUF | F_STATUS);
    if (f < 0)
        return (int)f;
    features = (u32)f & (F_MAC | F_MRG_RXBUF | F_STATUS);
    int r = virtio_queue(m, 0, rxd, rxa, &rxu);
    if (r || (r = virtio_queue(m, 1, txd, txa, &txu)) || (r = virtio_ready(m)))
        return r;
    rx_avail = rx_used = tx_avail = tx_used = 0;
    for (int k = 0; k < 6; k++)
        mac[k] = ((volatile u8 *)m)[VIRTIO_CONFIG + k];
    return 0;
}

/* Publishes the transmit chain at descriptor 0, notifies, waits for it; the used length or -1. */
static long tx_submit(void)
{
    txa[2 + tx_avail % QSZ] = 0;
    barrier();
    txa[1] = ++tx_avail;
    barrier();
    MMIO(m, VIRTIO_QUEUE_NOTIFY) = 1;
    for (u64 spin = 0; spin < SPINS; spin++) {
        barrier();
        if (txu.idx != tx_used) {
            long len = txu.ring[tx_used % QSZ].len;
            tx_used++;
            return len;
        }
    }
    return -1;
}

static void put_used(long n)
{
    puts(" used=");
    if (n < 0)
        puts("none");
    else
        putdec((u64)n);
    putc('\n');
}

/* Builds "fennec tiny tx <n>" in txbuf and sends it as header + frame descriptors. */
static long tx_frame(u64 n)
{
    memset(txbuf, 0, sizeof(txbuf));
    u8 *f = txbuf + HDR;
    memset(f, 0xff, 6);
    memcpy(f + 6, mac, 6);
    f[12] = 0x88;
    f[13] = 0xb5;
    const char *text = "fennec tiny tx ";
    int k = 0;
    while (text[k]) {
        f[ETH + k] = (u8)text[k];
        k++;
    }
    char digits[20];
    int nd = 0;
    do {
        digits[nd++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (nd)
        f[ETH + k++] = (u8)digits[--nd];
    txd[0] = (struct desc){(u64)txbuf, HDR, DESC_F_NEXT, 1};
    txd[1] = (struct desc){(u64)f, FRAME, 0, 0};
    return tx_submit();
}

static u64 next_frame = 1;

/* Sends a hostile chain already in txd, reports, then sends the next good frame. */
static void bad(const char *name)
{
    long n = tx_submit();
    say("bad=");
    puts(name);
    put_used(n);
    if (tx_frame(next_frame++) != 0)
        say("tx after bad failed\n");
}

static void hostile_tx(void)
{
    txd[0] = (struct desc){(u64)txbuf, HDR + FRAME, DESC_F_WRITE, 0};
    bad("writable");
    txd[0] = (struct desc){0x7ffff0000000ul, HDR + FRAME, 0, 0};
    bad("oob");
    txd[0] = (struct desc){(u64)BIG, 70000, 0, 0};
    bad("too_long");
    txd[0] = (struct desc){(u64)txbuf, HDR, 0, 0};
    bad("short");
    txd[0] = (struct desc){(u64)txbuf, HDR, DESC_F_NEXT, 1};
    txd[1] = (struct desc){(u64)txbuf + HDR, FRAME, DESC_F_NEXT, 1};
    bad("loop");
    txd[0] = (struct desc){(u64)txbuf, HDR, DESC_F_NEXT, 200};
    bad("bad_next");
}

static void post_rx(u16 id, u64 addr, u32 len, u16 flags)
{
    rxd[id] = (struct desc){addr, len, flags, 0};
    rxa[2 + rx_avail % QSZ] = id;
    barrier();
    rxa[1] = ++rx_avail;
    barrier();
    MMIO(m, VIRTIO_QUEUE_NOTIFY) = 0;
}

/* The next used receive buffer: its id and length, or -1 after SPINS polls. */
static long rx_wait(u32 *id)
{
    for (u64 spin = 0; spin < SPINS; spin++) {
        barrier();
        if (rxu.idx != rx_used) {
            *id = rxu.ring[rx_used % QSZ].id;
            long len = rxu.ring[rx_used % QSZ].len;
            rx_used++;
            return len;
        }
    }
    return -1;
}

/* The payload of a frame of ours in rxbuf[id], or 0. */
static const char *ours(u32 id, long len)
{
    const u8 *f = rxbuf[id] + HDR;
    if (len < HDR + ETH + 12 || f[12] != 0x88 || f[13] != 0xb5 || !starts((const char *)f + ETH, "fennec host "))
        return 0;
    return (const char *)f + ETH;
}

static void receive_all(void)
{
    for (u16 id = 0; id < QSZ; id++)
        post_rx(id, (u64)rxbuf[id], RXBUF, DESC_F_WRITE);
    u64 frames = 0, first = ~0ul, expect = 0, inorder = 1, other = 0, nbufs = 0;
    for (;;) {
        u32 id;
        long len = rx_wait(&id);
        if (len < 0) {
            say("rx timeout\n");
            break;
        }
        const char *p = id < QSZ ? ours(id, len) : 0;
        int end = 0;
        if (!p) {
            other++;
        } else if (starts(p + 12, "end")) {
            end = 1;
        } else {
            u64 n = 0;
            for (const char *s = p + 12; *s >= '0' && *s <= '9'; s++)
                n = n * 10 + (u64)(*s - '0');
            if (first == ~0ul)
                first = n;
            if (n != expect)
                inorder = 0;
            expect = n + 1;
            frames++;
            nbufs = *(u16 *)(rxbuf[id] + 10);
        }
        if (id < QSZ)
            post_rx((u16)id, (u64)rxbuf[id], RXBUF, DESC_F_WRITE);
        if (end)
            break;
    }
    say("rx frames=");
    putdec(frames);
    puts(" first=");
    putdec(first);
    puts(" inorder=");
    putdec(inorder);
    puts(" nbufs=");
    putdec(nbufs);
    puts(" other=");
    putdec(other);
    putc('\n');
}

/* On a fresh device: three unusable receive buffers, then a good one. */
static void hostile_rx(void)
{
    post_rx(0, (u64)rxbuf[0], RXBUF, 0);                    /* device-readable */
    post_rx(1, (u64)rxbuf[1], 4, DESC_F_WRITE);             /* smaller than the header */
    post_rx(2, 0x7ffff0000000ul, RXBUF, DESC_F_WRITE);      /* outside memory */
    post_rx(3, (u64)rxbuf[3], RXBUF, DESC_F_WRITE);
    say("badrx posted\n");
    say("badrx used=");
    const char *got = 0;
    for (int k = 0; k < 4; k++) {
        u32 id;
        long len = rx_wait(&id);
        if (len < 0) {
            puts("timeout");
            break;
        }
        putdec(id);
        putc(':');
        putdec((u64)len);
        putc(k < 3 ? ',' : ' ');
        if (id == 3)
            got = ours(3, len);
    }
    puts("got=");
    if (got) {
        for (const char *s = got; *s >= ' ' && *s < 127; s++)
            putc(*s);
    }
    putc('\n');
}

static void bench(const char *cmdline)
{
    u64 frames = 2000;
    for (const char *s = cmdline; *s; s++) {
        if (starts(s, "netbench.frames=")) {
            frames = 0;
            for (s += 16; *s >= '0' && *s <= '9'; s++)
                frames = frames * 10 + (u64)(*s - '0');
            break;
        }
    }
    /* A polled driver: VRING_AVAIL_F_NO_INTERRUPT on both queues. */
    rxa[0] = 1;
    txa[0] = 1;
    u8 *f = BIG;
    memset(f, 0, HDR + 1514);
    memset(f + HDR, 0xff, 6);
    memcpy(f + HDR + 6, mac, 6);
    f[HDR + 12] = 0x88;
    f[HDR + 13] = 0xb5;
    puts("TINY bench tx start\n");
    for (u64 k = 0; k < frames; k++) {
        txd[0] = (struct desc){(u64)f, HDR + 1514, 0, 0};
        if (tx_submit() != 0)
            puts("TINY bench error\n");
    }
    puts("TINY bench tx done\n");
    for (u16 id = 0; id < QSZ; id++)
        post_rx(id, (u64)rxbuf[id], RXBUF, DESC_F_WRITE);
    puts("TINY bench rx ready\n");
    for (u64 got = 0; got < frames;) {
        u32 id;
        if (rx_wait(&id) < 0) {
            puts("TINY bench error\n");
            break;
        }
        post_rx((u16)(id % QSZ), (u64)rxbuf[id % QSZ], RXBUF, DESC_F_WRITE);
        if (++got % 256 == 0) {
            puts("TINY bench rx ");
            putdec(got);
            putc('\n');
        }
    }
    puts("TINY bench rx done\n");
}

void tiny_net(const char *cmdline)
{
    u64 bases[MAXDEV];
    int n = find_devices(cmdline, bases), r = -1;
    for (int i = 0; i < n && r == -1; i++) {
        m = (volatile u32 *)bases[i];
        r = bring_up();
    }
    if (r) {
        say("none\n");
        return;
    }
    say("mac=");
    for (int k = 0; k < 6; k++) {
        putc("0123456789abcdef"[mac[k] >> 4]);
        putc("0123456789abcdef"[mac[k] & 15]);
        if (k < 5)
            putc(':');
    }
    puts(" link=");
    putdec(*(volatile u16 *)((volatile u8 *)m + VIRTIO_CONFIG + 6));
    puts(" features=");
    puthex(features);
    putc('\n');

    if (contains(cmdline, "tiny.mode=netbench")) {
        bench(cmdline);
        return;
    }
    say("tx");
    put_used(tx_frame(0));
    hostile_tx();

    say("idle\n");
    while (getc() != 'g')
        ;
    receive_all();

    /* A fresh device for the hostile receive buffers. */
    if (bring_up() == 0)
        hostile_rx();

    /* An available index no driver could write, then a reset, a bring-up and a good frame. */
    txa[1] = (u16)(tx_avail + 100);
    MMIO(m, VIRTIO_QUEUE_NOTIFY) = 1;
    for (volatile u64 spin = 0; spin < 20000; spin++)
        ; /* let the device see it before the reset */
    if (bring_up() == 0) {
        say("reset tx");
        put_used(tx_frame(next_frame++));
    } else {
        say("reset failed\n");
    }
    say("done\n");
}
