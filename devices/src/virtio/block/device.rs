//! The virtio-blk device: its features and configuration space, and the processing of its one
//! request queue (called from the event loop by `event_handler.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::request::{
    self, DiskBackend, DriveView, Malformed, Outcome, RequestKind, ID_BYTES, MAX_DISCARD_SECTORS,
    MAX_DISCARD_SEGMENTS,
};
use super::BlockMetrics;
use crate::rate_limiter::{BucketSpec, RateLimiter};
use crate::virtio::queue::drain_limited;
use crate::virtio::{
    features, read_config_bytes, ActivateError, ActiveQueues, InterruptKind, VirtioDevice,
};

/// Virtio device type of a block device.
pub const TYPE_BLOCK: u32 = 2;
/// Entries in the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Largest single data buffer the guest should send (VIRTIO_BLK_F_SIZE_MAX).
pub const SIZE_MAX: u32 = 1 << 20;
/// Most data buffers per request (VIRTIO_BLK_F_SEG_MAX): a full queue less header and status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;

/// Block feature bits (virtio 1.2, 5.2.3).
pub mod feature {
    /// `size_max` is valid.
    pub const SIZE_MAX: u64 = 1 << 1;
    /// `seg_max` is valid.
    pub const SEG_MAX: u64 = 1 << 2;
    /// The device is read-only.
    pub const RO: u64 = 1 << 5;
    /// FLUSH is supported.
    pub const FLUSH: u64 = 1 << 9;
    /// DISCARD is supported.
    pub const DISCARD: u64 = 1 << 13;
    /// WRITE_ZEROES is supported.
    pub const WRITE_ZEROES: u64 = 1 << 14;
}

const CONFIG_LEN: usize = 60;

/// What the VMM hands a new block device.
pub struct BlockSpec {
    /// The image.
    pub disk: Box<dyn DiskBackend + Send>,
    /// Image size in bytes (the capacity is the whole sectors in it).
    pub size: u64,
    /// Refuse writes and advertise VIRTIO_BLK_F_RO.
    pub read_only: bool,
    /// The GET_ID string (truncated to 20 bytes).
    pub id: String,
    /// Offer DISCARD and WRITE_ZEROES.
    pub discard: bool,
    /// Limits on bytes and requests per second (an unlimited one limits nothing).
    pub rate_limiter: RateLimiter,
}

/// A virtio-blk device.
pub struct Block {
    pub(super) disk: Box<dyn DiskBackend + Send>,
    pub(super) drive: DriveView,
    features: u64,
    config: [u8; CONFIG_LEN],
    /// Bumped whenever `config` changes.
    config_generation: u32,
    queue_events: Vec<EventFd>,
    pub(super) activate_evt: EventFd,
    pub(super) active: Option<ActiveQueues>,
    /// The driver broke the queue (an impossible available index): stop serving it until reset.
    broken: bool,
    pub(super) metrics: Arc<BlockMetrics>,
    /// The most data one [`Block::process_queue`] moves before it lets the loop serve others.
    drain_bytes: u64,
    /// Bytes and requests per second; its timer brings the device back to a waiting request.
    pub(super) limiter: RateLimiter,
}

/// The most data one pass over the queue moves (a queue's worth of the largest requests would
/// be 16 GiB, seconds of I/O with the event loop held); the rest is served on the next pass.
pub const DRAIN_BYTES: u64 = 32 << 20;

