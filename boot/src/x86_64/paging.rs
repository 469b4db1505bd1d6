//! Identity page tables for entering a kernel in long mode.
//!
//! The first [`layout::IDENTITY_MAP_GIB`] GiB are identity-mapped with 2 MiB pages, enough for
//! the kernel, its boot structures and an initrd anywhere below the MMIO hole.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout;

const PRESENT_WRITABLE: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;
const ENTRIES: u64 = 512;

/// The three levels of tables as `(guest address, entries)`.
pub fn identity_tables() -> Vec<(u64, Vec<u64>)> {
    let pml4 = vec![layout::PDPTE_START | PRESENT_WRITABLE];
    let pdpt = (0..layout::IDENTITY_MAP_GIB)
        .map(|gib| (layout::PDE_START + gib * 0x1000) | PRESENT_WRITABLE)
        .collect();
    let mut tables = vec![(layout::PML4_START, pml4), (layout::PDPTE_START, pdpt)];
    for gib in 0..layout::IDENTITY_MAP_GIB {
        let pd = (0..ENTRIES)
            .map(|i| ((gib * ENTRIES + i) << 21) | PRESENT_WRITABLE | PAGE_SIZE_2M)
            .collect();
        tables.push((layout::PDE_START + gib * 0x1000, pd));
    }
    tables
}

/// Writes the tables into guest memory; CR3 is then [`layout::PML4_START`].
pub fn write_identity_tables(mem: &GuestMemoryMmap) -> vm_memory::GuestMemoryResult<()> {
    for (addr, entries) in identity_tables() {
        for (i, entry) in entries.iter().enumerate() {
            mem.write_obj(*entry, GuestAddress(addr + 8 * i as u64))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables the way the MMU does for a 2 MiB page.
    fn translate(mem: &GuestMemoryMmap, va: u64) -> u64 {
        let pml4e: u64 = mem
            .read_obj(GuestAddress(layout::PML4_START + 8 * ((va >> 39) & 0x1ff)))
            .unwrap();
        let pdpte: u64 = mem
            .read_obj(GuestAddress((pml4e & !0xfff) + 8 * ((va >> 30) & 0x1ff)))
            .unwrap();
        let pde: u64 = mem
            .read_obj(GuestAddress((pdpte & !0xfff) + 8 * ((va >> 21) & 0x1ff)))
            .unwrap();
        assert_eq!(
            pde & (PAGE_SIZE_2M | PRESENT_WRITABLE),
            PAGE_SIZE_2M | PRESENT_WRITABLE
        );
        (pde & !0x1f_ffff & !0xfff) | (va & 0x1f_ffff)
    }

    #[test]
    fn test_identity_tables_map_every_gib_to_itself() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_identity_tables(&mem).unwrap();
        for va in [0, 0x1234_5678, 0x7fff_ffff, 0xc000_1000, 0xffff_fff0] {
            assert_eq!(translate(&mem, va), va);
        }
    }
}
