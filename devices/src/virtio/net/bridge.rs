//! A TAP that fennec makes for a VM on an existing Linux bridge (Proxmox's `vmbr0`, say):
//! created with a name the kernel picks (`fennec0`, `fennec1`, ...), its MTU set to the bridge's,
//! attached to the bridge and brought up. It is not persistent: the kernel removes it when its
//! last descriptor closes, so it goes with the VM however fennec ends, `SIGKILL` included, and
//! nothing is left for a later start to clean up.
//!
//! This module has the crate's `ioctl` calls on network interfaces; each says why it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::tap::{valid_name, Tap, TapError};

/// `SIOCBRADDIF` (`linux/sockios.h`): add the interface whose index is in `ifr_ifindex` to the
/// bridge named in `ifr_name`.
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

/// The name the kernel completes (`%d`: the lowest free number).
const NAME_PATTERN: &str = "fennec%d";

/// A `struct ifreq` naming `name` (checked by [`valid_name`], so it fits with its NUL).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data (a name and a union of integers and pointers); all zeroes is
    // a valid value for it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

/// Issues `request` on `sock` with `req`.
fn ioctl(sock: &OwnedFd, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request passed here (SIOCGIFMTU, SIOCSIFMTU, SIOCGIFFLAGS, SIOCSIFFLAGS,
    // SIOCBRADDIF) reads and writes one `struct ifreq`, and `req` is one, owned by the caller
    // for the call; the fd is a socket this module opened.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Tap {
    /// Makes a TAP, attaches it to bridge `bridge` and brings it up. Needs `CAP_NET_ADMIN`.
    pub fn on_bridge(bridge: &str) -> Result<Tap, TapError> {
        if !valid_name(bridge) {
            return Err(TapError::BadName(bridge.to_string()));
        }
        let cname = CString::new(bridge).map_err(|_| TapError::BadName(bridge.to_string()))?;
        // SAFETY: `cname` is a NUL-terminated string that lives across the call.
        let bridge_index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if bridge_index == 0 {
            return Err(TapError::NoBridge(bridge.to_string()));
        }
        let tap = Tap::create(NAME_PATTERN).map_err(|e| match e {
            TapError::Permission(_) => TapError::BridgePermission(bridge.to_string()),
            other => other,
        })?;
        let step = |what: &'static str| {
            let name = tap.name().to_string();
            move |source| TapError::Ioctl { name, what, source }
        };
        // SAFETY: socket() takes plain integers; the result is checked before it is owned.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(step("a socket for interface ioctls")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` is a socket just opened and owned by nothing else.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };

        let mut req = ifreq(bridge);
        // SAFETY: `tap.name()` was checked by the kernel; the CString is NUL-terminated.
        let tap_index = unsafe {
            libc::if_nametoindex(
                CString::new(tap.name())
                    .map_err(|_| TapError::BadName(tap.name().to_string()))?
                    .as_ptr(),
            )
        };
        req.ifr_ifru.ifru_ifindex = tap_index as libc::c_int;
        if let Err(e) = ioctl(&sock, SIOCBRADDIF, &mut req) {
            return Err(match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => {
                    TapError::NotBridge(bridge.to_string())
                }
                _ => step("attaching it to the bridge")(e),
            });
        }

        // The bridge's MTU, so the TAP does not lower it (a bridge takes its ports' least); after
        // attaching, which is what tells a bridge from another interface.
        let mut req = ifreq(bridge);
        ioctl(&sock, libc::SIOCGIFMTU, &mut req).map_err(step("reading the bridge's MTU"))?;
        // SAFETY: SIOCGIFMTU filled the union's `ifru_mtu`.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        let mut req = ifreq(tap.name());
        req.ifr_ifru.ifru_mtu = mtu;
        ioctl(&sock, libc::SIOCSIFMTU, &mut req).map_err(step("setting its MTU"))?;

        let mut req = ifreq(tap.name());
        ioctl(&sock, libc::SIOCGIFFLAGS, &mut req).map_err(step("reading its flags"))?;
        // SAFETY: SIOCGIFFLAGS filled the union's `ifru_flags`.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        ioctl(&sock, libc::SIOCSIFFLAGS, &mut req).map_err(step("bringing it up"))?;
        log::info!(
            "virtio-net: made TAP {} (MTU {mtu}) on bridge {bridge}; it goes when the VM does",
            tap.name()
        );
        Ok(tap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_bridge_missing_says_how_to_make_one() {
        let e = Tap::on_bridge("fennec-nobr0").unwrap_err();
        assert!(matches!(e, TapError::NoBridge(_)), "{e:?}");
        assert!(
            e.to_string()
                .contains("ip link add fennec-nobr0 type bridge"),
            "{e}"
        );
        assert!(matches!(
            Tap::on_bridge("bad/name"),
            Err(TapError::BadName(_))
        ));
    }
}
