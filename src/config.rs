//! The VM's configuration: one serde type per concern, validated once, shared by the CLI, the
//! JSON config file and (later) the control socket.
//!
//! Field names follow Firecracker's API (`boot-source`, `machine-config`, `drives`), so the
//! same JSON works for both.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use fennec_boot::layout;
use fennec_devices::virtio::net::{tap, MacAddr};

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

/// Where a drive's image comes from: a path, or a template in an image store. One or the
/// other, by construction: the CLI, the JSON of the config file and the control socket, and the
/// library all refuse a drive that names both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriveSource {
    /// A raw image file or a block device.
    Path(PathBuf),
    /// A clone of a template, made when the VM starts (see [`crate::storage::provision`]).
    Template(TemplateDrive),
}

impl Default for DriveSource {
    fn default() -> Self {
        DriveSource::Path(PathBuf::new())
    }
}

/// A drive cloned from a template.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateDrive {
    /// The template.
    pub template: String,
    /// The store holding it (`zfs:POOL/DATASET` or `dir:/PATH`); the default store when
    /// absent.
    pub store: Option<String>,
    /// Keep the clone as disk `VM_NAME/DRIVE_ID`, reused by later runs; without it the clone
    /// is ephemeral and destroyed when the VM ends.
    pub vm_name: Option<String>,
}

/// A virtio-blk drive. As JSON it has Firecracker's field names (`drive_id`, `path_on_host`,
/// `is_root_device`, `is_read_only`) and fennec's `template`, `store` and `vm_name` for a
/// drive cloned from a template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DriveJson", into = "DriveJson")]
pub struct BlockConfig {
    /// The drive's name; also the serial number the guest reads (first 20 bytes).
    pub id: String,
    /// Where its image comes from.
    pub source: DriveSource,
    /// Make it the guest's root filesystem (`root=/dev/vda`).
    pub root: bool,
    /// Refuse guest writes; the image is opened read-only.
    pub read_only: bool,
}

/// A drive as the JSON of the API and the config file has it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DriveJson {
    drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_on_host: Option<PathBuf>,
    #[serde(default)]
    is_root_device: bool,
    #[serde(default)]
    is_read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    store: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vm_name: Option<String>,
}

impl TryFrom<DriveJson> for BlockConfig {
    type Error = ConfigError;

    fn try_from(j: DriveJson) -> Result<Self, ConfigError> {
        let source =
            DriveSource::from_parts(&j.drive_id, j.path_on_host, j.template, j.store, j.vm_name)?;
        Ok(BlockConfig {
            id: j.drive_id,
            source,
            root: j.is_root_device,
            read_only: j.is_read_only,
        })
    }
}

impl From<BlockConfig> for DriveJson {
    fn from(d: BlockConfig) -> Self {
        let (path_on_host, template, store, vm_name) = match d.source {
            DriveSource::Path(p) => (Some(p), None, None, None),
            DriveSource::Template(t) => (None, Some(t.template), t.store, t.vm_name),
        };
        DriveJson {
            drive_id: d.id,
            path_on_host,
            is_root_device: d.root,
            is_read_only: d.read_only,
            template,
            store,
            vm_name,
        }
    }
}

impl DriveSource {
    /// The source a drive's parts name: a path or a template, not both, not neither; `store`
    /// and `vm_name` only with a template. The one place that decides, for every way in.
    fn from_parts(
        id: &str,
        path: Option<PathBuf>,
        template: Option<String>,
        store: Option<String>,
        vm_name: Option<String>,
    ) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::DriveSource {
            id: id.to_string(),
            why: why.to_string(),
        };
        match (path, template) {
            (Some(_), Some(_)) => Err(bad(BOTH_SOURCES)),
            (Some(p), None) if store.is_some() || vm_name.is_some() => {
                let _ = p;
                Err(bad("store and vm_name go with a template"))
            }
            (Some(p), None) => Ok(DriveSource::Path(p)),
            (None, Some(template)) => Ok(DriveSource::Template(TemplateDrive {
                template,
                store,
                vm_name,
            })),
            (None, None) => Err(ConfigError::DrivePath(id.to_string())),
        }
    }
}

/// What every way of configuring a drive says to one that names a path and a template.
pub const BOTH_SOURCES: &str = "give path_on_host or template, not both";

impl BlockConfig {
    /// A writable, non-root drive `id` on the image at `path`.
    pub fn path(id: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        BlockConfig {
            id: id.into(),
            source: DriveSource::Path(path.into()),
            ..BlockConfig::default()
        }
    }

