//! Vsock packets in and out of descriptor chains, with no file descriptors. A transmit chain
//! (the guest's packet) is gathered into one host buffer, header and payload; a receive chain
//! gets a header and up to [`MAX_PAYLOAD`] bytes of payload scattered over its buffers. The
//! chains are hostile: every buffer must lie in guest memory and point the right way, and a
//! header's length is believed only as far as the chain holds it.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::virtio::chain::{check_in_memory, collect, ChainError, WritableChain, WritableError};

/// Bytes of `struct virtio_vsock_hdr` in front of every packet (virtio 1.2, 5.10.6).
pub const HDR_LEN: usize = 44;
/// The most payload one packet carries, either way (Linux sends at most 64 KiB).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Most descriptors in one chain (a full queue).
const MAX_DESCRIPTORS: usize = 256;

/// Packet operations (`VIRTIO_VSOCK_OP_*`).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection refused, or ended at once.
    pub const RST: u16 = 3;
    /// The sender will not receive and/or send any more (`flags`).
    pub const SHUTDOWN: u16 = 4;
    /// Stream data.
    pub const RW: u16 = 5;
    /// The sender's receive credit, unasked.
    pub const CREDIT_UPDATE: u16 = 6;
    /// A request for the receiver's credit.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `VIRTIO_VSOCK_TYPE_STREAM`: the only socket type offered.
pub const TYPE_STREAM: u16 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_RCV`: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_SEND`: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// A packet header, host-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context ID.
    pub src_cid: u64,
    /// Destination context ID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload bytes that follow.
    pub len: u32,
    /// Socket type.
    pub kind: u16,
    /// Operation ([`op`]).
    pub op: u16,
    /// Operation flags (SHUTDOWN's directions).
    pub flags: u32,
    /// The sender's receive buffer size for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed of what it received.
    pub fwd_cnt: u32,
}

impl Header {
    /// Reads a header from the first [`HDR_LEN`] bytes of `b`.
    pub fn parse(b: &[u8; HDR_LEN]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap_or_default());
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The header's wire form.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The answer to this packet's sender: ports and CIDs swapped, no payload.
    pub fn reply(&self, op: u16) -> Self {
        Header {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            kind: TYPE_STREAM,
            op,
            ..Header::default()
        }
    }
}

/// Why a chain cannot carry a packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The chain is broken, too long, or outside guest memory.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A transmit chain has a buffer only the device should write, or a receive chain one it
    /// may not write.
    #[error("The chain has a buffer pointing the wrong way")]
    WrongDirection,
    /// The chain holds less than a header.
    #[error("The chain holds only {0} bytes, less than a packet header")]
    TooShort(u64),
    /// The header's length is more than a packet carries or than the chain holds.
    #[error("The header says {len} bytes of payload; the chain holds {held}")]
    BadLength {
        /// The header's length.
        len: u32,
        /// Payload bytes the chain holds.
        held: usize,
    },
}

/// Gathers a transmit chain into `buf` (at least [`HDR_LEN`] + [`MAX_PAYLOAD`] bytes); returns
/// the header and the payload's length, which starts at `buf[HDR_LEN]`.
pub fn read_tx<M>(chain: DescriptorChain<M>, buf: &mut [u8]) -> Result<(Header, usize), PacketError>
where
    M: Deref<Target = GuestMemoryMmap> + Clone,
{
    let mem = chain.memory().clone();
    let descs = collect(chain, MAX_DESCRIPTORS)?;
    let room = buf.len().min(HDR_LEN + MAX_PAYLOAD);
    let mut at = 0usize;
    for desc in &descs {
        if desc.is_write_only() {
            return Err(PacketError::WrongDirection);
        }
        check_in_memory(&mem, desc.addr(), desc.len().into())?;
        // What lies past the most a packet holds is never read.
        let n = (desc.len() as usize).min(room - at);
        if n > 0 {
            mem.read_slice(&mut buf[at..at + n], desc.addr())
                .map_err(|_| outside(desc.addr(), n))?;
            at += n;
        }
    }
    if at < HDR_LEN {
        return Err(PacketError::TooShort(at as u64));
    }
    let mut b = [0u8; HDR_LEN];
    b.copy_from_slice(&buf[..HDR_LEN]);
    let hdr = Header::parse(&b);
    let held = at - HDR_LEN;
    if hdr.len as usize > held {
        return Err(PacketError::BadLength { len: hdr.len, held });
    }
    Ok((hdr, hdr.len as usize))
}

fn outside(addr: GuestAddress, len: usize) -> PacketError {
    PacketError::Chain(ChainError::OutsideMemory {
        addr: addr.raw_value(),
        len: len as u64,
    })
}

/// A receive buffer the guest posted: its writable segments, with room for a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxChain(WritableChain);

impl RxChain {
    /// Checks a receive chain: every buffer writable and in guest memory, room for a header.
    pub fn parse<M>(chain: DescriptorChain<M>) -> Result<Self, PacketError>
    where
        M: Deref<Target = GuestMemoryMmap> + Clone,
    {
        let buf = WritableChain::parse(chain, MAX_DESCRIPTORS).map_err(|e| match e {
            WritableError::Chain(e) => PacketError::Chain(e),
            WritableError::Readable => PacketError::WrongDirection,
        })?;
        if buf.capacity() < HDR_LEN as u64 {
            return Err(PacketError::TooShort(buf.capacity()));
        }
        Ok(RxChain(buf))
    }

    /// Payload bytes the chain holds after a header, at most [`MAX_PAYLOAD`].
    pub fn payload_room(&self) -> usize {
        (self.0.capacity() - HDR_LEN as u64).min(MAX_PAYLOAD as u64) as usize
    }

    /// Writes `packet` (header and payload) over the segments; returns the bytes written.
    pub fn write(&self, mem: &GuestMemoryMmap, packet: &[u8]) -> Result<u32, PacketError> {
        Ok(self.0.fill(mem, packet)? as u32)
    }
}
