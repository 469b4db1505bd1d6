/*
 * tiny.mode=acpi (pvh.elf): reads the machine's ACPI tables the way a kernel that is not told
 * where they are does (the RSDP in the BIOS area, 0xe0000 to 0xfffff), checks every table's
 * checksum and reports what they say:
 *   TINY acpi rsdp=<addr> tables=<signatures in XSDT order, then DSDT>
 *   TINY acpi cpus=<MADT local APICs> ioapic=<addr> irq0=<GSI of ISA IRQ 0>
 *   TINY acpi reduced=<0|1> s5=<SLP_TYP from \_S5> sleep=<port> reset=<port>:<value>
 *   TINY acpi devices=<how many LNRO0005 (virtio-mmio) devices the DSDT names>
 *   TINY acpi pvpanic=<port> events=<what reading it gives>   (QEMU0001, if the DSDT has it)
 * or `TINY acpi bad <why>`, and then, by `tiny.acpi=`:
 *   off     writes SLP_TYP<<2 | SLP_EN to the sleep control register (ACPI soft-off)
 *   reset   writes the reset value to the reset register
 *   panic   writes PANICKED (1) to the pvpanic register, as a panicking Linux does
 *   button  unmasks the generic event device's IOAPIC pin as an OS with ACPI does, prints
 *           `TINY acpi waiting for the power button`, polls the event register (interrupts
 *           stay off) until the power button's bit appears, prints `TINY acpi power button`
 *           and powers off as `off` does
 *   (none)  triple-faults
 */
#include "tiny.h"

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static u32 rd32(const u8 *p) { return p[0] | p[1] << 8 | p[2] << 16 | (u32)p[3] << 24; }
static u64 rd64(const u8 *p) { return rd32(p) | (u64)rd32(p + 4) << 32; }

/* After a write that ends the machine: the VMM stops the vCPU when it has acted on it. If it
 * never does, fennec sees a guest that can never run again and says so ("halted"). */
