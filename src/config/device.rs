//! What a virtio device's configuration brings to the VMM besides its fields. A device lives
//! in two places: its model in `fennec-devices` (`devices/src/virtio/<device>/`), and its
//! configuration file here (`src/config/<device>.rs`), which implements
//! [`VirtioDeviceConfig`]: how the API and the logs name it, how it is checked, how its
//! backend is opened and the device made, and the syscalls its backend makes. Everything else
//! (its slot, its notifications and interrupt, its counters, its snapshot state, its place in
//! the guest's description of the machine) the device manager does alike for every device.

use std::fmt::Debug;

use event_manager::MutEventSubscriber;
use serde::de::DeserializeOwned;
use serde::Serialize;

use fennec_devices::virtio::VirtioDevice;

use super::error::ConfigError;
use crate::device_manager::DeviceError;
use crate::mmds::{Mmds, MmdsConfig};
use crate::seccomp::SyscallNeed;

/// How a running VM may use a file a device needs (Landlock, [`crate::sandbox`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileUse {
    /// Open this file read-only.
    Read(std::path::PathBuf),
    /// Open this file for reading and writing.
    ReadWrite(std::path::PathBuf),
    /// Make, use and remove anything beneath this directory.
    Beneath(std::path::PathBuf),
}

/// What a device's build may use of the VM around it.
pub struct DeviceEnv<'a> {
    /// The guest's metadata document, for a network interface that serves it.
    pub mmds: &'a Mmds,
    /// Which interfaces serve it, where.
    pub mmds_config: Option<&'a MmdsConfig>,
    /// The device's place among those of its kind, in the order the guest sees them (0 for
    /// `vda` and `eth0`).
    pub index: usize,
}

/// A virtio device's configuration, and what the VMM does with it.
pub trait VirtioDeviceConfig:
    Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// What the API and the log call one: "drive", "network interface", "entropy device".
    const KIND: &'static str;
    /// The syscalls its backend makes beyond a role's base allowlist.
    const SYSCALLS: &'static [SyscallNeed] = &[];
    /// The device model.
    type Device: VirtioDevice + MutEventSubscriber + 'static;

    /// The device's ID: how the API, the metrics and snapshots name it.
    fn id(&self) -> &str;
    /// Checks this device's configuration on its own (what involves other devices is
    /// [`crate::config::VmConfig::validate`]'s).
    fn validate(&self) -> Result<(), ConfigError>;
    /// Checks, before boot, what the host must have for the device (a drive's image, or its
    /// template in its store), so that a client hears of it when it configures the device.
    fn check_host(&self) -> Result<(), ConfigError> {
        Ok(())
    }
    /// Opens the device's backend and makes the device.
    fn build(&self, env: &DeviceEnv<'_>) -> Result<Self::Device, DeviceError>;
    /// The files the running VM may still open for the device (its image, to open it again),
    /// once everything else is closed to it.
    fn files(&self) -> Vec<FileUse> {
        Vec::new()
    }
    /// Where the guest finds it and what backs it, for the log.
    fn describe(&self, device: &Self::Device, env: &DeviceEnv<'_>) -> String;
}

/// Whether `id` can name a device: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
