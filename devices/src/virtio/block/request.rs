//! virtio-blk requests: parsing a descriptor chain into a [`Request`], and executing it against a
//! [`DiskBackend`]. Pure logic over guest memory, with no file descriptors, so every hostile
//! chain can be tested (and fuzzed) in memory.
//!
//! Framing follows what every virtio-blk driver sends: the first descriptor is the 16-byte
//! header (device-readable), the last one ends with the status byte (device-writable), and the
//! descriptors in between are the data, device-writable for reads and device-readable for
//! writes. Anything else is refused: with an IOERR status when the chain has a status byte the
//! device can write, and otherwise returned unused (used length 0).

use std::io;
use std::ops::Deref;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;

use crate::virtio::chain::{check_in_memory, collect, ChainError};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

/// Bytes in a virtio-blk sector, whatever the backing store's block size.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes of the device ID a GET_ID request returns.
pub const ID_BYTES: usize = 20;
/// Bytes of a request header: type, reserved, sector.
pub const HEADER_SIZE: u32 = 16;
/// Bytes of one DISCARD / WRITE_ZEROES segment: sector, sector count, flags.
pub const SEGMENT_SIZE: u64 = 16;
/// The most data one request may move, whatever the guest claims.
pub const MAX_REQUEST_BYTES: u64 = 256 << 20;
/// The most descriptors one chain may have (direct or through an indirect table).
pub const MAX_DESCRIPTORS: usize = 1024;
/// The most sectors one DISCARD / WRITE_ZEROES segment may cover (advertised in the config).
pub const MAX_DISCARD_SECTORS: u32 = u32::MAX / SECTOR_SIZE as u32;
/// The most segments one DISCARD / WRITE_ZEROES request may carry (advertised in the config).
pub const MAX_DISCARD_SEGMENTS: u32 = 1;
/// WRITE_ZEROES segment flag: the device may deallocate the range.
pub const WRITE_ZEROES_UNMAP: u32 = 1;

/// Request types (virtio 1.2, 5.2.6).
pub mod req_type {
    /// Read sectors.
    pub const IN: u32 = 0;
    /// Write sectors.
    pub const OUT: u32 = 1;
    /// Make everything written so far durable.
    pub const FLUSH: u32 = 4;
    /// Read the device ID string.
    pub const GET_ID: u32 = 8;
    /// Deallocate sectors.
    pub const DISCARD: u32 = 11;
    /// Zero sectors.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Request status values.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// The request failed.
    pub const IOERR: u8 = 1;
    /// The request type is not supported.
    pub const UNSUPP: u8 = 2;
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Read.
    In,
    /// Write.
    Out,
    /// Flush.
    Flush,
    /// Get the device ID.
    GetId,
    /// Discard ranges.
    Discard,
    /// Zero ranges.
    WriteZeroes,
    /// A type the device does not know.
    Unsupported(u32),
}

impl RequestKind {
    fn from_type(t: u32) -> Self {
        match t {
            req_type::IN => RequestKind::In,
            req_type::OUT => RequestKind::Out,
            req_type::FLUSH => RequestKind::Flush,
            req_type::GET_ID => RequestKind::GetId,
            req_type::DISCARD => RequestKind::Discard,
            req_type::WRITE_ZEROES => RequestKind::WriteZeroes,
            other => RequestKind::Unsupported(other),
        }
    }

    /// Whether the device writes the data buffers (as opposed to reading them).
    fn device_writes_data(self) -> bool {
        matches!(self, RequestKind::In | RequestKind::GetId)
    }
}

