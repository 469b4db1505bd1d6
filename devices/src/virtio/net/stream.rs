//! A frame stream behind a network device: a connected stream socket to a user-mode network
//! process (passt), in QEMU's stream protocol: each frame is a 4-byte big-endian length and the
//! Ethernet frame, with no virtio header and so no offloads (a network device on a stream offers
//! the guest none; a guest restored onto one with offloads negotiated has them done by
//! [`super::offload`]).
//!
//! The socket is non-blocking. Receive reads what the socket has into a buffer and hands out one
//! whole frame per call; [`NetBackend::pending`] says when a whole frame waits in the buffer,
//! which no readiness event would announce. Transmit appends to a bounded buffer and writes what
//! the socket takes; once [`TX_HIGH`] bytes wait, a frame is refused with `WouldBlock` and the
//! device keeps it on its queue until the socket is writable again
//! ([`NetBackend::wants_write`], [`NetBackend::flush`]): a slow peer slows the guest, it does not
//! lose its frames. The peer is not trusted: a length past the largest frame ends the stream.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use super::frame::{MAX_FRAME_LEN, VNET_HDR_LEN};
use super::offload::{self, VnetHdr};
use super::NetBackend;

/// The largest Ethernet frame the stream carries (without FCS).
pub const MAX_STREAM_FRAME: usize = MAX_FRAME_LEN - VNET_HDR_LEN;
/// Bytes of the length prefix.
const PREFIX: usize = 4;
/// Read buffer: room for several frames, and always for one whole one.
const RX_BUF: usize = 4 * (PREFIX + MAX_STREAM_FRAME);
/// Transmit bytes that may wait for the socket before frames are refused.
pub const TX_HIGH: usize = 256 * 1024;

/// A network device's frame stream.
#[derive(Debug)]
pub struct FrameStream {
    sock: UnixStream,
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    tx: Vec<u8>,
    tx_start: usize,
    scratch: Vec<u8>,
    /// Frames from the guest that could not be finished (their offload header was bad).
    pub bad_frames: u64,
}

