//! Network namespaces for the network tests: each test makes its own, puts its TAP and every
//! address inside it, runs fennec inside it, and sends traffic only there. The namespace (and
//! the TAP with it) is deleted when the guard drops, also when the test fails.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// iproute2's `ip` (busybox's has no `netns` or `tuntap`).
pub fn ip_tool() -> PathBuf {
    for p in [
        "/fennec/ip",
        "/usr/sbin/ip",
        "/sbin/ip",
        "/usr/bin/ip",
        "/bin/ip",
    ] {
        let p = Path::new(p);
        let is_iproute2 = Command::new(p)
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("iproute2"))
            .unwrap_or(false);
        if is_iproute2 {
            return p.to_path_buf();
        }
    }
    panic!("iproute2's ip not found: apt-get install iproute2");
}

/// A network namespace that exists while this guard does.
pub struct NetNs {
    name: String,
    ip: PathBuf,
}

impl NetNs {
    /// Creates `fennec-<tag>-<pid>` with its loopback up. Needs root.
    pub fn new(tag: &str) -> NetNs {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "network tests create network namespaces and TAP interfaces: run them as root"
        );
        let ns = NetNs {
            name: format!("fennec-{tag}-{}", std::process::id()),
            ip: ip_tool(),
        };
        let out = Command::new(&ns.ip)
            .args(["netns", "add", &ns.name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {} failed: {}",
            ns.name,
            String::from_utf8_lossy(&out.stderr)
        );
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> args...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let out = Command::new(&self.ip)
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {} failed: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates TAP `name` in the namespace, without IPv6 (so the host side sends the guest
    /// nothing of its own), brings it up and gives it `addr` (CIDR) if any.
    pub fn add_tap(&self, name: &str, addr: Option<&str>) {
        self.ip(&["tuntap", "add", "dev", name, "mode", "tap"]);
        let sysctl = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
        self.run_in(|| {
            // Absent when the kernel has no IPv6; then there is nothing to silence.
            let _ = std::fs::write(&sysctl, "1");
        });
        if let Some(addr) = addr {
            self.ip(&["addr", "add", addr, "dev", name]);
        }
        self.ip(&["link", "set", name, "up"]);
    }

    /// `program` to run inside the namespace: its network namespace joined in the child
    /// before the exec, so the child's PID is the program's. Only the network namespace (not
    /// `ip netns exec`, which also makes a mount namespace): what the program mounts (a ZFS
    /// dataset it provisions, through zfs-fuse) is mounted where its daemon sees it.
    pub fn command(&self, program: &Path) -> Command {
        use std::os::unix::process::CommandExt;
        let ns =
            std::fs::File::open(format!("/run/netns/{}", self.name)).expect("open the namespace");
        let mut c = Command::new(program);
        // SAFETY: between fork and exec the closure makes one system call on a descriptor
        // it owns (moved in) and allocates nothing.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        c
    }

    /// Adds an uplink as a host has one, for passt (user-mode networking) to take its
    /// addresses and routes from: veth `up0` at `addr` (CIDR) with the default route through
    /// `gateway`, its peer `up1` in the namespace too, so nothing sent leaves it.
    pub fn add_uplink(&self, addr: &str, gateway: &str) {
        self.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
        self.ip(&["addr", "add", addr, "dev", "up0"]);
        self.ip(&["link", "set", "up0", "up"]);
        self.ip(&["link", "set", "up1", "up"]);
        self.ip(&["route", "add", "default", "via", gateway]);
    }

    /// The interfaces in the namespace whose names start with `prefix`.
    pub fn links_named(&self, prefix: &str) -> Vec<String> {
        let out = Command::new(&self.ip)
            .args(["-n", &self.name, "-o", "link", "show"])
            .output()
            .expect("ip link show");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .filter(|name| name.starts_with(prefix))
            .collect()
    }

    /// `ip -d link show NAME` in the namespace.
    pub fn link_details(&self, name: &str) -> String {
        let out = Command::new(&self.ip)
            .args(["-n", &self.name, "-d", "link", "show", name])
            .output()
            .expect("ip link show");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The live (not zombie) processes in the namespace whose command name starts with
    /// `prefix`: their PIDs and real UIDs.
    pub fn processes_named(&self, prefix: &str) -> Vec<(u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(format!("/run/netns/{}", self.name))
            .expect("the namespace's file")
            .ino();
        let ns_link = PathBuf::from(format!("net:[{ino}]"));
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_string()
            };
            if !comm.starts_with(prefix) || field("State:").starts_with('Z') {
                continue;
            }
            if std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == Some(ns_link.clone()) {
                let uid = field("Uid:")
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .parse();
                found.push((pid, uid.unwrap_or(u32::MAX)));
            }
        }
        found
    }

    /// Runs `f` on a thread that joined the namespace; sockets it opens belong there.
    pub fn run_in<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).expect("open the namespace");
                // SAFETY: `ns` is an open namespace file; setns changes only this thread,
                // which ends with this closure.
                let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("namespace thread")
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let ok = Command::new(&self.ip)
            .args(["netns", "del", &self.name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("warning: could not delete network namespace {}", self.name);
        }
    }
}

/// A raw `AF_PACKET` socket on one interface, for one EtherType.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens it on `ifname` inside `ns`.
    pub fn open(ns: &NetNs, ifname: &str, ethertype: u16) -> PacketSocket {
        let name = CString::new(ifname).unwrap();
        ns.run_in(move || {
            let proto = ethertype.to_be();
            // SAFETY: plain socket(2) call; the result is checked before use.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    proto.into(),
                )
            };
            assert!(
                raw >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: `raw` is a new fd that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: `name` is NUL-terminated and outlives the call.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(ifindex, 0, "no interface {name:?}");
            // SAFETY: sockaddr_ll is plain data; zero is a valid value.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = proto;
            addr.sll_ifindex = ifindex as i32;
            // SAFETY: `addr` is a sockaddr_ll of the size passed, alive across the call.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            PacketSocket { fd }
        })
    }

    /// Sends one Ethernet frame out of the interface.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is a readable buffer of the length passed.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The next frame the interface received, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if ready <= 0 {
            return None;
        }
        let mut buf = vec![0u8; 65536];
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert!(n >= 0, "recv: {}", std::io::Error::last_os_error());
        buf.truncate(n as usize);
        Some(buf)
    }
}

/// An Ethernet frame of at least 60 bytes: `dst`, `src`, `ethertype`, `payload`, zero padding.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60.max(14 + payload.len()));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(60.max(f.len()), 0);
    f
}

/// CPU time (user + system, in clock ticks) of the thread of `pid` named `comm`.
pub fn thread_cpu_ticks(pid: u32, comm: &str) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    for task in tasks.map_while(Result::ok) {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if name.trim() != comm {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
        return fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    panic!("process {pid} has no thread {comm:?}");
}
