//! The VM's configuration: one serde type per concern, validated once, shared by the CLI, the
//! JSON config file and (later) the control socket.
//!
//! Field names follow Firecracker's API (`boot-source`, `machine-config`), so the same JSON
//! works for both.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use fennec_boot::layout;

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
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            vcpu_count: DEFAULT_VCPUS,
            mem_size_mib: DEFAULT_MEM_MIB,
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
        Ok(())
    }

    /// Guest memory in bytes.
    pub fn mem_size_bytes(&self) -> u64 {
        (self.mem_size_mib as u64) << 20
    }
}

/// A whole VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// What to boot.
    #[serde(rename = "boot-source")]
    pub boot_source: BootSourceConfig,
    /// vCPUs and memory.
    #[serde(rename = "machine-config", default)]
    pub machine_config: MachineConfig,
}

impl VmConfig {
    /// Checks the whole configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.boot_source.kernel_image_path.as_os_str().is_empty() {
            return Err(ConfigError::NoKernel);
        }
        self.machine_config.validate()
    }

    /// The command line the guest gets: the user's (or the default) plus what fennec needs —
    /// a serial console and i8042 reset unless the user chose otherwise.
    pub fn kernel_cmdline(&self) -> (String, Vec<String>) {
        let base = self
            .boot_source
            .boot_args
            .clone()
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
        (base, extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(boot_args: Option<&str>) -> VmConfig {
        VmConfig {
            boot_source: BootSourceConfig {
                kernel_image_path: "/k".into(),
                initrd_path: None,
                boot_args: boot_args.map(str::to_string),
            },
            machine_config: MachineConfig::default(),
        }
    }

    #[test]
    fn test_machine_config_zero_vcpus_invalid() {
        let m = MachineConfig {
            vcpu_count: 0,
            mem_size_mib: 128,
        };
        assert_eq!(m.validate(), Err(ConfigError::VcpuCount(0)));
    }

    #[test]
    fn test_machine_config_tiny_memory_invalid() {
        let m = MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 1,
        };
        assert_eq!(m.validate(), Err(ConfigError::MemSize(1)));
    }

    #[test]
    fn test_vm_config_empty_kernel_invalid() {
        assert_eq!(VmConfig::default().validate(), Err(ConfigError::NoKernel));
    }

    #[test]
    fn test_kernel_cmdline_user_args_get_console_and_reboot() {
        let (base, extra) = config(Some("quiet")).kernel_cmdline();
        assert_eq!(base, "quiet");
        assert_eq!(extra, vec!["console=ttyS0", "reboot=k"]);
    }

    #[test]
    fn test_kernel_cmdline_user_console_respected() {
        let (_, extra) = config(Some("console=hvc0 reboot=t")).kernel_cmdline();
        assert!(extra.is_empty());
    }

    #[test]
    fn test_kernel_cmdline_init_args_do_not_count() {
        let (_, extra) = config(Some("quiet -- console=foo")).kernel_cmdline();
        assert_eq!(extra, vec!["console=ttyS0", "reboot=k"]);
    }

    #[test]
    fn test_kernel_cmdline_default_has_console() {
        let (base, extra) = config(None).kernel_cmdline();
        assert_eq!(base, DEFAULT_BOOT_ARGS);
        assert!(extra.is_empty());
    }

    #[test]
    fn test_vm_config_firecracker_json_parses() {
        let json = r#"{
            "boot-source": {"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"},
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 256}
        }"#;
        let cfg: VmConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.machine_config.vcpu_count, 2);
        assert_eq!(cfg.boot_source.kernel_image_path, PathBuf::from("/vmlinux"));
    }

    #[test]
    fn test_vm_config_unknown_field_rejected() {
        let json = r#"{"boot-source": {"kernel_image_path": "/k", "bogus": 1}}"#;
        assert!(serde_json::from_str::<VmConfig>(json).is_err());
    }
}