impl FrameStream {
    /// A stream over `sock`, which must be connected; it is made non-blocking.
    pub fn new(sock: UnixStream) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        Ok(FrameStream {
            sock,
            rx: vec![0; RX_BUF],
            rx_start: 0,
            rx_end: 0,
            tx: Vec::new(),
            tx_start: 0,
            scratch: Vec::new(),
            bad_frames: 0,
        })
    }

    /// The length of the next frame if all of it is buffered.
    fn whole_frame(&self) -> io::Result<Option<usize>> {
        let have = &self.rx[self.rx_start..self.rx_end];
        let Some(prefix) = have.get(..PREFIX) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > MAX_STREAM_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the network process sent a {len}-byte frame (at most {MAX_STREAM_FRAME})"),
            ));
        }
        Ok((have.len() >= PREFIX + len).then_some(len))
    }

    /// Writes buffered transmit bytes until the socket takes no more.
    fn write_out(&mut self) -> io::Result<()> {
        while self.tx_start < self.tx.len() {
            match self.sock.write(&self.tx[self.tx_start..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.tx_start += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.tx_start == self.tx.len() {
            self.tx.clear();
            self.tx_start = 0;
        } else if self.tx_start > TX_HIGH {
            self.tx.drain(..self.tx_start);
            self.tx_start = 0;
        }
        Ok(())
    }

    fn waiting(&self) -> usize {
        self.tx.len() - self.tx_start
    }
}

impl AsRawFd for FrameStream {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl NetBackend for FrameStream {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(len) = self.whole_frame()? {
                let start = self.rx_start + PREFIX;
                let out = buf
                    .get_mut(..VNET_HDR_LEN + len)
                    .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
                // A complete frame: no offload flags, nothing to say in the header.
                out[..VNET_HDR_LEN].fill(0);
                out[VNET_HDR_LEN..].copy_from_slice(&self.rx[start..start + len]);
                self.rx_start = start + len;
                return Ok(VNET_HDR_LEN + len);
            }
            if self.rx_start > 0 {
                self.rx.copy_within(self.rx_start..self.rx_end, 0);
                self.rx_end -= self.rx_start;
                self.rx_start = 0;
            }
            match self.sock.read(&mut self.rx[self.rx_end..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the network process closed its socket",
                    ))
                }
                Ok(n) => self.rx_end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        if self.waiting() > 0 {
            self.write_out()?;
        }
        if self.waiting() >= TX_HIGH {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let hdr = frame.get(..VNET_HDR_LEN).map(VnetHdr::parse);
        let tx = &mut self.tx;
        let mut push = |f: &[u8]| {
            tx.extend_from_slice(&(f.len() as u32).to_be_bytes());
            tx.extend_from_slice(f);
        };
        match hdr {
            Some(h) if h.is_plain() => push(&frame[VNET_HDR_LEN..]),
            _ => {
                if let Err(e) = offload::finish(frame, &mut self.scratch, push) {
                    self.bad_frames += 1;
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
                }
            }
        }
        self.write_out()?;
        Ok(frame.len())
    }

    fn set_offload(&mut self, _flags: u32) -> io::Result<()> {
        // Frames from the stream are complete; there is nothing to ask of it.
        Ok(())
    }

    fn carries_offloads(&self) -> bool {
        false
    }

    fn pending(&self) -> bool {
        matches!(self.whole_frame(), Ok(Some(_)) | Err(_))
    }

    fn wants_write(&self) -> bool {
        self.waiting() > 0
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (FrameStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (FrameStream::new(a).unwrap(), b)
    }

    fn framed(f: &[u8]) -> Vec<u8> {
        let mut v = (f.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(f);
        v
    }

    #[test]
    fn test_stream_frames_split_anywhere_come_out_whole() {
        let (mut s, mut peer) = pair();
        let frames: Vec<Vec<u8>> = (1..=3).map(|n| vec![n as u8; 60 * n]).collect();
        let bytes: Vec<u8> = frames.iter().flat_map(|f| framed(f)).collect();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let mut got = Vec::new();
        // A byte at a time, then the rest: every split of the prefix and the body.
        for (i, chunk) in bytes.chunks(7).enumerate() {
            peer.write_all(chunk).unwrap();
            loop {
                match s.recv(&mut buf) {
                    Ok(n) => {
                        assert_eq!(buf[..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
                        got.push(buf[VNET_HDR_LEN..n].to_vec());
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("chunk {i}: {e}"),
                }
            }
        }
        assert_eq!(got, frames);
        assert!(!s.pending());
    }

    #[test]
    fn test_stream_buffered_frames_are_pending_without_a_readable_socket() {
        let (mut s, mut peer) = pair();
        peer.write_all(&[framed(&[1; 60]), framed(&[2; 60])].concat())
            .unwrap();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        assert_eq!(s.recv(&mut buf).unwrap(), VNET_HDR_LEN + 60);
        assert!(s.pending(), "the second frame was read with the first");
        assert_eq!(buf[VNET_HDR_LEN], 1);
        assert_eq!(s.recv(&mut buf).unwrap(), VNET_HDR_LEN + 60);
        assert_eq!(buf[VNET_HDR_LEN], 2);
    }

    #[test]
    fn test_stream_oversized_length_and_eof_are_errors() {
        let (mut s, mut peer) = pair();
        peer.write_all(&(MAX_STREAM_FRAME as u32 + 1).to_be_bytes())
            .unwrap();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let e = s.recv(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let (mut s, peer) = pair();
        drop(peer);
        assert_eq!(
            s.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn test_stream_send_strips_the_header_and_backs_off_when_full() {
        let (mut s, mut peer) = pair();
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(&[7; 1500]);
        let mut sent = 0;
        loop {
            match s.send(&frame) {
                Ok(n) => {
                    assert_eq!(n, frame.len());
                    sent += 1;
                }
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
            assert!(sent < 10_000, "a peer that never reads must push back");
        }
        assert!(s.wants_write());
        // The peer reads everything: every frame arrives whole, in order, with no header.
        peer.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 65536];
        while got.len() < sent * 1504 {
            match peer.read(&mut chunk) {
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.flush().unwrap(),
                Err(e) => panic!("{e}"),
            }
        }
        assert!(!s.wants_write());
        assert_eq!(got.len(), sent * 1504);
        for f in got.chunks(1504) {
            assert_eq!(f[..4], 1500u32.to_be_bytes());
            assert!(f[4..].iter().all(|&b| b == 7));
        }
    }

    #[test]
    fn test_stream_bad_offload_header_is_refused_and_counted() {
        let (mut s, _peer) = pair();
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame[0] = 1; // NEEDS_CSUM
        frame[6..8].copy_from_slice(&5000u16.to_le_bytes());
        frame.extend_from_slice(&[0; 60]);
        assert_eq!(
            s.send(&frame).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(s.bad_frames, 1);
        assert!(!s.wants_write());
    }
}