static void stop_here(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

static int sums_to_zero(const u8 *p, u32 len)
{
    u8 s = 0;
    for (u32 i = 0; i < len; i++)
        s += p[i];
    return s == 0;
}

static void put_sig(const u8 *t)
{
    for (int i = 0; i < 4; i++)
        putc((char)t[i]);
}

static void bad(const char *why)
{
    puts("TINY acpi bad ");
    puts(why);
    puts("\n");
}

/* A table at `addr` with a valid length and checksum, or 0. */
static const u8 *table(u64 addr)
{
    const u8 *t = (const u8 *)addr;
    u32 len = rd32(t + 4);
    if (addr == 0 || len < 36 || len > 0x10000 || !sums_to_zero(t, len)) {
        puts("TINY acpi bad checksum at ");
        puthex(addr);
        puts("\n");
        return 0;
    }
    return t;
}

/* The first element of \_S5's package: 5 for fennec. */
static int s5_type(const u8 *dsdt)
{
    u32 len = rd32(dsdt + 4);
    for (u32 i = 36; i + 8 < len; i++) {
        /* "_S5_", PackageOp, a one-byte PkgLength, NumElements, then the element. */
        if (dsdt[i] == '_' && dsdt[i + 1] == 'S' && dsdt[i + 2] == '5' && dsdt[i + 3] == '_' &&
            dsdt[i + 4] == 0x12) {
            const u8 *e = dsdt + i + 7;
            if (e[0] == 0x0a) /* BytePrefix */
                return e[1];
            if (e[0] <= 1) /* ZeroOp, OneOp */
                return e[0];
        }
    }
    return -1;
}

/* The generic event device's IOAPIC pin and event register, from its _CRS and OperationRegion:
 * the Extended Interrupt descriptor (0x89) after "ACPI0013", then "GDST", SystemIO (1), a
 * WordPrefix (0x0b) port. */
static int ged(const u8 *dsdt, u32 *pin, u16 *port)
{
    u32 len = rd32(dsdt + 4);
    int found = 0;
    for (u32 i = 36; i + 12 < len; i++) {
        if (dsdt[i] == 0x89 && dsdt[i + 1] == 6 && dsdt[i + 4] == 1) {
            *pin = rd32(dsdt + i + 5);
            found |= 1;
        }
        if (dsdt[i] == 'G' && dsdt[i + 1] == 'D' && dsdt[i + 2] == 'S' && dsdt[i + 3] == 'T' &&
            dsdt[i + 4] == 1 && dsdt[i + 5] == 0x0b) {
            *port = (u16)(dsdt[i + 6] | dsdt[i + 7] << 8);
            found |= 2;
        }
    }
    return found == 3;
}

static void ioapic_unmask(u64 ioapic, u32 pin, u8 vector)
{
    volatile u32 *sel = (volatile u32 *)ioapic, *win = (volatile u32 *)(ioapic + 0x10);
    *sel = 0x10 + 2 * pin + 1;
    *win = 0; /* destination: APIC 0 */
    *sel = 0x10 + 2 * pin;
    *win = vector; /* fixed, physical, edge, active high, unmasked */
}

/* How many times the string "LNRO0005" appears as a _HID. */
static int virtio_devices(const u8 *dsdt)
{
    u32 len = rd32(dsdt + 4);
    int n = 0;
    for (u32 i = 36; i + 9 < len; i++) {
        const char *want = "LNRO0005";
        int j = 0;
        while (j < 8 && dsdt[i + j] == (u8)want[j])
            j++;
        n += j == 8;
    }
    return n;
}

/* The I/O port of the pvpanic device: the first I/O port descriptor (0x47) after the _HID
 * "QEMU0001". 0 if there is none. */
static u16 pvpanic_port(const u8 *dsdt)
{
    u32 len = rd32(dsdt + 4);
    const char *want = "QEMU0001";
    for (u32 i = 36; i + 8 < len; i++) {
        int j = 0;
        while (j < 8 && dsdt[i + j] == (u8)want[j])
            j++;
        if (j < 8)
            continue;
        for (u32 k = i + 8; k + 8 < len && k < i + 64; k++)
            if (dsdt[k] == 0x47 && dsdt[k + 1] <= 1 && dsdt[k + 2] == dsdt[k + 4] &&
                dsdt[k + 3] == dsdt[k + 5])
                return (u16)(dsdt[k + 2] | dsdt[k + 3] << 8);
        return 0;
    }
    return 0;
}

void tiny_acpi(const char *cmdline)
{
    const u8 *rsdp = 0;
    for (u64 a = 0xe0000; a < 0x100000; a += 16) {
        const u8 *p = (const u8 *)a;
        if (p[0] == 'R' && p[1] == 'S' && p[2] == 'D' && p[3] == ' ' && p[4] == 'P' &&
            p[5] == 'T' && p[6] == 'R' && p[7] == ' ') {
            rsdp = p;
            break;
        }
    }
    if (!rsdp) {
        bad("no RSDP");
        return;
    }
    if (!sums_to_zero(rsdp, 20) || rsdp[15] < 2 || !sums_to_zero(rsdp, rd32(rsdp + 20))) {
        bad("RSDP checksum");
        return;
    }
    const u8 *xsdt = table(rd64(rsdp + 24));
    if (!xsdt)
        return;
    const u8 *fadt = 0, *madt = 0, *dsdt = 0;
    puts("TINY acpi rsdp=");
    puthex((u64)rsdp);
    puts(" tables=");
    for (u32 off = 36; off + 8 <= rd32(xsdt + 4); off += 8) {
        const u8 *t = table(rd64(xsdt + off));
        if (!t)
            return;
        put_sig(t);
        putc(',');
        if (t[0] == 'F' && t[1] == 'A' && t[2] == 'C' && t[3] == 'P')
            fadt = t;
        if (t[0] == 'A' && t[1] == 'P' && t[2] == 'I' && t[3] == 'C')
            madt = t;
    }
    if (!fadt || !madt) {
        bad("no FADT or MADT");
        return;
    }
    dsdt = table(rd64(fadt + 140));
    if (!dsdt)
        return;
    put_sig(dsdt);
    puts("\n");

    int cpus = 0, irq0 = 0;
    u64 ioapic = 0;
    for (u32 off = 44; off + 2 <= rd32(madt + 4) && madt[off + 1] >= 2; off += madt[off + 1]) {
        const u8 *e = madt + off;
        if (e[0] == 0 && (rd32(e + 4) & 1))
            cpus++;
        if (e[0] == 1)
            ioapic = rd32(e + 4);
        if (e[0] == 2 && e[3] == 0)
            irq0 = (int)rd32(e + 4);
    }
    puts("TINY acpi cpus=");
    putdec(cpus);
    puts(" ioapic=");
    puthex(ioapic);
    puts(" irq0=");
    putdec(irq0);
    puts("\n");

    u32 flags = rd32(fadt + 112);
    int s5 = s5_type(dsdt);
    u16 sleep = (u16)rd64(fadt + 244 + 4), reset = (u16)rd64(fadt + 116 + 4);
    u8 reset_value = fadt[128];
    puts("TINY acpi reduced=");
    putdec((flags >> 20) & 1);
    puts(" s5=");
    putdec((u64)s5);
    puts(" sleep=");
    puthex(sleep);
    puts(" reset=");
    puthex(reset);
    putc(':');
    puthex(reset_value);
    puts("\nTINY acpi devices=");
    putdec(virtio_devices(dsdt));
    puts("\n");
    u16 pvpanic = pvpanic_port(dsdt);
    if (pvpanic) {
        puts("TINY acpi pvpanic=");
        puthex(pvpanic);
        puts(" events=");
        putdec(inb(pvpanic));
        puts("\n");
    }

    if (contains(cmdline, "tiny.acpi=button")) {
        u32 pin = 0;
        u16 port = 0;
        if (!ged(dsdt, &pin, &port)) {
            bad("no generic event device");
            return;
        }
        ioapic_unmask(ioapic, pin, 0x40);
        puts("TINY acpi waiting for the power button\n");
        while (!(inb(port) & 1))
            __asm__ volatile("pause");
        puts("TINY acpi power button\n");
        outb(sleep, (u8)((s5 & 7) << 2 | 1 << 5));
        stop_here();
    } else if (contains(cmdline, "tiny.acpi=off") && s5 >= 0 && fadt[244] == 1) {
        outb(sleep, (u8)((s5 & 7) << 2 | 1 << 5));
        stop_here();
    } else if (contains(cmdline, "tiny.acpi=reset") && fadt[116] == 1) {
        outb(reset, reset_value);
        stop_here();
    } else if (contains(cmdline, "tiny.acpi=panic") && pvpanic) {
        outb(pvpanic, 1);
        stop_here();
    }
}
