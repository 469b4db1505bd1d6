//! A transport's state in a snapshot, and putting it back.

use std::sync::atomic::Ordering;

use super::{lock, status, MmioTransport, Queue, QueueT};
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
    pub queues: Vec<SavedQueue>,
}

impl MmioTransport {
    /// The transport's state for a snapshot of a paused VM. A running device's queue
    /// positions come from the device; one that cannot give them cannot be saved.
    pub fn save(&self) -> Result<MmioState, String> {
        let device = lock(&self.device);
        let queues = match self.status & status::DRIVER_OK != 0
            && self.status & status::DEVICE_NEEDS_RESET == 0
        {
            true => device.queue_states().ok_or_else(|| {
                format!(
                    "a running virtio device of type {} cannot be saved",
                    device.device_type()
                )
            })?,
            false => self.queues.iter().map(Queue::state).collect(),
        };
        Ok(MmioState {
            device_type: device.device_type(),
            status: self.status,
            acked_features: self.acked_features,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            queue_sel: self.queue_sel,
            interrupt_status: self.interrupt.status(),
            queues: queues.into_iter().map(SavedQueue::from).collect(),
        })
    }

    /// Puts the transport back as `state` has it, and a device the driver had started back to
    /// work on its queues where it left them. The state must be this device type's, with its
    /// number of queues, and queues that lie in guest memory.
    pub fn restore(&mut self, state: &MmioState) -> Result<(), String> {
        let device_type = lock(&self.device).device_type();
        if state.device_type != device_type {
            return Err(format!(
                "the snapshot has a virtio device of type {} where this VM has type {device_type}",
                state.device_type
            ));
        }
        if state.queues.len() != self.queues.len() {
            return Err(format!(
                "the snapshot's virtio device has {} queues, this one {}",
                state.queues.len(),
                self.queues.len()
            ));
        }
        let mut queues = Vec::with_capacity(state.queues.len());
        for (i, (saved, q)) in state.queues.iter().zip(&self.queues).enumerate() {
            if saved.max_size != q.max_size() {
                return Err(format!(
                    "queue {i} has another maximum size in the snapshot"
                ));
            }
            queues.push(
                Queue::try_from(QueueState::from(*saved)).map_err(|e| format!("queue {i}: {e}"))?,
            );
        }
        self.queues = queues;
        self.status = state.status;
        self.acked_features = state.acked_features;
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.queue_sel = state.queue_sel;
        self.interrupt.clear();
        self.interrupt
            .status
            .fetch_or(state.interrupt_status, Ordering::SeqCst);
        if self.status & status::DRIVER_OK != 0 && self.status & status::DEVICE_NEEDS_RESET == 0 {
            self.activate()?;
        }
        Ok(())
    }
}
