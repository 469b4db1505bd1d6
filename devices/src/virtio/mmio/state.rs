//! Saving a virtio-mmio transport for a snapshot, and putting it back.

use std::sync::atomic::Ordering;

use super::saved::{MmioState, SavedQueue};
use super::transport::MmioTransport;
use crate::lock;
use crate::virtio::transport::{Transport, TransportState, TransportStateError};
use crate::virtio::{status, Queue, QueueState, QueueT};

impl MmioTransport {
    /// The transport's state for a snapshot of a paused VM. A running device's queue
    /// positions come from the device; one that cannot give them cannot be saved.
    pub fn save_mmio(&self) -> Result<MmioState, TransportStateError> {
        let device = lock(&self.device);
        let queues = match self.status & status::DRIVER_OK != 0
            && self.status & status::DEVICE_NEEDS_RESET == 0
        {
            true => device
                .queue_states()
                .ok_or_else(|| TransportStateError::Unsaveable(device.device_type()))?,
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
    /// number of queues, features the device offers and that pass its own checks (as a
    /// driver's would have to), and queues that lie in guest memory.
    pub fn restore_mmio(&mut self, state: &MmioState) -> Result<(), TransportStateError> {
        let device_type = lock(&self.device).device_type();
        if state.device_type != device_type {
            return Err(TransportStateError::DeviceType {
                saved: state.device_type,
                here: device_type,
            });
        }
        if state.queues.len() != self.queues.len() {
            return Err(TransportStateError::QueueCount {
                saved: state.queues.len(),
                here: self.queues.len(),
            });
        }
        let mut queues = Vec::with_capacity(state.queues.len());
        for (i, (saved, q)) in state.queues.iter().zip(&self.queues).enumerate() {
            if saved.max_size != q.max_size() {
                return Err(TransportStateError::QueueMaxSize(i));
            }
            queues.push(Queue::try_from(QueueState::from(*saved)).map_err(|e| {
                TransportStateError::Queue {
                    index: i,
                    why: e.to_string(),
                }
            })?);
        }
        // What a driver must have negotiated, once FEATURES_OK: the features a guest could
        // get accepted, no others.
        if state.status & status::FEATURES_OK != 0 && !self.restorable(state.acked_features) {
            return Err(TransportStateError::Features(state.acked_features));
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
            self.activate().map_err(TransportStateError::Activate)?;
        }
        Ok(())
    }
}

impl Transport for MmioTransport {
    fn save(&self) -> Result<TransportState, TransportStateError> {
        self.save_mmio().map(TransportState::Mmio)
    }

    fn restore(&mut self, state: &TransportState) -> Result<(), TransportStateError> {
        match state {
            TransportState::Mmio(state) => self.restore_mmio(state),
        }
    }
}