    /// The image the drive opens: its path, or its clone's once provisioned; `None` for a
    /// template drive not provisioned yet.
    pub fn image_path(&self) -> Option<&std::path::Path> {
        match &self.source {
            DriveSource::Path(p) if !p.as_os_str().is_empty() => Some(p),
            _ => None,
        }
    }

    /// The template the drive is cloned from, if it is.
    pub fn template(&self) -> Option<&TemplateDrive> {
        match &self.source {
            DriveSource::Template(t) => Some(t),
            DriveSource::Path(_) => None,
        }
    }

    /// Parses a `--disk` argument: `path=PATH[,id=ID][,ro][,root]` or
    /// `template=NAME[,store=SPEC][,vm=NAME][,id=ID][,ro][,root]`; `default_id` names the drive
    /// when `id=` is missing.
    pub fn from_cli(arg: &str, default_id: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::DiskArg {
            arg: arg.to_string(),
            why: why.to_string(),
        };
        let (mut path, mut id, mut template, mut store, mut vm) = (None, None, None, None, None);
        let (mut root, mut read_only) = (false, false);
        for part in arg.split(',') {
            let slot = match part.split_once('=') {
                Some(("path", v)) => Some((&mut path, v)),
                Some(("id", v)) => Some((&mut id, v)),
                Some(("template", v)) => Some((&mut template, v)),
                Some(("store", v)) => Some((&mut store, v)),
                Some(("vm", v)) => Some((&mut vm, v)),
                None if part == "ro" => {
                    read_only = true;
                    None
                }
                None if part == "root" => {
                    root = true;
                    None
                }
                _ => return Err(bad(&format!("unknown option {part:?}"))),
            };
            if let Some((slot, value)) = slot {
                if value.is_empty() {
                    return Err(bad(&format!("{part:?} has no value")));
                }
                if slot.replace(value.to_string()).is_some() {
                    return Err(bad(&format!("{part:?} given twice")));
                }
            }
        }
        let id = id.unwrap_or_else(|| default_id.to_string());
        let source = DriveSource::from_parts(&id, path.map(PathBuf::from), template, store, vm)
            .map_err(|e| match e {
                ConfigError::DriveSource { why, .. } => bad(&why),
                _ => bad("no path= or template="),
            })?;
        Ok(BlockConfig {
            id,
            source,
            root,
            read_only,
        })
    }

    /// Checks the ID, and the template's names (a path is checked when it is opened).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_id(&self.id) {
            return Err(ConfigError::DriveId(self.id.clone()));
        }
        let bad = |why: String| ConfigError::DriveSource {
            id: self.id.clone(),
            why,
        };
        match &self.source {
            DriveSource::Template(t) => {
                crate::storage::check_name("template", &t.template)
                    .map_err(|e| bad(e.to_string()))?;
                if let Some(vm) = &t.vm_name {
                    crate::storage::DiskRef::new(vm, &self.id).map_err(|e| bad(e.to_string()))?;
                }
            }
            DriveSource::Path(p) if p.as_os_str().is_empty() => {
                return Err(ConfigError::DrivePath(self.id.clone()))
            }
            DriveSource::Path(_) => {}
        }
        Ok(())
    }
}

/// Whether `id` can name a device: 1 to 64 of `[A-Za-z0-9_-]`.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A virtio-net interface on a TAP. Field names are Firecracker's (`iface_id`,
/// `host_dev_name`, `guest_mac`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The interface's name.
    #[serde(rename = "iface_id")]
    pub id: String,
    /// The TAP interface on the host; it must exist.
    #[serde(rename = "host_dev_name")]
    pub tap: String,
    /// The guest's MAC address; derived from the TAP name when absent, so it is stable.
    #[serde(
        rename = "guest_mac",
        default,
        skip_serializing_if = "Option::is_none",
        with = "mac_string"
    )]
    pub mac: Option<MacAddr>,
}

