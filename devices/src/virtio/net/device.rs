//! The virtio-net device: features, configuration space, and the processing of its receive and
//! transmit queues (called from the event loop by `event_handler.rs`).
//!
//! Receive reads one frame at a time from the TAP into a host buffer and scatters it over the
//! buffers the guest posted. A frame that does not fit in what is posted waits, with the TAP
//! unwatched, until the guest posts more: nothing is dropped while the guest keeps up, and a
//! guest that never posts buffers costs no CPU. Buffers popped for a frame that has to wait stay
//! with the device (`held`), so the queue's notification index is always honest.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::frame::{
    self, buffers_needed, FrameError, RxBuffer, ETH_HLEN, MAX_FRAME_LEN, VNET_HDR_LEN,
};
use super::{FrameService, MacAddr, NetBackend, NetMetrics};
use crate::rate_limiter::{Buckets, RateLimiter};
use crate::virtio::queue::{avail_sane, drain_limited};
use crate::virtio::{
    features, read_config_bytes, ActivateError, ActiveQueues, InterruptKind, QueueT, VirtioDevice,
    VirtioInterrupt,
};

/// Virtio device type of a network device.
pub const TYPE_NET: u32 = 1;
/// Entries in each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Frames received per wake-up before the event loop serves others.
const RX_BUDGET: usize = 256;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;

pub use super::features::feature;

/// `VIRTIO_NET_S_LINK_UP`.
const LINK_UP: u16 = 1;
/// MAC, status, max_virtqueue_pairs.
const CONFIG_LEN: usize = 10;

/// What the VMM hands a new network device.
pub struct NetSpec {
    /// Where frames go (a [`super::Tap`] outside tests).
    pub backend: Box<dyn NetBackend>,
    /// The guest's MAC address.
    pub mac: MacAddr,
    /// Limits on what the guest receives (bytes and frames per second).
    pub rx_rate_limiter: RateLimiter,
    /// Limits on what the guest sends.
    pub tx_rate_limiter: RateLimiter,
    /// A service answered on the link (instance metadata), if any.
    pub service: Option<Box<dyn FrameService>>,
}

/// How receive went.
#[derive(Debug, PartialEq, Eq)]
enum Deliver {
    Delivered,
    /// The posted buffers cannot hold the frame yet.
    NoRoom,
    /// No buffers the guest can post could hold it.
    TooLarge,
    Broken,
}

/// A virtio-net device.
pub struct Net {
    pub(super) backend: Box<dyn NetBackend>,
    service: Option<Box<dyn FrameService>>,
    /// The waiting frame came from the service, not the TAP.
    rx_from_service: bool,
    features: u64,
    restorable: u64,
    config: [u8; CONFIG_LEN],
    queue_events: Vec<EventFd>,
    pub(super) activate_evt: EventFd,
    active: Option<ActiveQueues>,
    mergeable: bool,
    /// The frame being received (header included) and its length, while it waits for buffers.
    rx_frame: Vec<u8>,
    rx_pending: Option<usize>,
    /// The waiting frame has been charged to the receive limiter.
    rx_charged: bool,
    pub(super) rx_limiter: RateLimiter,
    pub(super) tx_limiter: RateLimiter,
    /// Receive buffers popped from the queue but not used yet.
    held: VecDeque<RxBuffer>,
    rx_broken: bool,
    tx_frame: Vec<u8>,
    tx_broken: bool,
    /// The TAP reported an error or hang-up; it is no longer read.
    pub(super) backend_failed: bool,
    /// The last receive pass read the backend until it had nothing more.
    pub(super) rx_drained: bool,
    /// Transmit stopped because the backend takes no more until its fd is writable.
    pub(super) tx_backend_full: bool,
    /// What the event loop watches the backend for (kept by the event handler).
    pub(super) backend_watched: Option<vmm_sys_util::epoll::EventSet>,
    pub(super) metrics: Arc<NetMetrics>,
}

