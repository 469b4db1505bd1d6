//! Drives a vsock device with arbitrary guest memory, for the fuzz target (`fuzz/`) and the
//! property tests: whatever the rings and the packets in them say, the device must use or
//! return each chain, stay inside guest memory, keep what waits bounded, and never panic or
//! loop. A host program listens at `<uds_path>_5000`, so requests to port 5000 connect.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::Vsock;
use super::metrics::VsockMetrics;
use super::muxer::Muxer;
use crate::virtio::mmio::MmioInterrupt;
use crate::virtio::{features, ActiveQueues, Queue, VirtioDevice};
use crate::EventFdTrigger;

/// Guest memory size of a scenario.
pub const MEM_SIZE: usize = 0x2_0000;
/// Entries in each queue of a scenario.
pub const QUEUE_SIZE: u16 = 16;
/// Receive, transmit and event queues: descriptor table, available ring, used ring.
pub const RINGS: [[u64; 3]; 3] = [
    [0, 0x1000, 0x2000],
    [0x3000, 0x4000, 0x5000],
    [0x6000, 0x7000, 0x7800],
];
/// Where a scenario's buffers start.
pub const BUFFERS: u64 = 0x8000;
/// The guest's CID in a scenario.
pub const CID: u64 = 3;

fn queue(rings: [u64; 3], event_idx: bool) -> Queue {
    crate::virtio::queue::fuzzing_queue(rings, QUEUE_SIZE, event_idx)
}

/// Fills guest memory from `memory`, makes a device whose sockets live in `dir`, activates
/// it (event indices by the first byte's lowest bit) and serves its queues three times.
/// Returns the final used indices of the receive and transmit queues and its counters.
pub fn serve_memory(memory: &[u8], dir: &Path) -> (u16, u16, Arc<VsockMetrics>) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
        .expect("a small anonymous mapping");
    let n = memory.len().min(MEM_SIZE);
    mem.write_slice(&memory[..n], GuestAddress(0))
        .expect("inside the mapping");
    let uds = dir.join("v.sock");
    let _host = UnixListener::bind(dir.join("v.sock_5000")).expect("a listener");
    let muxer = Muxer::bind(&uds, CID).expect("a listener");
    let mut dev = Vsock::new(CID, muxer).expect("eventfds");
    let event_idx = memory.first().is_some_and(|b| b & 1 != 0);
    let irq = EventFd::new(EFD_NONBLOCK).expect("an eventfd");
    dev.activate(ActiveQueues {
        mem: mem.clone(),
        queues: RINGS.iter().map(|r| queue(*r, event_idx)).collect(),
        acked_features: features::VERSION_1,
        interrupt: Arc::new(MmioInterrupt::new(EventFdTrigger::new(irq))),
    })
    .expect("three queues");
    for _ in 0..3 {
        dev.process_tx();
        dev.process_rx();
    }
    let used = |rings: [u64; 3]| {
        mem.read_obj::<u16>(GuestAddress(rings[2] + 2))
            .expect("inside the mapping")
    };
    (used(RINGS[0]), used(RINGS[1]), dev.metrics())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::strategy;
    use crate::virtio::vsock::packet::{Header, HDR_LEN};
    use proptest::prelude::*;
    use std::sync::atomic::Ordering;

    fn ring(rings: [u64; 3]) -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
        strategy::ring(rings, BUFFERS, MEM_SIZE as u64)
    }

    prop_compose! {
        /// A header a guest might send: mostly plausible addresses and operations, lengths
        /// anywhere.
        fn header()(src_cid in prop_oneof![4 => Just(CID), 1 => any::<u64>()],
                    dst_cid in prop_oneof![4 => Just(2u64), 1 => any::<u64>()],
                    src_port in 0u32..4, dst_port in prop_oneof![Just(5000u32), Just(7u32)],
                    len in prop_oneof![0u32..64, Just(4096), any::<u32>()],
                    kind in prop_oneof![4 => Just(1u16), 1 => any::<u16>()],
                    op in 0u16..9, flags in 0u32..4, buf_alloc in any::<u32>(), fwd_cnt in any::<u32>())
            -> [u8; HDR_LEN] {
            Header { src_cid, dst_cid, src_port, dst_port, len, kind, op, flags, buf_alloc, fwd_cnt }
                .to_bytes()
        }
    }

    prop_compose! {
        fn scenario()(rx in ring(RINGS[0]), tx in ring(RINGS[1]),
                      headers in proptest::collection::vec(header(), 64), flags in 0u8..2)
            -> Vec<u8> {
            let mut m = vec![0u8; MEM_SIZE];
            // Headers wherever a buffer may start.
            for (k, h) in headers.iter().enumerate() {
                let at = BUFFERS as usize + k * 0x200;
                m[at..at + HDR_LEN].copy_from_slice(h);
            }
            for (at, bytes) in rx.iter().chain(tx.iter()) {
                let at = *at as usize;
                m[at..at + bytes.len()].copy_from_slice(bytes);
            }
            m[0] = (m[0] & !1) | flags;
            m
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn test_vsock_random_rings_never_panic_or_overrun(m in scenario()) {
            let dir = tempfile::tempdir().unwrap();
            let (rx_used, tx_used, metrics) = serve_memory(&m, dir.path());
            let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            prop_assert!(rx_used <= 3 * QUEUE_SIZE);
            prop_assert!(tx_used <= 3 * QUEUE_SIZE);
            prop_assert!(get(&metrics.conns_added) <= u64::from(tx_used));
        }
    }

    #[test]
    fn test_vsock_serve_memory_all_zero_memory_moves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (rx_used, tx_used, metrics) = serve_memory(&[], dir.path());
        assert_eq!((rx_used, tx_used), (0, 0));
        assert_eq!(metrics.tx_packets.load(Ordering::Relaxed), 0);
    }
}
