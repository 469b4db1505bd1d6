//! The [`Vsock`] device: features, the guest's CID in its configuration space, and its three
//! queues: the guest's packets (tx) go to the [`Muxer`], the muxer's packets fill the guest's
//! receive buffers (rx), and the event queue carries the transport reset a restored VM's guest
//! is told about.

use std::sync::Arc;

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::defs::add;
use super::metrics::VsockMetrics;
use super::muxer::Muxer;
use super::packet::{read_tx, RxChain, HDR_LEN, MAX_PAYLOAD};
use crate::virtio::chain::{check_in_memory, collect};
use crate::virtio::queue::{drain, drain_limited, Drained};
use crate::virtio::QueueT;
use crate::virtio::{
    features, read_config_bytes, ActivateError, ActiveQueues, DeviceStateError, InterruptKind,
    VirtioDevice,
};

/// Virtio device type of a socket device.
pub const TYPE_VSOCK: u32 = 19;
/// Entries in each queue.
pub const QUEUE_SIZE: u16 = 256;
/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`.
pub const EVENT_TRANSPORT_RESET: u32 = 0;
pub(super) const RXQ: usize = 0;
pub(super) const TXQ: usize = 1;
pub(super) const EVQ: usize = 2;
/// Bytes moved per wake-up, either way, before the event loop serves others.
const DRAIN_BYTES: u64 = 1 << 20;

/// A virtio-vsock device.
pub struct Vsock {
    cid: u64,
    pub(super) muxer: Muxer,
    pub(super) queue_events: Vec<EventFd>,
    pub(super) activate_evt: EventFd,
    active: Option<ActiveQueues>,
    rx_broken: bool,
    tx_broken: bool,
    /// Tell the guest that the transport reset when it next activates (a restored VM).
    reset_on_activate: bool,
    /// The guest was told of a transport reset and has not acknowledged it yet.
    reset_unacked: bool,
    pub(super) timer: TimerFd,
    /// When the timer is set to go off.
    pub(super) armed: Option<std::time::Instant>,
    buf: Vec<u8>,
    pub(super) metrics: Arc<VsockMetrics>,
}

impl Vsock {
    /// A device for guest CID `cid`, its host side `muxer`.
    pub fn new(cid: u64, muxer: Muxer) -> std::io::Result<Self> {
        Ok(Vsock {
            cid,
            muxer,
            queue_events: (0..3)
                .map(|_| EventFd::new(EFD_NONBLOCK))
                .collect::<Result<_, _>>()?,
            activate_evt: EventFd::new(EFD_NONBLOCK)?,
            active: None,
            rx_broken: false,
            tx_broken: false,
            reset_on_activate: false,
            reset_unacked: false,
            timer: TimerFd::new()?,
            armed: None,
            buf: vec![0; HDR_LEN + MAX_PAYLOAD],
            metrics: Arc::new(VsockMetrics::default()),
        })
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<VsockMetrics> {
        self.metrics.clone()
    }

    /// The guest's context ID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// The host side.
    pub fn muxer(&self) -> &Muxer {
        &self.muxer
    }

    /// Takes the packets the guest sent, then gives it what that produced.
    pub fn process_tx(&mut self) {
        if self.tx_broken {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let (buf, muxer, m) = (&mut self.buf, &mut self.muxer, &*self.metrics);
        let mut moved = 0u64;
        let drained = drain(&mut active.queues[TXQ], mem, |chain| {
            match read_tx(chain, buf) {
                Ok((hdr, len)) => {
                    add(&m.tx_packets, 1);
                    moved += len as u64;
                    muxer.send(&hdr, &buf[HDR_LEN..HDR_LEN + len], m);
                }
                Err(e) => {
                    crate::warn_guest!(
                        nth: m.bad_chains.load(Ordering::Relaxed),
                        "virtio-vsock: a transmit chain was dropped: {e}"
                    );
                    add(&m.bad_chains, 1);
                }
            }
            0
        });
        let more = drained.more || moved >= DRAIN_BYTES;
        let broken = after_drain(&drained, more, TXQ, active, &self.queue_events, m);
        self.tx_broken |= broken;
        self.process_rx();
    }

    /// Fills the guest's receive buffers with what the muxer has.
    pub fn process_rx(&mut self) {
        if self.rx_broken || self.reset_unacked || !self.muxer.has_rx() {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let (buf, muxer, m) = (&mut self.buf, &mut self.muxer, &*self.metrics);
        let drained = drain_limited(&mut active.queues[RXQ], mem, DRAIN_BYTES, |chain| {
            if !muxer.has_rx() {
                return None;
            }
            let rx = match RxChain::parse(chain) {
                Ok(rx) => rx,
                Err(e) => {
                    crate::warn_guest!(
                        nth: m.bad_chains.load(Ordering::Relaxed),
                        "virtio-vsock: a receive chain was returned unused: {e}"
                    );
                    add(&m.bad_chains, 1);
                    return Some((0, 0));
                }
            };
            let room = rx.payload_room();
            let hdr = muxer.next_rx(&mut buf[HDR_LEN..HDR_LEN + room])?;
            buf[..HDR_LEN].copy_from_slice(&hdr.to_bytes());
            let len = HDR_LEN + hdr.len as usize;
            match rx.write(mem, &buf[..len]) {
                Ok(written) => {
                    add(&m.rx_packets, 1);
                    add(&m.rx_bytes, u64::from(hdr.len));
                    Some((written, len as u64))
                }
                Err(_) => {
                    add(&m.bad_chains, 1);
                    Some((0, 0))
                }
            }
        });
        let broken = after_drain(&drained, drained.more, RXQ, active, &self.queue_events, m);
        self.rx_broken |= broken;
    }

    /// What the event loop does when the driver activated the device: a restored device tells
    /// its guest of the transport reset, then the queues are served.
    pub(super) fn on_activate(&mut self) {
        if std::mem::take(&mut self.reset_on_activate) {
            self.send_transport_reset();
        }
        self.process_tx();
    }

    /// Tells the guest's driver that the transport reset: it drops its connections and reads
    /// its CID again; its listening sockets stay. Every host connection goes with them. Until
    /// the driver posts its event buffer again (how Linux acknowledges the event), nothing is
    /// given to the guest: a connection made meanwhile would be dropped with the old ones.
    pub fn send_transport_reset(&mut self) {
        self.muxer.reset();
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let queue = &mut active.queues[EVQ];
        let m = &*self.metrics;
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            log::warn!(
                "virtio-vsock: the guest posted no event buffer; it was not told of the transport reset"
            );
            return;
        };
        let head = chain.head_index();
        let len = write_event(chain, mem).unwrap_or(0);
        let _ = queue.add_used(mem, head, len);
        // Armed, so that the driver's next post of a buffer notifies (its acknowledgement).
        // With event indices, the device asks for a notification once the driver posts past
        // `avail_event`; virtio-queue sets it to what the device took, which a driver with
        // other buffers posted is already past: ask at the driver's very next post instead.
        let _ = queue.enable_notification(mem);
        if queue.event_idx_enabled() {
            if let Ok(avail) = queue.avail_idx(mem, Ordering::Acquire) {
                let avail_event = queue.used_ring() + 4 + 8 * u64::from(queue.size());
                let _ = mem.write_obj(avail.0.to_le(), GuestAddress(avail_event));
                std::sync::atomic::fence(Ordering::SeqCst);
            }
        }
        self.reset_unacked = len > 0;
        add(&m.transport_resets, 1);
        add(&m.interrupts, 1);
        active.interrupt.trigger(InterruptKind::Queue(EVQ as u16));
    }

    /// The driver posted event buffers: after a transport reset, its acknowledgement.
    pub(super) fn on_event_queue(&mut self) {
        if std::mem::take(&mut self.reset_unacked) {
            self.process_rx();
        }
    }
}

/// What a drain of queue `index` leaves to do: serve it again after the loop served others
/// (`more`), interrupt the guest if it asked. Returns whether the driver broke the queue.
fn after_drain(
    drained: &Drained,
    more: bool,
    index: usize,
    active: &ActiveQueues,
    queue_events: &[EventFd],
    m: &VsockMetrics,
) -> bool {
    if more {
        let _ = queue_events[index].write(1);
    }
    if drained.notify {
        add(&m.interrupts, 1);
        active.interrupt.trigger(InterruptKind::Queue(index as u16));
    }
    if drained.broken {
        log::debug!("virtio-vsock: the driver corrupted queue {index}; it stops until reset");
    }
    drained.broken
}

/// Writes the transport-reset event into an event chain's first buffer; its used length.
fn write_event<M>(chain: virtio_queue::DescriptorChain<M>, mem: &GuestMemoryMmap) -> Option<u32>
where
    M: std::ops::Deref<Target = GuestMemoryMmap>,
{
    let descs = collect(chain, usize::from(QUEUE_SIZE)).ok()?;
    let d = descs.first()?;
    if !d.is_write_only() || d.len() < 4 || check_in_memory(mem, d.addr(), 4).is_err() {
        return None;
    }
    mem.write_obj(EVENT_TRANSPORT_RESET.to_le_bytes(), d.addr())
        .ok()?;
    Some(4)
}

impl VirtioDevice for Vsock {
    fn counters(&self) -> Arc<dyn crate::virtio::Counters> {
        self.metrics.clone()
    }

    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    /// Stream sockets only (no `VIRTIO_VSOCK_F_SEQPACKET`).
    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_EVENT_IDX | features::RING_INDIRECT_DESC
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    /// `le64 guest_cid`.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!("virtio-vsock: ignoring a config write at {offset:#x}");
    }

    fn activate(&mut self, active: ActiveQueues) -> Result<(), ActivateError> {
        if active.queues.len() != 3 {
            return Err(ActivateError::BadState(format!(
                "{} queues for a vsock device",
                active.queues.len()
            )));
        }
        self.active = Some(active);
        self.rx_broken = false;
        self.tx_broken = false;
        self.muxer.active = true;
        // The event loop tells the guest of the reset once it runs: after the whole VM is
        // restored (its interrupt controllers too, so the interrupt is not lost).
        self.activate_evt.write(1).map_err(ActivateError::Wake)
    }

    fn reset(&mut self) {
        self.active = None;
        self.reset_unacked = false;
        self.muxer.active = false;
        self.muxer.reset();
    }

    fn queue_states(&self) -> Option<Vec<crate::virtio::QueueState>> {
        crate::virtio::active_queue_states(self.active.as_ref())
    }

    /// Connections do not survive a snapshot (as in Firecracker): the state only says that
    /// the restored guest is to be told of a transport reset.
    fn save_state(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "transport_reset": true }))
    }

    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), DeviceStateError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Saved {
            transport_reset: bool,
        }
        let saved: Saved =
            serde_json::from_value(state).map_err(|e| DeviceStateError::Parse(e.to_string()))?;
        self.reset_on_activate = saved.transport_reset;
        Ok(())
    }
}
