//! A virtio transport as the VMM drives it, whatever its kind: a device on a bus whose state a
//! snapshot saves and puts back. virtio-mmio ([`super::mmio`]) is the first kind; virtio-pci
//! comes next, behind the same trait.

use crate::bus::BusDevice;

use super::mmio::MmioState;

/// A transport's state in a snapshot, by kind.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportState {
    /// A virtio-mmio register block.
    Mmio(MmioState),
}

/// A virtio transport: a bus device in front of a virtio device.
pub trait Transport: BusDevice {
    /// The transport's state for a snapshot of a paused VM.
    fn save(&self) -> Result<TransportState, TransportStateError>;
    /// Puts the transport back as `state` has it, and a device the driver had started back to
    /// work on its queues.
    fn restore(&mut self, state: &TransportState) -> Result<(), TransportStateError>;
}

/// Why a transport could not be saved or put back.
#[derive(Debug, thiserror::Error)]
pub enum TransportStateError {
    /// A running device that cannot tell where its queues stand.
    #[error("a running virtio device of type {0} cannot be saved")]
    Unsaveable(u32),
    /// The snapshot's device is of another type.
    #[error("the snapshot has a virtio device of type {saved} where this VM has type {here}")]
    DeviceType {
        /// The snapshot's.
        saved: u32,
        /// This VM's.
        here: u32,
    },
    /// The snapshot's device has another number of queues.
    #[error("the snapshot's virtio device has {saved} queues, this one {here}")]
    QueueCount {
        /// The snapshot's.
        saved: usize,
        /// This device's.
        here: usize,
    },
    /// A queue's maximum size differs.
    #[error("queue {0} has another maximum size in the snapshot")]
    QueueMaxSize(usize),
    /// A queue's saved state is not one a queue can have.
    #[error("queue {index}: {why}")]
    Queue {
        /// Which queue.
        index: usize,
        /// Why.
        why: String,
    },
    /// The saved features are ones the driver could not have accepted.
    #[error("the snapshot's accepted features {0:#x} are not ones this device takes")]
    Features(u64),
    /// The device the driver had started could not start again.
    #[error("the device cannot start again: {0}")]
    Activate(String),
}
