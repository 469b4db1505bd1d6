//! Every guest-physical address fennec uses on x86_64, in one place.
//!
//! ```text
//! 0x0000_0000  ┬ real-mode IVT / BDA (RAM)
//! 0x0000_0500  │ GDT, then IDT
//! 0x0000_6000  │ PVH start info, its memory map and module list
//! 0x0000_7000  │ zero page (struct boot_params)
//! 0x0000_8ff0  │ boot stack top (grows down)
//! 0x0000_9000  │ identity page tables: PML4, PDPT, 4 × PD (first 4 GiB, 2 MiB pages)
//! 0x0002_0000  │ kernel command line (up to CMDLINE_MAX_SIZE)
//! 0x0009_fc00  ┼ end of low RAM (EBDA and legacy area are not RAM)
//! 0x000e_0000  │ ACPI: RSDP, XSDT, FADT, MADT, DSDT (BIOS area)
//! 0x000f_0000  │ MP floating pointer + MP configuration table (BIOS area)
//! 0x0010_0000  ┼ RAM again: the kernel (bzImage / non-PVH ELF) loads here or above
//!    …         │ initrd, at the top of RAM below the MMIO hole
//! 0xc000_0000  ┼ 32-bit MMIO hole: the boot timer, virtio-mmio slots, IOAPIC, LAPIC
//! 0x1_0000_0000┴ RAM above 4 GiB, when the guest has more than fits below the hole
//! ```

/// Where the GDT is written.
pub const GDT_START: u64 = 0x500;
/// Where the (empty) IDT is written, right after the GDT.
pub const IDT_START: u64 = 0x520;

/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH memory map, after the start info.
pub const PVH_MEMMAP_START: u64 = 0x6040;
/// PVH module list (one entry: the initrd), after the memory map.
pub const PVH_MODLIST_START: u64 = 0x6800;

/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;

/// Initial stack pointer handed to the kernel (16-byte aligned, below the page tables).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;

/// Page-map level 4 of the boot identity mapping.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// First of the page directories (one per GiB identity-mapped).
pub const PDE_START: u64 = 0xb000;
/// How many GiB the boot page tables identity-map.
pub const IDENTITY_MAP_GIB: u64 = 4;

/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line fennec hands over, including the NUL: Linux's x86 `COMMAND_LINE_SIZE`.
pub const CMDLINE_MAX_SIZE: usize = 2048;

/// End of the first RAM region: the EBDA and the legacy video/BIOS area follow and are not RAM.
pub const EBDA_START: u64 = 0x9fc00;
/// Where the ACPI tables go, the RSDP first: the BIOS area, where a kernel that is not told
/// where the RSDP is scans for it.
pub const ACPI_START: u64 = 0xe0000;
/// End of the ACPI tables' area (the MP table follows).
pub const ACPI_END: u64 = MPTABLE_START;
/// Where the MP floating pointer structure and the MP table are written (BIOS read-only area,
/// one of the places the MP specification says an OS scans).
pub const MPTABLE_START: u64 = 0xf0000;
/// End of the legacy BIOS area.
pub const BIOS_END: u64 = 0x10_0000;

/// Start of "high" memory: kernels load at or above this.
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO hole.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole; RAM continues here.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// The boot timer (one MMIO byte; the guest writes 123 when it is up), first in the MMIO hole.
pub const BOOT_TIMER_START: u64 = MMIO_GAP_START;
/// The boot timer's MMIO window.
pub const BOOT_TIMER_SIZE: u64 = 0x1000;
/// First 4 KiB slot for virtio-mmio devices.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Size of one virtio-mmio slot.
pub const VIRTIO_MMIO_SLOT_SIZE: u64 = 0x1000;
/// Guest physical address of the IOAPIC.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Guest physical address of the local APICs.
pub const APIC_START: u64 = 0xfee0_0000;

