//! Running Linux guests under fennec in tests, on any machine that has `/dev/kvm`.
//!
//! A Linux-guest test is a closure over the guest artifacts ([`Guest`]). Where to run it:
//! - **direct**: this machine's `/dev/kvm` runs guest code natively (hardware virtualization):
//!   the closure runs here.
//! - **testhost**: `/dev/kvm` emulates guest instructions (nested setups like the project's own
//!   machines), far too slow for Linux. The first such test boots the *test host* once: a QEMU
//!   TCG machine emulating AMD SVM, running Debian's cloud kernel with kvm-amd. Inside it, this
//!   same test binary runs every Linux test directly on the test host's KVM, and sends each result
//!   framed on the host's second serial port; every test then reports its own result here.
//!
//! `FENNEC_LINUX_TESTS=direct|testhost` forces the choice; otherwise a probe times a tiny kernel's
//! 500,000-iteration loop: under a second means native execution.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fennec::harness::LinuxGuest;

use super::{require_kvm, tiny, wait_with_timeout};

/// A guest's own timeout for markers: Linux under nested KVM inside the TCG test host boots in
/// seconds, but give it room.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The whole test host run.
const TEST_HOST_TIMEOUT: Duration = Duration::from_secs(1800);
/// A native guest runs the probe loop in about a millisecond; emulated, in about a second.
const PROBE_NATIVE_LIMIT: Duration = Duration::from_millis(500);

/// Where Linux tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Direct,
    TestHost,
}

/// Decides, once per process, where Linux tests run.
pub fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("FENNEC_LINUX_TESTS").as_deref() {
        Ok("direct") => Mode::Direct,
        Ok("testhost") => Mode::TestHost,
        Ok(other) => panic!("FENNEC_LINUX_TESTS={other}: use direct or testhost"),
        Err(_) => probe(),
    })
}

/// Times the tiny kernel's spin loop on this machine's `/dev/kvm`.
fn probe() -> Mode {
    require_kvm();
    let kernel = tiny("elf64.elf");
    let start = Instant::now();
    let status = Command::new(fennec_bin())
        .args(["run", "--kernel"])
        .arg(&kernel)
        .args(["--cmdline", "tiny.mode=spin"])
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .status()
        .expect("run fennec for the KVM speed probe");
    let took = start.elapsed();
    assert!(status.success(), "the KVM speed probe failed: {status}");
    let mode = if took < PROBE_NATIVE_LIMIT {
        Mode::Direct
    } else {
        Mode::TestHost
    };
    eprintln!(
        "linux tests: guest loop took {took:?} on /dev/kvm -> {mode:?} (set FENNEC_LINUX_TESTS to force)"
    );
    mode
}

/// The fennec binary: `FENNEC_BIN` inside the test host, else cargo's.
pub fn fennec_bin() -> PathBuf {
    std::env::var_os("FENNEC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fennec")))
}

/// The guest kernel, initramfs and root filesystem: the harness's [`LinuxGuest`].
pub type Guest = LinuxGuest;

/// The guest artifacts, once per process: from `FENNEC_GUEST_DIR` inside the test host, else
/// built (and cached) by the scripts in `resources/` (see [`fennec::harness::linux_guest`]).
pub fn guest() -> &'static Guest {
    static GUEST: OnceLock<Guest> = OnceLock::new();
    GUEST.get_or_init(|| fennec::harness::linux_guest().unwrap())
}

/// Panic messages of a guest whose console went silent (see [`run_linux_test`]).
const STALL_MARKS: [&str; 4] = [
    "from the guest within",
    "fennec did not exit within",
    "did not appear on the console within",
    "the guest did not end within",
];

/// Runs the Linux test `name`: here, or by looking up its result from the test host.
///
/// A test whose guest console goes silent (a marker that never comes) runs once more, and says
/// so on stderr: inside the nested test host, about one boot in 30 has stopped mid-output, and
/// QEMU's microvm has stalled the same way there (README, "Known problems"). Any other failure,
/// and a second stall, fails the test.
pub fn run_linux_test(name: &str, body: impl Fn(&Guest)) {
    match mode() {
        Mode::Direct => {
            let g = guest();
            let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(g)));
            if let Err(panic) = first {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                if !STALL_MARKS.iter().any(|m| msg.contains(m)) {
                    std::panic::resume_unwind(panic);
                }
                eprintln!(
                    "FENNEC-RETRY {name}: the guest console went silent; running it once more"
                );
                body(g);
            }
        }
        Mode::TestHost => {
            let host = test_host();
            match host.results.get(name) {
                Some((true, output)) => eprintln!("{output}"),
                Some((false, output)) => {
                    panic!("{name} failed inside the test host; its output:\n{output}")
                }
                None => panic!(
                    "the test host did not report {name}; its console ended with:\n{}",
                    host.console_tail
                ),
            }
        }
    }
}