/// A run of guest memory a request's data occupies, already checked to lie in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical start.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// A well-formed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What it asks for.
    pub kind: RequestKind,
    /// First sector (IN, OUT).
    pub sector: u64,
    /// The data buffers, in order.
    pub data: Vec<Segment>,
    /// Their total length.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// Why a chain is not a well-formed request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The chain is broken, too long, or names memory the guest does not have.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The last descriptor is not a device-writable buffer of at least one byte.
    #[error("The chain does not end with a writable status byte")]
    NoStatus,
    /// The first descriptor is not a device-readable header of 16 bytes.
    #[error("The chain does not start with a readable 16-byte header")]
    BadHeader,
    /// A data buffer has the wrong direction for the request.
    #[error("A data buffer has the wrong direction for this request")]
    WrongDirection,
    /// The data length is not a whole number of sectors (or segments).
    #[error("Data length {0} is not a multiple of the unit")]
    UnalignedLength(u64),
    /// The data is larger than any request may be.
    #[error("The request moves {0} bytes, more than {MAX_REQUEST_BYTES}")]
    TooLong(u64),
    /// The request reaches past the end of the disk.
    #[error("Sectors {sector}..+{sectors} lie past the end of the disk ({capacity} sectors)")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Sector count.
        sectors: u64,
        /// Disk size in sectors.
        capacity: u64,
    },
    /// A DISCARD / WRITE_ZEROES request has no segment, too many, or a bad one.
    #[error("Bad discard or write-zeroes segments")]
    BadSegments,
    /// The drive is read-only and the request would change it.
    #[error("Write to a read-only drive")]
    ReadOnly,
}

/// A chain that is not a well-formed request, and where (if anywhere) its status byte goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// The status byte's address; `None` when the chain has no usable status byte.
    pub status: Option<GuestAddress>,
    /// What is wrong.
    pub error: RequestError,
}

/// Parses `chain` into a request for a disk of `capacity` sectors.
pub fn parse<M>(chain: DescriptorChain<M>, capacity: u64) -> Result<Request, Malformed>
where
    M: Deref<Target = GuestMemoryMmap> + Clone,
{
    let mem = chain.memory().clone();
    let no_status = |error| Malformed {
        status: None,
        error,
    };
    let descs = collect(chain, MAX_DESCRIPTORS).map_err(|e| no_status(e.into()))?;
    let last = descs[descs.len() - 1];
    if !last.is_write_only() || last.len() == 0 {
        return Err(no_status(RequestError::NoStatus));
    }
    let status = last
        .addr()
        .checked_add(u64::from(last.len()) - 1)
        .filter(|a| check_in_memory(&mem, *a, 1).is_ok())
        .ok_or(no_status(RequestError::NoStatus))?;
    parse_body(&mem, &descs, status, capacity).map_err(|error| Malformed {
        status: Some(status),
        error,
    })
}

fn parse_body(
    mem: &GuestMemoryMmap,
    descs: &[Descriptor],
    status: GuestAddress,
    capacity: u64,
) -> Result<Request, RequestError> {
    let header = descs[0];
    if descs.len() < 2 || header.is_write_only() || header.len() < HEADER_SIZE {
        return Err(RequestError::BadHeader);
    }
    check_in_memory(mem, header.addr(), HEADER_SIZE.into())?;
    let raw: [u8; 16] = mem
        .read_obj(header.addr())
        .map_err(|_| RequestError::BadHeader)?;
    let kind = RequestKind::from_type(u32::from_le_bytes(raw[0..4].try_into().unwrap()));
    let sector = u64::from_le_bytes(raw[8..16].try_into().unwrap());

    let mut data = Vec::with_capacity(descs.len() - 2);
    let mut data_len = 0u64;
    for desc in &descs[1..descs.len() - 1] {
        if desc.is_write_only() != kind.device_writes_data() {
            return Err(RequestError::WrongDirection);
        }
        check_in_memory(mem, desc.addr(), desc.len().into())?;
        data_len += u64::from(desc.len());
        if data_len > MAX_REQUEST_BYTES {
            return Err(RequestError::TooLong(data_len));
        }
        if desc.len() > 0 {
            data.push(Segment {
                addr: desc.addr(),
                len: desc.len(),
            });
        }
    }

    match kind {
        RequestKind::In | RequestKind::Out => {
            if !data_len.is_multiple_of(SECTOR_SIZE) {
                return Err(RequestError::UnalignedLength(data_len));
            }
            check_range(sector, data_len / SECTOR_SIZE, capacity)?;
        }
        RequestKind::Discard | RequestKind::WriteZeroes => {
            if data_len == 0 || !data_len.is_multiple_of(SEGMENT_SIZE) {
                return Err(RequestError::UnalignedLength(data_len));
            }
            if data_len / SEGMENT_SIZE > u64::from(MAX_DISCARD_SEGMENTS) {
                return Err(RequestError::BadSegments);
            }
        }
        RequestKind::Flush | RequestKind::GetId | RequestKind::Unsupported(_) => {}
    }
    Ok(Request {
        kind,
        sector,
        data,
        data_len,
        status,
    })
}

