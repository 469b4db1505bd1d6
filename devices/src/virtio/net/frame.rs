//! Frames in and out of descriptor chains, with no file descriptors: a transmit chain is
//! gathered into one host buffer, and a received frame is scattered over one or more receive
//! buffers (several only with `VIRTIO_NET_F_MRG_RXBUF`). Everything here treats the chains as
//! hostile: a chain's buffers must lie in guest memory and point the right way, and a frame never
//! goes past the buffers the guest gave.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestMemoryMmap};

use crate::virtio::chain::{check_in_memory, collect, ChainError, WritableChain, WritableError};

/// Bytes of `virtio_net_hdr_v1` in front of every frame (virtio 1.2, 5.1.6).
pub const VNET_HDR_LEN: usize = 12;
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS_OFFSET: usize = 10;
/// An Ethernet header: the least a frame has.
pub const ETH_HLEN: usize = 14;
/// The largest frame with its header: a 64 KiB segmentation-offload frame and its Ethernet
/// header (what the Linux driver sends at most, and what the TAP reads at most).
pub const MAX_FRAME_LEN: usize = VNET_HDR_LEN + ETH_HLEN + 65536;
/// Most descriptors in one chain (a full queue).
pub const MAX_DESCRIPTORS: usize = 256;

/// Why a chain cannot carry a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The chain is broken, too long, or outside guest memory.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A transmit chain has a buffer only the device should write.
    #[error("A transmit chain has a device-writable buffer")]
    WritableInTx,
    /// A receive chain has a buffer the device may not write.
    #[error("A receive chain has a device-readable buffer")]
    ReadableInRx,
    /// A transmit chain is larger than any frame.
    #[error("The transmit chain holds more than {MAX_FRAME_LEN} bytes")]
    TooLong,
    /// A chain is smaller than the header (receive) or the header and an Ethernet header
    /// (transmit).
    #[error("The chain holds only {0} bytes")]
    TooShort(u64),
}

/// Gathers a transmit chain (header and frame) into the start of `buf`, which holds
/// [`MAX_FRAME_LEN`] bytes; returns the chain's length.
pub fn read_tx_chain<M>(chain: DescriptorChain<M>, buf: &mut [u8]) -> Result<usize, FrameError>
where
    M: Deref<Target = GuestMemoryMmap> + Clone,
{
    let mem = chain.memory().clone();
    let descs = collect(chain, MAX_DESCRIPTORS)?;
    let mut total = 0u64;
    for desc in &descs {
        if desc.is_write_only() {
            return Err(FrameError::WritableInTx);
        }
        check_in_memory(&mem, desc.addr(), desc.len().into())?;
        total += u64::from(desc.len());
        if total > MAX_FRAME_LEN.min(buf.len()) as u64 {
            return Err(FrameError::TooLong);
        }
    }
    if total < (VNET_HDR_LEN + ETH_HLEN) as u64 {
        return Err(FrameError::TooShort(total));
    }
    let mut at = 0;
    for desc in &descs {
        let len = desc.len() as usize;
        mem.read_slice(&mut buf[at..at + len], desc.addr())
            .map_err(|_| ChainError::OutsideMemory {
                addr: desc.addr().raw_value(),
                len: len as u64,
            })?;
        at += len;
    }
    Ok(at)
}

/// A receive buffer the guest posted: its writable segments, with room for the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxBuffer(WritableChain);

impl RxBuffer {
    /// Checks a receive chain: every buffer writable and in guest memory, room for the header.
    pub fn parse<M>(chain: DescriptorChain<M>) -> Result<Self, FrameError>
    where
        M: Deref<Target = GuestMemoryMmap> + Clone,
    {
        let buf = WritableChain::parse(chain, MAX_DESCRIPTORS).map_err(|e| match e {
            WritableError::Chain(e) => FrameError::Chain(e),
            WritableError::Readable => FrameError::ReadableInRx,
        })?;
        if buf.capacity() < VNET_HDR_LEN as u64 {
            return Err(FrameError::TooShort(buf.capacity()));
        }
        Ok(RxBuffer(buf))
    }

    /// The chain's head index, to return it with.
    pub fn head(&self) -> u16 {
        self.0.head
    }

    /// Bytes the buffer holds.
    pub fn capacity(&self) -> u64 {
        self.0.capacity()
    }

    fn fill(&self, mem: &GuestMemoryMmap, data: &[u8]) -> Result<usize, ChainError> {
        self.0.fill(mem, data)
    }
}

/// How many of `bufs`, from the first, it takes to hold `len` bytes; `None` if they cannot.
pub fn buffers_needed(bufs: impl IntoIterator<Item = u64>, len: usize) -> Option<usize> {
    let mut room = 0u64;
    for (i, cap) in bufs.into_iter().enumerate() {
        room += cap;
        if room >= len as u64 {
            return Some(i + 1);
        }
    }
    None
}

/// Scatters `frame` (header included) over the first buffers of `bufs` after setting the
/// header's `num_buffers` to the number it takes. Returns the bytes written into each buffer
/// used; the caller checked with [`buffers_needed`] that they hold the whole frame.
pub fn write_frame(
    mem: &GuestMemoryMmap,
    bufs: &[RxBuffer],
    frame: &mut [u8],
) -> Result<Vec<u32>, ChainError> {
    let count = buffers_needed(bufs.iter().map(RxBuffer::capacity), frame.len()).unwrap_or(0);
    if let Some(n) = frame.get_mut(NUM_BUFFERS_OFFSET..VNET_HDR_LEN) {
        n.copy_from_slice(&(count as u16).to_le_bytes());
    }
    let mut used = Vec::with_capacity(count);
    let mut rest: &[u8] = frame;
    for buf in &bufs[..count] {
        let n = buf.fill(mem, rest)?;
        used.push(n as u32);
        rest = &rest[n..];
    }
    Ok(used)
}