/// Declares a Linux-guest test: `linux_test!(fn_name, |guest| { ... });`
#[macro_export]
macro_rules! linux_test {
    ($name:ident, $body:expr) => {
        #[test]
        fn $name() {
            $crate::common::linux::run_linux_test(stringify!($name), $body);
        }
    };
}

/// A program the Linux tests run on their host (inside the test host: under /fennec).
pub fn host_tool(name: &str) -> PathBuf {
    let inside = Path::new("/fennec").join(name);
    if std::env::var_os("FENNEC_GUEST_DIR").is_some() && inside.exists() {
        return inside;
    }
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: apt-get install e2fsprogs");
}

/// What the test host reported.
struct HostRun {
    results: HashMap<String, (bool, String)>,
    console_tail: String,
}

fn test_host() -> &'static HostRun {
    static HOST: OnceLock<HostRun> = OnceLock::new();
    HOST.get_or_init(boot_test_host)
}

/// Names of this binary's Linux tests (named `linux_*`).
fn list_tests(exe: &Path) -> Vec<String> {
    let out = Command::new(exe)
        .args(["--list", "--format", "terse"])
        .output()
        .expect("list this binary's tests");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .filter(|name| name.starts_with("linux_"))
        .map(str::to_string)
        .collect()
}

fn boot_test_host() -> HostRun {
    let exe = std::env::current_exe().unwrap();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "test-host-{}",
        exe.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&work);
    let guest_dir = work.join("guest");
    std::fs::create_dir_all(&guest_dir).unwrap();
    let g = guest();
    for (src, name) in [
        (&g.vmlinux, "vmlinux"),
        (&g.bzimage, "bzImage"),
        (&g.initramfs, "initramfs.cpio"),
        (&g.rootfs, "rootfs.ext4"),
    ] {
        std::os::unix::fs::symlink(src, guest_dir.join(name)).unwrap();
    }
    let list = work.join("tests.list");
    std::fs::write(&list, list_tests(&exe).join("\n") + "\n").unwrap();

    let resources = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources");
    let entry = |name: &str, path: &Path| format!("{name}={}", path.display());
    let status = Command::new(resources.join("build-test-host.sh"))
        .arg(&work)
        .arg(resources.join("test-host/init"))
        .arg(&guest_dir)
        .arg(entry("fennec", &fennec_bin()))
        .arg(entry("linux-tests", &exe))
        .arg(entry("tests.list", &list))
        .arg(entry("debugfs", &host_tool("debugfs")))
        .arg(entry("e2fsck", &host_tool("e2fsck")))
        .arg(entry("ip", &super::netns::ip_tool()))
        .stdout(Stdio::null())
        .status()
        .expect("run resources/build-test-host.sh");
    assert!(status.success(), "building the test host failed");

    let results_path = work.join("results.txt");
    eprintln!("linux tests: booting the test host (QEMU TCG with emulated AMD SVM)");
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=multi",
            "-smp",
            "2",
            "-m",
            "3072",
            "-M",
            "q35",
        ])
        .args([
            "-cpu",
            "EPYC,+svm",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
        ])
        .args(["-monitor", "none", "-serial", "stdio"])
        .arg("-serial")
        .arg(format!("file:{}", results_path.display()))
        .arg("-kernel")
        .arg(work.join("vmlinuz"))
        .arg("-initrd")
        .arg(work.join("initramfs.cpio"))
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 rdinit=/init",
            "-no-reboot",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64 (apt-get install qemu-system-x86)");
    let console = Arc::new(Mutex::new(String::new()));
    let streams: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|stream| {
        let console = console.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("[test host] {line}");
                let mut c = console.lock().unwrap();
                c.push_str(&line);
                c.push('\n');
            }
        })
    })
    .collect();
    let finished = wait_with_timeout(&mut child, TEST_HOST_TIMEOUT).is_some();
    for s in streams {
        let _ = s.join();
    }
    let console = console.lock().unwrap().clone();
    let console_tail: String = console
        .lines()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        finished,
        "the test host did not finish within {TEST_HOST_TIMEOUT:?} and was killed; console tail:\n{console_tail}"
    );
    let results = parse_results(&std::fs::read_to_string(&results_path).unwrap_or_default());
    HostRun {
        results,
        console_tail,
    }
}

