//! Helpers for tests that boot fennec's tiny test kernels on `/dev/kvm`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) when the test drops it still running: a test that
/// fails half-way leaves no VMM behind.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// How long a tiny kernel may take; they finish in well under a second.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Fails the test unless `/dev/kvm` can be opened: these tests exist to run on KVM.
pub fn require_kvm() {
    if let Err(e) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!(
            "this test boots guests and needs read/write access to /dev/kvm ({e}); \
             run it on a host with KVM (load kvm_intel or kvm_amd) as root or as a member of the kvm group"
        );
    }
}

/// Path of one tiny kernel (`pvh.elf`, `elf64.elf` or `bzImage`), built by the harness (inside
/// the test host, which has no compiler: `tiny-NAME` from its guest directory).
pub fn tiny(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("FENNEC_GUEST_DIR") {
        let inside = Path::new(&dir).join(format!("tiny-{name}"));
        if inside.exists() {
            return inside;
        }
    }
    fennec::harness::tiny_kernel(name).unwrap()
}

/// The finished fennec process.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Context for assertion messages: exit code and both streams' tails.
    pub fn context(&self) -> String {
        let tail = |s: &str| {
            s.chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        };
        format!(
            "exit code {:?}\n--- console (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            self.code,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }

    /// The report the tiny kernel printed.
    pub fn report(&self) -> Report {
        Report::parse(&self.stdout)
    }
}

/// Runs the fennec binary with `args`, feeding `stdin` and then closing it, and kills it (by
/// PID, it is our child) if it outlives [`TIMEOUT`].
pub fn fennec_with_input(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fennec"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fennec");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let (status, stdout, stderr) = output_within(&mut child, TIMEOUT);
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    assert!(
        status.is_some(),
        "fennec did not finish within {TIMEOUT:?}\n{}",
        run.context()
    );
    run
}

/// Reads `child`'s piped stdout and stderr to their ends while waiting for it, killing it (our
/// own child, by PID) after `limit`: its status (`None` if killed), stdout and stderr.
pub fn output_within(child: &mut Child, limit: Duration) -> (Option<ExitStatus>, Vec<u8>, Vec<u8>) {
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = pipe.read_to_end(&mut s);
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout piped")));
    let err = reader(Box::new(child.stderr.take().expect("stderr piped")));
    let status = wait_with_timeout(child, limit);
    (
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Waits for `child`, killing it (our own child, by PID) at the deadline; `None` if it was killed.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `fennec run ARGS --api-socket SOCKET` (no stdin, console discarded, stderr piped) and
/// waits for the socket to appear.
pub fn spawn_api(args: &[&str], socket: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fennec"))
        .arg("run")
        .args(args)
        .arg("--api-socket")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fennec");
    wait_for_socket(&mut child, socket, String::new);
    child
}

/// Waits for `child` to make its control socket at `socket`; past [`TIMEOUT`] kills it (our own
/// child, by PID) and fails with `context()`.
pub fn wait_for_socket(child: &mut Child, socket: &Path, context: impl Fn() -> String) {
    let deadline = Instant::now() + TIMEOUT;
    while !socket.exists() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "fennec made no control socket at {} within {TIMEOUT:?}\n{}",
                socket.display(),
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An HTTP/1.1 request for the control socket, as bytes, closing the connection after it.
pub fn request(method: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `raw` on a new connection to `socket` and reads until the server closes or `wait`
/// passes; the bytes read.
pub fn raw(socket: &Path, raw: &[u8], wait: Duration) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of an HTTP response; 0 when there is none.
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// One request on the control socket from this process (no `fennec ctl` process to start, so
/// it times the VMM alone): its status code and JSON body (`Null` when empty).
pub fn api_call(socket: &Path, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let response = raw(
        socket,
        &request(method, path, body),
        Duration::from_secs(120),
    );
    let json = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim())
        .filter(|b| !b.is_empty())
        .map(|b| serde_json::from_str(b).unwrap_or(serde_json::Value::String(b.into())))
        .unwrap_or(serde_json::Value::Null);
    (status_of(&response), json)
}

/// Runs fennec with empty stdin.
pub fn fennec(args: &[&str]) -> Run {
    fennec_with_input(args, b"")
}

/// What a tiny kernel printed.
#[derive(Debug, Default)]
pub struct Report {
    pub boot: String,
    pub cmdline: String,
    pub e820: Vec<(u64, u64, u32)>,
    pub mem: u64,
    pub initrd: Option<(u64, u64, u64)>,
    pub cpus: u32,
    pub mptable: String,
    pub ready: bool,
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|_| panic!("not hex: {s}"))
}

impl Report {
    pub fn parse(console: &str) -> Report {
        let mut r = Report::default();
        for line in console.lines().map(|l| l.trim_end_matches('\r')) {
            let Some(rest) = line.strip_prefix("TINY ") else {
                continue;
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let Some(v) = rest.strip_prefix("boot=") {
                r.boot = v.to_string();
            } else if let Some(v) = rest.strip_prefix("cmdline=") {
                r.cmdline = v.to_string();
            } else if words.first() == Some(&"e820") {
                r.e820
                    .push((hex(words[1]), hex(words[2]), words[3].parse().unwrap()));
            } else if let Some(v) = rest.strip_prefix("mem=") {
                r.mem = hex(v);
            } else if rest.starts_with("initrd addr=") {
                let field = |k: &str| hex(words.iter().find_map(|w| w.strip_prefix(k)).unwrap());
                r.initrd = Some((field("addr="), field("size="), field("fnv=")));
            } else if let Some(v) = rest.strip_prefix("cpus=") {
                let mut parts = v.split(" mptable=");
                r.cpus = parts.next().unwrap().parse().unwrap();
                r.mptable = parts.next().unwrap_or_default().to_string();
            } else if rest == "ready" {
                r.ready = true;
            }
        }
        r
    }
}

/// FNV-1a 64, as the tiny kernels compute it over the initrd.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The e820 map fennec should hand a guest with `mib` MiB.
pub fn expected_e820(mib: u64) -> Vec<(u64, u64, u32)> {
    let size = mib << 20;
    let hole = 0xc000_0000u64;
    let mut map = vec![(0, 0x9fc00, 1), (0x10_0000, size.min(hole) - 0x10_0000, 1)];
    if size > hole {
        map.push((1 << 32, size - hole, 1));
    }
    map
}

/// A file in a fresh temp dir with `bytes` in it.
pub fn temp_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub mod kernel_log;
pub mod linux;
pub mod netns;
pub mod procfs;
pub mod running;
pub mod store;
pub mod testhost;
pub mod tiny_net;
pub mod zfs;

/// `fennec ctl --api-socket SOCKET ARGS...`, which must succeed; its JSON answer (`Null` when
/// it printed none).
pub fn ctl(socket: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(linux::fennec_bin())
        .arg("ctl")
        .arg("--api-socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fennec ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}
