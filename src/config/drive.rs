//! Drives: where an image comes from, and a drive as the CLI and the JSON give it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use fennec_devices::rate_limiter::RateLimiter;
use fennec_devices::virtio::block::{Block, BlockSpec, DiskFile};

use super::device::{valid_id, DeviceEnv, VirtioDeviceConfig};
use super::error::ConfigError;
use super::options::{buckets, refuse, CacheType, IoEngine, RateLimiterConfig, Unsupported};
use crate::device_manager::DeviceError;
use crate::seccomp::{Role, SyscallNeed};

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
    /// Whether the guest is offered flushes (`cache_type`); fennec offers and honours them
    /// either way.
    pub cache_type: CacheType,
    /// How requests reach the image (`io_engine`).
    pub io_engine: IoEngine,
    /// A rate limiter (`rate_limiter`).
    pub rate_limiter: Option<RateLimiterConfig>,
    /// The root partition's UUID (`partuuid`): a root drive with one boots with
    /// `root=PARTUUID=...` instead of `root=/dev/vda`.
    pub partuuid: Option<String>,
    /// A vhost-user backend's socket instead of an image (`socket`).
    pub socket: Option<PathBuf>,
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
    #[serde(default)]
    cache_type: CacheType,
    #[serde(default)]
    io_engine: IoEngine,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_limiter: Option<RateLimiterConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partuuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    socket: Option<PathBuf>,
}

impl TryFrom<DriveJson> for BlockConfig {
    type Error = ConfigError;

    fn try_from(j: DriveJson) -> Result<Self, ConfigError> {
        if j.socket.is_some() {
            // Before the source: a vhost-user drive has no path, and that is not its problem.
            return Err(unsupported(&j.drive_id, NO_VHOST_USER));
        }
        let source =
            DriveSource::from_parts(&j.drive_id, j.path_on_host, j.template, j.store, j.vm_name)?;
        Ok(BlockConfig {
            id: j.drive_id,
            source,
            root: j.is_root_device,
            read_only: j.is_read_only,
            cache_type: j.cache_type,
            io_engine: j.io_engine,
            rate_limiter: j.rate_limiter,
            partuuid: j.partuuid,
            socket: j.socket,
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
            cache_type: d.cache_type,
            io_engine: d.io_engine,
            rate_limiter: d.rate_limiter,
            partuuid: d.partuuid,
            socket: d.socket,
        }
    }
}

const NO_VHOST_USER: Unsupported = Unsupported {
    field: "socket",
    why: "vhost-user drives are not supported; give path_on_host or template",
};

fn unsupported(id: &str, error: Unsupported) -> ConfigError {
    ConfigError::Unsupported {
        what: format!("drive {id:?}"),
        error,
    }
}

/// Whether `uuid` can be a partition UUID on the kernel command line (`root=PARTUUID=`): a GPT
/// UUID or an MBR `SSSSSSSS-PP`, hex digits and dashes.
fn valid_partuuid(uuid: &str) -> bool {
    (1..=36).contains(&uuid.len()) && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
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
            ..BlockConfig::default()
        })
    }

    /// Checks the ID, and the template's names (a path is checked when it is opened).
    fn check(&self) -> Result<(), ConfigError> {
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
        if let Some(uuid) = self.partuuid.as_deref().filter(|u| !valid_partuuid(u)) {
            return Err(bad(format!(
                "partuuid {uuid:?} is not a partition UUID (hex digits and dashes)"
            )));
        }
        self.supported().map_err(|e| unsupported(&self.id, e))
    }

    /// Refuses the Firecracker choices fennec does not make.
    fn supported(&self) -> Result<(), Unsupported> {
        refuse(
            self.socket.is_some(),
            NO_VHOST_USER.field,
            NO_VHOST_USER.why,
        )?;
        refuse(
            self.io_engine != IoEngine::Sync,
            "io_engine",
            "only the \"Sync\" engine is supported",
        )
    }
}