impl Block {
    /// A block device over `spec.disk`.
    pub fn new(spec: BlockSpec) -> std::io::Result<Self> {
        let capacity = spec.size / request::SECTOR_SIZE;
        let mut features = features::VERSION_1
            | features::RING_EVENT_IDX
            | features::RING_INDIRECT_DESC
            | feature::SIZE_MAX
            | feature::SEG_MAX
            | feature::FLUSH;
        if spec.read_only {
            features |= feature::RO;
        } else if spec.discard {
            features |= feature::DISCARD | feature::WRITE_ZEROES;
        }
        let mut id = [0u8; ID_BYTES];
        let n = spec.id.len().min(ID_BYTES);
        id[..n].copy_from_slice(&spec.id.as_bytes()[..n]);
        Ok(Block {
            disk: spec.disk,
            drive: DriveView {
                capacity,
                read_only: spec.read_only,
                // Until the driver accepts them.
                discard: false,
                write_zeroes: false,
                id,
            },
            features,
            config: config_space(capacity),
            config_generation: 0,
            queue_events: vec![EventFd::new(EFD_NONBLOCK)?],
            activate_evt: EventFd::new(EFD_NONBLOCK)?,
            active: None,
            broken: false,
            metrics: Arc::new(BlockMetrics::default()),
            drain_bytes: DRAIN_BYTES,
            limiter: spec.rate_limiter,
        })
    }

