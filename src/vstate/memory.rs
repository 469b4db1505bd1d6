//! Guest memory: anonymous mappings laid out by [`fennec_boot::layout::ram_regions`].

use vm_memory::{GuestAddress, GuestMemoryMmap};

use fennec_boot::layout;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host refused the mapping.
    #[error("Failed to map {mib} MiB of guest memory")]
    Map {
        /// Size asked for.
        mib: u64,
        /// Why.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Maps `size` bytes of guest RAM: below the MMIO hole, and the rest above 4 GiB.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = layout::ram_regions(size)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Map {
        mib: size >> 20,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn test_create_guest_memory_large_guest_has_two_regions() {
        let mem = create_guest_memory(4 << 30).unwrap();
        let starts: Vec<u64> = mem.iter().map(|r| r.start_addr().0).collect();
        assert_eq!(starts, vec![0, layout::MMIO_GAP_END]);
    }
}