impl NetConfig {
    /// Parses a `--net` argument: `tap=NAME[,mac=MAC][,id=ID]`; `default_id` names the
    /// interface when `id=` is missing.
    pub fn from_cli(arg: &str, default_id: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::NetArg {
            arg: arg.to_string(),
            why,
        };
        let (mut tap, mut mac, mut id) = (None, None, None);
        for part in arg.split(',') {
            let (slot, value) = match part.split_once('=') {
                Some(("tap", v)) => (&mut tap, v),
                Some(("mac", v)) => (&mut mac, v),
                Some(("id", v)) => (&mut id, v),
                _ => return Err(bad(format!("unknown option {part:?}"))),
            };
            if slot.replace(value).is_some() {
                return Err(bad(format!("{part:?} given twice")));
            }
        }
        Ok(NetConfig {
            id: id.unwrap_or(default_id).to_string(),
            tap: tap
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad("no tap".into()))?
                .to_string(),
            mac: mac.map(str::parse).transpose().map_err(bad)?,
        })
    }

    /// The guest's MAC: the configured one, or one derived from the TAP name.
    pub fn guest_mac(&self) -> MacAddr {
        self.mac.unwrap_or_else(|| MacAddr::stable(&self.tap))
    }

    /// Checks the ID, TAP name and MAC.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_id(&self.id) {
            return Err(ConfigError::IfaceId(self.id.clone()));
        }
        if !tap::valid_name(&self.tap) {
            return Err(ConfigError::TapName {
                id: self.id.clone(),
                name: self.tap.clone(),
            });
        }
        match self.mac {
            Some(mac) if !mac.is_unicast() => Err(ConfigError::Mac {
                id: self.id.clone(),
                mac,
            }),
            _ => Ok(()),
        }
    }
}

