//! Why a device could not be set up.

use fennec_devices::bus::BusError;
use fennec_devices::virtio::block::DiskError;
use fennec_devices::virtio::net::TapError;

use crate::config::ConfigError;
use crate::vstate::vm::VmError;

/// Errors setting up devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Creating an eventfd failed.
    #[error("Failed to create an eventfd for {0}")]
    EventFd(&'static str, #[source] std::io::Error),
    /// Two devices claim the same range.
    #[error("Failed to place a device on the bus")]
    Bus(#[source] BusError),
    /// Connecting an interrupt or a queue notification failed.
    #[error("Failed to connect a device to KVM")]
    Kvm(#[source] VmError),
    /// Every virtio slot is taken.
    #[error("No virtio slot left for {0:?}: a VM has room for {max}", max = fennec_boot::layout::MAX_VIRTIO_DEVICES)]
    NoSlot(String),
    /// Two virtio devices share an ID.
    #[error("Two virtio devices have the ID {0:?}")]
    DuplicateId(String),
    /// The device's configuration cannot be built (a drive without an image).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A drive's image could not be used.
    #[error("Drive {id:?}")]
    Disk {
        /// The drive.
        id: String,
        /// Why.
        #[source]
        source: DiskError,
    },
    /// A network interface's TAP could not be used.
    #[error("Network interface {id:?}")]
    Tap {
        /// The interface.
        id: String,
        /// Why.
        #[source]
        source: TapError,
    },
    /// A user-mode interface's passt could not be started.
    #[error("Network interface {id:?}")]
    Passt {
        /// The interface.
        id: String,
        /// Why.
        #[source]
        source: crate::config::PasstError,
    },
    /// The vsock device could not listen at its socket path.
    #[error("The vsock device cannot listen at {path:?}")]
    VsockSocket {
        /// Its `uds_path`.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