fn check_range(sector: u64, sectors: u64, capacity: u64) -> Result<(), RequestError> {
    match sector.checked_add(sectors) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(RequestError::OutOfRange {
            sector,
            sectors,
            capacity,
        }),
    }
}

/// Where a request's bytes end up: the disk image.
pub trait DiskBackend {
    /// Fills `bufs`, in order, from the disk starting at byte `offset`.
    fn read_at(&mut self, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()>;
    /// Writes `bufs`, in order, to the disk starting at byte `offset`.
    fn write_at(&mut self, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> io::Result<()>;
    /// Deallocates `len` bytes at `offset` (they may read back as anything until written).
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Zeroes `len` bytes at `offset`, deallocating them if `unmap` allows.
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()>;
}

/// What a drive is, as far as requests are concerned.
#[derive(Clone, Debug)]
pub struct DriveView {
    /// Size in sectors.
    pub capacity: u64,
    /// Whether writes are refused.
    pub read_only: bool,
    /// Whether the driver accepted DISCARD; without it a discard request is UNSUPP.
    pub discard: bool,
    /// Whether the driver accepted WRITE_ZEROES; without it such a request is UNSUPP.
    pub write_zeroes: bool,
    /// The GET_ID string, zero-padded.
    pub id: [u8; ID_BYTES],
}

/// How a request went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done, with this many bytes written into the guest's data buffers.
    Ok(u32),
    /// The type is not supported.
    Unsupported,
    /// The request is invalid for this drive (read-only, bad segment); the guest's fault.
    Refused(RequestError),
    /// The backend failed.
    IoError(io::ErrorKind),
}

impl Outcome {
    /// The status byte for the guest.
    pub fn status(&self) -> u8 {
        match self {
            Outcome::Ok(_) => status::OK,
            Outcome::Unsupported => status::UNSUPP,
            Outcome::Refused(_) | Outcome::IoError(_) => status::IOERR,
        }
    }

    /// Bytes written into the guest's data buffers.
    pub fn data_written(&self) -> u32 {
        match self {
            Outcome::Ok(n) => *n,
            _ => 0,
        }
    }
}

fn slices<'m>(
    mem: &'m GuestMemoryMmap,
    data: &[Segment],
) -> Result<Vec<VolatileSlice<'m>>, RequestError> {
    let mut out = Vec::with_capacity(data.len());
    for seg in data {
        for slice in mem.get_slices(seg.addr, seg.len as usize) {
            out.push(slice.map_err(|_| {
                RequestError::Chain(ChainError::OutsideMemory {
                    addr: seg.addr.raw_value(),
                    len: seg.len.into(),
                })
            })?);
        }
    }
    Ok(out)
}

