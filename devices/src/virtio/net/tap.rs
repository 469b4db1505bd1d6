//! The TAP interface behind a network device, and the [`NetBackend`] trait the device talks to
//! (so queue processing can be tested against a socket pair instead of a TAP).
//!
//! `tap=NAME` attaches to a TAP that already exists (made by the user or an orchestrator with
//! `ip tuntap add NAME mode tap`); fennec does not create one by that name, so a typo cannot
//! leave a guest on a fresh, unconnected interface. (`bridge=BR` makes its own, on the bridge:
//! `bridge.rs`.) The fd is non-blocking and every frame carries a 12-byte
//! `virtio_net_hdr_v1` (`IFF_VNET_HDR` + `TUNSETVNETHDRSZ`), the header the guest uses.
//!
//! This module has the crate's `ioctl` calls on the TUN device; each says why it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::frame::VNET_HDR_LEN;

/// The longest interface name Linux accepts (`IFNAMSIZ` less the NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Errors attaching to a TAP interface.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name cannot be an interface name.
    #[error("{0:?} is not a valid interface name (1 to 15 characters, no '/', ':' or spaces)")]
    BadName(String),
    /// No interface has that name in this network namespace.
    #[error(
        "TAP interface {0:?} does not exist in this network namespace; create it first: \
         ip tuntap add {0} mode tap && ip link set {0} up"
    )]
    NotFound(String),
    /// `/dev/net/tun` cannot be opened.
    #[error("Cannot open /dev/net/tun (is the tun module loaded? modprobe tun)")]
    OpenTun(#[source] io::Error),
    /// The interface exists but is not a TAP (a TUN, a bridge, a veth, ...).
    #[error("Interface {0:?} is not a TAP interface (or is a multi-queue one)")]
    NotTap(String),
    /// Another process is attached to the TAP.
    #[error("TAP interface {0:?} is in use by another process")]
    Busy(String),
    /// Not allowed to attach.
    #[error("Not allowed to attach to TAP interface {0:?}: run as root or create it with `user` set to this user")]
    Permission(String),
    /// No interface has the bridge's name.
    #[error(
        "Bridge {0:?} does not exist in this network namespace; create it first: \
         ip link add {0} type bridge && ip link set {0} up"
    )]
    NoBridge(String),
    /// The interface named as the bridge is not one.
    #[error("Interface {0:?} is not a bridge")]
    NotBridge(String),
    /// Not allowed to create a TAP.
    #[error(
        "Not allowed to create a TAP on bridge {0:?}: that needs CAP_NET_ADMIN (run fennec as \
         root), or have root make one for your user and use tap=NAME: \
         ip tuntap add NAME mode tap user $USER && ip link set NAME master {0} up"
    )]
    BridgePermission(String),
    /// Any other failure of an ioctl.
    #[error("Failed to configure TAP interface {name:?} ({what})")]
    Ioctl {
        /// The interface.
        name: String,
        /// Which step.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Where a network device's frames go and come from. Frames include the 12-byte virtio header.
pub trait NetBackend: AsRawFd + Send {
    /// Reads one frame into `buf`; `WouldBlock` when none is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame.
    fn send(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// Sets the offloads the device accepts on receive (`TUN_F_*` bits).
    fn set_offload(&mut self, flags: u32) -> io::Result<()>;
    /// Whether the virtio header's offloads (checksum, segmentation) reach the other side; a
    /// device offers the guest its offload features only over a backend that carries them.
    fn carries_offloads(&self) -> bool {
        true
    }
    /// Whether a frame waits in the backend's own buffer, where no readiness event announces it.
    fn pending(&self) -> bool {
        false
    }
    /// Whether sent bytes wait for the backend's fd to be writable ([`NetBackend::flush`]).
    fn wants_write(&self) -> bool {
        false
    }
    /// Writes what waits, as far as the fd takes it.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An attached TAP interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

/// Whether `name` can be a Linux interface name.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

impl Tap {
    /// Attaches to the existing TAP interface `name`.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if !valid_name(name) {
            return Err(TapError::BadName(name.to_string()));
        }
        let cname = CString::new(name).map_err(|_| TapError::BadName(name.to_string()))?;
        // SAFETY: `cname` is a NUL-terminated string that lives across the call.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(TapError::NotFound(name.to_string()));
        }
        let tap = Tap::create(name)?;
        if !tap.is_up() {
            log::warn!(
                "TAP interface {name:?} is down: the guest's frames are dropped until \
                 `ip link set {name} up`"
            );
        }
        Ok(tap)
    }

    /// Attaches to TAP `name`, creating it if it does not exist (a non-persistent one, gone
    /// with its fd); a `%d` in `name` has the kernel pick the number.
    pub(super) fn create(name: &str) -> Result<Self, TapError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;

        // SAFETY: ifreq is plain data (a name and a union of integers and pointers); all zeroes
        // is a valid value for it.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, and `req` is one, owned by this
        // frame; the fd is the TUN device just opened.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) => TapError::Busy(name.to_string()),
                Some(libc::EINVAL) => TapError::NotTap(name.to_string()),
                Some(libc::EPERM) | Some(libc::EACCES) => TapError::Permission(name.to_string()),
                _ => TapError::Ioctl {
                    name: name.to_string(),
                    what: "TUNSETIFF",
                    source: e,
                },
            });
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points at `hdr_len`.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) } < 0 {
            return Err(TapError::Ioctl {
                name: name.to_string(),
                what: "TUNSETVNETHDRSZ",
                source: io::Error::last_os_error(),
            });
        }
        // The name the kernel gave it (the same, unless `name` had a `%d`).
        let len = req.ifr_name.iter().position(|&c| c == 0).unwrap_or(0);
        let name: String = req.ifr_name[..len]
            .iter()
            .map(|&c| c as u8 as char)
            .collect();
        Ok(Tap { file, name })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the interface is administratively up (best effort: true when unknown).
    fn is_up(&self) -> bool {
        std::fs::read_to_string(format!("/sys/class/net/{}/flags", self.name))
            .ok()
            .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
            .is_none_or(|flags| flags & libc::IFF_UP as u32 != 0)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl NetBackend for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.file.write(frame)
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the fd is an attached TAP.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tap_bad_names_rejected_before_any_syscall() {
        for name in ["", "a/b", "has space", "x:1", "0123456789abcdef", ".."] {
            assert!(
                matches!(Tap::open(name), Err(TapError::BadName(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn test_tap_missing_interface_says_how_to_create_it() {
        let e = Tap::open("fennec-nosuch0").unwrap_err();
        assert!(matches!(e, TapError::NotFound(_)));
        assert!(
            e.to_string()
                .contains("ip tuntap add fennec-nosuch0 mode tap"),
            "{e}"
        );
    }

    #[test]
    fn test_tap_non_tap_interface_refused() {
        // `lo` exists in every network namespace and is not a TAP.
        let e = Tap::open("lo").unwrap_err();
        assert!(
            matches!(
                e,
                TapError::NotTap(_) | TapError::Permission(_) | TapError::OpenTun(_)
            ),
            "{e:?}"
        );
    }
}
