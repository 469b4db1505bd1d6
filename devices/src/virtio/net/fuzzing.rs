//! Drives a network device with arbitrary guest memory and frames, for the fuzz target
//! (`fuzz/`) and the property tests: whatever the rings say, the device must use or return
//! each chain, stay inside guest memory, and never panic or loop.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{feature, Net, NetSpec};
use super::{MacAddr, NetBackend, NetMetrics};
use crate::virtio::mmio::MmioInterrupt;
use crate::virtio::{features, ActiveQueues, Queue, VirtioDevice};
use crate::EventFdTrigger;

/// A TAP stand-in: one end of a datagram socket pair (frame boundaries kept, as a TAP does).
pub struct SocketTap(pub UnixDatagram);

impl AsRawFd for SocketTap {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl NetBackend for SocketTap {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf)
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.0.send(frame)
    }
    fn set_offload(&mut self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
}

/// Guest memory size of a scenario.
pub const MEM_SIZE: usize = 0x2_0000;
/// Entries in each queue of a scenario.
pub const QUEUE_SIZE: u16 = 16;
/// Receive queue: descriptor table, available ring, used ring.
pub const RX_RINGS: [u64; 3] = [0, 0x1000, 0x2000];
/// Transmit queue: descriptor table, available ring, used ring.
pub const TX_RINGS: [u64; 3] = [0x4000, 0x5000, 0x6000];
/// Where a scenario's buffers start.
pub const BUFFERS: u64 = 0x8000;

fn queue(rings: [u64; 3], event_idx: bool) -> Queue {
    crate::virtio::queue::fuzzing_queue(rings, QUEUE_SIZE, event_idx)
}

/// Fills guest memory from `memory` (both queues' rings and every buffer come from it), feeds
/// `frames` to the device's TAP side, activates the device (with mergeable receive buffers and
/// event indices by the first byte's bits) and serves both queues twice. Returns the final
/// used indices of the receive and transmit queues, the frames the device sent, and its
/// counters.
pub fn serve_memory(memory: &[u8], frames: &[Vec<u8>]) -> (u16, u16, usize, Arc<NetMetrics>) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
        .expect("a small anonymous mapping");
    let n = memory.len().min(MEM_SIZE);
    mem.write_slice(&memory[..n], GuestAddress(0))
        .expect("inside the mapping");
    let (ours, theirs) = UnixDatagram::pair().expect("a socket pair");
    ours.set_nonblocking(true).expect("non-blocking");
    theirs.set_nonblocking(true).expect("non-blocking");
    for f in frames {
        let _ = theirs.send(f);
    }
    let mut net = Net::new(NetSpec {
        backend: Box::new(SocketTap(ours)),
        mac: MacAddr([2, 0xfc, 0, 0, 0, 1]),
        rx_rate_limiter: crate::rate_limiter::RateLimiter::unlimited().expect("a timerfd"),
        tx_rate_limiter: crate::rate_limiter::RateLimiter::unlimited().expect("a timerfd"),
        service: None,
    })
    .expect("eventfds");
    let flags = memory.first().copied().unwrap_or(0);
    let mut acked = features::VERSION_1;
    if flags & 2 != 0 {
        acked |= feature::MRG_RXBUF;
    }
    let event_idx = flags & 1 != 0;
    let irq = EventFd::new(EFD_NONBLOCK).expect("an eventfd");
    net.activate(ActiveQueues {
        mem: mem.clone(),
        queues: vec![queue(RX_RINGS, event_idx), queue(TX_RINGS, event_idx)],
        acked_features: acked,
        interrupt: Arc::new(MmioInterrupt::new(EventFdTrigger::new(irq))),
    })
    .expect("two queues");
    for _ in 0..2 {
        net.process_tx();
        net.process_rx();
    }
    let mut sent = 0;
    let mut buf = vec![0u8; 1 << 17];
    while theirs.recv(&mut buf).is_ok() {
        sent += 1;
    }
    let used = |rings: [u64; 3]| {
        mem.read_obj::<u16>(GuestAddress(rings[2] + 2))
            .expect("inside the mapping")
    };
    (used(RX_RINGS), used(TX_RINGS), sent, net.metrics())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::strategy;
    use proptest::prelude::*;
    use std::sync::atomic::Ordering;

    fn ring(rings: [u64; 3]) -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
        strategy::ring(rings, BUFFERS, MEM_SIZE as u64)
    }

    prop_compose! {
        fn scenario()(rx in ring(RX_RINGS), tx in ring(TX_RINGS), flags in 0u8..4)
            -> Vec<u8> {
            let mut m = vec![0u8; MEM_SIZE];
            for (at, bytes) in rx.iter().chain(tx.iter()) {
                let at = *at as usize;
                m[at..at + bytes.len()].copy_from_slice(bytes);
            }
            m[0] = (m[0] & !3) | flags;
            m
        }
    }

    fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let len = prop_oneof![0usize..30, 30usize..2000, Just(65_562), Just(70_000)];
        proptest::collection::vec(len.prop_map(|n| vec![0xa5; n]), 0..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn test_net_random_rings_never_panic_or_overrun(m in scenario(), f in frames()) {
            let (rx_used, tx_used, sent, metrics) = serve_memory(&m, &f);
            let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            prop_assert!(rx_used <= 2 * QUEUE_SIZE);
            prop_assert!(tx_used <= 2 * QUEUE_SIZE);
            prop_assert!(get(&metrics.rx_packets) + get(&metrics.rx_dropped) <= f.len() as u64);
            prop_assert_eq!(get(&metrics.tx_packets), sent as u64);
        }
    }

    #[test]
    fn test_net_serve_memory_all_zero_memory_moves_nothing() {
        let (rx_used, tx_used, sent, metrics) = serve_memory(&[], &[vec![0; 60]]);
        assert_eq!((rx_used, tx_used, sent), (0, 0, 0));
        assert_eq!(metrics.rx_buffer_waits.load(Ordering::Relaxed), 1);
    }
}
