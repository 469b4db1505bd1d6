//! virtio-rng (virtio 1.2, 5.4): the guest's entropy device. Each chain the driver posts is a
//! set of device-writable buffers; the device fills them from the host kernel's random source
//! (`getrandom(2)`) and returns them. Firecracker's `PUT /entropy` adds it, optionally with a
//! rate limiter on bytes and requests.
//!
//! The random bytes come from a [`RandomSource`] the VMM gives (the host's `getrandom(2)`).
//!
//! A chain is filled up to [`MAX_REQUEST`] bytes (the driver asks for what it wants; Linux asks
//! 64 bytes at a time). A chain with a device-readable buffer, or one outside guest memory, is
//! returned unused; a broken queue stops the device until the driver resets it.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::rate_limiter::{Buckets, RateLimiter};
use crate::virtio::chain::{check_in_memory, collect};
use crate::virtio::queue::drain_limited;
use crate::virtio::{features, ActivateError, ActiveQueues, InterruptKind, VirtioDevice};

/// Virtio device type of an entropy device.
pub const TYPE_RNG: u32 = 4;
/// Entries in its queue.
pub const QUEUE_SIZE: u16 = 256;
/// The most bytes one chain is given.
pub const MAX_REQUEST: u32 = 64 * 1024;
/// Bytes filled per wake-up before the event loop serves others.
const DRAIN_BYTES: u64 = 1 << 20;

const PROCESS_ACTIVATE: u32 = 0;
const PROCESS_QUEUE: u32 = 1;
const PROCESS_RATE_LIMITER: u32 = 2;

/// What an entropy device counts.
#[derive(Debug, Default, serde::Serialize)]
pub struct RngMetrics {
    /// Chains filled.
    pub requests: AtomicU64,
    /// Random bytes given to the guest.
    pub bytes: AtomicU64,
    /// Chains returned unused: broken, outside memory, device-readable.
    pub bad_chains: AtomicU64,
    /// Times the host's random source failed.
    pub errors: AtomicU64,
    /// Times a request waited for the rate limiter.
    pub rate_limited: AtomicU64,
    /// Queue notifications from the guest.
    pub notifications: AtomicU64,
    /// Interrupts raised.
    pub interrupts: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Where the device's bytes come from: fills the buffer or fails.
pub type RandomSource = Box<dyn FnMut(&mut [u8]) -> std::io::Result<()> + Send>;

/// A virtio-rng device.
pub struct Rng {
    source: RandomSource,
    queue_events: Vec<EventFd>,
    activate_evt: EventFd,
    active: Option<ActiveQueues>,
    broken: bool,
    limiter: RateLimiter,
    buf: Vec<u8>,
    metrics: Arc<RngMetrics>,
}

impl Rng {
    /// An entropy device giving bytes from `source`, its requests paced by `limiter`.
    pub fn new(source: RandomSource, limiter: RateLimiter) -> std::io::Result<Self> {
        Ok(Rng {
            source,
            queue_events: vec![EventFd::new(EFD_NONBLOCK)?],
            activate_evt: EventFd::new(EFD_NONBLOCK)?,
            active: None,
            broken: false,
            limiter,
            buf: vec![0; MAX_REQUEST as usize],
            metrics: Arc::new(RngMetrics::default()),
        })
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<RngMetrics> {
        self.metrics.clone()
    }

    /// New limits (`None`: as they are).
    pub fn set_rate_limits(&mut self, buckets: Option<Buckets>) {
        if let Some((bandwidth, ops)) = buckets {
            self.limiter.update(bandwidth, ops);
        }
    }

    /// Fills the chains the driver posted.
    pub fn process_queue(&mut self) {
        if self.broken || self.limiter.is_blocked() {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let (buf, limiter, metrics) = (&mut self.buf, &mut self.limiter, &self.metrics);
        let source = &mut self.source;
        let drained = drain_limited(&mut active.queues[0], mem, DRAIN_BYTES, |chain| {
            fill(chain, mem, (buf, source), limiter, metrics)
        });
        if drained.throttled {
            add(&metrics.rate_limited, 1);
        }
        if drained.more {
            let _ = self.queue_events[0].write(1);
        }
        if drained.notify {
            add(&metrics.interrupts, 1);
            active.interrupt.trigger(InterruptKind::Queue(0));
        }
        if drained.broken {
            log::debug!("virtio-rng: the driver corrupted the queue; stopped until reset");
            add(&metrics.bad_chains, 1);
            self.broken = true;
        }
    }
}

/// Fills one chain; its used length and the bytes moved, or `None` to wait for the limiter.
fn fill(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    (buf, source): (&mut [u8], &mut RandomSource),
    limiter: &mut RateLimiter,
    metrics: &RngMetrics,
) -> Option<(u32, u64)> {
    let bad = || {
        add(&metrics.bad_chains, 1);
        Some((0, 0))
    };
    let Ok(descs) = collect(chain, usize::from(QUEUE_SIZE)) else {
        return bad();
    };
    let mut wanted = 0u32;
    for d in &descs {
        if !d.is_write_only() || check_in_memory(mem, d.addr(), d.len().into()).is_err() {
            return bad();
        }
        wanted = wanted.saturating_add(d.len()).min(MAX_REQUEST);
    }
    if !limiter.consume(u64::from(wanted)) {
        return None;
    }
    let buf = &mut buf[..wanted as usize];
    if let Err(e) = source(buf) {
        crate::warn_guest!(
            nth: metrics.errors.load(Ordering::Relaxed),
            "virtio-rng: the host's random source failed: {e}"
        );
        add(&metrics.errors, 1);
        return Some((0, 0));
    }
    let mut written = 0usize;
    for d in &descs {
        let n = (d.len() as usize).min(buf.len() - written);
        if n == 0 {
            break;
        }
        if mem
            .write_slice(&buf[written..written + n], d.addr())
            .is_err()
        {
            break;
        }
        written += n;
    }
    add(&metrics.requests, 1);
    add(&metrics.bytes, written as u64);
    Some((written as u32, written as u64))
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }

    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_EVENT_IDX | features::RING_INDIRECT_DESC
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    /// It has no configuration space.
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!("virtio-rng: ignoring a config write at {offset:#x}");
    }