    /// Sets new rate limits (Firecracker's drive PATCH with `rate_limiter`).
    pub fn set_rate_limits(&mut self, bandwidth: Option<BucketSpec>, ops: Option<BucketSpec>) {
        self.limiter.update(bandwidth, ops);
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<BlockMetrics> {
        self.metrics.clone()
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.drive.capacity
    }

    /// Swaps the image under a running device (a drive's new path from the API): the capacity
    /// follows the new image and an active driver gets a configuration-change interrupt, on
    /// which Linux rereads the capacity. The features stay as negotiated.
    pub fn replace_disk(&mut self, disk: Box<dyn DiskBackend + Send>, size: u64) {
        self.disk = disk;
        self.drive.capacity = size / request::SECTOR_SIZE;
        self.config = config_space(self.drive.capacity);
        self.config_generation = self.config_generation.wrapping_add(1);
        if let Some(active) = &self.active {
            active.interrupt.trigger(InterruptKind::Config);
        }
    }

    /// Makes every write the device completed durable (a flush from the host's side, for
    /// snapshots of a paused VM's disk).
    pub fn flush_disk(&mut self) -> std::io::Result<()> {
        self.disk.flush()
    }

    /// Serves every request the driver made available, then interrupts the guest if the
    /// driver asked for it. Takes at most a queue's worth per call and asks to be called again
    /// (through the queue eventfd) if more remain, so one busy guest cannot starve the loop.
    pub fn process_queue(&mut self) {
        if self.broken {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if self.limiter.is_blocked() {
            // The limiter's timer calls again.
            return;
        }
        let mem = &active.mem;
        let (disk, drive, metrics) = (&mut self.disk, &self.drive, &self.metrics);
        let limiter = &mut self.limiter;
        let drained = drain_limited(&mut active.queues[0], mem, self.drain_bytes, |chain| {
            serve(chain, mem, disk.as_mut(), drive, metrics, limiter)
        });
        if drained.throttled {
            self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        if drained.more {
            // Come back after the loop has served everything else.
            let _ = self.queue_events[0].write(1);
        }
        if drained.notify {
            self.metrics.interrupts.fetch_add(1, Ordering::Relaxed);
            active.interrupt.trigger(InterruptKind::Queue(0));
        }
        if drained.broken {
            log::debug!("virtio-blk: the driver corrupted the request queue; stopped until reset");
            self.metrics.dropped_chains.fetch_add(1, Ordering::Relaxed);
            self.broken = true;
        }
    }
}

/// Serves one chain; returns the used length (bytes written to the guest's buffers) and the
/// data bytes it moved, or `None` when `limiter` makes the request wait.
fn serve(
    chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    disk: &mut dyn DiskBackend,
    drive: &DriveView,
    metrics: &BlockMetrics,
    limiter: &mut RateLimiter,
) -> Option<(u32, u64)> {
    let request = match request::parse(chain, drive.capacity) {
        Ok(r) => r,
        Err(Malformed {
            status: None,
            error,
        }) => {
            log::debug!("virtio-blk: dropping chain: {error}");
            metrics.dropped_chains.fetch_add(1, Ordering::Relaxed);
            return Some((0, 0));
        }
        Err(Malformed {
            status: Some(at),
            error,
        }) => {
            log::debug!("virtio-blk: refusing request: {error}");
            metrics.invalid_requests.fetch_add(1, Ordering::Relaxed);
            // `at` was checked to lie in guest memory when the chain was parsed.
            let _ = mem.write_obj(request::status::IOERR, at);
            return Some((1, 0));
        }
    };
    // Every request costs an op; those that move data, their bytes too.
    if !limiter.consume(request.data_len) {
        return None;
    }
    let outcome = request.execute(mem, disk, drive);
    metrics.count(&request, &outcome);
    match &outcome {
        Outcome::Refused(e) => log::debug!("virtio-blk: refusing {:?}: {e}", request.kind),
        Outcome::IoError(kind) => {
            // The image failing is the host's problem and worth seeing, but a guest can repeat
            // the request forever: warn for this drive's first few, then only count.
            crate::warn_guest!(
                nth: metrics.io_errors.load(Ordering::Relaxed),
                "virtio-blk: {:?} failed: {kind}",
                request.kind
            );
        }
        Outcome::Unsupported | Outcome::Ok(_) => {}
    }
    let _ = mem.write_obj(outcome.status(), request.status);
    Some((outcome.data_written() + 1, request.data_len))
}

impl BlockMetrics {
    fn count(&self, request: &request::Request, outcome: &Outcome) {
        let add = |c: &std::sync::atomic::AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        match outcome {
            Outcome::Ok(_) => match request.kind {
                RequestKind::In => {
                    add(&self.read_count, 1);
                    add(&self.read_bytes, request.data_len);
                }
                RequestKind::Out => {
                    add(&self.write_count, 1);
                    add(&self.write_bytes, request.data_len);
                }
                RequestKind::Flush => add(&self.flush_count, 1),
                RequestKind::GetId => add(&self.get_id_count, 1),
                RequestKind::Discard => add(&self.discard_count, 1),
                RequestKind::WriteZeroes => add(&self.write_zeroes_count, 1),
                RequestKind::Unsupported(_) => {}
            },
            Outcome::Unsupported => add(&self.unsupported_requests, 1),
            Outcome::Refused(_) => add(&self.invalid_requests, 1),
            Outcome::IoError(_) => add(&self.io_errors, 1),
        }
    }
}

/// The configuration space (virtio 1.2, 5.2.4), little-endian.
fn config_space(capacity: u64) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    c[0..8].copy_from_slice(&capacity.to_le_bytes());
    c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
    c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
    c[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
    c[40..44].copy_from_slice(&MAX_DISCARD_SEGMENTS.to_le_bytes());
    c[44..48].copy_from_slice(&1u32.to_le_bytes());
    c[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
    c[52..56].copy_from_slice(&MAX_DISCARD_SEGMENTS.to_le_bytes());
    c[56] = 1;
    c
}

impl VirtioDevice for Block {
    fn counters(&self) -> Arc<dyn crate::virtio::Counters> {
        self.metrics.clone()
    }

    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!("virtio-blk: ignoring a config write at {offset:#x}");
    }

    fn config_generation(&self) -> u32 {
        self.config_generation
    }

    fn activate(&mut self, active: ActiveQueues) -> Result<(), ActivateError> {
        if active.queues.len() != 1 {
            return Err(ActivateError::BadState(format!(
                "{} queues for a block device",
                active.queues.len()
            )));
        }
        self.drive.discard = active.acked_features & feature::DISCARD != 0;
        self.drive.write_zeroes = active.acked_features & feature::WRITE_ZEROES != 0;
        self.active = Some(active);
        self.broken = false;
        // Serve anything the driver queued before DRIVER_OK landed.
        self.activate_evt.write(1).map_err(ActivateError::Wake)
    }

    fn queue_states(&self) -> Option<Vec<crate::virtio::QueueState>> {
        crate::virtio::active_queue_states(self.active.as_ref())
    }

    fn reset(&mut self) {
        self.active = None;
        self.broken = false;
        self.drive.discard = false;
        self.drive.write_zeroes = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::block::request::tests::{
        header, queue_with_chain, queue_with_chains, MemDisk, R, W,
    };
    use crate::virtio::block::request::{req_type, status};
    use crate::virtio::mmio::MmioInterrupt;
    use crate::virtio::test_utils::memory;
    use crate::virtio::QueueT;
    use crate::EventFdTrigger;
    use vm_memory::GuestAddress;

    struct Setup {
        block: Block,
        mem: GuestMemoryMmap,
        irq: EventFd,
        interrupt: Arc<MmioInterrupt>,
    }

    fn setup(read_only: bool, descs: &[(u64, u32, u16)]) -> Setup {
        setup_acking(read_only, descs, features::VERSION_1)
    }

    /// A block device whose driver accepted `acked` features.
    fn setup_acking(read_only: bool, descs: &[(u64, u32, u16)], acked: u64) -> Setup {
        let mem = memory();
        let disk = MemDisk {
            bytes: vec![0x5a; 64 * 512],
            ..Default::default()
        };
        let mut block = Block::new(BlockSpec {
            disk: Box::new(disk),
            size: 64 * 512,
            read_only,
            id: "test-disk".into(),
            discard: true,
            rate_limiter: RateLimiter::unlimited().unwrap(),
        })
        .unwrap();
        let queue = queue_with_chain(&mem, descs);
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(MmioInterrupt::new(EventFdTrigger::new(
            irq.try_clone().unwrap(),
        )));
        block
            .activate(ActiveQueues {
                mem: mem.clone(),
                queues: vec![queue],
                acked_features: acked,
                interrupt: interrupt.clone(),
            })
            .unwrap();
        Setup {
            block,
            mem,
            irq,
            interrupt,
        }
    }

    const FLUSH_CHAIN: &[(u64, u32, u16)] = &[(0x4_0000, 16, R), (0x6_0000, 1, W)];

    fn used_len(s: &Setup) -> u32 {
        // MockSplitQueue puts the used ring at 0x3000 for a 16-entry queue at 0; entry 0 at +4.
        let q = &s.block.active.as_ref().unwrap().queues[0];
        s.mem
            .read_obj::<u32>(GuestAddress(q.used_ring() + 8))
            .unwrap()
    }

    fn used_idx(s: &Setup) -> u16 {
        let q = &s.block.active.as_ref().unwrap().queues[0];
        s.mem
            .read_obj::<u16>(GuestAddress(q.used_ring() + 2))
            .unwrap()
    }

    #[test]
    fn test_block_read_completes_with_status_and_interrupt() {
        let mut s = setup(
            false,
            &[(0x4_0000, 16, R), (0x5_0000, 512, W), (0x6_0000, 1, W)],
        );
        header(&s.mem, 0x4_0000, req_type::IN, 0);
        s.mem.write_obj(0xffu8, GuestAddress(0x6_0000)).unwrap();
        s.block.process_queue();
        assert_eq!(used_idx(&s), 1);
        assert_eq!(used_len(&s), 513);
        assert_eq!(
            s.mem.read_obj::<u8>(GuestAddress(0x6_0000)).unwrap(),
            status::OK
        );
        assert_eq!(s.mem.read_obj::<u8>(GuestAddress(0x5_0000)).unwrap(), 0x5a);
        assert_eq!(s.irq.read().unwrap(), 1);
        assert_eq!(s.block.metrics.read_count.load(Ordering::Relaxed), 1);
        assert_eq!(s.block.metrics.read_bytes.load(Ordering::Relaxed), 512);
    }

    /// DISCARD is carried out only when the driver accepted it at activation: offered is not
    /// enough.
    #[test]
    fn test_block_discard_needs_the_feature_accepted() {
        let chain = &[(0x4_0000, 16, R), (0x5_0000, 16, R), (0x6_0000, 1, W)];
        for (acked, want) in [
            (features::VERSION_1, status::UNSUPP),
            (features::VERSION_1 | feature::DISCARD, status::OK),
        ] {
            let mut s = setup_acking(false, chain, acked);
            header(&s.mem, 0x4_0000, req_type::DISCARD, 0);
            let mut segment = [0u8; 16];
            segment[0..8].copy_from_slice(&2u64.to_le_bytes());
            segment[8..12].copy_from_slice(&1u32.to_le_bytes());
            s.mem.write_slice(&segment, GuestAddress(0x5_0000)).unwrap();
            s.block.process_queue();
            assert_eq!(used_idx(&s), 1);
            let got = s.mem.read_obj::<u8>(GuestAddress(0x6_0000)).unwrap();
            assert_eq!(got, want, "acked {acked:#x}");
        }
    }

    /// A device with two reads of 512 bytes queued, each chain header, data, status.
    fn two_reads() -> Setup {
        let first = [(0x4_0000, 16, R), (0x5_0000, 512, W), (0x6_0000, 1, W)];
        let second = [(0x4_1000, 16, R), (0x5_1000, 512, W), (0x6_1000, 1, W)];
        let mut s = setup(false, &[]);
        s.block.active.as_mut().unwrap().queues[0] = queue_with_chains(&s.mem, &[&first, &second]);
        for i in 0..2u64 {
            header(&s.mem, 0x4_0000 + i * 0x1000, req_type::IN, i);
        }
        s
    }

    /// One pass moves at most the byte budget, then asks to be called again (its queue event
    /// signalled) and the next pass serves the rest.
    #[test]
    fn test_block_pass_stops_at_its_byte_budget_and_comes_back() {
        let mut s = two_reads();
        s.block.drain_bytes = 512;
        let _ = s.block.queue_events[0].read();
        s.block.process_queue();
        assert_eq!(used_idx(&s), 1, "the first pass stops after 512 bytes");
        assert_eq!(s.block.queue_events[0].read().unwrap(), 1, "and comes back");
        s.block.process_queue();
        assert_eq!(used_idx(&s), 2, "the second pass serves the rest");
    }

    /// A request the rate limiter has no tokens for waits on the queue, not served and not
    /// lost, until the limiter's timer lets it go.
    #[test]
    fn test_block_rate_limited_request_waits_for_the_timer() {
        let mut s = two_reads();
        // One request per 10 ms.
        let ops = BucketSpec {
            size: 1,
            one_time_burst: 0,
            refill_ms: 10,
        };
        s.block.set_rate_limits(None, Some(ops));
        s.block.process_queue();
        assert_eq!(used_idx(&s), 1, "the second request waits");
        assert_eq!(s.block.metrics.rate_limited.load(Ordering::Relaxed), 1);
        s.block.process_queue();
        assert_eq!(used_idx(&s), 1, "still waiting: the timer has not fired");
        // What the event loop does when the timer fires (on_timer waits for it here).
        s.block.limiter.on_timer();
        s.block.process_queue();
        assert_eq!(used_idx(&s), 2, "served once the tokens are back");
        assert_eq!(s.block.metrics.read_count.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn test_block_replace_disk_updates_capacity_and_signals_config_change() {
        let mut s = setup(false, &[]);
        let disk = MemDisk {
            bytes: vec![0; 128 * 512],
            ..Default::default()
        };
        s.block.replace_disk(Box::new(disk), 128 * 512);
        let mut capacity = [0u8; 8];
        s.block.read_config(0, &mut capacity);
        assert_eq!(u64::from_le_bytes(capacity), 128);
        assert_eq!(s.irq.read().unwrap(), 1);
        assert_eq!(
            s.interrupt.status(),
            crate::virtio::interrupt::CONFIG_CHANGE
        );
        assert_eq!(s.block.config_generation(), 1);
    }

    #[test]
    fn test_block_bad_request_gets_ioerr_and_is_counted() {
        let mut s = setup(
            false,
            &[(0x4_0000, 16, R), (0x5_0000, 100, W), (0x6_0000, 1, W)],
        );
        header(&s.mem, 0x4_0000, req_type::IN, 0);
        s.block.process_queue();
        assert_eq!(used_idx(&s), 1);
        assert_eq!(used_len(&s), 1);
        assert_eq!(
            s.mem.read_obj::<u8>(GuestAddress(0x6_0000)).unwrap(),
            status::IOERR
        );
        assert_eq!(s.block.metrics.invalid_requests.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn test_block_chain_without_status_returned_unused() {
        let mut s = setup(false, &[(0x4_0000, 16, R), (0x5_0000, 512, R)]);
        header(&s.mem, 0x4_0000, req_type::OUT, 0);
        s.block.process_queue();
        assert_eq!(used_idx(&s), 1);
        assert_eq!(used_len(&s), 0);
        assert_eq!(s.block.metrics.dropped_chains.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn test_block_read_only_write_refused() {
        let mut s = setup(
            true,
            &[(0x4_0000, 16, R), (0x5_0000, 512, R), (0x6_0000, 1, W)],
        );
        header(&s.mem, 0x4_0000, req_type::OUT, 0);
        s.block.process_queue();
        assert_eq!(
            s.mem.read_obj::<u8>(GuestAddress(0x6_0000)).unwrap(),
            status::IOERR
        );
        assert_eq!(s.block.metrics.write_count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn test_block_impossible_avail_index_stops_queue_without_spinning() {
        let mut s = setup(false, &[(0x4_0000, 16, R), (0x6_0000, 1, W)]);
        let avail = s.block.active.as_ref().unwrap().queues[0].avail_ring();
        s.mem.write_obj(500u16, GuestAddress(avail + 2)).unwrap();
        s.block.process_queue();
        s.block.process_queue();
        assert_eq!(used_idx(&s), 0);
        assert!(s.block.broken);
        s.block.reset();
        assert!(!s.block.broken);
    }

    #[test]
    fn test_block_head_index_past_queue_dropped_once() {
        let mut s = setup(false, FLUSH_CHAIN);
        let avail = s.block.active.as_ref().unwrap().queues[0].avail_ring();
        s.mem.write_obj(200u16, GuestAddress(avail + 4)).unwrap();
        s.block.process_queue();
        assert_eq!(used_idx(&s), 0);
        assert_eq!(s.block.metrics.dropped_chains.load(Ordering::Relaxed), 1);
        assert!(!s.block.broken);
    }

    #[test]
    fn test_block_features_follow_read_only() {
        let s = setup(true, FLUSH_CHAIN);
        assert_ne!(s.block.features() & feature::RO, 0);
        assert_eq!(s.block.features() & feature::DISCARD, 0);
        let rw = setup(false, FLUSH_CHAIN);
        assert_eq!(rw.block.features() & feature::RO, 0);
        assert_ne!(rw.block.features() & feature::WRITE_ZEROES, 0);
    }

    #[test]
    fn test_block_config_reports_capacity_and_seg_max() {
        let s = setup(false, FLUSH_CHAIN);
        let mut cap = [0u8; 8];
        s.block.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 64);
        let mut seg = [0u8; 4];
        s.block.read_config(12, &mut seg);
        assert_eq!(u32::from_le_bytes(seg), SEG_MAX);
    }

    #[test]
    fn test_block_reset_stops_serving() {
        let mut s = setup(false, &[(0x4_0000, 16, R), (0x6_0000, 1, W)]);
        header(&s.mem, 0x4_0000, req_type::FLUSH, 0);
        s.block.reset();
        s.block.process_queue();
        assert!(s.block.active.is_none());
    }
}
