//! A virtio-mmio transport as a snapshot holds it: plain data, checked when it is put back.

use crate::virtio::QueueState;

/// One queue in a snapshot: the driver's rings and the device's positions in them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedQueue {
    /// The device's largest size for it.
    pub max_size: u16,
    /// The size the driver chose.
    pub size: u16,
    /// The driver made it ready.
    pub ready: bool,
    /// The descriptor table's guest address.
    pub desc_table: u64,
    /// The available ring's guest address.
    pub avail_ring: u64,
    /// The used ring's guest address.
    pub used_ring: u64,
    /// The next available entry the device takes.
    pub next_avail: u16,
    /// The next used entry the device fills.
    pub next_used: u16,
    /// VIRTIO_F_RING_EVENT_IDX is in use.
    pub event_idx: bool,
}

impl From<QueueState> for SavedQueue {
    fn from(q: QueueState) -> Self {
        SavedQueue {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx: q.event_idx_enabled,
        }
    }
}

impl From<SavedQueue> for QueueState {
    fn from(q: SavedQueue) -> Self {
        QueueState {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx,
        }
    }
}

/// A transport in a snapshot: what the driver negotiated and set up.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MmioState {
    /// The virtio device type, checked on restore.
    pub device_type: u32,
    /// The device status.
    pub status: u8,
    /// The features the driver accepted.
    pub acked_features: u64,
    /// DeviceFeaturesSel.
    pub device_features_sel: u32,
    /// DriverFeaturesSel.
    pub driver_features_sel: u32,
    /// QueueSel.
    pub queue_sel: u32,
    /// InterruptStatus: why the interrupt was raised, not yet acknowledged.
    pub interrupt_status: u32,
    /// Every queue.
    #[serde(deserialize_with = "queues")]
    pub queues: Vec<SavedQueue>,
}

/// The most queues a saved transport may have: more than any device has.
pub const MAX_QUEUES: usize = 256;

fn queues<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SavedQueue>, D::Error> {
    crate::bounded::vec(d, MAX_QUEUES)
}
