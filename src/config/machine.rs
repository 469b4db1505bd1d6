//! What to boot and the machine's shape (Firecracker's `boot-source` and `machine-config`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use fennec_boot::layout;

use super::defaults::{DEFAULT_MEM_MIB, DEFAULT_VCPUS, MAX_MEM_MIB, MIN_MEM_MIB};
use super::error::ConfigError;
use super::options::{self, CpuTemplate, HugePages, Unsupported};

/// What to boot (Firecracker's `boot-source`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSourceConfig {
    /// Path of the kernel: an ELF `vmlinux` (PVH or 64-bit entry) or a bzImage.
    pub kernel_image_path: PathBuf,
    /// Path of an initramfs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    /// Kernel command line; [`crate::config::DEFAULT_BOOT_ARGS`] when absent.
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
            "dirty page tracking is not supported: fennec takes full snapshots only",
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
