//! A whole VM's configuration: what to boot, the machine, and its devices.

use serde::{Deserialize, Serialize};

use fennec_boot::layout;

use super::defaults::DEFAULT_BOOT_ARGS;
use super::device::{FileUse, VirtioDeviceConfig};
use super::drive::BlockConfig;
use super::entropy::EntropyConfig;
use super::error::ConfigError;
use super::machine::{BootSourceConfig, MachineConfig};
use super::net::NetConfig;
use super::vsock::VsockConfig;

/// One device's configuration, of any kind: what `PUT` on a device's path adds or replaces.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceConfig {
    /// A drive (`PUT /drives/{id}`).
    Drive(Box<BlockConfig>),
    /// A network interface (`PUT /network-interfaces/{id}`).
    Net(NetConfig),
    /// The entropy device (`PUT /entropy`).
    Entropy(EntropyConfig),
    /// The vsock device (`PUT /vsock`).
    Vsock(VsockConfig),
}

impl From<BlockConfig> for DeviceConfig {
    fn from(d: BlockConfig) -> Self {
        DeviceConfig::Drive(Box::new(d))
    }
}

impl From<NetConfig> for DeviceConfig {
    fn from(n: NetConfig) -> Self {
        DeviceConfig::Net(n)
    }
}

impl From<EntropyConfig> for DeviceConfig {
    fn from(e: EntropyConfig) -> Self {
        DeviceConfig::Entropy(e)
    }
}

impl From<VsockConfig> for DeviceConfig {
    fn from(v: VsockConfig) -> Self {
        DeviceConfig::Vsock(v)
    }
}

impl DeviceConfig {
    /// Checks, before boot, what the host must have for the device
    /// ([`VirtioDeviceConfig::check_host`]).
    pub fn check_host(&self) -> Result<(), ConfigError> {
        match self {
            DeviceConfig::Drive(d) => d.check_host(),
            DeviceConfig::Net(n) => n.check_host(),
            DeviceConfig::Entropy(e) => e.check_host(),
            DeviceConfig::Vsock(v) => v.check_host(),
        }
    }
}

/// Something done to each of a VM's virtio devices, whatever its kind
/// ([`VmConfig::visit_devices`]).
pub trait DeviceVisitor {
    /// Does it to `device`, the `index`th of its kind in the order the guest sees them.
    fn visit<C: VirtioDeviceConfig>(&mut self, index: usize, device: &C);
}

/// Something done for each kind of virtio device fennec has ([`VmConfig::visit_kinds`]).
pub trait KindVisitor {
    /// Does it for the kind `C` configures.
    fn visit<C: VirtioDeviceConfig>(&mut self);
}

/// A list of devices of a configuration file or a state file: at most as many as a VM has room
/// for.
fn bounded<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    fennec_devices::bounded::vec(d, layout::MAX_VIRTIO_DEVICES)
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
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "bounded"
    )]
    pub drives: Vec<BlockConfig>,
    /// Virtio network interfaces, in the order given (the guest's eth0, eth1, ...).
    #[serde(
        rename = "network-interfaces",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "bounded"
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
    /// A vsock device (virtio-vsock), after the entropy device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
}

impl VmConfig {
    /// This configuration with every network interface's MAC address written out (a derived
    /// one as [`NetConfig::guest_mac`] gives it in this process).
    pub fn with_macs_pinned(&self) -> VmConfig {
        let mut config = self.clone();
        for net in &mut config.net {
            net.mac = Some(net.guest_mac());
        }
        config
    }