    fn activate(&mut self, active: ActiveQueues) -> Result<(), ActivateError> {
        if active.queues.len() != 1 {
            return Err(ActivateError::BadState(format!(
                "{} queues for an entropy device",
                active.queues.len()
            )));
        }
        self.active = Some(active);
        self.broken = false;
        self.activate_evt.write(1).map_err(ActivateError::Wake)
    }

    fn reset(&mut self) {
        self.active = None;
        self.broken = false;
    }

    fn queue_states(&self) -> Option<Vec<crate::virtio::QueueState>> {
        crate::virtio::active_queue_states(self.active.as_ref())
    }
}

impl MutEventSubscriber for Rng {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            PROCESS_ACTIVATE => {
                let _ = self.activate_evt.read();
            }
            PROCESS_QUEUE => {
                let _ = self.queue_events[0].read();
                add(&self.metrics.notifications, 1);
            }
            PROCESS_RATE_LIMITER => self.limiter.on_timer(),
            other => {
                log::debug!("virtio-rng: unexpected event {other}");
                return;
            }
        }
        self.process_queue();
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (fd, data) in [
            (self.activate_evt.as_raw_fd(), PROCESS_ACTIVATE),
            (self.queue_events[0].as_raw_fd(), PROCESS_QUEUE),
            (self.limiter.as_raw_fd(), PROCESS_RATE_LIMITER),
        ] {
            if let Err(e) = ops.add(Events::with_data_raw(fd, data, EventSet::IN)) {
                log::error!("virtio-rng: failed to register an event source: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limiter::BucketSpec;
    use crate::virtio::mmio::MmioInterrupt;
    use crate::virtio::test_utils::{memory, TestRing, WRITE};
    use crate::EventFdTrigger;
    use vm_memory::GuestAddress;

    const BUFS: u64 = 0x1_0000;

    fn active(limiter: RateLimiter) -> (Rng, GuestMemoryMmap, TestRing, EventFd) {
        let mem = memory();
        let ring = TestRing::new(&mem, 0, 16);
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut rng = Rng::new(Box::new(getrandom), limiter).unwrap();
        rng.activate(ActiveQueues {
            mem: mem.clone(),
            queues: vec![ring.queue(false)],
            acked_features: features::VERSION_1,
            interrupt: Arc::new(MmioInterrupt::new(EventFdTrigger::new(
                irq.try_clone().unwrap(),
            ))),
        })
        .unwrap();
        (rng, mem, ring, irq)
    }

    /// The host's random bytes, as safe code reads them.
    fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(buf)
    }

    fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    #[test]
    fn test_rng_fills_every_buffer_of_a_chain_with_fresh_bytes() {
        let (mut rng, mem, mut ring, irq) = active(RateLimiter::unlimited().unwrap());
        let a = ring.post(&mem, &[(BUFS, 16, WRITE), (BUFS + 0x100, 48, WRITE)]);
        let b = ring.post(&mem, &[(BUFS + 0x200, 64, WRITE)]);
        rng.process_queue();
        assert_eq!(
            ring.take_used(&mem),
            vec![(u32::from(a), 64), (u32::from(b), 64)]
        );
        assert_eq!(irq.read().unwrap(), 1);
        let (first, second) = (read(&mem, BUFS + 0x100, 48), read(&mem, BUFS + 0x200, 48));
        assert_ne!(first, vec![0; 48], "filled");
        assert_ne!(first, second, "two requests get different bytes");
        let m = rng.metrics();
        assert_eq!(m.requests.load(Ordering::Relaxed), 2);
        assert_eq!(m.bytes.load(Ordering::Relaxed), 128);
    }

    #[test]
    fn test_rng_hostile_chains_returned_unused_and_device_keeps_serving() {
        let (mut rng, mem, mut ring, _irq) = active(RateLimiter::unlimited().unwrap());
        ring.post(&mem, &[(BUFS, 64, 0)]);
        ring.post(&mem, &[(0xffff_0000, 64, WRITE)]);
        let big = ring.post(&mem, &[(BUFS, 0x8_0000, WRITE)]);
        let good = ring.post(&mem, &[(BUFS, 32, WRITE)]);
        rng.process_queue();
        let used = ring.take_used(&mem);
        assert_eq!(used.len(), 4);
        assert_eq!(used[0].1, 0);
        assert_eq!(used[1].1, 0);
        assert_eq!(used[2], (u32::from(big), MAX_REQUEST), "capped");
        assert_eq!(used[3], (u32::from(good), 32));
        assert_eq!(rng.metrics().bad_chains.load(Ordering::Relaxed), 2);

        ring.set_avail_idx(&mem, 1000);
        rng.process_queue();
        assert!(rng.broken, "a corrupt queue stops the device");
        rng.reset();
        assert!(!rng.broken);
    }

    #[test]
    fn test_rng_rate_limited_request_waits_on_the_queue() {
        // 100 bytes, refilled over an hour: the second request waits.
        let limiter = RateLimiter::new(
            Some(BucketSpec {
                size: 100,
                one_time_burst: 0,
                refill_ms: 3_600_000,
            }),
            None,
        )
        .unwrap();
        let (mut rng, mem, mut ring, _irq) = active(limiter);
        ring.post(&mem, &[(BUFS, 64, WRITE)]);
        ring.post(&mem, &[(BUFS + 0x100, 64, WRITE)]);
        rng.process_queue();
        assert_eq!(ring.take_used(&mem).len(), 1);
        assert_eq!(rng.metrics().rate_limited.load(Ordering::Relaxed), 1);
        // Lifted limits apply from the limiter's next timer, which the event loop then serves.
        rng.set_rate_limits(Some((None, None)));
        rng.limiter.on_timer();
        rng.process_queue();
        assert_eq!(ring.take_used(&mem).len(), 1, "then the request is served");
    }
}
