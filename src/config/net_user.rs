//! User-mode networking: a network interface whose frames go to `passt`, an unprivileged
//! process that gives the guest DHCP, DNS, outbound TCP and UDP through the host's own sockets,
//! and the host ports forwarded to it, with no root and no TAP.
//!
//! fennec starts passt (found on `PATH`) with one end of a socket pair (`--fd`) and keeps the
//! other as the device's [`FrameStream`]. passt sets itself up (binding the forwarded ports),
//! then goes to the background, so its first process exiting with status 0 says it is ready and
//! anything else says why not (its standard error, in fennec's error). With `--one-off` it ends
//! when its socket closes: when the VM ends, however fennec ends.

use std::io::Read;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use fennec_devices::virtio::net::FrameStream;

use super::error::ConfigError;

/// How long passt may take to set up before fennec gives up on it.
const PASST_START: Duration = Duration::from_secs(10);
/// The user and group passt runs as when fennec runs as root: `nobody`, by number.
const PASST_RUNAS: &str = "65534:65534";
/// Most ports one interface forwards.
pub const MAX_FORWARDS: usize = 64;

/// User-mode networking for one interface (fennec's `user` in `network-interfaces`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserNetConfig {
    /// Host ports forwarded to the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostfwd: Vec<PortForward>,
}

/// A transport protocol of a forwarded port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A host port whose connections (or datagrams) reach a port of the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The host address to listen on; every address when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_address: Option<IpAddr>,
    /// The host port.
    pub host_port: u16,
    /// The guest's port.
    pub guest_port: u16,
}

impl PortForward {
    /// Parses QEMU's `hostfwd` form: `[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`
    /// (passt forwards to the guest's one address, so GUESTADDR must be empty).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (host, guest) = s
            .split_once('-')
            .ok_or_else(|| format!("hostfwd {s:?}: expected tcp::HOSTPORT-:GUESTPORT"))?;
        let (protocol, host) = match host.split_once(':') {
            Some(("tcp" | "", rest)) => (Protocol::Tcp, rest),
            Some(("udp", rest)) => (Protocol::Udp, rest),
            _ => return Err(format!("hostfwd {s:?}: the protocol is tcp or udp")),
        };
        let (addr, host_port) = host
            .rsplit_once(':')
            .ok_or_else(|| format!("hostfwd {s:?}: expected HOSTADDR:HOSTPORT before '-'"))?;
        let host_address = match addr.trim_start_matches('[').trim_end_matches(']') {
            "" => None,
            a => Some(
                a.parse()
                    .map_err(|_| format!("hostfwd {s:?}: {a:?} is not an IP address"))?,
            ),
        };
        let (guest_addr, guest_port) = guest
            .rsplit_once(':')
            .ok_or_else(|| format!("hostfwd {s:?}: expected :GUESTPORT after '-'"))?;
        if !guest_addr.is_empty() {
            return Err(format!(
                "hostfwd {s:?}: the guest address is the guest's own; leave it out (tcp::8080-:80)"
            ));
        }
        let number = |p: &str| -> Result<u16, String> {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("hostfwd {s:?}: {p:?} is not a port (1 to 65535)"))
        };
        Ok(PortForward {
            protocol,
            host_address,
            host_port: number(host_port)?,
            guest_port: number(guest_port)?,
        })
    }

    /// passt's `-t`/`-u` argument for it.
    fn passt_spec(&self) -> String {
        let addr = self
            .host_address
            .map(|a| format!("{a}/"))
            .unwrap_or_default();
        format!("{addr}{}:{}", self.host_port, self.guest_port)
    }
}

impl std::fmt::Display for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        let addr = self.host_address.map(|a| a.to_string()).unwrap_or_default();
        write!(f, "{proto}:{addr}:{}-:{}", self.host_port, self.guest_port)
    }
}

impl UserNetConfig {
    /// Checks the forwards: not too many, no host port twice for one protocol.
    pub fn check(&self, id: &str) -> Result<(), ConfigError> {
        let bad = |why: String| ConfigError::UserNet {
            id: id.to_string(),
            why,
        };
        if self.hostfwd.len() > MAX_FORWARDS {
            return Err(bad(format!("at most {MAX_FORWARDS} forwarded ports")));
        }
        for (i, f) in self.hostfwd.iter().enumerate() {
            if f.host_port == 0 || f.guest_port == 0 {
                return Err(bad(format!("{f}: port 0")));
            }
            let clash = self.hostfwd[..i].iter().any(|g| {
                g.protocol == f.protocol
                    && g.host_port == f.host_port
                    && (g.host_address.is_none()
                        || f.host_address.is_none()
                        || g.host_address == f.host_address)
            });
            if clash {
                return Err(bad(format!("host port {} forwarded twice", f.host_port)));
            }
        }
        Ok(())
    }
}

