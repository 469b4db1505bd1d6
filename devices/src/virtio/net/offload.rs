//! Checksum and TCP segmentation offloads done in software, for a backend whose frames carry no
//! virtio header (a frame stream). A driver that negotiated `VIRTIO_NET_F_CSUM` and the
//! `HOST_TSO*` features hands the device frames with a partial checksum (`NEEDS_CSUM`) or up to
//! 64 KiB of TCP payload (`gso_type`); [`finish`] turns one such frame into the plain, complete
//! frames a wire carries. Stream backends do not offer those features, so this runs only for a
//! guest that negotiated them on a TAP and was restored onto a stream.
//!
//! The frame is the guest's: every offset in its header and every length in its IP and TCP
//! headers is checked against the frame before it is used, and a frame that would make more than
//! [`MAX_SEGMENTS`] segments is refused.

use super::frame::{ETH_HLEN, VNET_HDR_LEN};

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_*`.
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;
/// Most segments one frame may become: 64 KiB of payload in segments of 64 bytes.
pub const MAX_SEGMENTS: usize = 1024;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
/// Offset of the UDP checksum in its header: a zero result is sent as 0xffff there.
const UDP_CSUM_OFFSET: usize = 6;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Why a frame cannot be finished; it is dropped (and counted) as a bad frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Shorter than its virtio and Ethernet headers.
    #[error("the frame is shorter than its headers")]
    Short,
    /// The checksum's place lies outside the frame.
    #[error("checksum start {start} + offset {offset} lies outside the {len}-byte frame")]
    ChecksumOutside {
        /// `csum_start`.
        start: usize,
        /// `csum_offset`.
        offset: usize,
        /// The frame's length (Ethernet header included).
        len: usize,
    },
    /// A segmentation type this module does not do (UDP fragmentation).
    #[error("segmentation type {0:#x} is not supported")]
    GsoType(u8),
    /// The frame is not the TCP over IPv4 or IPv6 its segmentation type says.
    #[error("the frame is not the TCP segment its header says")]
    NotTcp,
    /// The segment size would make too many segments (or is zero).
    #[error("segment size {0} is too small")]
    SegmentSize(u16),
}

/// The fields of `virtio_net_hdr_v1` this module reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `flags`.
    pub flags: u8,
    /// `gso_type`.
    pub gso_type: u8,
    /// `gso_size`.
    pub gso_size: u16,
    /// `csum_start`.
    pub csum_start: u16,
    /// `csum_offset`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header in front of a frame (`hdr` is at least [`VNET_HDR_LEN`] bytes).
    pub fn parse(hdr: &[u8]) -> VnetHdr {
        let le = |at: usize| u16::from_le_bytes([hdr[at], hdr[at + 1]]);
        VnetHdr {
            flags: hdr[0],
            gso_type: hdr[1],
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        }
    }

    /// Whether the frame behind it is complete as it is.
    pub fn is_plain(&self) -> bool {
        self.flags & F_NEEDS_CSUM == 0 && self.gso_type == GSO_NONE
    }
}

/// Hands `emit` the complete frames (no virtio header) that `frame` (with its virtio header)
/// stands for: itself, its checksum filled in, or its TCP segments. `scratch` is reused.
pub fn finish(
    frame: &[u8],
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<(), OffloadError> {
    if frame.len() < VNET_HDR_LEN + ETH_HLEN {
        return Err(OffloadError::Short);
    }
    let hdr = VnetHdr::parse(&frame[..VNET_HDR_LEN]);
    let eth = &frame[VNET_HDR_LEN..];
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE if hdr.flags & F_NEEDS_CSUM == 0 => emit(eth),
        GSO_NONE => {
            scratch.clear();
            scratch.extend_from_slice(eth);
            fill_checksum(scratch, hdr.csum_start.into(), hdr.csum_offset.into())?;
            emit(scratch);
        }
        GSO_TCPV4 | GSO_TCPV6 => segment_tcp(eth, hdr.gso_size, scratch, &mut emit)?,
        other => return Err(OffloadError::GsoType(other)),
    }
    Ok(())
}

/// The ones' complement sum of `data` as big-endian 16-bit words, added to `sum`, unfolded.
fn sum_words(data: &[u8], mut sum: u64) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// `sum` folded to 16 bits.
fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// What `NEEDS_CSUM` asks: the checksum of everything from `start` to the end (the field itself
/// holding the pseudo-header's sum the driver put there), stored at `start + offset`.
fn fill_checksum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let at = start + offset;
    if start >= frame.len() || at + 2 > frame.len() {
        return Err(OffloadError::ChecksumOutside {
            start,
            offset,
            len: frame.len(),
        });
    }
    let mut csum = !fold(sum_words(&frame[start..], 0));
    if csum == 0 && offset == UDP_CSUM_OFFSET {
        csum = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// Where the headers of a TCP frame are.
struct TcpFrame {
    /// Offset of the IP header (after one VLAN tag, if any).
    ip: usize,
    ipv6: bool,
    /// Offset of the TCP header.
    tcp: usize,
    /// Offset of the payload: the length of the headers every segment repeats.
    payload: usize,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Finds the IP and TCP headers, checking each against the frame.
fn parse_tcp(eth: &[u8]) -> Result<TcpFrame, OffloadError> {
    let mut ip = ETH_HLEN;
    let mut ethertype = be16(eth, 12);
    if ethertype == ETHERTYPE_VLAN {
        if eth.len() < ip + 4 {
            return Err(OffloadError::NotTcp);
        }
        ethertype = be16(eth, 16);
        ip += 4;
    }
    let (ipv6, tcp) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(*eth.get(ip).ok_or(OffloadError::NotTcp)? & 0xf) * 4;
            if eth[ip] >> 4 != 4 || ihl < 20 || eth.len() < ip + ihl || eth[ip + 9] != IPPROTO_TCP {
                return Err(OffloadError::NotTcp);
            }
            (false, ip + ihl)
        }
        // Extension headers are not followed: the Linux driver puts none before TCP here.
        ETHERTYPE_IPV6 if eth.len() >= ip + 40 && eth[ip] >> 4 == 6 => {
            if eth[ip + 6] != IPPROTO_TCP {
                return Err(OffloadError::NotTcp);
            }
            (true, ip + 40)
        }
        _ => return Err(OffloadError::NotTcp),
    };
    if eth.len() < tcp + 20 {
        return Err(OffloadError::NotTcp);
    }
    let payload = tcp + usize::from(eth[tcp + 12] >> 4) * 4;
    if payload < tcp + 20 || payload > eth.len() {
        return Err(OffloadError::NotTcp);
    }
    Ok(TcpFrame {
        ip,
        ipv6,
        tcp,
        payload,
    })
}

/// Cuts a TCP frame's payload into `mss`-byte segments, each with the frame's headers made
/// right for it: lengths, IPv4 ID and header checksum, sequence number, flags, TCP checksum.
fn segment_tcp(
    eth: &[u8],
    mss: u16,
    seg: &mut Vec<u8>,
    emit: &mut impl FnMut(&[u8]),
) -> Result<(), OffloadError> {
    let f = parse_tcp(eth)?;
    let payload = &eth[f.payload..];
    let mss_len = usize::from(mss);
    if mss == 0 {
        return Err(OffloadError::SegmentSize(mss));
    }
    // (A frame with headers only still goes out, as one segment.)
    let count = payload.len().div_ceil(mss_len).max(1);
    if count > MAX_SEGMENTS {
        return Err(OffloadError::SegmentSize(mss));
    }
    let seq = u32::from_be_bytes([
        eth[f.tcp + 4],
        eth[f.tcp + 5],
        eth[f.tcp + 6],
        eth[f.tcp + 7],
    ]);
    let flags = eth[f.tcp + 13];
    let ip_id = be16(eth, f.ip + 4);
    for i in 0..count {
        let chunk =
            &payload[(i * mss_len).min(payload.len())..((i + 1) * mss_len).min(payload.len())];
        seg.clear();
        seg.extend_from_slice(&eth[..f.payload]);
        seg.extend_from_slice(chunk);
        let tcp_len = seg.len() - f.tcp;
        if f.ipv6 {
            let len = (tcp_len as u16).to_be_bytes();
            seg[f.ip + 4..f.ip + 6].copy_from_slice(&len);
        } else {
            let total = ((seg.len() - f.ip) as u16).to_be_bytes();
            seg[f.ip + 2..f.ip + 4].copy_from_slice(&total);
            let id = ip_id.wrapping_add(i as u16).to_be_bytes();
            seg[f.ip + 4..f.ip + 6].copy_from_slice(&id);
            seg[f.ip + 10..f.ip + 12].fill(0);
            let csum = !fold(sum_words(&seg[f.ip..f.tcp], 0));
            seg[f.ip + 10..f.ip + 12].copy_from_slice(&csum.to_be_bytes());
        }
        let seq_i = seq.wrapping_add((i * mss_len) as u32).to_be_bytes();
        seg[f.tcp + 4..f.tcp + 8].copy_from_slice(&seq_i);
        let mut seg_flags = flags;
        if i + 1 < count {
            seg_flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            seg_flags &= !TCP_CWR;
        }
        seg[f.tcp + 13] = seg_flags;
        // The TCP checksum over the pseudo-header, header and payload.
        seg[f.tcp + 16..f.tcp + 18].fill(0);
        let pseudo = if f.ipv6 {
            sum_words(&seg[f.ip + 8..f.ip + 40], 0) + tcp_len as u64 + u64::from(IPPROTO_TCP)
        } else {
            sum_words(&seg[f.ip + 12..f.ip + 20], 0) + tcp_len as u64 + u64::from(IPPROTO_TCP)
        };
        let csum = !fold(sum_words(&seg[f.tcp..], pseudo));
        seg[f.tcp + 16..f.tcp + 18].copy_from_slice(&csum.to_be_bytes());
        emit(seg);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
