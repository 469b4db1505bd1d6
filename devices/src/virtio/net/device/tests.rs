//! The network device's tests: frames through a socket-pair backend, hostile chains.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::AtomicU32;

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::rate_limiter::Buckets;
use crate::virtio::mmio::MmioInterrupt;
use crate::virtio::test_utils::{memory, TestRing, WRITE};
use crate::EventFdTrigger;

/// A TAP stand-in: a datagram socket pair keeps frame boundaries as a TAP does.
struct SocketBackend {
    sock: UnixDatagram,
    offloads: Arc<AtomicU32>,
}

impl AsRawFd for SocketBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl NetBackend for SocketBackend {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv(buf)
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.sock.send(frame)
    }
    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        self.offloads.store(flags, Ordering::SeqCst);
        Ok(())
    }
}

pub(super) const RING_SIZE: u16 = 16;
const BUFS: u64 = 0x1_0000;

struct Fixture {
    mem: GuestMemoryMmap,
    net: Net,
    rx: TestRing,
    tx: TestRing,
    peer: UnixDatagram,
    irq: EventFd,
    offloads: Arc<AtomicU32>,
}

fn fixture(acked: u64) -> Fixture {
    fixture_with(acked, None)
}

fn fixture_with(acked: u64, service: Option<Box<dyn FrameService>>) -> Fixture {
    let mem = memory();
    let (ours, peer) = UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    peer.set_nonblocking(true).unwrap();
    let offloads = Arc::new(AtomicU32::new(u32::MAX));
    let backend = SocketBackend {
        sock: ours,
        offloads: offloads.clone(),
    };
    let mut net = Net::new(NetSpec {
        backend: Box::new(backend),
        mac: MacAddr([2, 0xfc, 0, 0, 0, 1]),
        rx_rate_limiter: RateLimiter::unlimited().unwrap(),
        tx_rate_limiter: RateLimiter::unlimited().unwrap(),
        service,
    })
    .unwrap();
    let (rx, tx, irq) = activate(&mut net, &mem, acked);
    Fixture {
        mem,
        net,
        rx,
        tx,
        peer,
        irq,
        offloads,
    }
}

/// Activates `net` with `acked` (and VERSION_1) on two fresh rings of `RING_SIZE`; the rings
/// and the interrupt's eventfd.
pub(super) fn activate(
    net: &mut Net,
    mem: &GuestMemoryMmap,
    acked: u64,
) -> (TestRing, TestRing, EventFd) {
    let rx = TestRing::new(mem, 0, RING_SIZE);
    let tx = TestRing::new(mem, 0x1000, RING_SIZE);
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let interrupt = Arc::new(MmioInterrupt::new(EventFdTrigger::new(
        irq.try_clone().unwrap(),
    )));
    net.activate(ActiveQueues {
        mem: mem.clone(),
        queues: vec![rx.queue(false), tx.queue(false)],
        acked_features: features::VERSION_1 | acked,
        interrupt,
    })
    .unwrap();
    (rx, tx, irq)
}

/// A frame with a zero header and `len - 12` bytes of a pattern seeded by `seed`.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    for (i, b) in f.iter_mut().enumerate().skip(VNET_HDR_LEN) {
        *b = seed.wrapping_add(i as u8);
    }
    f
}

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

fn peer_frames(peer: &UnixDatagram) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70000];
    while let Ok(n) = peer.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

#[test]
fn test_net_tx_gathers_chain_into_one_frame() {
    let mut f = fixture(0);
    let data = frame(72, 7);
    f.mem.write_slice(&data[..12], GuestAddress(BUFS)).unwrap();
    f.mem
        .write_slice(&data[12..], GuestAddress(BUFS + 0x100))
        .unwrap();
    let head = f.tx.post(&f.mem, &[(BUFS, 12, 0), (BUFS + 0x100, 60, 0)]);
    f.net.process_tx();
    assert_eq!(peer_frames(&f.peer), vec![data]);
    assert_eq!(f.tx.take_used(&f.mem), vec![(u32::from(head), 0)]);
    assert_eq!(f.irq.read().unwrap(), 1);
    let m = f.net.metrics();
    assert_eq!(m.tx_packets.load(Ordering::Relaxed), 1);
    assert_eq!(m.tx_bytes.load(Ordering::Relaxed), 60);
}

