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
use super::{MacAddr, NetBackend, NetMetrics};
use crate::virtio::queue::{avail_sane, drain};
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
    features: u64,
    config: [u8; CONFIG_LEN],
    queue_events: Vec<EventFd>,
    pub(super) activate_evt: EventFd,
    active: Option<ActiveQueues>,
    mergeable: bool,
    /// The frame being received (header included) and its length, while it waits for buffers.
    rx_frame: Vec<u8>,
    rx_pending: Option<usize>,
    /// Receive buffers popped from the queue but not used yet.
    held: VecDeque<RxBuffer>,
    rx_broken: bool,
    tx_frame: Vec<u8>,
    tx_broken: bool,
    /// The TAP reported an error or hang-up; it is no longer read.
    pub(super) backend_failed: bool,
    /// Whether the event loop watches the backend (kept by the event handler).
    pub(super) backend_watched: bool,
    pub(super) metrics: Arc<NetMetrics>,
}

impl Net {
    /// A network device over `spec.backend`.
    pub fn new(spec: NetSpec) -> io::Result<Self> {
        let features = features::VERSION_1
            | features::RING_EVENT_IDX
            | features::RING_INDIRECT_DESC
            | feature::CSUM
            | feature::GUEST_CSUM
            | feature::MAC
            | feature::GUEST_TSO4
            | feature::GUEST_TSO6
            | feature::GUEST_ECN
            | feature::GUEST_UFO
            | feature::HOST_TSO4
            | feature::HOST_TSO6
            | feature::HOST_ECN
            | feature::HOST_UFO
            | feature::MRG_RXBUF
            | feature::STATUS;
        let mut config = [0u8; CONFIG_LEN];
        config[0..6].copy_from_slice(&spec.mac.0);
        config[6..8].copy_from_slice(&LINK_UP.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        Ok(Net {
            backend: spec.backend,
            features,
            config,
            queue_events: vec![EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?],
            activate_evt: EventFd::new(EFD_NONBLOCK)?,
            active: None,
            mergeable: false,
            // One byte more than a frame can be, so a frame too large for any guest shows.
            rx_frame: vec![0; MAX_FRAME_LEN + 1],
            rx_pending: None,
            held: VecDeque::new(),
            rx_broken: false,
            tx_frame: vec![0; MAX_FRAME_LEN],
            tx_broken: false,
            backend_failed: false,
            backend_watched: false,
            metrics: Arc::new(NetMetrics::default()),
        })
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }

    /// Whether the event loop should watch the backend: the device runs and no frame waits for
    /// receive buffers.
    pub(super) fn wants_backend(&self) -> bool {
        self.active.is_some()
            && !self.rx_broken
            && self.rx_pending.is_none()
            && !self.backend_failed
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
        loop {
            let len = match self.rx_pending {
                Some(len) => len,
                None if frames == RX_BUDGET || self.backend_failed => break,
                None => match self.backend.recv(&mut self.rx_frame) {
                    Ok(len) => len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // A TAP read fails only when the TAP is gone or broken; watching a
                        // readable fd that cannot be read would spin the loop.
                        NetMetrics::add(&self.metrics.rx_errors, 1);
                        log::warn!("virtio-net: reading the TAP failed ({e}); the guest receives nothing more");
                        self.backend_failed = true;
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
            match rx.deliver(&mut self.rx_frame[..len]) {
                Deliver::Delivered => {
                    NetMetrics::add(&self.metrics.rx_packets, 1);
                    NetMetrics::add(&self.metrics.rx_bytes, (len - VNET_HDR_LEN) as u64);
                    self.rx_pending = None;
                    // Tell the guest now, not after the batch, so it processes this frame
                    // while the next is copied; with EVENT_IDX it asks for as few as it needs.
                    rx.notify(&*active.interrupt);
                }
                Deliver::TooLarge => {
                    log::debug!("virtio-net: a {len}-byte frame fits no receive buffer; dropped");
                    NetMetrics::add(&self.metrics.rx_dropped, 1);
                    self.rx_pending = None;
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
        let (backend, frame, metrics) = (&mut self.backend, &mut self.tx_frame, &self.metrics);
        let drained = drain(&mut active.queues[TX_QUEUE], &active.mem, |chain| {
            match frame::read_tx_chain(chain, frame) {
                Ok(len) => send(backend.as_mut(), &frame[..len], metrics),
                Err(e) => {
                    log::debug!("virtio-net: dropping a transmit chain: {e}");
                    NetMetrics::add(&metrics.tx_dropped, 1);
                    if !matches!(e, FrameError::TooLong) {
                        NetMetrics::add(&metrics.bad_chains, 1);
                    }
                }
            }
            0
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

fn send(backend: &mut dyn NetBackend, frame: &[u8], metrics: &NetMetrics) {
    match backend.send(frame) {
        Ok(_) => {
            NetMetrics::add(&metrics.tx_packets, 1);
            NetMetrics::add(&metrics.tx_bytes, (frame.len() - VNET_HDR_LEN) as u64);
        }
        // The TAP refuses a frame whose header makes no sense: the guest's doing.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EMSGSIZE)) => {
            log::debug!("virtio-net: the TAP refused a frame: {e}");
            NetMetrics::add(&metrics.tx_dropped, 1);
        }
        Err(e) => {
            NetMetrics::add(&metrics.tx_errors, 1);
            // This device's first few, then only counted.
            crate::warn_guest!(
                nth: metrics.tx_errors.load(Ordering::Relaxed),
                "virtio-net: writing to the TAP failed: {e}"
            );
        }
    }
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
            if self.queue.add_used(self.mem, buf.head, len).is_ok() {
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
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn features(&self) -> u64 {
        self.features
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

    fn reset(&mut self) {
        self.active = None;
        self.held.clear();
        if self.rx_pending.take().is_some() {
            NetMetrics::add(&self.metrics.rx_dropped, 1);
        }
        self.rx_broken = false;
        self.tx_broken = false;
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::AtomicU32;

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
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

    const RING_SIZE: u16 = 16;
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
        })
        .unwrap();
        let rx = TestRing::new(&mem, 0, RING_SIZE);
        let tx = TestRing::new(&mem, 0x1000, RING_SIZE);
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
}