impl Net {
    /// A network device over `spec.backend`.
    pub fn new(spec: NetSpec) -> io::Result<Self> {
        let offloads = feature::CSUM
            | feature::GUEST_CSUM
            | feature::GUEST_TSO4
            | feature::GUEST_TSO6
            | feature::GUEST_ECN
            | feature::GUEST_UFO
            | feature::HOST_TSO4
            | feature::HOST_TSO6
            | feature::HOST_ECN
            | feature::HOST_UFO;
        let mut features = features::VERSION_1
            | features::RING_EVENT_IDX
            | features::RING_INDIRECT_DESC
            | feature::MAC
            | feature::MRG_RXBUF
            | feature::STATUS;
        // A driver restored onto a backend without offloads keeps those it had: the backend
        // does them (`offload.rs`).
        let restorable = features | offloads;
        if spec.backend.carries_offloads() {
            features |= offloads;
        }
        let mut config = [0u8; CONFIG_LEN];
        config[0..6].copy_from_slice(&spec.mac.0);
        config[6..8].copy_from_slice(&LINK_UP.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        Ok(Net {
            backend: spec.backend,
            service: spec.service,
            rx_from_service: false,
            features,
            restorable,
            config,
            queue_events: vec![EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?],
            activate_evt: EventFd::new(EFD_NONBLOCK)?,
            active: None,
            mergeable: false,
            // One byte more than a frame can be, so a frame too large for any guest shows.
            rx_frame: vec![0; MAX_FRAME_LEN + 1],
            rx_pending: None,
            rx_charged: false,
            rx_limiter: spec.rx_rate_limiter,
            tx_limiter: spec.tx_rate_limiter,
            held: VecDeque::new(),
            rx_broken: false,
            tx_frame: vec![0; MAX_FRAME_LEN],
            tx_broken: false,
            backend_failed: false,
            tx_backend_full: false,
            rx_drained: false,
            backend_watched: None,
            metrics: Arc::new(NetMetrics::default()),
        })
    }

    /// Sets new rate limits on what the guest receives and sends (Firecracker's network
    /// interface PATCH); `None` leaves that direction's limits as they are.
    pub fn set_rate_limits(&mut self, rx: Option<Buckets>, tx: Option<Buckets>) {
        if let Some((bandwidth, ops)) = rx {
            self.rx_limiter.update(bandwidth, ops);
        }
        if let Some((bandwidth, ops)) = tx {
            self.tx_limiter.update(bandwidth, ops);
        }
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }

    /// Whether the event loop should watch the backend: the device runs, no frame waits for
    /// receive buffers, and the receive rate limiter is not waiting for its timer.
    pub(super) fn wants_backend(&self) -> bool {
        self.active.is_some()
            && !self.rx_broken
            && self.rx_pending.is_none()
            && !self.backend_failed
            && !self.rx_limiter.is_blocked()
    }

    /// Moves frames from the backend to the guest until the backend is empty, the guest has no
    /// room, or the budget is spent; interrupts the guest if it asked for it.
    pub fn process_rx(&mut self) {
        if self.rx_broken {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut rx = Rx {
            mem: &active.mem,
            queue: &mut active.queues[RX_QUEUE],
            held: &mut self.held,
            mergeable: self.mergeable,
            metrics: &self.metrics,
            used_any: false,
        };
        let _ = rx.queue.disable_notification(rx.mem);
        let mut frames = 0;
        self.rx_drained = false;
        loop {
            if self.rx_limiter.is_blocked() {
                // Its timer calls again; a frame read meanwhile waits, and the TAP is unwatched.
                break;
            }
            let service_frame = match (self.rx_pending, self.service.as_mut()) {
                (None, Some(service)) if frames < RX_BUDGET => service
                    .next_frame(&mut self.rx_frame[VNET_HDR_LEN..])
                    .map(|len| {
                        // No offloads: the service's frames are complete.
                        self.rx_frame[..VNET_HDR_LEN].fill(0);
                        VNET_HDR_LEN + len
                    }),
                _ => None,
            };
            if service_frame.is_some() {
                self.rx_from_service = true;
            }
            let len = match (self.rx_pending, service_frame) {
                (Some(len), _) | (None, Some(len)) => len,
                (None, None) if frames == RX_BUDGET || self.backend_failed => break,
                (None, None) => match self.backend.recv(&mut self.rx_frame) {
                    Ok(len) => len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.rx_drained = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // A backend read fails only when it is gone or broken; watching a
                        // readable fd that cannot be read would spin the loop.
                        NetMetrics::add(&self.metrics.rx_errors, 1);
                        fail_backend(
                            &mut self.backend_failed,
                            &mut self.config,
                            Some(&*active.interrupt),
                            &format!("reading it failed ({e})"),
                        );
                        break;
                    }
                },
            };
            frames += 1;
            if !(VNET_HDR_LEN + ETH_HLEN..=MAX_FRAME_LEN).contains(&len) {
                log::debug!("virtio-net: dropping a {len}-byte frame from the TAP");
                NetMetrics::add(&self.metrics.rx_dropped, 1);
                self.rx_pending = None;
                continue;
            }
            if !self.rx_charged {
                if !self.rx_limiter.consume((len - VNET_HDR_LEN) as u64) {
                    NetMetrics::add(&self.metrics.rx_rate_limited, 1);
                    self.rx_pending = Some(len);
                    break;
                }
                self.rx_charged = true;
            }
            match rx.deliver(&mut self.rx_frame[..len]) {
                Deliver::Delivered => {
                    NetMetrics::add(&self.metrics.rx_packets, 1);
                    NetMetrics::add(&self.metrics.rx_bytes, (len - VNET_HDR_LEN) as u64);
                    if std::mem::take(&mut self.rx_from_service) {
                        NetMetrics::add(&self.metrics.service_rx_packets, 1);
                    }
                    self.rx_pending = None;
                    self.rx_charged = false;
                    // Tell the guest now, not after the batch, so it processes this frame
                    // while the next is copied; with EVENT_IDX it asks for as few as it needs.
                    rx.notify(&*active.interrupt);
                }
                Deliver::TooLarge => {
                    log::debug!("virtio-net: a {len}-byte frame fits no receive buffer; dropped");
                    NetMetrics::add(&self.metrics.rx_dropped, 1);
                    self.rx_pending = None;
                    self.rx_charged = false;
                    self.rx_from_service = false;
                }
                Deliver::NoRoom => {
                    if self.rx_pending.is_none() {
                        NetMetrics::add(&self.metrics.rx_buffer_waits, 1);
                    }
                    self.rx_pending = Some(len);
                    break;
                }
                Deliver::Broken => {
                    log::debug!(
                        "virtio-net: the driver corrupted the receive queue; stopped until reset"
                    );
                    NetMetrics::add(&self.metrics.bad_chains, 1);
                    self.rx_broken = true;
                    break;
                }
            }
        }
        // Unusable buffers returned on the way count as used too.
        rx.notify(&*active.interrupt);
        // A TAP wakes the loop while it has frames; the service's frames and those a stream
        // holds in its buffer need a nudge.
        if frames == RX_BUDGET
            && self.rx_pending.is_none()
            && (self.service_has_frames() || self.backend.pending())
        {
            let _ = self.queue_events[RX_QUEUE].write(1);
        }
    }

    /// The backend is gone (a TAP removed, a network process ended): the guest's link goes down
    /// and the device stops watching it; the VM runs on.
    pub(super) fn backend_gone(&mut self, why: &str) {
        let irq = self.active.as_ref().map(|a| &*a.interrupt);
        fail_backend(&mut self.backend_failed, &mut self.config, irq, why);
    }

    /// Whether the guest's link is up (the configuration space's status).
    pub fn link_up(&self) -> bool {
        u16::from_le_bytes([self.config[6], self.config[7]]) & LINK_UP != 0
    }

    fn service_has_frames(&self) -> bool {
        self.service.as_ref().is_some_and(|s| s.has_frames())
    }

    /// Sends every frame the driver queued to the backend, at most a queue's worth per call
    /// (then it asks to be called again through the queue eventfd).
    pub fn process_tx(&mut self) {
        if self.tx_broken {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if self.tx_limiter.is_blocked() || self.tx_backend_full {
            // Its timer, or the backend's fd turning writable, calls again.
            return;
        }
        let offloads = self.backend.carries_offloads();
        let (backend, frame, metrics) = (&mut self.backend, &mut self.tx_frame, &self.metrics);
        let backend_full = &mut self.tx_backend_full;
        let service = &mut self.service;
        let limiter = &mut self.tx_limiter;
        let queue = &mut active.queues[TX_QUEUE];
        let drained = drain_limited(queue, &active.mem, u64::MAX, |chain| {
            match frame::read_tx_chain(chain, frame) {
                Ok(len) => {
                    // Charged for what goes on the wire; a frame that must wait is read again.
                    if !limiter.consume((len - VNET_HDR_LEN) as u64) {
                        NetMetrics::add(&metrics.tx_rate_limited, 1);
                        return None;
                    }
                    let taken = service
                        .as_mut()
                        .is_some_and(|s| s.offer(&frame[VNET_HDR_LEN..len]));
                    if taken {
                        NetMetrics::add(&metrics.service_tx_packets, 1);
                    } else if !send(backend.as_mut(), &frame[..len], metrics, offloads) {
                        // Read again when the backend takes more; already charged, though.
                        limiter.refund((len - VNET_HDR_LEN) as u64);
                        *backend_full = true;
                        return None;
                    }
                }
                Err(e) => {
                    log::debug!("virtio-net: dropping a transmit chain: {e}");
                    NetMetrics::add(&metrics.tx_dropped, 1);
                    if !matches!(e, FrameError::TooLong) {
                        NetMetrics::add(&metrics.bad_chains, 1);
                    }
                }
            }
            Some((0, 0))
        });
        if drained.more {
            let _ = self.queue_events[TX_QUEUE].write(1);
        }
        if drained.notify {
            self.metrics.interrupts.fetch_add(1, Ordering::Relaxed);
            active
                .interrupt
                .trigger(InterruptKind::Queue(TX_QUEUE as u16));
        }
        if drained.broken {
            log::debug!("virtio-net: the driver corrupted the transmit queue; stopped until reset");
            NetMetrics::add(&self.metrics.bad_chains, 1);
            self.tx_broken = true;
        }
        // What the guest sent the service may have an answer.
        if self.rx_pending.is_none() && self.service_has_frames() {
            self.process_rx();
        }
    }

    /// The `TUN_F_*` offloads matching the receive features the driver accepted.
    fn tap_offloads(acked: u64) -> u32 {
        let mut flags = 0;
        if acked & feature::GUEST_CSUM != 0 {
            flags |= libc::TUN_F_CSUM;
            for (f, tun) in [
                (feature::GUEST_TSO4, libc::TUN_F_TSO4),
                (feature::GUEST_TSO6, libc::TUN_F_TSO6),
                (feature::GUEST_ECN, libc::TUN_F_TSO_ECN),
                (feature::GUEST_UFO, libc::TUN_F_UFO),
            ] {
                if acked & f != 0 {
                    flags |= tun;
                }
            }
        }
        flags
    }
}

/// The backend is gone: counted once, logged, and the guest's link set down (with a
/// configuration interrupt when the device runs).
fn fail_backend(
    failed: &mut bool,
    config: &mut [u8; CONFIG_LEN],
    irq: Option<&dyn VirtioInterrupt>,
    why: &str,
) {
    if std::mem::replace(failed, true) {
        return;
    }
    log::warn!("virtio-net: the backend is gone: {why}; the guest's link is down");
    config[6..8].copy_from_slice(&0u16.to_le_bytes());
    if let Some(irq) = irq {
        irq.trigger(InterruptKind::Config);
    }
}

/// Sends one frame; false when the backend takes no more for now (the frame was not taken).
/// `offloads`: whether the backend carries the header's offloads (else the backend does them).
fn send(backend: &mut dyn NetBackend, frame: &[u8], metrics: &NetMetrics, offloads: bool) -> bool {
    match backend.send(frame) {
        Ok(_) => {
            if !offloads && !super::offload::VnetHdr::parse(frame).is_plain() {
                NetMetrics::add(&metrics.tx_offloaded, 1);
            }
            NetMetrics::add(&metrics.tx_packets, 1);
            NetMetrics::add(&metrics.tx_bytes, (frame.len() - VNET_HDR_LEN) as u64);
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
        // The backend refuses a frame whose header makes no sense: the guest's doing.
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EMSGSIZE))
                || e.kind() == io::ErrorKind::InvalidInput =>
        {
            log::debug!("virtio-net: the backend refused a frame: {e}");
            NetMetrics::add(&metrics.tx_dropped, 1);
        }
        Err(e) => {
            NetMetrics::add(&metrics.tx_errors, 1);
            // This device's first few, then only counted.
            crate::warn_guest!(
                nth: metrics.tx_errors.load(Ordering::Relaxed),
                "virtio-net: writing to the backend failed: {e}"
            );
        }
    }
    true
}

/// The receive queue while one call of [`Net::process_rx`] serves it.
struct Rx<'a> {
    mem: &'a GuestMemoryMmap,
    queue: &'a mut Queue,
    held: &'a mut VecDeque<RxBuffer>,
    mergeable: bool,
    metrics: &'a NetMetrics,
    used_any: bool,
}