    /// Checks the whole configuration. A missing kernel is the last thing it reports, so a
    /// configuration still waiting for one (the control socket before `PUT /boot-source`)
    /// has had every other check when the answer is [`ConfigError::NoKernel`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.machine_config.validate()?;
        let mut root: Option<&BlockConfig> = None;
        for (i, drive) in self.drives.iter().enumerate() {
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
            let before = &self.net[..i];
            if before.iter().any(|n| n.id == net.id) {
                return Err(ConfigError::DuplicateIface(net.id.clone()));
            }
            if !net.tap.is_empty() && before.iter().any(|n| n.tap == net.tap) {
                return Err(ConfigError::DuplicateTap(net.tap.clone()));
            }
            if before.iter().any(|n| n.guest_mac() == net.guest_mac()) {
                return Err(ConfigError::DuplicateMac(net.guest_mac()));
            }
        }
        if let Some(mmds) = &self.mmds_config {
            mmds.validate(self.net.iter().map(|n| n.id.as_str()))?;
        }
        struct Check(Result<(), ConfigError>);
        impl DeviceVisitor for Check {
            fn visit<C: VirtioDeviceConfig>(&mut self, _: usize, device: &C) {
                if self.0.is_ok() {
                    self.0 = device.validate();
                }
            }
        }
        let mut each = Check(Ok(()));
        self.visit_devices(&mut each);
        each.0?;
        let devices = self.virtio_device_count();
        if devices > layout::MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDevices(devices));
        }
        match &self.boot_source {
            Some(boot) if !boot.kernel_image_path.as_os_str().is_empty() => Ok(()),
            _ => Err(ConfigError::NoKernel),
        }
    }

    /// The VM's virtio devices, kind by kind, each kind in the order the guest sees them: the
    /// one list of a VM's devices, which the checks, the device manager and Landlock go
    /// through. One line per kind of device.
    pub fn visit_devices<V: DeviceVisitor>(&self, visitor: &mut V) {
        let drives = self.drives_in_guest_order().into_iter();
        drives.enumerate().for_each(|(i, d)| visitor.visit(i, d));
        self.net
            .iter()
            .enumerate()
            .for_each(|(i, n)| visitor.visit(i, n));
        self.entropy
            .iter()
            .enumerate()
            .for_each(|(i, e)| visitor.visit(i, e));
        self.vsock
            .iter()
            .enumerate()
            .for_each(|(i, v)| visitor.visit(i, v));
    }

    /// Every kind of virtio device fennec has, whether this VM has one or not (the syscall
    /// filters allow what each needs). One line per kind of device.
    pub fn visit_kinds<V: KindVisitor>(visitor: &mut V) {
        visitor.visit::<BlockConfig>();
        visitor.visit::<NetConfig>();
        visitor.visit::<EntropyConfig>();
        visitor.visit::<VsockConfig>();
    }

    /// How many virtio devices the configuration has.
    pub fn virtio_device_count(&self) -> usize {
        struct Count(usize);
        impl DeviceVisitor for Count {
            fn visit<C: VirtioDeviceConfig>(&mut self, _: usize, _: &C) {
                self.0 += 1;
            }
        }
        let mut count = Count(0);
        self.visit_devices(&mut count);
        count.0
    }

    /// Adds `device`, or replaces the device of its kind with its ID (for a device a VM has
    /// one of, the one there is). Checked by [`VmConfig::validate`].
    pub fn put_device(&mut self, device: DeviceConfig) {
        fn put<C: VirtioDeviceConfig>(list: &mut Vec<C>, device: C) {
            match list.iter_mut().find(|d| d.id() == device.id()) {
                Some(existing) => *existing = device,
                None => list.push(device),
            }
        }
        match device {
            DeviceConfig::Drive(d) => put(&mut self.drives, *d),
            DeviceConfig::Net(n) => put(&mut self.net, n),
            DeviceConfig::Entropy(e) => self.entropy = Some(e),
            DeviceConfig::Vsock(v) => self.vsock = Some(v),
        }
    }

    /// The files the running VM may still open for its devices.
    pub fn device_files(&self) -> Vec<FileUse> {
        struct Files(Vec<FileUse>);
        impl DeviceVisitor for Files {
            fn visit<C: VirtioDeviceConfig>(&mut self, _: usize, device: &C) {
                self.0.extend(device.files());
            }
        }
        let mut files = Files(Vec::new());
        self.visit_devices(&mut files);
        files.0
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