impl Request {
    /// Executes the request on `disk`. The caller writes [`Outcome::status`] to
    /// [`Request::status`].
    pub fn execute(
        &self,
        mem: &GuestMemoryMmap,
        disk: &mut dyn DiskBackend,
        drive: &DriveView,
    ) -> Outcome {
        // A request whose feature was not negotiated is not carried out, whatever it says.
        let negotiated = match self.kind {
            RequestKind::Discard => drive.discard,
            RequestKind::WriteZeroes => drive.write_zeroes,
            _ => true,
        };
        if !negotiated {
            return Outcome::Unsupported;
        }
        let writes = matches!(
            self.kind,
            RequestKind::Out | RequestKind::Discard | RequestKind::WriteZeroes
        );
        if writes && drive.read_only {
            return Outcome::Refused(RequestError::ReadOnly);
        }
        let io = |r: io::Result<()>, written: u32| match r {
            Ok(()) => Outcome::Ok(written),
            Err(e) => Outcome::IoError(e.kind()),
        };
        let offset = self.sector.wrapping_mul(SECTOR_SIZE);
        match self.kind {
            RequestKind::In => match slices(mem, &self.data) {
                // data_len <= MAX_REQUEST_BYTES, which fits in u32.
                Ok(bufs) => io(disk.read_at(&bufs, offset), self.data_len as u32),
                Err(e) => Outcome::Refused(e),
            },
            RequestKind::Out => match slices(mem, &self.data) {
                Ok(bufs) => io(disk.write_at(&bufs, offset), 0),
                Err(e) => Outcome::Refused(e),
            },
            RequestKind::Flush => io(disk.flush(), 0),
            RequestKind::GetId => {
                let mut written = 0usize;
                for seg in &self.data {
                    let n = (seg.len as usize).min(ID_BYTES - written);
                    if mem
                        .write_slice(&drive.id[written..written + n], seg.addr)
                        .is_err()
                    {
                        return Outcome::Refused(RequestError::Chain(ChainError::OutsideMemory {
                            addr: seg.addr.raw_value(),
                            len: n as u64,
                        }));
                    }
                    written += n;
                }
                Outcome::Ok(written as u32)
            }
            RequestKind::Discard | RequestKind::WriteZeroes => {
                let seg = match self.read_discard_segment(mem, drive.capacity) {
                    Ok(seg) => seg,
                    Err(e) => return Outcome::Refused(e),
                };
                let (offset, len, flags) = seg;
                if self.kind == RequestKind::Discard {
                    io(disk.discard(offset, len), 0)
                } else {
                    io(
                        disk.write_zeroes(offset, len, flags & WRITE_ZEROES_UNMAP != 0),
                        0,
                    )
                }
            }
            RequestKind::Unsupported(_) => Outcome::Unsupported,
        }
    }

