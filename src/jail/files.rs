//! The VM's files as the jail holds them: the kernel and initrd copied, the drives
//! bind-mounted, each under a name of its own, and the configuration that names them there.

use std::path::{Path, PathBuf};

use super::spec::JailError;
use crate::config::VmConfig;

/// Where a jailed VM's vsock device listens, in its root.
pub(super) const VSOCK_IN_JAIL: &str = "/v.sock";

/// One file the VM's directory holds.
#[derive(Clone, Debug)]
pub(super) struct Placed {
    pub(super) source: PathBuf,
    /// Its name in the jail's root.
    pub(super) name: String,
    /// Bind-mounted (a drive), or copied (the kernel and initrd, read once).
    pub(super) bind: bool,
    pub(super) read_only: bool,
}

/// The VM's files and the configuration that names them by their places in the jail.
pub(super) fn place_files(config: &VmConfig) -> Result<(Vec<Placed>, VmConfig), JailError> {
    let mut config = config.clone();
    let mut placed = Vec::new();
    if let Some(boot) = config.boot_source.as_mut() {
        placed.push(Placed {
            source: boot.kernel_image_path.clone(),
            name: "kernel".into(),
            bind: false,
            read_only: true,
        });
        boot.kernel_image_path = "/kernel".into();
        if let Some(initrd) = boot.initrd_path.as_mut() {
            placed.push(Placed {
                source: initrd.clone(),
                name: "initrd".into(),
                bind: false,
                read_only: true,
            });
            *initrd = "/initrd".into();
        }
    }
    // The jailed fennec has no capabilities and no programs: it can neither make a TAP nor
    // start passt. (A jail for those would make the TAP, or start passt, before confining.)
    for net in &config.net {
        let made = match net.host() {
            crate::config::NetHost::Tap(_) => continue,
            crate::config::NetHost::Bridge(_) => "bridge= (a TAP made on a bridge)",
            crate::config::NetHost::User(_) => "user (user-mode networking through passt)",
        };
        return Err(JailError::Unsupported(format!(
            "network interface {:?}: {made} is not available in the jail; give it a TAP the \
             VM's uid can use (ip tuntap add NAME mode tap user UID) with tap=NAME",
            net.id
        )));
    }
    for drive in &mut config.drives {
        let Some(path) = drive.image_path().map(Path::to_path_buf) else {
            return Err(JailError::Unsupported(format!(
                "drive {:?} is cloned from a template: clone it first (fennec image clone) \
                 and give the jail its path",
                drive.id
            )));
        };
        if !valid_id(&drive.id) {
            return Err(JailError::Unsupported(format!(
                "drive ID {:?} cannot name a file in the jail (use letters, digits, '-', '_')",
                drive.id
            )));
        }
        let name = format!("drive-{}", drive.id);
        placed.push(Placed {
            source: path,
            name: name.clone(),
            bind: true,
            read_only: drive.read_only,
        });
        drive.source = crate::config::DriveSource::Path(PathBuf::from("/").join(&name));
    }
    // The vsock device listens in the jail's root, which the VM's uid owns: host programs
    // connect to `<root>/v.sock`, and listen at `<root>/v.sock_<port>` for the guest.
    if let Some(vsock) = config.vsock.as_mut() {
        vsock.uds_path = VSOCK_IN_JAIL.into();
    }
    Ok((placed, config))
}

pub(super) fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
