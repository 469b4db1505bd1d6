//! What a VM's handle keeps of each virtio device: its counters, readable after the VM ends,
//! and the device without keeping it alive.

use std::any::Any;
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;

use fennec_devices::virtio::Counters;

use crate::device_manager::{Location, VirtioSlot};

/// A virtio device of the VM.
#[derive(Clone)]
pub(super) struct DeviceRecord {
    pub id: String,
    pub kind: &'static str,
    pub location: Location,
    pub counters: Arc<dyn Counters>,
    device: Weak<dyn Any + Send + Sync>,
}

impl DeviceRecord {
    pub fn of(slot: &VirtioSlot) -> Self {
        DeviceRecord {
            id: slot.id.clone(),
            kind: slot.kind,
            location: slot.location,
            counters: slot.counters.clone(),
            device: slot.device_weak(),
        }
    }

    /// The device while the VM has it, if it is a `D`.
    pub fn device<D: Send + 'static>(&self) -> Option<Arc<Mutex<D>>> {
        self.device.upgrade()?.downcast::<Mutex<D>>().ok()
    }
}

/// A device's counters, under its ID, with what kind of device it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceMetrics {
    /// What the device is ("drive", "network interface", ...).
    pub kind: &'static str,
    /// Its counters.
    pub counters: serde_json::Value,
}