/// Where KVM puts the three TSS pages it needs on Intel (inside the MMIO hole, unused otherwise).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Where KVM puts its identity-map page on Intel (right below the TSS pages).
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// Legacy IRQ of the first serial port.
pub const SERIAL_IRQ: u32 = 4;
/// The i8042 keyboard's IRQ.
pub const KEYBOARD_IRQ: u32 = 1;
/// I/O port of the first serial port.
pub const SERIAL_PORT: u64 = 0x3f8;
/// Number of I/O ports a 16550 decodes.
pub const SERIAL_PORT_SIZE: u64 = 8;
/// I/O port of the i8042 data register; the command/status register is at +4.
pub const I8042_PORT: u64 = 0x60;
/// Ports the i8042 decodes (0x60..=0x64).
pub const I8042_PORT_SIZE: u64 = 5;

/// fennec's ACPI power registers, one byte each from here: sleep control, sleep status, reset,
/// and the event register of the generic event device (the power button).
pub const ACPI_PM_PORT: u64 = 0x600;
/// Ports the ACPI power registers take.
pub const ACPI_PM_PORT_SIZE: u64 = 4;

/// The pvpanic register (QEMU's port): a guest kernel writes here that it panicked.
pub const PVPANIC_PORT: u64 = 0x505;
/// Ports the pvpanic device takes.
pub const PVPANIC_PORT_SIZE: u64 = 1;

/// Number of pins on the IOAPIC, and so of legacy GSIs.
pub const IOAPIC_PINS: u32 = 24;
/// The ACPI generic event device's interrupt: the last IOAPIC pin.
pub const GED_IRQ: u32 = IOAPIC_PINS - 1;
/// IRQ of the first virtio-mmio device; device `i` gets `VIRTIO_IRQ_BASE + i`.
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// How many virtio-mmio devices a VM can have: one IRQ each, up to the pin before the generic
/// event device's.
pub const MAX_VIRTIO_DEVICES: usize = (GED_IRQ - VIRTIO_IRQ_BASE) as usize;

/// The MMIO base address and IRQ of virtio-mmio device `index` (< [`MAX_VIRTIO_DEVICES`]).
pub fn virtio_slot(index: usize) -> (u64, u32) {
    (
        VIRTIO_MMIO_START + index as u64 * VIRTIO_MMIO_SLOT_SIZE,
        VIRTIO_IRQ_BASE + index as u32,
    )
}
/// Highest vCPU count the boot tables can describe (8-bit APIC IDs; one ID is the IOAPIC's).
pub const MAX_VCPUS: u8 = 254;

/// The guest RAM regions `(start, size)` for `mem_size` bytes of RAM: below the MMIO hole first,
/// the rest above 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    let below = mem_size.min(MMIO_GAP_START);
    let mut regions = vec![(0, below)];
    if mem_size > MMIO_GAP_START {
        regions.push((MMIO_GAP_END, mem_size - MMIO_GAP_START));
    }
    regions
}

/// The last RAM address below the MMIO hole, plus one.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ram_regions_small_guest_single_region() {
        assert_eq!(ram_regions(128 << 20), vec![(0, 128 << 20)]);
    }

    #[test]
    fn test_ram_regions_large_guest_split_around_hole() {
        let regions = ram_regions(4 << 30);
        assert_eq!(
            regions,
            vec![
                (0, MMIO_GAP_START),
                (MMIO_GAP_END, (4 << 30) - MMIO_GAP_START)
            ]
        );
    }

    #[test]
    fn test_layout_boot_structures_do_not_overlap() {
        let ranges = [
            (GDT_START, IDT_START + 8),
            (PVH_INFO_START, PVH_MODLIST_START + 32),
            (ZERO_PAGE_START, ZERO_PAGE_START + 0x1000),
            (BOOT_STACK_POINTER - 0x800, BOOT_STACK_POINTER),
            (PML4_START, PDE_START + IDENTITY_MAP_GIB * 0x1000),
            (CMDLINE_START, CMDLINE_START + CMDLINE_MAX_SIZE as u64),
        ];
        for (i, a) in ranges.iter().enumerate() {
            assert!(a.1 <= EBDA_START);
            for b in &ranges[i + 1..] {
                assert!(a.1 <= b.0, "{a:x?} overlaps {b:x?}");
            }
        }
    }
}
