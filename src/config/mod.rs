//! The VM's configuration: one serde type per concern, validated once, shared by the CLI, the
//! JSON config file and (later) the control socket.
//!
//! Field names follow Firecracker's API (`boot-source`, `machine-config`, `drives`), so the
//! same JSON works for both.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use fennec_boot::layout;
use fennec_devices::virtio::net::MacAddr;

mod drive;
mod net;
mod options;

pub use drive::{BlockConfig, DriveSource, TemplateDrive, BOTH_SOURCES};
pub use net::NetConfig;
pub use options::buckets as rate_limiter_buckets;
pub use options::{
    CacheType, CpuTemplate, EntropyConfig, HugePages, IoEngine, RateLimiterConfig,
    TokenBucketConfig, Unsupported,
};

/// Kernel command line used when the user gives none.
pub const DEFAULT_BOOT_ARGS: &str =
    "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd";

/// Default number of vCPUs.
pub const DEFAULT_VCPUS: u8 = 1;
/// Default guest memory in MiB.
pub const DEFAULT_MEM_MIB: usize = 128;
/// Smallest guest memory fennec accepts: the legacy area, the boot structures and a kernel.
pub const MIN_MEM_MIB: usize = 2;
/// Largest guest memory fennec accepts (1 TiB).
pub const MAX_MEM_MIB: usize = 1 << 20;

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
    /// A `--net` argument could not be parsed.
    #[error("Invalid --net {arg:?}: {why} (expected tap=NAME[,mac=MAC][,id=ID])")]
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

/// What to boot (Firecracker's `boot-source`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSourceConfig {
    /// Path of the kernel: an ELF `vmlinux` (PVH or 64-bit entry) or a bzImage.
    pub kernel_image_path: PathBuf,
    /// Path of an initramfs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    /// Kernel command line; [`DEFAULT_BOOT_ARGS`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

/// The machine's shape (Firecracker's `machine-config`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs.
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub mem_size_mib: usize,
    /// Two threads per core (`smt`); fennec's vCPUs are each a core of their own.
    #[serde(default)]
    pub smt: bool,
    /// Track the pages the guest dirties, for diff snapshots (`track_dirty_pages`).
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// A CPU template (`cpu_template`); left out of the JSON when `None`, as Firecracker does.
    #[serde(default, skip_serializing_if = "CpuTemplate::is_none")]
    pub cpu_template: CpuTemplate,
    /// What backs guest memory (`huge_pages`).
    #[serde(default)]
    pub huge_pages: HugePages,
    /// Describe the machine in ACPI tables as well as in the MP table and on the command line
    /// (`acpi`, a fennec extension; on unless `false`): distribution kernels read only ACPI.
    #[serde(default = "enabled", skip_serializing_if = "is_enabled")]
    pub acpi: bool,
}

fn enabled() -> bool {
    true
}

fn is_enabled(b: &bool) -> bool {
    *b
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            vcpu_count: DEFAULT_VCPUS,
            mem_size_mib: DEFAULT_MEM_MIB,
            smt: false,
            track_dirty_pages: false,
            cpu_template: CpuTemplate::None,
            huge_pages: HugePages::None,
            acpi: true,
        }
    }
}

impl MachineConfig {
    /// Checks the ranges fennec can boot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpu_count == 0 || self.vcpu_count > layout::MAX_VCPUS {
            return Err(ConfigError::VcpuCount(self.vcpu_count.into()));
        }
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&self.mem_size_mib) {
            return Err(ConfigError::MemSize(self.mem_size_mib));
        }
        self.supported().map_err(|error| ConfigError::Unsupported {
            what: "machine-config".into(),
            error,
        })
    }

    /// Refuses the Firecracker choices fennec does not make.
    fn supported(&self) -> Result<(), Unsupported> {
        use options::refuse;
        refuse(
            self.smt,
            "smt",
            "simultaneous multithreading is not supported; each vCPU is a core of its own",
        )?;
        refuse(
            self.track_dirty_pages,
            "track_dirty_pages",
            "dirty page tracking is not supported (fennec has no VM snapshots yet)",
        )?;
        refuse(
            self.cpu_template != CpuTemplate::None,
            "cpu_template",
            "CPU templates are not supported; the guest sees the host's CPU as KVM supports it (\"None\")",
        )?;
        refuse(
            self.huge_pages != HugePages::None,
            "huge_pages",
            "huge pages are not supported yet; guest memory is ordinary pages (\"None\")",
        )
    }

    /// Guest memory in bytes.
    pub fn mem_size_bytes(&self) -> u64 {
        (self.mem_size_mib as u64) << 20
    }
}

