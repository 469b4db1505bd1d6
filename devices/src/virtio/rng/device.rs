//! The [`Rng`] device: features, its one queue, and filling chains with random bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::metrics::RngMetrics;
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

/// Event tokens of its subscriber (`event_handler`).
pub(super) const PROCESS_ACTIVATE: u32 = 0;
pub(super) const PROCESS_QUEUE: u32 = 1;
pub(super) const PROCESS_RATE_LIMITER: u32 = 2;

pub(super) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Where the device's bytes come from: fills the buffer or fails.
pub type RandomSource = Box<dyn FnMut(&mut [u8]) -> std::io::Result<()> + Send>;

/// A virtio-rng device.
pub struct Rng {
    source: RandomSource,
    pub(super) queue_events: Vec<EventFd>,
    pub(super) activate_evt: EventFd,
    active: Option<ActiveQueues>,
    pub(super) broken: bool,
    pub(super) limiter: RateLimiter,
    buf: Vec<u8>,
    pub(super) metrics: Arc<RngMetrics>,
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
    fn counters(&self) -> Arc<dyn crate::virtio::Counters> {
        self.metrics.clone()
    }

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
