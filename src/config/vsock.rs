//! The vsock device (virtio-vsock): Firecracker's `PUT /vsock` and `vsock` in a configuration
//! file. The guest's ports map to Unix sockets beside `uds_path` (`fennec_devices::virtio::vsock`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use fennec_devices::virtio::vsock::{Muxer, Vsock};

use super::device::{DeviceEnv, VirtioDeviceConfig};
use super::error::ConfigError;
use crate::device_manager::DeviceError;
use crate::seccomp::{Role, SyscallNeed};

/// The ID of a VM's one vsock device.
pub const VSOCK_ID: &str = "vsock";
/// The longest path a Unix socket can have, with room for `_<port>` after `uds_path`.
const MAX_UDS_PATH: usize = 107 - 11;

/// A vsock device: the guest's context ID and the Unix socket its host side listens on.
/// Field names are Firecracker's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context ID: 3 or more (0-2 are reserved, as is `u32::MAX`).
    pub guest_cid: u64,
    /// Where host programs connect; guest connections to port P reach `<uds_path>_P`.
    pub uds_path: PathBuf,
    /// Firecracker's deprecated device ID: accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
}

impl VsockConfig {
    /// Parses a `--vsock` argument: `cid=N,uds=PATH`.
    pub fn from_cli(arg: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::VsockArg {
            arg: arg.to_string(),
            why,
        };
        let (mut cid, mut uds) = (None, None);
        for part in arg.split(',') {
            let (slot, value) = match part.split_once('=') {
                Some(("cid", v)) => (&mut cid, v),
                Some(("uds", v)) => (&mut uds, v),
                _ => return Err(bad(format!("unknown option {part:?}"))),
            };
            if slot.replace(value).is_some() {
                return Err(bad(format!("{part:?} given twice")));
            }
        }
        let cid = cid.ok_or_else(|| bad("no cid".into()))?;
        Ok(VsockConfig {
            guest_cid: cid
                .parse()
                .map_err(|_| bad(format!("cid {cid:?} is not a number")))?,
            uds_path: uds
                .filter(|u| !u.is_empty())
                .ok_or_else(|| bad("no uds".into()))?
                .into(),
            vsock_id: None,
        })
    }
}

impl VirtioDeviceConfig for VsockConfig {
    const KIND: &'static str = "vsock device";
    const SYSCALLS: &'static [SyscallNeed] = &[
        SyscallNeed::any(
            Role::Vmm,
            libc::SYS_accept4,
            "vsock: host programs connecting to uds_path",
        ),
        SyscallNeed::args2(
            Role::Vmm,
            libc::SYS_socket,
            libc::AF_UNIX as u64,
            (libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u64,
            "vsock: a guest connecting to <uds_path>_<port> (a non-blocking Unix stream only)",
        ),
        SyscallNeed::any(
            Role::Vmm,
            libc::SYS_connect,
            "vsock: a guest connecting to <uds_path>_<port>",
        ),
        SyscallNeed::any(
            Role::Vmm,
            libc::SYS_sendto,
            "vsock: writing host sockets (send with MSG_NOSIGNAL: a reader gone is an error, \
             not SIGPIPE)",
        ),
        SyscallNeed::any(
            Role::Vmm,
            libc::SYS_shutdown,
            "vsock: the guest half-closing a stream",
        ),
    ];
    type Device = Vsock;

    fn id(&self) -> &str {
        VSOCK_ID
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.guest_cid < 3 || self.guest_cid >= u64::from(u32::MAX) {
            return Err(ConfigError::Vsock(format!(
                "guest_cid {} is reserved (use 3 to {})",
                self.guest_cid,
                u32::MAX - 1
            )));
        }
        let len = self.uds_path.as_os_str().len();
        if len == 0 || len > MAX_UDS_PATH {
            return Err(ConfigError::Vsock(format!(
                "uds_path {:?} must be 1 to {MAX_UDS_PATH} bytes (a Unix socket's path, with \
                 room for _<port>)",
                self.uds_path
            )));
        }
        Ok(())
    }

    fn check_host(&self) -> Result<(), ConfigError> {
        let dir = parent(&self.uds_path);
        if !dir.is_dir() {
            return Err(ConfigError::Vsock(format!(
                "the directory of uds_path {:?} does not exist",
                self.uds_path
            )));
        }
        Ok(())
    }

    fn build(&self, _env: &DeviceEnv<'_>) -> Result<Vsock, DeviceError> {
        let failed = |source| DeviceError::VsockSocket {
            path: self.uds_path.clone(),
            source,
        };
        let muxer = Muxer::bind(&self.uds_path, self.guest_cid).map_err(failed)?;
        Vsock::new(self.guest_cid, muxer).map_err(|e| DeviceError::EventFd("a vsock device", e))
    }

    fn describe(&self, _device: &Vsock, _env: &DeviceEnv<'_>) -> String {
        format!(
            "guest CID {}, host sockets at {} (and {}_<port>)",
            self.guest_cid,
            self.uds_path.display(),
            self.uds_path.display()
        )
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_vsock_from_cli_and_its_mistakes() {
        let v = VsockConfig::from_cli("cid=3,uds=/run/v.sock").unwrap();
        assert_eq!(
            (v.guest_cid, v.uds_path.as_path()),
            (3, Path::new("/run/v.sock"))
        );
        for (arg, why) in [
            ("uds=/x", "no cid"),
            ("cid=3", "no uds"),
            ("cid=x,uds=/x", "not a number"),
            ("cid=3,uds=/x,cid=4", "given twice"),
            ("cid=3,path=/x", "unknown option"),
        ] {
            let e = VsockConfig::from_cli(arg).unwrap_err().to_string();
            assert!(e.contains(why), "{arg}: {e}");
        }
    }

    #[test]
    fn test_vsock_reserved_cids_and_long_paths_are_refused() {
        let at = |cid, uds: &str| VsockConfig {
            guest_cid: cid,
            uds_path: uds.into(),
            vsock_id: None,
        };
        assert!(at(3, "/v.sock").validate().is_ok());
        assert!(at(u64::from(u32::MAX) - 1, "/v.sock").validate().is_ok());
        for cid in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
            let e = at(cid, "/v.sock").validate().unwrap_err().to_string();
            assert!(e.contains("reserved"), "{cid}: {e}");
        }
        let long = format!("/{}", "x".repeat(MAX_UDS_PATH));
        assert!(at(3, &long).validate().is_err(), "no room for _<port>");
        assert!(at(3, "").validate().is_err());
    }

    #[test]
    fn test_vsock_in_a_config_file_with_firecrackers_deprecated_id() {
        let text = r#"{"boot-source": {"kernel_image_path": "/k"},
                       "vsock": {"vsock_id": "vsock0", "guest_cid": 5, "uds_path": "/v.sock"}}"#;
        let c = crate::config::json::vm_config(text).unwrap();
        let v = c.vsock.unwrap();
        assert_eq!((v.guest_cid, v.vsock_id.as_deref()), (5, Some("vsock0")));
        let unknown = r#"{"vsock": {"guest_cid": 5, "uds_path": "/v.sock", "port": 1}}"#;
        assert!(crate::config::json::vm_config(unknown).is_err());
    }
}