/// Whether `id` can name a device: 1 to 64 of `[A-Za-z0-9_-]`.
pub(crate) fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A whole VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// What to boot; none yet on a control socket before `PUT /boot-source`.
    #[serde(
        rename = "boot-source",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_source: Option<BootSourceConfig>,
    /// vCPUs and memory.
    #[serde(rename = "machine-config", default)]
    pub machine_config: MachineConfig,
    /// Virtio block drives, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drives: Vec<BlockConfig>,
    /// Virtio network interfaces, in the order given (the guest's eth0, eth1, ...).
    #[serde(
        rename = "network-interfaces",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub net: Vec<NetConfig>,
    /// The metadata service (MMDS): which interfaces reach it, at which address, V1 or V2.
    #[serde(
        rename = "mmds-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mmds_config: Option<crate::mmds::MmdsConfig>,
    /// An entropy device (virtio-rng), after the drives and network interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<EntropyConfig>,
}

impl VmConfig {
    /// Checks the whole configuration. A missing kernel is the last thing it reports, so a
    /// configuration still waiting for one (the control socket before `PUT /boot-source`)
    /// has had every other check when the answer is [`ConfigError::NoKernel`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.machine_config.validate()?;
        let mut root: Option<&BlockConfig> = None;
        for (i, drive) in self.drives.iter().enumerate() {
            drive.validate()?;
            if self.drives[..i].iter().any(|d| d.id == drive.id) {
                return Err(ConfigError::DuplicateDrive(drive.id.clone()));
            }
            if drive.root {
                if let Some(first) = root {
                    return Err(ConfigError::TwoRootDrives(
                        first.id.clone(),
                        drive.id.clone(),
                    ));
                }
                root = Some(drive);
            }
        }
        for (i, net) in self.net.iter().enumerate() {
            net.validate()?;
            let before = &self.net[..i];
            if before.iter().any(|n| n.id == net.id) {
                return Err(ConfigError::DuplicateIface(net.id.clone()));
            }
            if before.iter().any(|n| n.tap == net.tap) {
                return Err(ConfigError::DuplicateTap(net.tap.clone()));
            }
            if before.iter().any(|n| n.guest_mac() == net.guest_mac()) {
                return Err(ConfigError::DuplicateMac(net.guest_mac()));
            }
        }
        if let Some(mmds) = &self.mmds_config {
            mmds.validate(self.net.iter().map(|n| n.id.as_str()))?;
        }
        let devices = self.drives.len() + self.net.len() + usize::from(self.entropy.is_some());
        if devices > layout::MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDevices(devices));
        }
        match &self.boot_source {
            Some(boot) if !boot.kernel_image_path.as_os_str().is_empty() => Ok(()),
            _ => Err(ConfigError::NoKernel),
        }
    }

    /// The drives in the order the guest sees them: the root drive first (so it is always
    /// `/dev/vda`), then the others as configured.
    pub fn drives_in_guest_order(&self) -> Vec<&BlockConfig> {
        let (root, rest): (Vec<_>, Vec<_>) = self.drives.iter().partition(|d| d.root);
        root.into_iter().chain(rest).collect()
    }

    /// The command line the guest gets: the user's (or the default) plus what fennec needs —
    /// a serial console and i8042 reset unless the user chose otherwise.
    pub fn kernel_cmdline(&self) -> (String, Vec<String>) {
        let base = self
            .boot_source
            .as_ref()
            .and_then(|b| b.boot_args.clone())
            .unwrap_or_else(|| DEFAULT_BOOT_ARGS.to_string());
        let has = |key: &str| {
            base.split_whitespace()
                .take_while(|w| *w != "--")
                .any(|w| w.starts_with(key))
        };
        let mut extra = Vec::new();
        if !has("console=") {
            extra.push("console=ttyS0".to_string());
        }
        if !has("reboot=") {
            extra.push("reboot=k".to_string());
        }
        if let Some(root) = self.drives.iter().find(|d| d.root) {
            if !has("root=") {
                extra.push(match &root.partuuid {
                    Some(uuid) => format!("root=PARTUUID={uuid}"),
                    None => "root=/dev/vda".to_string(),
                });
                extra.push(if root.read_only { "ro" } else { "rw" }.to_string());
            }
        }
        (base, extra)
    }
}

#[cfg(test)]
mod tests;
