//! The network device over a frame stream (a user-mode network process's socket): no offloads
//! offered, transmit held back while the peer reads slowly, link down when the peer is gone.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use vm_memory::{Bytes, GuestAddress};

use super::tests::RING_SIZE;
use super::*;
use crate::virtio::net::FrameStream;
use crate::virtio::test_utils::{memory, TestRing, WRITE};
const BUFS: u64 = 0x1_0000;

struct Fixture {
    mem: GuestMemoryMmap,
    net: Net,
    rx: TestRing,
    tx: TestRing,
    peer: UnixStream,
    irq: EventFd,
}

fn fixture() -> Fixture {
    let mem = memory();
    let (ours, peer) = UnixStream::pair().unwrap();
    let mut net = Net::new(NetSpec {
        backend: Box::new(FrameStream::new(ours).unwrap()),
        mac: MacAddr([2, 0xfc, 0, 0, 0, 1]),
        rx_rate_limiter: RateLimiter::unlimited().unwrap(),
        tx_rate_limiter: RateLimiter::unlimited().unwrap(),
        service: None,
    })
    .unwrap();
    let (rx, tx, irq) = super::tests::activate(&mut net, &mem, feature::MRG_RXBUF);
    Fixture {
        mem,
        net,
        rx,
        tx,
        peer,
        irq,
    }
}

#[test]
fn test_stream_device_offers_no_offload_it_cannot_carry() {
    let f = fixture();
    let offered = f.net.features();
    for bit in [
        feature::CSUM,
        feature::GUEST_CSUM,
        feature::GUEST_TSO4,
        feature::HOST_TSO4,
        feature::HOST_TSO6,
        feature::HOST_UFO,
    ] {
        assert_eq!(offered & bit, 0, "offload bit {bit:#x} offered on a stream");
    }
    assert_ne!(offered & feature::MRG_RXBUF, 0);
    assert_ne!(offered & feature::STATUS, 0);
    // A driver restored from a TAP keeps its offloads: the stream does them in software.
    let restorable = f.net.restorable_features();
    assert_eq!(restorable & offered, offered);
    assert_ne!(restorable & feature::HOST_TSO4, 0);
    assert_ne!(restorable & feature::GUEST_CSUM, 0);
}

#[test]
fn test_stream_device_holds_frames_while_the_peer_reads_slowly_and_loses_none() {
    let mut f = fixture();
    // Sixteen 59 KiB frames: more than the stream and the socket together hold.
    let len = VNET_HDR_LEN + 59 * 1024;
    for i in 0..RING_SIZE {
        let at = BUFS + u64::from(i) * 0xf000;
        let mut frame = vec![0u8; len];
        frame[VNET_HDR_LEN..].fill(i as u8 + 1);
        f.mem.write_slice(&frame, GuestAddress(at)).unwrap();
        f.tx.post(&f.mem, &[(at, len as u32, 0)]);
    }
    f.net.process_tx();
    let used = f.tx.take_used(&f.mem).len();
    assert!(
        used < usize::from(RING_SIZE),
        "all {used} frames taken by a peer that reads nothing"
    );
    assert!(f.net.tx_backend_full, "transmit waits for the stream");
    // The peer reads; each writable turn lets more go, until every frame is through.
    f.peer.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let mut used = used;
    for _ in 0..10_000 {
        match f.peer.read(&mut chunk) {
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                f.net.backend_writable();
                used += f.tx.take_used(&f.mem).len();
                if used == usize::from(RING_SIZE) && !f.net.backend.wants_write() {
                    if let Ok(n) = f.peer.read(&mut chunk) {
                        got.extend_from_slice(&chunk[..n]);
                        continue;
                    }
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(used, usize::from(RING_SIZE));
    let frame_len = len - VNET_HDR_LEN;
    assert_eq!(got.len(), usize::from(RING_SIZE) * (4 + frame_len));
    for (i, framed) in got.chunks(4 + frame_len).enumerate() {
        assert_eq!(framed[..4], (frame_len as u32).to_be_bytes());
        assert!(
            framed[4..].iter().all(|&b| b == i as u8 + 1),
            "frame {i} in order and whole"
        );
    }
    assert_eq!(f.net.metrics().tx_packets.load(Ordering::Relaxed), 16);
}

#[test]
fn test_stream_device_delivers_frames_and_takes_the_link_down_when_the_peer_ends() {
    let mut f = fixture();
    f.rx.post(&f.mem, &[(BUFS, 2048, WRITE)]);
    let payload = [0x5a; 60];
    let mut bytes = 60u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    f.peer.write_all(&bytes).unwrap();
    f.net.process_rx();
    let used = f.rx.take_used(&f.mem);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].1 as usize, VNET_HDR_LEN + 60);
    let mut got = vec![0u8; VNET_HDR_LEN + 60];
    f.mem.read_slice(&mut got, GuestAddress(BUFS)).unwrap();
    assert_eq!(got[..10], [0; 10], "no offload flags from a stream");
    assert_eq!(got[VNET_HDR_LEN..], payload);
    assert!(f.net.link_up());
    let _ = f.irq.read();
    drop(std::mem::replace(
        &mut f.peer,
        UnixStream::pair().unwrap().0,
    ));
    f.net.process_rx();
    assert!(!f.net.link_up(), "the link goes down with the peer");
    assert!(f.net.backend_failed);
    assert_eq!(f.irq.read().unwrap(), 1, "the driver hears of it");
    let mut status = [0u8; 2];
    f.net.read_config(6, &mut status);
    assert_eq!(u16::from_le_bytes(status) & LINK_UP, 0);
}