#[test]
fn test_net_tx_hostile_chains_dropped_and_device_keeps_serving() {
    let mut f = fixture(0);
    let good = frame(60, 1);
    f.mem.write_slice(&good, GuestAddress(BUFS)).unwrap();
    // Device-writable buffer, too long, outside memory, shorter than header + Ethernet.
    f.tx.post(&f.mem, &[(BUFS, 60, WRITE)]);
    f.tx.post(&f.mem, &[(BUFS, 70_000, 0)]);
    f.tx.post(&f.mem, &[(0xffff_0000, 60, 0)]);
    f.tx.post(&f.mem, &[(BUFS, 20, 0)]);
    // A chain that loops on itself.
    let head = f.tx.post(&f.mem, &[(BUFS, 60, 0)]);
    f.tx.write_desc(&f.mem, head, BUFS, 60, 1, head);
    f.tx.post(&f.mem, &[(BUFS, 60, 0)]);
    f.net.process_tx();
    assert_eq!(peer_frames(&f.peer), vec![good]);
    assert_eq!(f.tx.take_used(&f.mem).len(), 6, "every chain is returned");
    let m = f.net.metrics();
    assert_eq!(m.tx_dropped.load(Ordering::Relaxed), 5);
    assert_eq!(
        m.bad_chains.load(Ordering::Relaxed),
        4,
        "too long is not a bad chain"
    );
    assert_eq!(m.tx_packets.load(Ordering::Relaxed), 1);
}

#[test]
fn test_net_tx_corrupt_avail_index_stops_queue_until_reset() {
    let mut f = fixture(0);
    f.mem
        .write_slice(&frame(60, 1), GuestAddress(BUFS))
        .unwrap();
    f.tx.set_avail_idx(&f.mem, 1000);
    f.net.process_tx();
    f.net.process_tx();
    assert!(peer_frames(&f.peer).is_empty());
    assert_eq!(f.net.metrics().bad_chains.load(Ordering::Relaxed), 1);
    f.net.reset();
    let mut tx = TestRing::new(&f.mem, 0x1000, RING_SIZE);
    f.net
        .activate(ActiveQueues {
            mem: f.mem.clone(),
            queues: vec![f.rx.queue(false), tx.queue(false)],
            acked_features: features::VERSION_1,
            interrupt: Arc::new(MmioInterrupt::new(EventFdTrigger::new(
                f.irq.try_clone().unwrap(),
            ))),
        })
        .unwrap();
    tx.post(&f.mem, &[(BUFS, 60, 0)]);
    f.net.process_tx();
    assert_eq!(peer_frames(&f.peer).len(), 1);
}

#[test]
fn test_net_rx_frame_fills_one_buffer_with_num_buffers_one() {
    let mut f = fixture(0);
    let head = f.rx.post(&f.mem, &[(BUFS, 2048, WRITE)]);
    let data = frame(100, 3);
    f.peer.send(&data).unwrap();
    f.net.process_rx();
    assert_eq!(f.rx.take_used(&f.mem), vec![(u32::from(head), 100)]);
    let mut want = data.clone();
    want[10] = 1;
    assert_eq!(read(&f.mem, BUFS, 100), want);
    assert_eq!(f.irq.read().unwrap(), 1);
    let m = f.net.metrics();
    assert_eq!(m.rx_packets.load(Ordering::Relaxed), 1);
    assert_eq!(m.rx_bytes.load(Ordering::Relaxed), 88);
}

#[test]
fn test_net_rx_mergeable_frame_spans_buffers() {
    let mut f = fixture(feature::MRG_RXBUF);
    let heads: Vec<u16> = (0..5)
        .map(|i| f.rx.post(&f.mem, &[(BUFS + i * 0x1000, 100, WRITE)]))
        .collect();
    let data = frame(250, 9);
    f.peer.send(&data).unwrap();
    f.net.process_rx();
    let used = f.rx.take_used(&f.mem);
    assert_eq!(
        used,
        vec![
            (u32::from(heads[0]), 100),
            (u32::from(heads[1]), 100),
            (u32::from(heads[2]), 50)
        ]
    );
    let mut got = read(&f.mem, BUFS, 100);
    got.extend(read(&f.mem, BUFS + 0x1000, 100));
    got.extend(read(&f.mem, BUFS + 0x2000, 50));
    let mut want = data;
    want[10] = 3;
    assert_eq!(got, want);
}

