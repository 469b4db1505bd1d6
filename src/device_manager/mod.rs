//! The devices of one VM, by concern:
//!
//! - `manager`: [`DeviceManager`], which makes them all from a configuration;
//! - `legacy`: the devices every VM has (serial port, i8042, boot timer, the ACPI registers and
//!   pvpanic);
//! - `virtio`: attaching any virtio device, whatever its type, behind a transport
//!   ([`Virtio::attach`]), and the record of each ([`VirtioSlot`]);
//! - `describe`: the machine as the guest learns of it (the command line's entries, the MP
//!   table's and the ACPI tables' input);
//! - `persist`: the devices' state in a snapshot, saved and put back.
//!
//! A device's own part (its configuration, how its backend opens) is in its configuration
//! file ([`crate::config::VirtioDeviceConfig`]).

mod describe;
mod error;
mod legacy;
mod manager;
mod persist;
mod virtio;

pub use error::DeviceError;
pub use legacy::{ExitEvents, Legacy};
pub use manager::DeviceManager;
pub use persist::{DeviceHandles, DevicesState, PersistError, VirtioState};
pub use virtio::{Location, Subscriber, Virtio, VirtioSlot};
