//! Virtio devices: the [`VirtioDevice`] trait every device implements, the interrupt they raise,
//! and the virtio-mmio transport ([`mmio`]) that puts them on the MMIO bus.
//!
//! The transport owns what the driver configures (features, queue addresses, status); a device
//! owns its queues once the driver sets DRIVER_OK and serves them on the event loop, woken by
//! the queue eventfds the VMM binds to `KVM_IOEVENTFD` at the transport's QueueNotify register.
//! A device tells its driver about used buffers (naming the queue) or a configuration change
//! through a [`VirtioInterrupt`]; the MMIO transport's ([`mmio::MmioInterrupt`]) raises a line
//! the VMM binds to a `KVM_IRQFD`. Neither path goes through a vCPU thread.

use std::sync::Arc;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub mod block;
pub mod chain;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
pub mod transport;
pub mod vsock;

pub use virtio_queue::{Queue, QueueState, QueueT};

/// The states of `active`'s queues ([`VirtioDevice::queue_states`] for a device that holds no
/// chain between its turns).
pub fn active_queue_states(active: Option<&ActiveQueues>) -> Option<Vec<QueueState>> {
    active.map(|a| a.queues.iter().map(Queue::state).collect())
}

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready to drive the device.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}

/// Feature bits shared by every device type.
pub mod features {
    /// Indirect descriptor tables.
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// `used_event` / `avail_event` notification suppression.
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// Virtio 1.x (modern) device; required by the MMIO transport version 2.
    pub const VERSION_1: u64 = 1 << 32;
}

/// Interrupt status bits (virtio-mmio InterruptStatus).
pub mod interrupt {
    /// The device used a buffer in at least one queue.
    pub const USED_BUFFER: u32 = 1;
    /// The device configuration changed (or the device needs a reset).
    pub const CONFIG_CHANGE: u32 = 2;
}

/// What a device tells its driver with an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptKind {
    /// The device used buffers of queue `n`.
    Queue(u16),
    /// The device's configuration changed, or it needs a reset.
    Config,
}

