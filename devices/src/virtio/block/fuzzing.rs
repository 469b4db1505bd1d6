//! Drives a block device with arbitrary guest memory, for the fuzz target (`fuzz/`) and the
//! property tests: whatever the bytes, the device must answer or drop each chain, stay inside
//! guest memory, and never panic or loop.

use std::io;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, VolatileSlice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{Block, BlockSpec};
use super::request::DiskBackend;
use super::BlockMetrics;
use crate::virtio::mmio::MmioInterrupt;
use crate::virtio::{features, ActiveQueues, Queue, QueueT, VirtioDevice};
use crate::EventFdTrigger;

/// A disk in memory.
#[derive(Default)]
pub struct MemDisk {
    /// The disk's bytes.
    pub bytes: Vec<u8>,
    /// Flushes seen.
    pub flushes: u32,
    /// Fail every read.
    pub fail: bool,
}

fn range(len: usize, offset: u64, n: usize) -> io::Result<std::ops::Range<usize>> {
    let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    match start.checked_add(n) {
        Some(end) if end <= len => Ok(start..end),
        _ => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

impl DiskBackend for MemDisk {
    fn read_at(&mut self, bufs: &[VolatileSlice<'_>], mut offset: u64) -> io::Result<()> {
        if self.fail {
            return Err(io::Error::other("injected"));
        }
        for b in bufs {
            b.copy_from(&self.bytes[range(self.bytes.len(), offset, b.len())?]);
            offset += b.len() as u64;
        }
        Ok(())
    }
    fn write_at(&mut self, bufs: &[VolatileSlice<'_>], mut offset: u64) -> io::Result<()> {
        for b in bufs {
            let r = range(self.bytes.len(), offset, b.len())?;
            b.copy_to(&mut self.bytes[r]);
            offset += b.len() as u64;
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, true)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        let n = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        let r = range(self.bytes.len(), offset, n)?;
        self.bytes[r].fill(0);
        Ok(())
    }
}

/// Guest memory size of a scenario.
pub const MEM_SIZE: usize = 0x2_0000;
/// Queue layout of a scenario: 16 entries.
pub const QUEUE_SIZE: u16 = 16;
/// Descriptor table address.
pub const DESC_TABLE: u64 = 0;
/// Available ring address.
pub const AVAIL_RING: u64 = 0x1000;
/// Used ring address.
pub const USED_RING: u64 = 0x2000;
/// Sectors of the scenario's disk.
pub const DISK_SECTORS: u64 = 64;

/// A scenario's guest memory, its first bytes `memory`, and a block device on a [`MemDisk`] of
/// [`DISK_SECTORS`] sectors that offers discard.
pub fn scenario(memory: &[u8], read_only: bool) -> (GuestMemoryMmap, Block) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
        .expect("a small anonymous mapping");
    let n = memory.len().min(MEM_SIZE);
    mem.write_slice(&memory[..n], GuestAddress(0))
        .expect("inside the mapping");
    let disk = MemDisk {
        bytes: vec![0x5a; (DISK_SECTORS * 512) as usize],
        ..Default::default()
    };
    let block = Block::new(BlockSpec {
        disk: Box::new(disk),
        size: DISK_SECTORS * 512,
        read_only,
        id: "fuzz".into(),
        discard: true,
        rate_limiter: crate::rate_limiter::RateLimiter::unlimited().expect("a timerfd"),
    })
    .expect("eventfds");
    (mem, block)
}

/// Fills guest memory from `memory` (the descriptor table, the rings and the buffers all come
/// from it), activates a block device on a 16-entry queue and serves it twice. Returns the
/// device's final used index and its counters.
pub fn serve_memory(memory: &[u8], read_only: bool) -> (u16, Arc<BlockMetrics>) {
    let (mem, mut block) = scenario(memory, read_only);
    let mut queue = Queue::new(QUEUE_SIZE).expect("a power of two");
    queue.set_size(QUEUE_SIZE);
    queue.set_desc_table_address(Some(DESC_TABLE as u32), Some(0));
    queue.set_avail_ring_address(Some(AVAIL_RING as u32), Some(0));
    queue.set_used_ring_address(Some(USED_RING as u32), Some(0));
    queue.set_event_idx(memory.first().is_some_and(|b| b & 1 == 1));
    queue.set_ready(true);
    let irq = EventFd::new(EFD_NONBLOCK).expect("an eventfd");
    // The input's first byte also decides whether the driver accepted discard and write-zeroes.
    let mut acked = features::VERSION_1;
    if memory.first().is_some_and(|b| b & 2 == 2) {
        acked |= super::device::feature::DISCARD | super::device::feature::WRITE_ZEROES;
    }
    block
        .activate(ActiveQueues {
            mem: mem.clone(),
            queues: vec![queue],
            acked_features: acked,
            interrupt: Arc::new(MmioInterrupt::new(EventFdTrigger::new(irq))),
        })
        .expect("one queue");
    block.process_queue();
    block.process_queue();
    let used = mem
        .read_obj::<u16>(GuestAddress(USED_RING + 2))
        .expect("inside the mapping");
    (used, block.metrics())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::strategy::descriptor;
    use proptest::prelude::*;
    use std::sync::atomic::Ordering;

    prop_compose! {
        fn header()(kind in prop_oneof![Just(0u32), Just(1), Just(4), Just(8), Just(11),
                                         Just(13), any::<u32>()],
                    sector in prop_oneof![0u64..70, Just(u64::MAX)]) -> [u8; 16] {
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&kind.to_le_bytes());
            h[8..16].copy_from_slice(&sector.to_le_bytes());
            h
        }
    }

    prop_compose! {
        fn scenario()(descs in proptest::collection::vec(descriptor(0x3000, MEM_SIZE as u64), 16),
                      headers in proptest::collection::vec(header(), 64),
                      heads in proptest::collection::vec(0u16..20, 16),
                      avail_idx in prop_oneof![4 => 0u16..17, 1 => any::<u16>()],
                      event_idx in any::<bool>()) -> Vec<u8> {
            let mut m = vec![0u8; MEM_SIZE];
            for (i, d) in descs.iter().enumerate() {
                m[i * 16..i * 16 + 16].copy_from_slice(d);
            }
            let a = AVAIL_RING as usize;
            m[a + 2..a + 4].copy_from_slice(&avail_idx.to_le_bytes());
            for (i, h) in heads.iter().enumerate() {
                m[a + 4 + 2 * i..a + 6 + 2 * i].copy_from_slice(&h.to_le_bytes());
            }
            for (k, h) in headers.iter().enumerate() {
                let at = 0x3000 + k * 0x200;
                m[at..at + 16].copy_from_slice(h);
            }
            m[0] = (m[0] & !1) | u8::from(event_idx);
            m
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn test_block_random_chains_never_panic_or_overrun(m in scenario(), ro in any::<bool>()) {
            let (used, metrics) = serve_memory(&m, ro);
            prop_assert!(used <= 2 * QUEUE_SIZE);
            if ro {
                prop_assert_eq!(metrics.write_count.load(Ordering::Relaxed), 0);
                prop_assert_eq!(metrics.discard_count.load(Ordering::Relaxed), 0);
                prop_assert_eq!(metrics.write_zeroes_count.load(Ordering::Relaxed), 0);
            }
        }
    }

    #[test]
    fn test_block_serve_memory_all_zero_memory_serves_nothing() {
        let (used, metrics) = serve_memory(&[], false);
        assert_eq!(used, 0);
        assert_eq!(metrics.dropped_chains.load(Ordering::Relaxed), 0);
    }
}