#[test]
fn test_net_rx_waits_for_buffers_then_delivers_in_order() {
    let mut f = fixture(0);
    f.peer.send(&frame(60, 1)).unwrap();
    f.peer.send(&frame(61, 2)).unwrap();
    f.net.process_rx();
    assert!(
        !f.net.wants_backend(),
        "a waiting frame takes the TAP off the loop"
    );
    assert_eq!(f.net.metrics().rx_buffer_waits.load(Ordering::Relaxed), 1);
    f.net.process_rx();
    assert_eq!(f.net.metrics().rx_buffer_waits.load(Ordering::Relaxed), 1);
    f.rx.post(&f.mem, &[(BUFS, 2048, WRITE)]);
    f.rx.post(&f.mem, &[(BUFS + 0x1000, 2048, WRITE)]);
    f.net.process_rx();
    let used = f.rx.take_used(&f.mem);
    assert_eq!(used.iter().map(|u| u.1).collect::<Vec<_>>(), [60, 61]);
    assert!(f.net.wants_backend());
    assert_eq!(f.net.metrics().rx_dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn test_net_rx_frame_larger_than_buffer_dropped_buffer_kept() {
    let mut f = fixture(0);
    let head = f.rx.post(&f.mem, &[(BUFS, 64, WRITE)]);
    f.peer.send(&frame(100, 1)).unwrap();
    f.peer.send(&frame(40, 2)).unwrap();
    f.net.process_rx();
    assert_eq!(f.rx.take_used(&f.mem), vec![(u32::from(head), 40)]);
    assert_eq!(f.net.metrics().rx_dropped.load(Ordering::Relaxed), 1);
}

#[test]
fn test_net_rx_unusable_buffers_returned_empty() {
    let mut f = fixture(0);
    let readable = f.rx.post(&f.mem, &[(BUFS, 2048, 0)]);
    let tiny = f.rx.post(&f.mem, &[(BUFS, 8, WRITE)]);
    let outside = f.rx.post(&f.mem, &[(0xfff_0000, 2048, WRITE)]);
    let good = f.rx.post(&f.mem, &[(BUFS, 2048, WRITE)]);
    f.peer.send(&frame(60, 1)).unwrap();
    f.net.process_rx();
    let used = f.rx.take_used(&f.mem);
    assert_eq!(
        used,
        vec![
            (u32::from(readable), 0),
            (u32::from(tiny), 0),
            (u32::from(outside), 0),
            (u32::from(good), 60)
        ]
    );
    assert_eq!(f.net.metrics().bad_chains.load(Ordering::Relaxed), 3);
}

#[test]
fn test_net_rx_mergeable_frame_no_full_queue_can_hold_dropped() {
    let mut f = fixture(feature::MRG_RXBUF);
    for i in 0..u64::from(RING_SIZE) {
        f.rx.post(&f.mem, &[(BUFS + i * 0x100, 16, WRITE)]);
    }
    f.peer.send(&frame(1000, 1)).unwrap();
    f.peer.send(&frame(60, 2)).unwrap();
    f.net.process_rx();
    let used = f.rx.take_used(&f.mem);
    assert_eq!(
        used.iter().map(|u| u.1).collect::<Vec<_>>(),
        [16, 16, 16, 12]
    );
    assert_eq!(f.net.metrics().rx_dropped.load(Ordering::Relaxed), 1);
}

#[test]
fn test_net_rx_reset_drops_waiting_frame() {
    let mut f = fixture(0);
    f.peer.send(&frame(60, 1)).unwrap();
    f.net.process_rx();
    f.net.reset();
    assert!(!f.net.wants_backend());
    assert_eq!(f.net.metrics().rx_dropped.load(Ordering::Relaxed), 1);
}

#[test]
fn test_net_offloads_follow_guest_features() {
    let f = fixture(feature::GUEST_CSUM | feature::GUEST_TSO4 | feature::GUEST_TSO6);
    assert_eq!(
        f.offloads.load(Ordering::SeqCst),
        libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6
    );
    let f = fixture(feature::GUEST_TSO4);
    assert_eq!(
        f.offloads.load(Ordering::SeqCst),
        0,
        "TSO needs checksum offload"
    );
}

#[test]
fn test_net_config_has_mac_and_link_up() {
    let f = fixture(0);
    let mut c = [0u8; 10];
    f.net.read_config(0, &mut c);
    assert_eq!(c, [2, 0xfc, 0, 0, 0, 1, 1, 0, 1, 0]);
}

/// One frame per 10 ms.
fn one_frame_per_10ms() -> Buckets {
    let ops = crate::rate_limiter::BucketSpec {
        size: 1,
        one_time_burst: 0,
        refill_ms: 10,
    };
    (None, Some(ops))
}

#[test]
fn test_net_tx_rate_limited_frame_waits_on_the_queue_for_the_timer() {
    let mut f = fixture(0);
    f.net.set_rate_limits(None, Some(one_frame_per_10ms()));
    let (first, second) = (frame(60, 1), frame(61, 2));
    f.mem.write_slice(&first, GuestAddress(BUFS)).unwrap();
    f.mem
        .write_slice(&second, GuestAddress(BUFS + 0x100))
        .unwrap();
    f.tx.post(&f.mem, &[(BUFS, 60, 0)]);
    f.tx.post(&f.mem, &[(BUFS + 0x100, 61, 0)]);
    f.net.process_tx();
    assert_eq!(peer_frames(&f.peer), vec![first]);
    assert_eq!(
        f.tx.take_used(&f.mem).len(),
        1,
        "the second waits, not returned"
    );
    assert_eq!(f.net.metrics().tx_rate_limited.load(Ordering::Relaxed), 1);
    f.net.process_tx();
    assert!(peer_frames(&f.peer).is_empty(), "nothing before the timer");
    f.net.tx_limiter.on_timer();
    f.net.process_tx();
    assert_eq!(peer_frames(&f.peer), vec![second]);
    assert_eq!(f.tx.take_used(&f.mem).len(), 1);
}

#[test]
fn test_net_rx_rate_limited_frame_waits_with_the_tap_unwatched() {
    let mut f = fixture(0);
    f.net.set_rate_limits(Some(one_frame_per_10ms()), None);
    f.rx.post(&f.mem, &[(BUFS, 2048, WRITE)]);
    f.rx.post(&f.mem, &[(BUFS + 0x1000, 2048, WRITE)]);
    f.peer.send(&frame(60, 1)).unwrap();
    f.peer.send(&frame(61, 2)).unwrap();
    f.net.process_rx();
    assert_eq!(
        f.rx.take_used(&f.mem)
            .iter()
            .map(|u| u.1)
            .collect::<Vec<_>>(),
        [60]
    );
    assert!(
        !f.net.wants_backend(),
        "a limited device does not watch the TAP"
    );
    assert_eq!(f.net.metrics().rx_rate_limited.load(Ordering::Relaxed), 1);
    f.net.rx_limiter.on_timer();
    assert!(!f.net.wants_backend(), "the waiting frame goes first");
    f.net.process_rx();
    assert_eq!(
        f.rx.take_used(&f.mem)
            .iter()
            .map(|u| u.1)
            .collect::<Vec<_>>(),
        [61]
    );
    assert!(f.net.wants_backend());
    assert_eq!(f.net.metrics().rx_dropped.load(Ordering::Relaxed), 0);
}

/// A service that takes the frames of one EtherType and answers each with `copies` frames of
/// its own (the frame with its first byte set to the copy's number).
struct Reflector {
    copies: u8,
    out: VecDeque<Vec<u8>>,
}

/// The local experimental EtherType the reflector takes.
const REFLECTED: [u8; 2] = [0x88, 0xb5];

impl FrameService for Reflector {
    fn offer(&mut self, frame: &[u8]) -> bool {
        if frame[12..14] != REFLECTED {
            return false;
        }
        for i in 0..self.copies {
            let mut answer = frame.to_vec();
            answer[0] = i;
            self.out.push_back(answer);
        }
        true
    }

    fn next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        let frame = self.out.pop_front()?;
        buf[..frame.len()].copy_from_slice(&frame);
        Some(frame.len())
    }

    fn has_frames(&self) -> bool {
        !self.out.is_empty()
    }
}

fn reflected_frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = frame(len, seed);
    f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&REFLECTED);
    f
}

