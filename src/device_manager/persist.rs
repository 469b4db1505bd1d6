//! The devices in a snapshot: the legacy devices' registers, and each virtio device's
//! transport and own state, by the device's ID. Saved from a paused VM through
//! [`DeviceHandles`], put back by [`DeviceManager::restore`] into devices built from the same
//! configuration.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use fennec_devices::legacy::acpi::AcpiPower;
use fennec_devices::legacy::i8042::{I8042State, I8042};
use fennec_devices::legacy::serial::{SerialDevice, SerialSnapshot};
use fennec_devices::lock;
use fennec_devices::virtio::transport::{TransportState, TransportStateError};
use fennec_devices::virtio::DeviceStateError;
use fennec_devices::EventFdTrigger;

use super::manager::DeviceManager;
use super::virtio::VirtioSlot;

/// One virtio device in a snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VirtioState {
    /// Its ID, checked against the restored VM's.
    pub id: String,
    /// Its transport: what the driver negotiated and set up, and its queues.
    pub transport: TransportState,
    /// What the device keeps of its own beyond its queues, if anything
    /// (`VirtioDevice::save_state`): kept as the JSON text it is until the device reads it, so
    /// a crafted file costs no more memory than its own size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Box<serde_json::value::RawValue>>,
}

/// The devices' state: the legacy devices and each virtio device, in slot order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DevicesState {
    /// The serial port.
    pub serial: SerialSnapshot,
    /// The keyboard controller.
    pub i8042: I8042State,
    /// The ACPI power registers' enabled events, with ACPI.
    pub acpi_events: Option<u8>,
    /// Each virtio device, in slot order.
    #[serde(deserialize_with = "virtio")]
    pub virtio: Vec<VirtioState>,
}

fn virtio<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<VirtioState>, D::Error> {
    fennec_devices::bounded::vec(d, fennec_boot::layout::MAX_VIRTIO_DEVICES)
}

/// Why the devices could not be saved or put back.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The snapshot has another number of virtio devices.
    #[error("the snapshot has {saved} virtio devices, the VM {here}")]
    Count {
        /// The snapshot's.
        saved: usize,
        /// The VM's.
        here: usize,
    },
    /// A slot holds another device in the snapshot.
    #[error("the snapshot has virtio device {saved:?} where the VM has {here:?}")]
    Id {
        /// The snapshot's.
        saved: String,
        /// The VM's.
        here: String,
    },
    /// A transport could not be saved or put back.
    #[error("virtio device {id:?}")]
    Transport {
        /// The device.
        id: String,
        /// Why.
        #[source]
        source: TransportStateError,
    },
    /// A device's own state could not be put back.
    #[error("virtio device {id:?}")]
    Device {
        /// The device.
        id: String,
        /// Why.
        #[source]
        source: DeviceStateError,
    },
}

/// The devices a snapshot saves, held by the running VM's controller.
pub struct DeviceHandles {
    pub(super) serial: Arc<Mutex<SerialDevice>>,
    pub(super) i8042: Arc<Mutex<I8042<EventFdTrigger>>>,
    pub(super) acpi: Option<Arc<Mutex<AcpiPower<EventFdTrigger>>>>,
    pub(super) virtio: Vec<VirtioSlot>,
}

impl DeviceHandles {
    /// The devices' state; the VM is paused, so nothing changes it meanwhile.
    pub fn save(&self) -> Result<DevicesState, PersistError> {
        let mut virtio = Vec::with_capacity(self.virtio.len());
        for slot in &self.virtio {
            let transport =
                lock(&slot.transport)
                    .save()
                    .map_err(|source| PersistError::Transport {
                        id: slot.id.clone(),
                        source,
                    })?;
            let device = lock(&slot.device)
                .save_state()
                .map(|v| serde_json::value::to_raw_value(&v))
                .transpose()
                .map_err(|e| PersistError::Device {
                    id: slot.id.clone(),
                    source: DeviceStateError::Parse(e.to_string()),
                })?;
            virtio.push(VirtioState {
                id: slot.id.clone(),
                transport,
                device,
            });
        }
        Ok(DevicesState {
            serial: lock(&self.serial).save(),
            i8042: lock(&self.i8042).save(),
            acpi_events: self.acpi.as_ref().map(|a| lock(a).save()),
            virtio,
        })
    }
}

impl DeviceManager {
    /// What a snapshot of the running VM reads its devices' state through.
    pub fn snapshot_handles(&self) -> DeviceHandles {
        DeviceHandles {
            serial: self.legacy.serial.clone(),
            i8042: self.legacy.i8042.clone(),
            acpi: self.legacy.acpi.clone(),
            virtio: self.virtio.slots.clone(),
        }
    }

    /// Puts the devices' state of a snapshot back (the serial port's was given to
    /// [`DeviceManager::new`]): the i8042, the ACPI registers, and each virtio device, its own
    /// state first, then its transport, whose device the driver had started resumes work on
    /// its queues.
    pub fn restore(&self, state: &DevicesState) -> Result<(), PersistError> {
        lock(&self.legacy.i8042).restore(&state.i8042);
        if let (Some(acpi), Some(events)) = (&self.legacy.acpi, state.acpi_events) {
            lock(acpi).restore(events);
        }
        let slots = &self.virtio.slots;
        if state.virtio.len() != slots.len() {
            return Err(PersistError::Count {
                saved: state.virtio.len(),
                here: slots.len(),
            });
        }
        for (saved, slot) in state.virtio.iter().zip(slots) {
            if saved.id != slot.id {
                return Err(PersistError::Id {
                    saved: saved.id.clone(),
                    here: slot.id.clone(),
                });
            }
            if let Some(device) = &saved.device {
                let failed = |source| PersistError::Device {
                    id: slot.id.clone(),
                    source,
                };
                let state = serde_json::from_str(device.get())
                    .map_err(|e| failed(DeviceStateError::Parse(e.to_string())))?;
                lock(&slot.device).restore_state(state).map_err(failed)?;
            }
            lock(&slot.transport)
                .restore(&saved.transport)
                .map_err(|source| PersistError::Transport {
                    id: slot.id.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}
