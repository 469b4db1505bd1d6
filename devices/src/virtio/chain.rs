//! Reading a descriptor chain defensively, shared by every device: the guest controls the
//! descriptor table, so a chain may loop, point past the table, or name memory that is not there.

use std::ops::Deref;

use virtio_queue::{desc::split::Descriptor, DescriptorChain};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Why a chain cannot be used at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The chain ends early: a loop, a next index past the table, an unreadable descriptor.
    #[error("The descriptor chain is broken (loop, bad next index or unreadable table)")]
    Broken,
    /// The chain has more descriptors than the device accepts.
    #[error("The descriptor chain has more than {0} descriptors")]
    TooManyDescriptors(usize),
    /// A buffer lies (partly) outside guest memory.
    #[error("Buffer {addr:#x}+{len:#x} lies outside guest memory")]
    OutsideMemory {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u64,
    },
}

/// Reads the descriptors of `chain`, at most `max`; errors if the chain ends early.
pub fn collect<M>(chain: DescriptorChain<M>, max: usize) -> Result<Vec<Descriptor>, ChainError>
where
    M: Deref<Target = GuestMemoryMmap>,
{
    let mut descs = Vec::new();
    for desc in chain {
        if descs.len() == max {
            return Err(ChainError::TooManyDescriptors(max));
        }
        descs.push(desc);
    }
    // The iterator stops silently on a loop (its TTL), a next index past the table, or an
    // unreadable descriptor; a chain that really ended has no NEXT flag on its last descriptor.
    match descs.last() {
        Some(last) if !last.has_next() => Ok(descs),
        _ => Err(ChainError::Broken),
    }
}

/// Checks that `addr..addr+len` is guest memory; an empty buffer always passes.
pub fn check_in_memory(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    len: u64,
) -> Result<(), ChainError> {
    let outside = ChainError::OutsideMemory {
        addr: addr.raw_value(),
        len,
    };
    let len = usize::try_from(len).map_err(|_| outside.clone())?;
    if len == 0 || mem.check_range(addr, len) {
        Ok(())
    } else {
        Err(outside)
    }
}