impl Rx<'_> {
    /// Interrupts the guest for the buffers used since the last call, if it asked for it.
    fn notify(&mut self, irq: &dyn VirtioInterrupt) {
        if self.used_any && self.queue.needs_notification(self.mem).unwrap_or(true) {
            NetMetrics::add(&self.metrics.interrupts, 1);
            irq.trigger(InterruptKind::Queue(RX_QUEUE as u16));
        }
        self.used_any = false;
    }

    /// Puts `frame` into the guest's receive buffers.
    fn deliver(&mut self, frame: &mut [u8]) -> Deliver {
        loop {
            let room = if self.mergeable {
                buffers_needed(self.held.iter().map(RxBuffer::capacity), frame.len()).is_some()
            } else {
                !self.held.is_empty()
            };
            if room {
                break;
            }
            if self.held.len() >= usize::from(self.queue.size()) {
                // Every buffer the queue can hold is here, and together they are too small.
                return Deliver::TooLarge;
            }
            match self.pop_buffer() {
                Ok(true) => {}
                Ok(false) => match self.queue.enable_notification(self.mem) {
                    Ok(true) => {}
                    Ok(false) => return Deliver::NoRoom,
                    Err(_) => return Deliver::Broken,
                },
                Err(()) => return Deliver::Broken,
            }
        }
        let count = if self.mergeable {
            buffers_needed(self.held.iter().map(RxBuffer::capacity), frame.len()).unwrap_or(0)
        } else if self.held[0].capacity() >= frame.len() as u64 {
            1
        } else {
            // Without mergeable buffers a frame must fit one buffer; this one stays posted.
            return Deliver::TooLarge;
        };
        let bufs: Vec<RxBuffer> = self.held.drain(..count).collect();
        let lens = match frame::write_frame(self.mem, &bufs, frame) {
            Ok(lens) => lens,
            Err(e) => {
                // Checked at parse time, so only a changed memory map gets here.
                log::debug!("virtio-net: cannot write a frame: {e}");
                vec![0; bufs.len()]
            }
        };
        for (buf, len) in bufs.iter().zip(lens) {
            if self.queue.add_used(self.mem, buf.head(), len).is_ok() {
                self.used_any = true;
            }
        }
        Deliver::Delivered
    }

    /// Pops the next receive buffer into `held`, returning unusable chains to the guest unused.
    /// `Ok(false)`: the queue is empty; `Err`: the driver broke it.
    fn pop_buffer(&mut self) -> Result<bool, ()> {
        loop {
            if !avail_sane(self.queue, self.mem) {
                return Err(());
            }
            let Some(chain) = self.queue.pop_descriptor_chain(self.mem) else {
                return Ok(false);
            };
            let head = chain.head_index();
            match RxBuffer::parse(chain) {
                Ok(buf) => {
                    self.held.push_back(buf);
                    return Ok(true);
                }
                Err(e) => {
                    log::debug!("virtio-net: returning an unusable receive chain: {e}");
                    NetMetrics::add(&self.metrics.bad_chains, 1);
                    if self.queue.add_used(self.mem, head, 0).is_ok() {
                        self.used_any = true;
                    }
                }
            }
        }
    }
}