/// How a device interrupts its driver. The transport decides what that is on the wire: the
/// MMIO transport ([`mmio::MmioInterrupt`]) sets a bit of its InterruptStatus register and
/// raises its one line; a PCI transport would raise the queue's, or the configuration's,
/// MSI-X vector. Devices only say which.
pub trait VirtioInterrupt: Send + Sync + std::fmt::Debug {
    /// Interrupts the driver for `kind`.
    fn trigger(&self, kind: InterruptKind);
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct ActiveQueues {
    /// Guest memory the queues live in.
    pub mem: GuestMemoryMmap,
    /// The queues, configured by the driver and checked against `mem`.
    pub queues: Vec<Queue>,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// The device's interrupt.
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The device is not in a state to start.
    #[error("The device cannot start: {0}")]
    BadState(String),
    /// Waking the event loop failed.
    #[error("Failed to wake the event loop")]
    Wake(#[source] std::io::Error),
}

/// A device's counters, read while it runs: the API and the exit log show them as JSON
/// under the device's ID. Every `Serialize` metrics struct of atomics is one.
pub trait Counters: std::any::Any + Send + Sync {
    /// The counters now, as a JSON object of numbers.
    fn to_json(&self) -> serde_json::Value;
    /// The counters as their own type, for whoever knows it.
    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
}

impl<T: serde::Serialize + Send + Sync + 'static> Counters for T {
    fn to_json(&self) -> serde_json::Value {
        // Counters serialise as numbers: this cannot fail.
        serde_json::to_value(self).unwrap_or_default()
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

/// Why a device's own snapshot state could not be put back.
#[derive(Debug, thiserror::Error)]
pub enum DeviceStateError {
    /// The device keeps no state of its own, and was given some.
    #[error("the device keeps no state of its own, but the snapshot has some for it")]
    Unexpected,
    /// The state does not parse as this device's.
    #[error("the device's state does not parse: {0}")]
    Parse(String),
}

/// A virtio device, behind a transport.
///
/// The transport calls these methods with the device locked; the device serves its queues on the
/// event loop through its own `MutEventSubscriber`.
pub trait VirtioDevice: Send {
    /// The virtio device ID (2 for block, 1 for network).
    fn device_type(&self) -> u32;
    /// Every feature the device offers, [`features::VERSION_1`] included.
    fn features(&self) -> u64;
    /// The largest size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// One eventfd per queue, written when the driver notifies that queue.
    fn queue_events(&self) -> &[EventFd];
    /// Reads the device configuration space; bytes past its end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space; most devices ignore writes.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Changes whenever the device changes its configuration space (the transport shows it as
    /// ConfigGeneration, so a driver can tell a torn read from a whole one).
    fn config_generation(&self) -> u32 {
        0
    }
    /// What a driver may have accepted before a snapshot that the device still serves when
    /// restored: what it offers, and what it can do for a driver that has it though it would
    /// not offer it now (a network device on a stream backend does a TAP's offloads itself).
    fn restorable_features(&self) -> u64 {
        self.features()
    }
    /// Refuses accepted features that break the device type's dependency rules (a feature
    /// without one it needs); the transport then refuses FEATURES_OK.
    fn check_features(&self, _acked: u64) -> Result<(), String> {
        Ok(())
    }
    /// Starts serving the queues.
    fn activate(&mut self, active: ActiveQueues) -> Result<(), ActivateError>;
    /// Stops serving the queues and forgets them: the driver reset the device.
    fn reset(&mut self);
    /// Where the running device's queues stand, for a snapshot of a paused VM: the driver's
    /// rings and how far the device got in each, counting a chain it took but has not used
    /// as not taken (it is taken again after a restore). `None` while not active, and from
    /// a device that cannot be saved.
    fn queue_states(&self) -> Option<Vec<QueueState>> {
        None
    }
    /// The device's counters, shared: the VMM reads them while the device runs and after.
    /// None by default.
    fn counters(&self) -> Arc<dyn Counters> {
        Arc::new(serde_json::Map::new())
    }
    /// What the device keeps beyond its queues and configuration that a snapshot must carry,
    /// as JSON only the device reads back (versioned with the state file). `None`: nothing.
    fn save_state(&self) -> Option<serde_json::Value> {
        None
    }
    /// Puts back what [`VirtioDevice::save_state`] gave, on a device built from the same
    /// configuration and not yet activated.
    fn restore_state(&mut self, _state: serde_json::Value) -> Result<(), DeviceStateError> {
        Err(DeviceStateError::Unexpected)
    }
}

/// Copies `src[offset..]` into `data`, zero-filling past its end: how a device reads its config.
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(offset) = usize::try_from(offset) else {
        return;
    };
    if let Some(tail) = src.get(offset..) {
        let n = tail.len().min(data.len());
        data[..n].copy_from_slice(&tail[..n]);
    }
}

#[cfg(test)]
pub(crate) mod test_utils {
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// 1 MiB of guest memory at 0 for device tests.
    pub fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// Random descriptors for property tests.
    pub mod strategy {
        use proptest::prelude::*;

        /// Mostly buffers at `base + k * 0x200`; some near or past the end of `mem_size`
        /// bytes of memory, some anywhere.
        fn addr(base: u64, mem_size: u64) -> impl Strategy<Value = u64> {
            prop_oneof![
                4 => (0u64..64).prop_map(move |k| base + k * 0x200),
                1 => Just(mem_size - 8),
                1 => any::<u64>(),
            ]
        }

        fn len() -> impl Strategy<Value = u32> {
            prop_oneof![
                Just(0u32),
                Just(1),
                Just(8),
                Just(16),
                Just(100),
                Just(512),
                Just(1024),
                Just(4096),
                any::<u32>()
            ]
        }

        /// A 16-entry split queue with its descriptor table at `rings[0]` and its available
        /// ring at `rings[1]` (from [`descriptor`]s whose buffers start at `base`): the
        /// `(address, bytes)` to write into guest memory.
        pub fn ring(
            rings: [u64; 3],
            base: u64,
            mem_size: u64,
        ) -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
            (
                proptest::collection::vec(descriptor(base, mem_size), 16),
                proptest::collection::vec(0u16..20, 16),
                prop_oneof![4 => 0u16..17, 1 => any::<u16>()],
            )
                .prop_map(move |(descs, heads, avail_idx)| {
                    let mut out: Vec<(u64, Vec<u8>)> = descs
                        .iter()
                        .enumerate()
                        .map(|(i, d)| (rings[0] + 16 * i as u64, d.to_vec()))
                        .collect();
                    out.push((rings[1] + 2, avail_idx.to_le_bytes().to_vec()));
                    for (i, h) in heads.iter().enumerate() {
                        out.push((rings[1] + 4 + 2 * i as u64, h.to_le_bytes().to_vec()));
                    }
                    out
                })
        }

        /// One raw descriptor: any flags, a next index a little past a 16-entry table.
        pub fn descriptor(base: u64, mem_size: u64) -> impl Strategy<Value = [u8; 16]> {
            (addr(base, mem_size), len(), 0u16..8, 0u16..20).prop_map(|(addr, len, flags, next)| {
                let mut d = [0u8; 16];
                d[0..8].copy_from_slice(&addr.to_le_bytes());
                d[8..12].copy_from_slice(&len.to_le_bytes());
                d[12..14].copy_from_slice(&flags.to_le_bytes());
                d[14..16].copy_from_slice(&next.to_le_bytes());
                d
            })
        }
    }

    /// `VRING_DESC_F_NEXT`.
    pub const NEXT: u16 = 1;
    /// `VRING_DESC_F_WRITE`: a buffer the device writes.
    pub const WRITE: u16 = 2;

    /// The driver's side of a split queue in test memory: it posts chains and reads what the
    /// device used, wrapping around the rings the way a real driver does.
    pub struct TestRing {
        base: u64,
        size: u16,
        next_desc: u16,
        avail_idx: u16,
        used_seen: u16,
    }

    impl TestRing {
        /// A ring of `size` entries at `base` (descriptors, then avail, then used).
        pub fn new(mem: &GuestMemoryMmap, base: u64, size: u16) -> Self {
            let ring = TestRing {
                base,
                size,
                next_desc: 0,
                avail_idx: 0,
                used_seen: 0,
            };
            let end = ring.used() + 6 + 8 * u64::from(size);
            mem.write_slice(&vec![0u8; (end - base) as usize], GuestAddress(base))
                .unwrap();
            ring
        }

        fn avail(&self) -> u64 {
            self.base + 16 * u64::from(self.size)
        }

        fn used(&self) -> u64 {
            (self.avail() + 6 + 2 * u64::from(self.size) + 3) & !3
        }

        /// The device's view of the ring, ready to use.
        pub fn queue(&self, event_idx: bool) -> Queue {
            let mut q = Queue::new(self.size).unwrap();
            q.try_set_desc_table_address(GuestAddress(self.base))
                .unwrap();
            q.try_set_avail_ring_address(GuestAddress(self.avail()))
                .unwrap();
            q.try_set_used_ring_address(GuestAddress(self.used()))
                .unwrap();
            q.set_event_idx(event_idx);
            q.set_ready(true);
            q
        }

        /// Posts one chain of `(addr, len, flags)` buffers (NEXT and next indices filled in);
        /// returns its head.
        pub fn post(&mut self, mem: &GuestMemoryMmap, descs: &[(u64, u32, u16)]) -> u16 {
            let head = self.next_desc;
            for (i, &(addr, len, flags)) in descs.iter().enumerate() {
                let index = self.next_desc;
                let next = (index + 1) % self.size;
                let more = i + 1 < descs.len();
                self.write_desc(
                    mem,
                    index,
                    addr,
                    len,
                    flags | if more { NEXT } else { 0 },
                    next,
                );
                self.next_desc = next;
            }
            self.publish(mem, head);
            head
        }

        /// Writes descriptor `index` as given, NEXT flag and all.
        pub fn write_desc(
            &self,
            mem: &GuestMemoryMmap,
            index: u16,
            addr: u64,
            len: u32,
            flags: u16,
            next: u16,
        ) {
            let at = GuestAddress(self.base + 16 * u64::from(index));
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&next.to_le_bytes());
            mem.write_slice(&raw, at).unwrap();
        }

        /// Makes the chain at `head` available.
        pub fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
            let slot = self.avail() + 4 + 2 * u64::from(self.avail_idx % self.size);
            mem.write_obj(head, GuestAddress(slot)).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            self.set_avail_idx(mem, self.avail_idx);
        }

        /// Writes the available index, as a hostile driver might.
        pub fn set_avail_idx(&self, mem: &GuestMemoryMmap, idx: u16) {
            mem.write_obj(idx, GuestAddress(self.avail() + 2)).unwrap();
        }

        /// The `(head, len)` entries the device used since the last call.
        pub fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(u32, u32)> {
            let idx: u16 = mem.read_obj(GuestAddress(self.used() + 2)).unwrap();
            let mut out = Vec::new();
            while self.used_seen != idx {
                let at = self.used() + 4 + 8 * u64::from(self.used_seen % self.size);
                let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
                let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
                out.push((id, len));
                self.used_seen = self.used_seen.wrapping_add(1);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_read_config_bytes_past_end_reads_zero() {
        let mut data = [0xff; 4];
        read_config_bytes(&[1, 2, 3], 1, &mut data);
        assert_eq!(data, [2, 3, 0, 0]);
    }

    #[test]
    fn test_read_config_bytes_huge_offset_reads_zero() {
        let mut data = [0xff; 2];
        read_config_bytes(&[1, 2, 3], u64::MAX, &mut data);
        assert_eq!(data, [0, 0]);
    }
}