/// Why passt could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    /// No `passt` on `PATH`.
    #[error("passt not found on PATH (user-mode networking runs it): apt-get install passt")]
    NotFound,
    /// A socket pair or the process could not be made.
    #[error("cannot start passt ({0})")]
    Spawn(#[source] std::io::Error),
    /// passt exited before it was ready.
    #[error("passt failed to start (exit status {status}): {message}")]
    Failed {
        /// Its exit status.
        status: String,
        /// What it printed.
        message: String,
    },
    /// passt took too long to set up.
    #[error("passt did not start within {0:?}")]
    Timeout(Duration),
}

/// The first executable `passt` on `PATH`.
pub fn find_passt() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("passt"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts passt for one interface and returns the device's end of its socket, once passt is
/// ready (its forwarded ports bound).
pub fn start_passt(user: &UserNetConfig) -> Result<FrameStream, PasstError> {
    let passt = find_passt().ok_or(PasstError::NotFound)?;
    // Both ends close on exec; the child's is made inheritable between fork and exec.
    let (ours, theirs) = UnixStream::pair().map_err(PasstError::Spawn)?;
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(&passt);
    cmd.args(["--quiet", "--one-off", "--fd", &fd.to_string()]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // passt will not run as root; it drops to `nobody`, which it looks up by name unless
        // given the number (a minimal root, a container, may have no /etc/passwd).
        cmd.args(["--runas", PASST_RUNAS]);
    }
    for f in &user.hostfwd {
        let flag = match f.protocol {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
        };
        cmd.args([flag, &f.passt_spec()]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the child between fork and exec and calls only fcntl, which
    // is async-signal-safe, on an fd number the child inherited.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(PasstError::Spawn)?;
    drop(theirs);
    // passt forks into the background once it is set up; its first process's status says how.
    let deadline = Instant::now() + PASST_START;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(PasstError::Spawn)? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(PasstError::Timeout(PASST_START));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut said = Vec::new();
    if let Some(err) = child.stderr.take() {
        // What it said, at most a page; non-blocking, in case the background process kept the
        // pipe open.
        // SAFETY: F_SETFL on an fd the `ChildStderr` owns, with plain flags.
        unsafe { libc::fcntl(err.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        let _ = err.take(4096).read_to_end(&mut said);
    }
    let message = String::from_utf8_lossy(&said);
    if !status.success() {
        let message = message
            .lines()
            // Without a system logger it says so for every line; and root is its own note.
            .filter(|l| {
                let noise = l.trim().is_empty()
                    || (l.starts_with("Failed to send") && l.ends_with("to syslog"))
                    || l.contains("Don't run as root");
                !noise
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(PasstError::Failed {
            status: status
                .code()
                .map_or_else(|| status.to_string(), |c| c.to_string()),
            message,
        });
    }
    log::info!(
        "virtio-net: started {} for user-mode networking{}",
        passt.display(),
        if user.hostfwd.is_empty() {
            String::new()
        } else {
            format!(
                ", forwarding {}",
                user.hostfwd
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    FrameStream::new(ours).map_err(PasstError::Spawn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_hostfwd_parses_qemu_form_and_refuses_the_rest() {
        let f = PortForward::parse("tcp::8080-:80").unwrap();
        assert_eq!(
            (f.protocol, f.host_address, f.host_port, f.guest_port),
            (Protocol::Tcp, None, 8080, 80)
        );
        assert_eq!(f.passt_spec(), "8080:80");
        let f = PortForward::parse("udp:127.0.0.1:5353-:53").unwrap();
        assert_eq!(f.protocol, Protocol::Udp);
        assert_eq!(f.passt_spec(), "127.0.0.1/5353:53");
        assert_eq!(f.to_string(), "udp:127.0.0.1:5353-:53");
        let f = PortForward::parse("tcp:[::1]:2222-:22").unwrap();
        assert_eq!(f.host_address, Some("::1".parse().unwrap()));
        for bad in [
            "tcp:8080-:80",
            "sctp::1-:2",
            "tcp::0-:80",
            "tcp::8080-10.0.2.15:80",
            "tcp::70000-:80",
            "tcp:nohost:1-:2",
            "tcp::8080",
        ] {
            assert!(PortForward::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_user_net_refuses_a_host_port_twice() {
        let user = UserNetConfig {
            hostfwd: vec![
                PortForward::parse("tcp::8080-:80").unwrap(),
                PortForward::parse("tcp:127.0.0.1:8080-:81").unwrap(),
            ],
        };
        assert!(user.check("eth0").is_err());
        let user = UserNetConfig {
            hostfwd: vec![
                PortForward::parse("tcp::8080-:80").unwrap(),
                PortForward::parse("udp::8080-:80").unwrap(),
            ],
        };
        user.check("eth0").unwrap();
    }
}