/// `MacAddr` as the `"02:fc:00:00:00:01"` strings of the JSON API.
mod mac_string {
    use super::MacAddr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &Option<MacAddr>, s: S) -> Result<S::Ok, S::Error> {
        match mac {
            Some(m) => s.serialize_str(&m.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MacAddr>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
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
}

impl VmConfig {
    /// Checks the whole configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.boot_source {
            Some(boot) if !boot.kernel_image_path.as_os_str().is_empty() => {}
            _ => return Err(ConfigError::NoKernel),
        }
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
        let devices = self.drives.len() + self.net.len();
        if devices > layout::MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDevices(devices));
        }
        Ok(())
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
                extra.push("root=/dev/vda".to_string());
                extra.push(if root.read_only { "ro" } else { "rw" }.to_string());
            }
        }
        (base, extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(boot_args: Option<&str>) -> VmConfig {
        VmConfig {
            boot_source: Some(BootSourceConfig {
                kernel_image_path: "/k".into(),
                initrd_path: None,
                boot_args: boot_args.map(str::to_string),
            }),
            machine_config: MachineConfig::default(),
            drives: Vec::new(),
            net: Vec::new(),
        }
    }

    fn net(id: &str, tap: &str) -> NetConfig {
        NetConfig {
            id: id.into(),
            tap: tap.into(),
            mac: None,
        }
    }

    #[test]
    fn test_net_arg_all_options() {
        let n = NetConfig::from_cli("tap=tap0,mac=02:fc:00:00:00:07,id=uplink", "net0").unwrap();
        assert_eq!(
            n,
            NetConfig {
                id: "uplink".into(),
                tap: "tap0".into(),
                mac: Some(MacAddr([2, 0xfc, 0, 0, 0, 7])),
            }
        );
    }

    #[test]
    fn test_net_arg_default_id_and_stable_mac() {
        let n = NetConfig::from_cli("tap=tap1", "net3").unwrap();
        assert_eq!(n.id, "net3");
        assert_eq!(n.guest_mac(), MacAddr::stable("tap1"));
    }

    #[test]
    fn test_net_arg_errors_name_the_problem() {
        for (arg, why) in [
            ("mac=02:fc:00:00:00:07", "no tap"),
            ("tap=a,tap=b", "given twice"),
            ("tap=a,queues=4", "unknown option"),
            ("tap=a,mac=nonsense", "not a MAC address"),
        ] {
            let e = NetConfig::from_cli(arg, "net0").unwrap_err().to_string();
            assert!(e.contains(why), "{arg}: {e}");
        }
    }

    #[test]
    fn test_net_multicast_mac_rejected() {
        let mut c = config(None);
        c.net = vec![NetConfig {
            mac: Some(MacAddr([1, 0, 0, 0, 0, 1])),
            ..net("n", "tap0")
        }];
        assert!(matches!(c.validate(), Err(ConfigError::Mac { .. })));
    }

    #[test]
    fn test_net_duplicates_rejected() {
        let mut c = config(None);
        c.net = vec![net("a", "tap0"), net("a", "tap1")];
        assert_eq!(c.validate(), Err(ConfigError::DuplicateIface("a".into())));
        c.net = vec![net("a", "tap0"), net("b", "tap0")];
        assert_eq!(c.validate(), Err(ConfigError::DuplicateTap("tap0".into())));
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        c.net = vec![
            NetConfig {
                mac: Some(mac),
                ..net("a", "tap0")
            },
            NetConfig {
                mac: Some(mac),
                ..net("b", "tap1")
            },
        ];
        assert_eq!(c.validate(), Err(ConfigError::DuplicateMac(mac)));
    }

    #[test]
    fn test_net_bad_tap_name_rejected() {
        let mut c = config(None);
        c.net = vec![net("a", "a-name-far-too-long")];
        assert!(matches!(c.validate(), Err(ConfigError::TapName { .. })));
    }

    #[test]
    fn test_devices_drives_and_nets_share_the_limit() {
        let mut c = config(None);
        c.drives = (0..10).map(|i| drive(&format!("d{i}"), false)).collect();
        c.net = (0..10)
            .map(|i| net(&format!("n{i}"), &format!("tap{i}")))
            .collect();
        assert_eq!(c.validate(), Err(ConfigError::TooManyDevices(20)));
    }

    #[test]
    fn test_vm_config_firecracker_network_interfaces_parse() {
        let json = r#"{
            "boot-source": {"kernel_image_path": "/vmlinux"},
            "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                                    "guest_mac": "06:00:AC:10:00:02"}]
        }"#;
        let cfg: VmConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.net[0].tap, "tap0");
        assert_eq!(cfg.net[0].mac, Some(MacAddr([6, 0, 0xac, 0x10, 0, 2])));
        let back = serde_json::to_value(&cfg).unwrap();
        assert_eq!(
            back["network-interfaces"][0]["guest_mac"],
            "06:00:ac:10:00:02"
        );
    }

    fn drive(id: &str, root: bool) -> BlockConfig {
        BlockConfig {
            root,
            ..BlockConfig::path(id, format!("/img/{id}"))
        }
    }

    #[test]
    fn test_disk_arg_all_options() {
        let d = BlockConfig::from_cli("path=/a.img,id=data,ro,root", "disk0").unwrap();
        assert_eq!(
            d,
            BlockConfig {
                root: true,
                read_only: true,
                ..BlockConfig::path("data", "/a.img")
            }
        );
    }

    #[test]
    fn test_disk_arg_default_id() {
        let d = BlockConfig::from_cli("path=/a.img", "disk3").unwrap();
        assert_eq!(d.id, "disk3");
        assert!(!d.read_only && !d.root);
    }

    #[test]
    fn test_disk_arg_without_path_rejected() {
        let e = BlockConfig::from_cli("id=x,ro", "disk0").unwrap_err();
        assert!(e.to_string().contains("no path"), "{e}");
    }

    #[test]
    fn test_disk_arg_unknown_option_rejected() {
        let e = BlockConfig::from_cli("path=/a,cache=none", "disk0").unwrap_err();
        assert!(
            e.to_string().contains("unknown option \"cache=none\""),
            "{e}"
        );
    }

    #[test]
    fn test_disk_arg_template() {
        let d = BlockConfig::from_cli(
            "template=debian,store=zfs:tank/fennec,vm=web1,root",
            "disk0",
        )
        .unwrap();
        assert_eq!(
            d,
            BlockConfig {
                id: "disk0".into(),
                root: true,
                source: DriveSource::Template(TemplateDrive {
                    template: "debian".into(),
                    store: Some("zfs:tank/fennec".into()),
                    vm_name: Some("web1".into()),
                }),
                read_only: false,
            }
        );
        d.validate().unwrap();
        for (arg, why) in [
            ("template=a,path=/b", BOTH_SOURCES),
            ("path=/b,vm=x", "store and vm_name go with a template"),
            ("template=a,template=b", "given twice"),
            ("template=", "no value"),
            ("store=zfs:x", "no path= or template="),
        ] {
            let e = BlockConfig::from_cli(arg, "d").unwrap_err().to_string();
            assert!(e.contains(why), "{arg}: {e}");
        }
    }

    #[test]
    fn test_drive_template_names_checked() {
        for (template, vm) in [("../etc", None), ("ok", Some("a/b")), ("-x", None)] {
            let d = BlockConfig {
                id: "d".into(),
                source: DriveSource::Template(TemplateDrive {
                    template: template.into(),
                    store: None,
                    vm_name: vm.map(str::to_string),
                }),
                ..BlockConfig::default()
            };
            assert!(
                matches!(d.validate(), Err(ConfigError::DriveSource { .. })),
                "{template} {vm:?}"
            );
        }
        let json = r#"{"drive_id": "d", "path_on_host": "/a", "store": "zfs:x"}"#;
        let e = serde_json::from_str::<BlockConfig>(json).unwrap_err();
        assert!(
            e.to_string()
                .contains("store and vm_name go with a template"),
            "{e}"
        );
    }

    #[test]
    fn test_no_boot_source_is_none_and_refused() {
        let c: VmConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.boot_source, None);
        assert_eq!(c.validate(), Err(ConfigError::NoKernel));
        assert_eq!(
            serde_json::to_value(&c).unwrap()["boot-source"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn test_drive_with_path_and_template_refused_from_json() {
        let json = r#"{"drive_id": "d", "path_on_host": "/a", "template": "t"}"#;
        let e = serde_json::from_str::<BlockConfig>(json).unwrap_err();
        assert!(e.to_string().contains(BOTH_SOURCES), "{e}");
    }

    #[test]
    fn test_drive_json_round_trip_keeps_firecracker_names() {
        for json in [
            r#"{"drive_id":"rootfs","path_on_host":"/r.ext4","is_root_device":true,"is_read_only":false}"#,
            r#"{"drive_id":"d","is_root_device":false,"is_read_only":true,"template":"t","vm_name":"web1"}"#,
        ] {
            let d: BlockConfig = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&d).unwrap(), json);
        }
    }

    #[test]
    fn test_drive_bad_id_rejected() {
        let mut c = config(None);
        c.drives.push(drive("has space", false));
        assert_eq!(c.validate(), Err(ConfigError::DriveId("has space".into())));
    }

    #[test]
    fn test_drives_duplicate_id_rejected() {
        let mut c = config(None);
        c.drives = vec![drive("a", false), drive("a", false)];
        assert_eq!(c.validate(), Err(ConfigError::DuplicateDrive("a".into())));
    }

    #[test]
    fn test_drives_two_roots_rejected() {
        let mut c = config(None);
        c.drives = vec![drive("a", true), drive("b", true)];
        assert_eq!(
            c.validate(),
            Err(ConfigError::TwoRootDrives("a".into(), "b".into()))
        );
    }

    #[test]
    fn test_drives_too_many_rejected() {
        let mut c = config(None);
        c.drives = (0..20).map(|i| drive(&format!("d{i}"), false)).collect();
        assert_eq!(c.validate(), Err(ConfigError::TooManyDevices(20)));
    }

    #[test]
    fn test_drives_root_first_in_guest_order() {
        let mut c = config(None);
        c.drives = vec![drive("a", false), drive("r", true), drive("b", false)];
        let ids: Vec<_> = c
            .drives_in_guest_order()
            .iter()
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(ids, ["r", "a", "b"]);
    }

    #[test]
    fn test_kernel_cmdline_root_drive_adds_root_and_mode() {
        let mut c = config(Some("console=ttyS0 reboot=k"));
        c.drives = vec![BlockConfig {
            read_only: true,
            ..drive("r", true)
        }];
        let (_, extra) = c.kernel_cmdline();
        assert_eq!(extra, ["root=/dev/vda", "ro"]);
    }

    #[test]
    fn test_kernel_cmdline_user_root_respected() {
        let mut c = config(Some("root=/dev/vdb"));
        c.drives = vec![drive("r", true)];
        let (_, extra) = c.kernel_cmdline();
        assert!(!extra.iter().any(|e| e.starts_with("root=")));
    }

    #[test]
    fn test_vm_config_firecracker_drives_parse() {
        let json = r#"{
            "boot-source": {"kernel_image_path": "/vmlinux"},
            "drives": [{"drive_id": "rootfs", "path_on_host": "/r.ext4",
                        "is_root_device": true, "is_read_only": false}]
        }"#;
        let cfg: VmConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.drives[0].id, "rootfs");
        assert!(cfg.drives[0].root);
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
        assert_eq!(
            cfg.boot_source.map(|b| b.kernel_image_path),
            Some(PathBuf::from("/vmlinux"))
        );
    }

    #[test]
    fn test_vm_config_unknown_field_rejected() {
        let json = r#"{"boot-source": {"kernel_image_path": "/k", "bogus": 1}}"#;
        assert!(serde_json::from_str::<VmConfig>(json).is_err());
    }
}