    /// Reads and checks the one DISCARD / WRITE_ZEROES segment: (byte offset, byte length, flags).
    fn read_discard_segment(
        &self,
        mem: &GuestMemoryMmap,
        capacity: u64,
    ) -> Result<(u64, u64, u32), RequestError> {
        let first = self.data.first().ok_or(RequestError::BadSegments)?;
        if u64::from(first.len) < SEGMENT_SIZE {
            return Err(RequestError::BadSegments);
        }
        let raw: [u8; 16] = mem
            .read_obj(first.addr)
            .map_err(|_| RequestError::BadSegments)?;
        let sector = u64::from_le_bytes(raw[0..8].try_into().unwrap());
        let sectors = u32::from_le_bytes(raw[8..12].try_into().unwrap());
        let flags = u32::from_le_bytes(raw[12..16].try_into().unwrap());
        let allowed = match self.kind {
            RequestKind::WriteZeroes => WRITE_ZEROES_UNMAP,
            _ => 0,
        };
        if flags & !allowed != 0 || sectors == 0 || sectors > MAX_DISCARD_SECTORS {
            return Err(RequestError::BadSegments);
        }
        check_range(sector, sectors.into(), capacity)?;
        Ok((
            sector * SECTOR_SIZE,
            u64::from(sectors) * SECTOR_SIZE,
            flags,
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub use crate::virtio::block::fuzzing::MemDisk;
    use crate::virtio::test_utils::memory;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};

    pub const R: u16 = 0;
    pub const W: u16 = VRING_DESC_F_WRITE as u16;

    /// Puts one chain of (addr, len, flags) descriptors on a fresh 16-entry queue at 0 and
    /// returns the queue; the NEXT flags and indices are filled in.
    pub fn queue_with_chain(mem: &GuestMemoryMmap, descs: &[(u64, u32, u16)]) -> Queue {
        queue_with_chains(mem, &[descs])
    }

    /// A 16-entry queue holding `chains` one after another in the descriptor table, each
    /// made available.
    pub fn queue_with_chains(mem: &GuestMemoryMmap, chains: &[&[(u64, u32, u16)]]) -> Queue {
        let vq = MockSplitQueue::new(mem, 16);
        let mut raw: Vec<RawDescriptor> = Vec::new();
        for descs in chains {
            for (i, &(addr, len, flags)) in descs.iter().enumerate() {
                let more = i + 1 < descs.len();
                let flags = flags | if more { VRING_DESC_F_NEXT as u16 } else { 0 };
                let next = (raw.len() + 1) as u16;
                raw.push(RawDescriptor::from(Descriptor::new(addr, len, flags, next)));
            }
        }
        vq.add_desc_chains(&raw, 0).unwrap();
        vq.create_queue().unwrap()
    }

    pub fn header(mem: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(at)).unwrap();
    }

    const HDR: u64 = 0x4_0000;
    const DATA: u64 = 0x5_0000;
    const STATUS: u64 = 0x6_0000;
    const CAPACITY: u64 = 64;

    fn parse_one(mem: &GuestMemoryMmap, descs: &[(u64, u32, u16)]) -> Result<Request, Malformed> {
        let mut q = queue_with_chain(mem, descs);
        let chain = q.iter(mem).unwrap().next().unwrap();
        parse(chain, CAPACITY)
    }

    fn refused(status: u64, error: RequestError) -> Result<Request, Malformed> {
        Err(Malformed {
            status: Some(GuestAddress(status)),
            error,
        })
    }

    fn dropped(error: RequestError) -> Result<Request, Malformed> {
        Err(Malformed {
            status: None,
            error,
        })
    }

    #[test]
    fn test_parse_read_request() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, 3);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 1024, W), (STATUS, 1, W)]).unwrap();
        assert_eq!(r.kind, RequestKind::In);
        assert_eq!(r.sector, 3);
        assert_eq!(r.data_len, 1024);
        assert_eq!(r.status, GuestAddress(STATUS));
    }

    #[test]
    fn test_parse_status_is_last_byte_of_last_descriptor() {
        let mem = memory();
        header(&mem, HDR, req_type::FLUSH, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (STATUS, 8, W)]).unwrap();
        assert_eq!(r.status, GuestAddress(STATUS + 7));
    }

    #[test]
    fn test_parse_zero_length_status_dropped() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 0, W)]);
        assert_eq!(r, dropped(RequestError::NoStatus));
    }

    #[test]
    fn test_parse_readable_status_dropped() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, R)]);
        assert_eq!(r, dropped(RequestError::NoStatus));
    }

    #[test]
    fn test_parse_status_outside_memory_dropped() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 512, W), (0xdead_0000, 1, W)]);
        assert_eq!(r, dropped(RequestError::NoStatus));
    }

    #[test]
    fn test_parse_header_outside_memory_refused() {
        let mem = memory();
        let r = parse_one(&mem, &[(0xffff_ffff_0000, 16, R), (STATUS, 1, W)]);
        assert_eq!(
            r,
            refused(
                STATUS,
                RequestError::Chain(ChainError::OutsideMemory {
                    addr: 0xffff_ffff_0000,
                    len: 16
                })
            )
        );
    }

    #[test]
    fn test_parse_short_header_refused() {
        let mem = memory();
        let r = parse_one(&mem, &[(HDR, 8, R), (STATUS, 1, W)]);
        assert_eq!(r, refused(STATUS, RequestError::BadHeader));
    }

    #[test]
    fn test_parse_writable_header_refused() {
        let mem = memory();
        let r = parse_one(&mem, &[(HDR, 16, W), (STATUS, 1, W)]);
        assert_eq!(r, refused(STATUS, RequestError::BadHeader));
    }

    #[test]
    fn test_parse_single_descriptor_refused() {
        let mem = memory();
        let r = parse_one(&mem, &[(STATUS, 16, W)]);
        assert_eq!(r, refused(STATUS + 15, RequestError::BadHeader));
    }

    #[test]
    fn test_parse_read_into_readable_buffer_refused() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]);
        assert_eq!(r, refused(STATUS, RequestError::WrongDirection));
    }

    #[test]
    fn test_parse_write_from_writable_buffer_refused() {
        let mem = memory();
        header(&mem, HDR, req_type::OUT, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
        assert_eq!(r, refused(STATUS, RequestError::WrongDirection));
    }

    #[test]
    fn test_parse_data_outside_memory_refused() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (0xf_fe00, 1024, W), (STATUS, 1, W)]);
        assert_eq!(
            r,
            refused(
                STATUS,
                RequestError::Chain(ChainError::OutsideMemory {
                    addr: 0xf_fe00,
                    len: 1024
                })
            )
        );
    }

    #[test]
    fn test_parse_absurd_length_refused() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, 0);
        let r = parse_one(
            &mem,
            &[(HDR, 16, R), (DATA, 0x7fff_fe00, W), (STATUS, 1, W)],
        );
        assert_eq!(
            r,
            refused(
                STATUS,
                RequestError::Chain(ChainError::OutsideMemory {
                    addr: DATA,
                    len: 0x7fff_fe00
                })
            )
        );
    }

    #[test]
    fn test_parse_chain_over_4g_dropped() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, u32::MAX, W), (STATUS, 1, W)]);
        assert_eq!(r, dropped(RequestError::Chain(ChainError::Broken)));
    }

    #[test]
    fn test_parse_aliased_buffers_over_limit_refused() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 32 << 20)]).unwrap();
        header(&mem, HDR, req_type::IN, 0);
        let mut descs = vec![(HDR, 16, R)];
        descs.extend(std::iter::repeat_n((1u64 << 20, 30u32 << 20, W), 14));
        descs.push((STATUS, 1, W));
        let mut q = queue_with_chain(&mem, &descs);
        let chain = q.iter(&mem).unwrap().next().unwrap();
        let r = parse(chain, u64::MAX);
        assert_eq!(r, refused(STATUS, RequestError::TooLong(270 << 20)));
    }

    #[test]
    fn test_parse_unaligned_length_refused() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 100, W), (STATUS, 1, W)]);
        assert_eq!(r, refused(STATUS, RequestError::UnalignedLength(100)));
    }

    #[test]
    fn test_parse_past_end_refused() {
        let mem = memory();
        header(&mem, HDR, req_type::OUT, CAPACITY - 1);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 1024, R), (STATUS, 1, W)]);
        assert_eq!(
            r,
            refused(
                STATUS,
                RequestError::OutOfRange {
                    sector: CAPACITY - 1,
                    sectors: 2,
                    capacity: CAPACITY
                }
            )
        );
    }

    #[test]
    fn test_parse_sector_overflow_refused() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, u64::MAX);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
        assert!(matches!(
            r,
            Err(Malformed {
                error: RequestError::OutOfRange { .. },
                ..
            })
        ));
    }

    #[test]
    fn test_parse_loop_dropped() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, 0);
        let vq = MockSplitQueue::new(&mem, 16);
        let raw = [
            RawDescriptor::from(Descriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1)),
            RawDescriptor::from(Descriptor::new(
                DATA,
                512,
                (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
                1,
            )),
        ];
        vq.add_desc_chains(&raw, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        assert_eq!(
            parse(chain, CAPACITY),
            dropped(RequestError::Chain(ChainError::Broken))
        );
    }

    #[test]
    fn test_parse_next_index_past_table_dropped() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, 0);
        let vq = MockSplitQueue::new(&mem, 16);
        let raw = [RawDescriptor::from(Descriptor::new(
            HDR,
            16,
            VRING_DESC_F_NEXT as u16,
            999,
        ))];
        vq.add_desc_chains(&raw, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        assert_eq!(
            parse(chain, CAPACITY),
            dropped(RequestError::Chain(ChainError::Broken))
        );
    }

    #[test]
    fn test_parse_unknown_type_is_unsupported_not_error() {
        let mem = memory();
        header(&mem, HDR, 0x77, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (STATUS, 1, W)]).unwrap();
        assert_eq!(r.kind, RequestKind::Unsupported(0x77));
        let out = r.execute(&mem, &mut MemDisk::default(), &drive(false));
        assert_eq!(out.status(), status::UNSUPP);
    }

    fn drive(read_only: bool) -> DriveView {
        let mut id = [0u8; ID_BYTES];
        id[..6].copy_from_slice(b"disk-a");
        DriveView {
            capacity: CAPACITY,
            read_only,
            discard: true,
            write_zeroes: true,
            id,
        }
    }

    fn disk() -> MemDisk {
        MemDisk {
            bytes: (0..CAPACITY * SECTOR_SIZE)
                .map(|i| (i % 251) as u8)
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn test_execute_read_fills_guest_buffers_in_order() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, 2);
        let r = parse_one(
            &mem,
            &[
                (HDR, 16, R),
                (DATA, 512, W),
                (DATA + 0x1000, 512, W),
                (STATUS, 1, W),
            ],
        )
        .unwrap();
        let d = disk();
        let mut d2 = disk();
        assert_eq!(r.execute(&mem, &mut d2, &drive(false)), Outcome::Ok(1024));
        let mut got = vec![0u8; 512];
        mem.read_slice(&mut got, GuestAddress(DATA + 0x1000))
            .unwrap();
        assert_eq!(got, d.bytes[1536..2048]);
    }

    #[test]
    fn test_execute_write_reaches_disk() {
        let mem = memory();
        header(&mem, HDR, req_type::OUT, 1);
        mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]).unwrap();
        let mut d = disk();
        assert_eq!(r.execute(&mem, &mut d, &drive(false)), Outcome::Ok(0));
        assert_eq!(d.bytes[512..1024], [0xab; 512]);
    }

    #[test]
    fn test_execute_write_to_read_only_drive_changes_nothing() {
        let mem = memory();
        header(&mem, HDR, req_type::OUT, 1);
        mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]).unwrap();
        let mut d = disk();
        let out = r.execute(&mem, &mut d, &drive(true));
        assert_eq!(out, Outcome::Refused(RequestError::ReadOnly));
        assert_eq!(out.status(), status::IOERR);
        assert_eq!(d.bytes, disk().bytes);
    }

    #[test]
    fn test_execute_flush_reaches_backend() {
        let mem = memory();
        header(&mem, HDR, req_type::FLUSH, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (STATUS, 1, W)]).unwrap();
        let mut d = disk();
        assert_eq!(r.execute(&mem, &mut d, &drive(true)), Outcome::Ok(0));
        assert_eq!(d.flushes, 1);
    }

    #[test]
    fn test_execute_get_id_writes_twenty_bytes() {
        let mem = memory();
        header(&mem, HDR, req_type::GET_ID, 0);
        mem.write_slice(&[0xff; 32], GuestAddress(DATA)).unwrap();
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 32, W), (STATUS, 1, W)]).unwrap();
        assert_eq!(r.execute(&mem, &mut disk(), &drive(false)), Outcome::Ok(20));
        let mut got = [0u8; 21];
        mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(&got[..7], b"disk-a\0");
        assert_eq!(got[20], 0xff);
    }

    #[test]
    fn test_execute_backend_failure_is_ioerr() {
        let mem = memory();
        header(&mem, HDR, req_type::IN, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]).unwrap();
        let mut d = MemDisk {
            fail: true,
            ..disk()
        };
        let out = r.execute(&mem, &mut d, &drive(false));
        assert_eq!(out.status(), status::IOERR);
        assert_eq!(out.data_written(), 0);
    }

    fn discard_segment(mem: &GuestMemoryMmap, sector: u64, sectors: u32, flags: u32) {
        let mut s = [0u8; 16];
        s[0..8].copy_from_slice(&sector.to_le_bytes());
        s[8..12].copy_from_slice(&sectors.to_le_bytes());
        s[12..16].copy_from_slice(&flags.to_le_bytes());
        mem.write_slice(&s, GuestAddress(DATA)).unwrap();
    }

    #[test]
    fn test_execute_write_zeroes_zeroes_range() {
        let mem = memory();
        header(&mem, HDR, req_type::WRITE_ZEROES, 0);
        discard_segment(&mem, 2, 3, WRITE_ZEROES_UNMAP);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 16, R), (STATUS, 1, W)]).unwrap();
        let mut d = disk();
        assert_eq!(r.execute(&mem, &mut d, &drive(false)), Outcome::Ok(0));
        assert!(d.bytes[1024..2560].iter().all(|&b| b == 0));
        assert_eq!(d.bytes[2560..3072], disk().bytes[2560..3072]);
    }

    /// A driver that did not accept DISCARD or WRITE_ZEROES gets UNSUPP for them, and the disk
    /// stays as it was.
    #[test]
    fn test_execute_discard_and_write_zeroes_not_negotiated_are_unsupported() {
        let mem = memory();
        let mut view = drive(false);
        (view.discard, view.write_zeroes) = (false, false);
        for kind in [req_type::DISCARD, req_type::WRITE_ZEROES] {
            header(&mem, HDR, kind, 0);
            discard_segment(&mem, 2, 3, 0);
            let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 16, R), (STATUS, 1, W)]).unwrap();
            let mut d = disk();
            let out = r.execute(&mem, &mut d, &view);
            assert_eq!(out, Outcome::Unsupported, "type {kind}");
            assert_eq!(out.status(), status::UNSUPP);
            assert_eq!(d.bytes, disk().bytes, "type {kind}");
        }
    }

    #[test]
    fn test_execute_discard_past_end_refused() {
        let mem = memory();
        header(&mem, HDR, req_type::DISCARD, 0);
        discard_segment(&mem, CAPACITY - 1, 2, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 16, R), (STATUS, 1, W)]).unwrap();
        let out = r.execute(&mem, &mut disk(), &drive(false));
        assert!(matches!(
            out,
            Outcome::Refused(RequestError::OutOfRange { .. })
        ));
    }

    #[test]
    fn test_execute_discard_with_unmap_flag_refused() {
        let mem = memory();
        header(&mem, HDR, req_type::DISCARD, 0);
        discard_segment(&mem, 0, 1, WRITE_ZEROES_UNMAP);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 16, R), (STATUS, 1, W)]).unwrap();
        let out = r.execute(&mem, &mut disk(), &drive(false));
        assert_eq!(out, Outcome::Refused(RequestError::BadSegments));
    }

    #[test]
    fn test_parse_two_discard_segments_refused() {
        let mem = memory();
        header(&mem, HDR, req_type::DISCARD, 0);
        let r = parse_one(&mem, &[(HDR, 16, R), (DATA, 32, R), (STATUS, 1, W)]);
        assert_eq!(r, refused(STATUS, RequestError::BadSegments));
    }
}
