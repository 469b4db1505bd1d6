//! The Intel MultiProcessor Specification 1.4 tables: how a guest without ACPI learns how many
//! CPUs it has and how the legacy IRQs reach the IOAPIC.
//!
//! The floating pointer structure and the configuration table are written back to back at
//! [`layout::MPTABLE_START`], in the BIOS area an OS scans for `_MP_`.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout;

const MPC_SPEC_REVISION: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
// Family 6 stepping 0, and the FPU + APIC feature flags, as a BIOS reports them.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
const MP_IRQ_TYPE_INT: u8 = 0;
const MP_IRQ_TYPE_NMI: u8 = 1;
const MP_IRQ_TYPE_EXTINT: u8 = 3;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const FLOATING_POINTER_SIZE: usize = 16;
const TABLE_HEADER_SIZE: usize = 44;
const ISA_BUS_ID: u8 = 0;

/// Errors while building the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// The vCPU count is 0 or more than 8-bit APIC IDs can name.
    #[error("An MP table describes 1 to {max} vCPUs, not {0}", max = layout::MAX_VCPUS)]
    VcpuCount(u8),
    /// The table does not fit below the end of the BIOS area.
    #[error("The MP table for {0} vCPUs does not fit in the BIOS area")]
    TooLarge(u8),
    /// Writing guest memory failed.
    #[error("Failed to write the MP table into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Little-endian byte writer for the table's packed structures.
#[derive(Default)]
struct Table(Vec<u8>);

impl Table {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
}

/// The byte that makes `bytes` sum to zero modulo 256.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the floating pointer and configuration table for `num_cpus` CPUs, as they are to sit at
/// guest address `base`. CPU `i` has APIC ID `i`; the IOAPIC takes ID `num_cpus`.
pub fn build(num_cpus: u8, base: u64) -> Result<Vec<u8>, MptableError> {
    if num_cpus == 0 || num_cpus > layout::MAX_VCPUS {
        return Err(MptableError::VcpuCount(num_cpus));
    }
    let ioapic_id = num_cpus;
    let mut entries = Table::default();
    let mut count: u16 = 0;
    for cpu in 0..num_cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 };
        entries
            .u8(ENTRY_PROCESSOR)
            .u8(cpu)
            .u8(APIC_VERSION)
            .u8(flags)
            .u32(CPU_SIGNATURE)
            .u32(CPU_FEATURES)
            .u32(0)
            .u32(0);
        count += 1;
    }
    entries.u8(ENTRY_BUS).u8(ISA_BUS_ID).bytes(b"ISA   ");
    entries
        .u8(ENTRY_IOAPIC)
        .u8(ioapic_id)
        .u8(IOAPIC_VERSION)
        .u8(CPU_ENABLED)
        .u32(layout::IOAPIC_START as u32);
    count += 2;
    for irq in 0..layout::IOAPIC_PINS as u8 {
        entries
            .u8(ENTRY_INTSRC)
            .u8(MP_IRQ_TYPE_INT)
            .u16(0) // polarity and trigger conform to the bus
            .u8(ISA_BUS_ID)
            .u8(irq)
            .u8(ioapic_id)
            .u8(irq);
        count += 1;
    }
    // The PIC's output reaches LINT0 of the BSP as ExtINT; NMIs reach LINT1 of every CPU.
    entries
        .u8(ENTRY_LINTSRC)
        .u8(MP_IRQ_TYPE_EXTINT)
        .u16(0)
        .u8(ISA_BUS_ID)
        .u8(0)
        .u8(0)
        .u8(0);
    entries
        .u8(ENTRY_LINTSRC)
        .u8(MP_IRQ_TYPE_NMI)
        .u16(0)
        .u8(ISA_BUS_ID)
        .u8(0)
        .u8(0xff)
        .u8(1);
    count += 2;

    let table_len = TABLE_HEADER_SIZE + entries.0.len();
    let table_addr = base + FLOATING_POINTER_SIZE as u64;
    if table_addr + table_len as u64 > layout::BIOS_END {
        return Err(MptableError::TooLarge(num_cpus));
    }

    let mut table = Table::default();
    table
        .bytes(b"PCMP")
        .u16(table_len as u16)
        .u8(MPC_SPEC_REVISION)
        .u8(0) // checksum, below
        .bytes(b"FENNEC  ")
        .bytes(b"000000000000")
        .u32(0)
        .u16(0)
        .u16(count)
        .u32(layout::APIC_START as u32)
        .u32(0)
        .bytes(&entries.0);
    table.0[7] = checksum(&table.0);

    let mut out = Table::default();
    out.bytes(b"_MP_")
        .u32(table_addr as u32)
        .u8(1) // length in 16-byte paragraphs
        .u8(MPC_SPEC_REVISION)
        .u8(0) // checksum, below
        .bytes(&[0; 5]);
    out.0[10] = checksum(&out.0);
    out.bytes(&table.0);
    Ok(out.0)
}

/// Writes the MP tables for `num_cpus` CPUs at [`layout::MPTABLE_START`].
pub fn write(mem: &GuestMemoryMmap, num_cpus: u8) -> Result<(), MptableError> {
    let bytes = build(num_cpus, layout::MPTABLE_START)?;
    mem.write_slice(&bytes, GuestAddress(layout::MPTABLE_START))
        .map_err(MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    #[test]
    fn test_mptable_checksums_sum_to_zero() {
        let bytes = build(4, layout::MPTABLE_START).unwrap();
        assert_eq!(&bytes[0..4], b"_MP_");
        assert_eq!(sum(&bytes[..FLOATING_POINTER_SIZE]), 0);
        assert_eq!(sum(&bytes[FLOATING_POINTER_SIZE..]), 0);
    }

    #[test]
    fn test_mptable_pointer_names_table_address() {
        let bytes = build(1, layout::MPTABLE_START).unwrap();
        let ptr = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        assert_eq!(u64::from(ptr), layout::MPTABLE_START + 16);
        assert_eq!(&bytes[16..20], b"PCMP");
    }

    #[test]
    fn test_mptable_lists_one_processor_entry_per_cpu() {
        let bytes = build(8, layout::MPTABLE_START).unwrap();
        let table = &bytes[FLOATING_POINTER_SIZE..];
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        let mut off = TABLE_HEADER_SIZE;
        let mut cpus = Vec::new();
        while off < len {
            let kind = table[off];
            if kind == ENTRY_PROCESSOR {
                cpus.push((table[off + 1], table[off + 3]));
                off += 20;
            } else {
                off += 8;
            }
        }
        assert_eq!(off, len);
        assert_eq!(cpus.len(), 8);
        assert_eq!(cpus[0], (0, CPU_ENABLED | CPU_BOOTPROCESSOR));
        assert_eq!(cpus[7], (7, CPU_ENABLED));
    }

    #[test]
    fn test_mptable_max_vcpus_fits_bios_area() {
        assert!(build(layout::MAX_VCPUS, layout::MPTABLE_START).is_ok());
    }

    #[test]
    fn test_mptable_zero_vcpus_is_refused() {
        assert!(matches!(
            build(0, layout::MPTABLE_START),
            Err(MptableError::VcpuCount(0))
        ));
    }
}