#[test]
fn test_net_service_frames_bypass_the_tap_both_ways() {
    let service = Reflector {
        copies: 2,
        out: VecDeque::new(),
    };
    let mut f = fixture_with(0, Some(Box::new(service)));
    let heads = [
        f.rx.post(&f.mem, &[(BUFS + 0x1000, 2048, WRITE)]),
        f.rx.post(&f.mem, &[(BUFS + 0x2000, 2048, WRITE)]),
    ];
    // One frame for the service, then one for the TAP.
    let mut mine = reflected_frame(80, 5);
    // Offload flags the guest set must not come back: the service's frames are complete.
    mine[0] = 1;
    let other = frame(70, 9);
    f.mem.write_slice(&mine, GuestAddress(BUFS)).unwrap();
    f.mem
        .write_slice(&other, GuestAddress(BUFS + 0x200))
        .unwrap();
    f.tx.post(&f.mem, &[(BUFS, 80, 0)]);
    f.tx.post(&f.mem, &[(BUFS + 0x200, 70, 0)]);
    f.net.process_tx();
    assert_eq!(peer_frames(&f.peer), vec![other], "only the other frame");
    // Both answers arrived in the receive buffers, without the caller asking.
    let used = f.rx.take_used(&f.mem);
    assert_eq!(
        used,
        vec![(u32::from(heads[0]), 80), (u32::from(heads[1]), 80)]
    );
    for (i, addr) in [BUFS + 0x1000, BUFS + 0x2000].into_iter().enumerate() {
        let got = read(&f.mem, addr, 80);
        assert_eq!(
            got[..VNET_HDR_LEN - 2],
            [0; VNET_HDR_LEN - 2],
            "a zero header"
        );
        assert_eq!(got[VNET_HDR_LEN], i as u8);
        assert_eq!(got[VNET_HDR_LEN + 1..], mine[VNET_HDR_LEN + 1..]);
    }
    let m = f.net.metrics();
    assert_eq!(m.service_tx_packets.load(Ordering::Relaxed), 1);
    assert_eq!(m.service_rx_packets.load(Ordering::Relaxed), 2);
    assert_eq!(m.tx_packets.load(Ordering::Relaxed), 1);
    assert_eq!(m.rx_packets.load(Ordering::Relaxed), 2);
}

#[test]
fn test_net_service_answers_wait_for_receive_buffers() {
    let service = Reflector {
        copies: 3,
        out: VecDeque::new(),
    };
    let mut f = fixture_with(0, Some(Box::new(service)));
    f.mem
        .write_slice(&reflected_frame(60, 1), GuestAddress(BUFS))
        .unwrap();
    f.tx.post(&f.mem, &[(BUFS, 60, 0)]);
    f.net.process_tx();
    assert!(f.rx.take_used(&f.mem).is_empty(), "no buffers yet");
    // The guest posts one buffer: one answer; two wait.
    f.rx.post(&f.mem, &[(BUFS + 0x1000, 2048, WRITE)]);
    f.net.process_rx();
    assert_eq!(f.rx.take_used(&f.mem).len(), 1);
    f.rx.post(&f.mem, &[(BUFS + 0x1000, 2048, WRITE)]);
    f.rx.post(&f.mem, &[(BUFS + 0x2000, 2048, WRITE)]);
    f.net.process_rx();
    assert_eq!(f.rx.take_used(&f.mem).len(), 2, "nothing was lost");
    assert_eq!(
        f.net.metrics().service_rx_packets.load(Ordering::Relaxed),
        3
    );
}