/// Opens and locks drive `id`'s image at `path`.
pub fn open_disk(id: &str, path: &Path, read_only: bool) -> Result<DiskFile, DeviceError> {
    let disk = DiskFile::open(path, read_only).map_err(|source| DeviceError::Disk {
        id: id.to_string(),
        source,
    })?;
    if disk.size() % 512 != 0 {
        log::warn!(
            "Drive {id:?}: {} is {} bytes, not a whole number of 512-byte sectors; \
             the guest sees only the whole sectors",
            path.display(),
            disk.size()
        );
    }
    Ok(disk)
}

impl VirtioDeviceConfig for BlockConfig {
    const KIND: &'static str = "drive";
    const SYSCALLS: &'static [SyscallNeed] = &[
        SyscallNeed::any(
            Role::Vmm,
            libc::SYS_preadv,
            "block requests: straight from the image into guest memory",
        ),
        SyscallNeed::any(
            Role::Vmm,
            libc::SYS_pwritev,
            "block requests: straight from guest memory into the image",
        ),
        SyscallNeed::any(Role::Vmm, libc::SYS_fdatasync, "block flushes"),
        SyscallNeed::any(
            Role::Vmm,
            libc::SYS_fsync,
            "block flushes of images on some filesystems",
        ),
        SyscallNeed::any(
            Role::Vmm,
            libc::SYS_fallocate,
            "block discard and write-zeroes",
        ),
    ];
    type Device = Block;

    fn id(&self) -> &str {
        &self.id
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.check()
    }

    fn check_host(&self) -> Result<(), ConfigError> {
        let bad = |why: String| ConfigError::DriveSource {
            id: self.id.clone(),
            why,
        };
        match &self.source {
            DriveSource::Template(t) => {
                use crate::storage::EntryKind;
                let spec = crate::storage::default_spec(t.store.as_deref());
                let store = crate::storage::open(&spec).map_err(|e| bad(e.to_string()))?;
                let found = store
                    .list()
                    .map_err(|e| bad(e.to_string()))?
                    .iter()
                    .any(|e| e.kind == EntryKind::Template && e.name == t.template);
                match found {
                    true => Ok(()),
                    false => Err(bad(format!(
                        "no template {:?} in {}",
                        t.template,
                        store.spec()
                    ))),
                }
            }
            DriveSource::Path(path) => std::fs::metadata(path)
                .map(drop)
                .map_err(|e| bad(format!("cannot use {}: {e}", path.display()))),
        }
    }

    fn build(&self, _env: &DeviceEnv<'_>) -> Result<Block, DeviceError> {
        let path = self
            .image_path()
            .ok_or_else(|| ConfigError::Unprovisioned(self.id.clone()))?;
        let disk = open_disk(&self.id, path, self.read_only)?;
        let size = disk.size();
        let discard = disk.supports_discard();
        let (bandwidth, ops) = buckets(self.rate_limiter.as_ref());
        let rate_limiter = RateLimiter::new(bandwidth, ops)
            .map_err(|e| DeviceError::EventFd("a rate limiter's timer", e))?;
        Block::new(BlockSpec {
            disk: Box::new(disk),
            size,
            read_only: self.read_only,
            id: self.id.clone(),
            discard,
            rate_limiter,
        })
        .map_err(|e| DeviceError::EventFd("a block device", e))
    }

    fn describe(&self, device: &Block, env: &DeviceEnv<'_>) -> String {
        format!(
            "{} ({} sectors{}), /dev/{}",
            self.image_path().unwrap_or(Path::new("")).display(),
            device.capacity(),
            if self.read_only { ", read-only" } else { "" },
            guest_disk_name(env.index)
        )
    }
}

/// The guest's name for its `index`th disk (from 0) when it probes them in order: `vda`, ...,
/// `vdz`, `vdaa`, ...
pub fn guest_disk_name(index: usize) -> String {
    let letter = |i: usize| (b'a' + (i % 26) as u8) as char;
    match index {
        0..=25 => format!("vd{}", letter(index)),
        _ => format!("vd{}{}", letter(index / 26 - 1), letter(index)),
    }
}
