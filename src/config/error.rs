//! What can be wrong in a configuration.

use fennec_boot::layout;
use fennec_devices::virtio::net::MacAddr;

use super::defaults::{MAX_MEM_MIB, MIN_MEM_MIB};
use super::options::Unsupported;

/// Errors in a configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// vCPU count out of range.
    #[error("The vCPU count must be between 1 and {max}, not {0}", max = layout::MAX_VCPUS)]
    VcpuCount(u64),
    /// Memory size out of range.
    #[error("Guest memory must be between {MIN_MEM_MIB} and {MAX_MEM_MIB} MiB, not {0} MiB")]
    MemSize(usize),
    /// No kernel given.
    #[error("No kernel image configured")]
    NoKernel,
    /// A drive ID is empty, too long, or has characters other than `[A-Za-z0-9_-]`.
    #[error("Invalid drive ID {0:?}: use 1 to 64 of A-Z a-z 0-9 _ -")]
    DriveId(String),
    /// Two drives share an ID.
    #[error("Two drives have the ID {0:?}")]
    DuplicateDrive(String),
    /// More than one drive is the root device.
    #[error("Drives {0:?} and {1:?} are both marked root; only one can be")]
    TwoRootDrives(String, String),
    /// A drive has no path.
    #[error("Drive {0:?} has no path_on_host (or template)")]
    DrivePath(String),
    /// A drive's template, store or VM name is wrong, or it has both a path and a template.
    #[error("Drive {id:?}: {why}")]
    DriveSource {
        /// The drive.
        id: String,
        /// What is wrong.
        why: String,
    },
    /// A drive names a template but has no image yet.
    #[error("Drive {0:?} names a template but was not given an image: provision it first (fennec::storage::provision)")]
    Unprovisioned(String),
    /// More virtio devices than IRQs.
    #[error("{0} devices configured, but a VM has room for at most {max}", max = layout::MAX_VIRTIO_DEVICES)]
    TooManyDevices(usize),
    /// A network interface ID is empty, too long, or has characters other than `[A-Za-z0-9_-]`.
    #[error("Invalid network interface ID {0:?}: use 1 to 64 of A-Z a-z 0-9 _ -")]
    IfaceId(String),
    /// Two network interfaces share an ID.
    #[error("Two network interfaces have the ID {0:?}")]
    DuplicateIface(String),
    /// A TAP name cannot be an interface name.
    #[error("Network interface {id:?}: {name:?} is not a valid TAP name (1 to 15 characters, no '/', ':' or spaces)")]
    TapName {
        /// The interface.
        id: String,
        /// The name.
        name: String,
    },
    /// A network interface names no host side, or more than one.
    #[error("Network interface {0:?}: give exactly one of host_dev_name (a TAP), bridge, user")]
    NetHost(String),
    /// A user-mode interface's settings are not usable.
    #[error("Network interface {id:?}: {why}")]
    UserNet {
        /// The interface.
        id: String,
        /// What is wrong.
        why: String,
    },
    /// Two network interfaces use the same TAP.
    #[error("Two network interfaces use TAP {0:?}")]
    DuplicateTap(String),
    /// A guest MAC is multicast or zero.
    #[error("Network interface {id:?}: {mac} is not a unicast MAC address")]
    Mac {
        /// The interface.
        id: String,
        /// The address.
        mac: MacAddr,
    },
    /// Two network interfaces have the same MAC.
    #[error("Two network interfaces have the MAC address {0}")]
    DuplicateMac(MacAddr),
    /// A `--vsock` argument could not be parsed.
    #[error("Invalid --vsock {arg:?}: {why} (expected cid=N,uds=PATH)")]
    VsockArg {
        /// The argument.
        arg: String,
        /// What is wrong.
        why: String,
    },
    /// The vsock device's configuration is not one a guest can use.
    #[error("Invalid vsock device: {0}")]
    Vsock(String),
    /// A `--net` argument could not be parsed.
    #[error("Invalid --net {arg:?}: {why} (expected tap=NAME, bridge=BR or user[,hostfwd=tcp::HOSTPORT-:GUESTPORT]..., then [,mac=MAC][,id=ID])")]
    NetArg {
        /// The argument.
        arg: String,
        /// What is wrong.
        why: String,
    },
    /// A Firecracker field set to something fennec does not do.
    #[error("{what}: {error}")]
    Unsupported {
        /// Where: `machine-config`, a drive, a network interface.
        what: String,
        /// Which field, and why.
        error: Unsupported,
    },
    /// The metadata service's configuration does not fit the VM.
    #[error(transparent)]
    Mmds(#[from] crate::mmds::MmdsError),
    /// A `--disk` argument could not be parsed.
    #[error("Invalid --disk {arg:?}: {why} (expected path=PATH[,id=ID][,ro][,root] or template=NAME[,store=SPEC][,vm=NAME][,id=ID][,ro][,root])")]
    DiskArg {
        /// The argument.
        arg: String,
        /// What is wrong.
        why: String,
    },
}
