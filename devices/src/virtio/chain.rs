//! Reading a descriptor chain defensively, shared by every device: the guest controls the
//! descriptor table, so a chain may loop, point past the table, or name memory that is not there.

use std::ops::Deref;

use virtio_queue::{desc::split::Descriptor, DescriptorChain};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

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

/// Why a chain is not one of device-writable buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WritableError {
    /// The chain is broken, too long, or outside guest memory.
    Chain(ChainError),
    /// A buffer is one the device may only read.
    Readable,
}

/// A chain of device-writable buffers (a receive buffer), checked: every buffer writable and in
/// guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WritableChain {
    /// The chain's head index, to return it with.
    pub head: u16,
    segments: Vec<(GuestAddress, u32)>,
    capacity: u64,
}

impl WritableChain {
    /// Checks `chain` (at most `max` descriptors).
    pub fn parse<M>(chain: DescriptorChain<M>, max: usize) -> Result<Self, WritableError>
    where
        M: Deref<Target = GuestMemoryMmap> + Clone,
    {
        let mem = chain.memory().clone();
        let head = chain.head_index();
        let descs = collect(chain, max).map_err(WritableError::Chain)?;
        let mut segments = Vec::with_capacity(descs.len());
        let mut capacity = 0u64;
        for desc in &descs {
            if !desc.is_write_only() {
                return Err(WritableError::Readable);
            }
            check_in_memory(&mem, desc.addr(), desc.len().into()).map_err(WritableError::Chain)?;
            if desc.len() > 0 {
                segments.push((desc.addr(), desc.len()));
                capacity += u64::from(desc.len());
            }
        }
        Ok(WritableChain {
            head,
            segments,
            capacity,
        })
    }

    /// Bytes the buffers hold.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Copies as much of `data` as fits, in order; returns the bytes copied.
    pub fn fill(&self, mem: &GuestMemoryMmap, data: &[u8]) -> Result<usize, ChainError> {
        let mut done = 0;
        for &(addr, len) in &self.segments {
            if done == data.len() {
                break;
            }
            let n = (len as usize).min(data.len() - done);
            mem.write_slice(&data[done..done + n], addr).map_err(|_| {
                ChainError::OutsideMemory {
                    addr: addr.raw_value(),
                    len: n as u64,
                }
            })?;
            done += n;
        }
        Ok(done)
    }
}
