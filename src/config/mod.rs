//! The VM's configuration: one serde type per concern, checked at one gate
//! ([`VmConfig::validate`], called when a VM is built and for each pre-boot change through the
//! control socket), shared by the CLI, the JSON config file and the control socket.
//!
//! Field names follow Firecracker's API (`boot-source`, `machine-config`, `drives`), so the
//! same JSON works for both.
//!
//! - `vm`: the whole VM ([`VmConfig`]), and a device of any kind ([`DeviceConfig`]);
//! - `machine`: what to boot and the machine's shape;
//! - `device`: what a virtio device's configuration brings ([`VirtioDeviceConfig`]);
//! - one file per device: `drive`, `net`, `entropy`, `vsock`;
//! - `options`: Firecracker's shared choices (rate limiters, cache types, CPU templates);
//! - `json`: the configuration as the API and `--config-file` give it;
//! - `error`: what can be wrong.

mod defaults;
mod device;
mod drive;
mod entropy;
mod error;
pub mod json;
mod machine;
mod net;
mod net_user;
mod options;
mod vm;
mod vsock;

pub use defaults::{DEFAULT_BOOT_ARGS, DEFAULT_MEM_MIB, DEFAULT_VCPUS, MAX_MEM_MIB, MIN_MEM_MIB};
pub use device::{valid_id, DeviceEnv, FileUse, VirtioDeviceConfig};
pub use drive::{
    guest_disk_name, open_disk, BlockConfig, DriveSource, TemplateDrive, BOTH_SOURCES,
};
pub use entropy::{EntropyConfig, ENTROPY_ID};
pub use error::ConfigError;
pub use machine::{BootSourceConfig, MachineConfig};
pub use net::{NetConfig, NetHost};
pub use net_user::{find_passt, PasstError, PortForward, Protocol, UserNetConfig};
pub use options::buckets as rate_limiter_buckets;
pub use options::{
    CacheType, CpuTemplate, HugePages, IoEngine, RateLimiterConfig, TokenBucketConfig, Unsupported,
};
pub use vm::{DeviceConfig, DeviceVisitor, KindVisitor, VmConfig};
pub use vsock::{VsockConfig, VSOCK_ID};

#[cfg(test)]
mod tests;