impl VirtioDevice for Net {
    fn counters(&self) -> Arc<dyn crate::virtio::Counters> {
        self.metrics.clone()
    }

    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn restorable_features(&self) -> u64 {
        self.restorable
    }

    fn check_features(&self, acked: u64) -> Result<(), String> {
        super::features::check(acked)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!("virtio-net: ignoring a config write at {offset:#x}");
    }

    fn activate(&mut self, active: ActiveQueues) -> Result<(), ActivateError> {
        if active.queues.len() != 2 {
            return Err(ActivateError::BadState(format!(
                "{} queues for a network device",
                active.queues.len()
            )));
        }
        let offloads = Self::tap_offloads(active.acked_features);
        if let Err(e) = self.backend.set_offload(offloads) {
            crate::warn_guest!(
                "virtio-net: the TAP refused offloads {offloads:#x} ({e}); receiving without them"
            );
            if let Err(e) = self.backend.set_offload(0) {
                return Err(ActivateError::BadState(format!(
                    "the TAP refused to clear offloads: {e}"
                )));
            }
        }
        self.mergeable = active.acked_features & feature::MRG_RXBUF != 0;
        self.active = Some(active);
        self.rx_broken = false;
        self.tx_broken = false;
        // Serve anything queued before DRIVER_OK, and start watching the TAP.
        self.activate_evt.write(1).map_err(ActivateError::Wake)
    }

    /// Receive buffers the device holds (popped, not used) count as not taken: after a restore
    /// the device pops them again. A frame waiting for buffers is not saved (as a frame lost
    /// on a wire).
    fn queue_states(&self) -> Option<Vec<crate::virtio::QueueState>> {
        let mut states = crate::virtio::active_queue_states(self.active.as_ref())?;
        let held = u16::try_from(self.held.len()).unwrap_or(u16::MAX);
        if let Some(rx) = states.get_mut(RX_QUEUE) {
            rx.next_avail = rx.next_avail.wrapping_sub(held);
        }
        Some(states)
    }

    fn reset(&mut self) {
        self.active = None;
        self.held.clear();
        if self.rx_pending.take().is_some() {
            NetMetrics::add(&self.metrics.rx_dropped, 1);
        }
        self.rx_from_service = false;
        self.rx_charged = false;
        self.rx_broken = false;
        self.tx_broken = false;
    }
}

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