/// Parses the results channel: `FENNEC-RESULT name ok|failed`, base64 output, `FENNEC-END name`.
pub fn parse_results(text: &str) -> HashMap<String, (bool, String)> {
    let mut results = HashMap::new();
    let mut current: Option<(String, bool, String)> = None;
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(rest) = line.strip_prefix("FENNEC-RESULT ") {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or_default().to_string();
            current = Some((name, words.next() == Some("ok"), String::new()));
        } else if line.starts_with("FENNEC-END ") {
            if let Some((name, ok, b64)) = current.take() {
                results.insert(
                    name,
                    (
                        ok,
                        String::from_utf8_lossy(&base64_decode(&b64)).into_owned(),
                    ),
                );
            }
        } else if let Some((_, _, b64)) = current.as_mut() {
            b64.push_str(line.trim());
        }
    }
    results
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = s.bytes().filter_map(value).collect();
    digits
        .chunks(4)
        .flat_map(|c| {
            let n = c.iter().fold(0u32, |acc, d| (acc << 6) | u32::from(*d)) << (6 * (4 - c.len()));
            let bytes = n.to_be_bytes();
            bytes[1..c.len()].to_vec()
        })
        .collect()
}

/// A running fennec with a Linux guest, driven like a terminal session.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<(Mutex<String>, Condvar)>,
    stderr: Arc<Mutex<String>>,
}

impl Session {
    /// Starts `fennec run` with `args` (the guest kernel and initramfs come from the caller).
    pub fn start(args: &[&str]) -> Session {
        Self::start_cmd(Command::new(fennec_bin()), args)
    }

    /// Starts `fennec run` with `args` inside network namespace `ns`.
    pub fn start_in(ns: &super::netns::NetNs, args: &[&str]) -> Session {
        Self::start_cmd(ns.command(&fennec_bin()), args)
    }

    fn start_cmd(mut fennec: Command, args: &[&str]) -> Session {
        let mut child = fennec
            .arg("run")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fennec");
        let console = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let c = console.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let (text, cv) = &*c;
                text.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
                cv.notify_all();
            }
        });
        let err = child.stderr.take().unwrap();
        let e = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut e = e.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        Session {
            stdin: child.stdin.take(),
            child,
            console,
            stderr,
        }
    }

    /// Everything the guest printed so far.
    pub fn console(&self) -> String {
        self.console.0.lock().unwrap().clone()
    }

    /// fennec's stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn context(&self) -> String {
        let console = self.console();
        let tail: String = console
            .chars()
            .rev()
            .take(3000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!(
            "--- console (tail) ---\n{tail}\n--- fennec stderr ---\n{}",
            self.stderr()
        )
    }

    /// Waits until the console contains `marker` after byte `from`; returns the text from there.
    pub fn expect_from(&self, from: usize, marker: &str) -> String {
        let (text, cv) = &*self.console;
        let deadline = Instant::now() + GUEST_TIMEOUT;
        let mut guard = text.lock().unwrap();
        loop {
            if let Some(i) = guard.get(from..).and_then(|t| t.find(marker)) {
                return guard[from..from + i + marker.len()].to_string();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no {marker:?} from the guest within {GUEST_TIMEOUT:?}\n{}",
                {
                    drop(guard);
                    self.context()
                }
            );
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Waits for `marker` anywhere on the console.
    pub fn expect(&self, marker: &str) -> String {
        self.expect_from(0, marker)
    }

    /// Types `line` and Enter on the guest's console.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Runs `command` in the guest shell and returns what it printed: the text between two
    /// markers that only the shell's output (not the echo of the typed line) contains.
    pub fn run(&mut self, command: &str) -> String {
        let from = self.console().len();
        self.send_line(&format!(
            "echo FENNEC-BEGIN-$((40+2)); {command}; echo FENNEC-END-$((40+2))"
        ));
        let text = self.expect_from(from, "FENNEC-END-42");
        let start = text
            .find("FENNEC-BEGIN-42")
            .map(|i| i + "FENNEC-BEGIN-42".len());
        let body = &text[start.unwrap_or(0)..text.len() - "FENNEC-END-42".len()];
        body.trim().replace('\r', "")
    }

    /// Waits for fennec to exit; returns its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        drop(self.stdin.take());
        let finished = wait_with_timeout(&mut self.child, GUEST_TIMEOUT).is_some();
        assert!(
            finished,
            "fennec did not exit within {GUEST_TIMEOUT:?}\n{}",
            self.context()
        );
        let code = self.child.wait().unwrap().code();
        // Let the reader threads drain.
        std::thread::sleep(Duration::from_millis(50));
        code
    }

    /// Kills fennec with SIGKILL, as a crash would end it, and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL fennec");
        let _ = self.child.wait();
    }

    /// Asserts fennec exits with `code`, with the console in the failure message.
    pub fn assert_exit(&mut self, code: i32) {
        let got = self.wait();
        assert_eq!(got, Some(code), "{}", self.context());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_base64_decode_round_trip() {
        assert_eq!(super::base64_decode("aGVsbG8gd29ybGQK"), b"hello world\n");
        assert_eq!(super::base64_decode("YQ=="), b"a");
    }
}
