//! Running Linux guests under fennec in tests, on any machine that has `/dev/kvm`.
//!
//! A Linux-guest test is a closure over the guest artifacts ([`Guest`]). Where to run it:
//! - **direct**: this machine's `/dev/kvm` runs guest code natively (hardware virtualization):
//!   the closure runs here.
//! - **testhost**: `/dev/kvm` emulates guest instructions (nested setups like the project's own
//!   machines), far too slow for Linux. The first such test boots the *test host* once: a QEMU
//!   TCG machine emulating AMD SVM, running Debian's cloud kernel with kvm-amd. Inside it, this
//!   same test binary runs every Linux test directly on the test host's KVM, and sends each result
//!   framed on the host's second serial port; every test then reports its own result here
//!   (`testhost.rs`).
//!
//! `FENNEC_LINUX_TESTS=direct|testhost` forces the choice; otherwise a probe times a tiny kernel's
//! 500,000-iteration loop: under a second means native execution.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fennec::harness::LinuxGuest;

use super::{require_kvm, tiny};

/// A guest's own timeout for markers: Linux under nested KVM inside the TCG test host boots in
/// seconds, but give it room.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A native guest runs the probe loop (ten million instructions) in a few milliseconds, and
/// fennec starts and ends around it in well under a tenth of a second; emulated at 0.35 to
/// 1.5 µs an instruction (machines seen so far), the loop alone takes 3.5 to 15 s. The limit
/// sits far from both. (The loop was a tenth as long until an emulating machine ran it in
/// 0.38 s, under an earlier 0.5 s limit, and the Linux tests ran where Linux cannot boot.)
const PROBE_NATIVE_LIMIT: Duration = Duration::from_millis(1500);

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

/// The stock Debian guest, once per process (see [`fennec::harness::debian_guest`]).
pub fn debian() -> &'static fennec::harness::DebianGuest {
    static DEBIAN: OnceLock<fennec::harness::DebianGuest> = OnceLock::new();
    DEBIAN.get_or_init(|| fennec::harness::debian_guest().unwrap())
}

/// Runs the Linux test `name`: here, or by looking up its result from the test host.
pub fn run_linux_test(name: &str, body: impl Fn(&Guest)) {
    match mode() {
        Mode::Direct => body(guest()),
        Mode::TestHost => match super::testhost::result(name) {
            (true, output) => eprintln!("{output}"),
            (false, output) => panic!("{name} failed inside the test host; its output:\n{output}"),
        },
    }
}

/// Declares a Linux-guest test: `linux_test!(fn_name, |guest| { ... });`. In a test host its
/// result is looked up under its name with its module path (`snapshot::linux_...`), the name
/// the test harness lists and runs it by.
#[macro_export]
macro_rules! linux_test {
    ($name:ident, $body:expr) => {
        #[test]
        fn $name() {
            let name = match module_path!().split_once("::") {
                Some((_crate, module)) => format!("{module}::{}", stringify!($name)),
                None => stringify!($name).to_string(),
            };
            $crate::common::linux::run_linux_test(&name, $body);
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
    panic!("{name} not found: resources/prereqs.sh installs the packages the tests need");
}

/// A running fennec with a Linux guest, driven like a terminal session.
pub struct Session {
    child: Child,
    /// Whether `child` has been waited for (its PID may then belong to another process).
    reaped: bool,
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

    /// Starts `fennec run` with `args` inside `ns` as user and group `uid`, with no
    /// supplementary groups and no capabilities: an unprivileged user's fennec. `/dev/kvm` is
    /// reachable to it through a device node of its own, bound over `/dev/kvm` in a mount
    /// namespace of the child's (the host's node and its permissions are left as they are).
    pub fn start_unprivileged_in(ns: &super::netns::NetNs, uid: u32, args: &[&str]) -> Session {
        use std::ffi::CString;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        use std::os::unix::process::CommandExt;
        let rdev = std::fs::metadata("/dev/kvm").expect("/dev/kvm").rdev();
        let node = std::env::temp_dir().join(format!("fennec-kvm-{uid}-{}", std::process::id()));
        let _ = std::fs::remove_file(&node);
        let c_node = CString::new(node.to_str().unwrap()).unwrap();
        // SAFETY: mknod and chown on a path this test owns, NUL-terminated, alive for the calls.
        unsafe {
            assert_eq!(
                libc::mknod(c_node.as_ptr(), libc::S_IFCHR | 0o600, rdev),
                0,
                "mknod"
            );
            assert_eq!(libc::chown(c_node.as_ptr(), uid, uid), 0, "chown");
        }
        let kvm = CString::new("/dev/kvm").unwrap();
        let root = CString::new("/").unwrap();
        // A copy the user can reach (the build's may sit under root's 0700 home).
        let dir = std::env::temp_dir().join(format!("fennec-unprivileged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.join("fennec");
        if !exe.exists() {
            std::fs::copy(fennec_bin(), &exe).expect("copy fennec for the unprivileged user");
        }
        let mut cmd = ns.command(&exe);
        // SAFETY: between fork and exec the closure makes system calls only (no allocation),
        // on strings made before the fork and moved in.
        unsafe {
            cmd.pre_exec(move || {
                let fail = || Err(std::io::Error::last_os_error());
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    || libc::mount(
                        c_node.as_ptr(),
                        kvm.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    || libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(uid, uid, uid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    return fail();
                }
                Ok(())
            });
        }
        Self::start_cmd(cmd, args)
    }

    /// Every guest runs with fennec's debug log (`-vv`): a failure shows it whole.
    fn start_cmd(mut fennec: Command, args: &[&str]) -> Session {
        let mut child = fennec
            .args(["run", "-vv"])
            .args(args.iter().filter(|a| !a.starts_with("-v")))
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
            reaped: false,
            console,
            stderr,
        }
    }

    /// Everything the guest printed so far.
    pub fn console(&self) -> String {
        self.console.0.lock().unwrap().clone()
    }

    /// fennec's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// fennec's stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The roles of fennec's threads, from their names, after checking that each runs under a
    /// syscall filter (`Seccomp: 2`); KVM's own workers in the process (kernel tasks) are left
    /// out.
    pub fn filtered_threads(&self) -> Vec<String> {
        let pid = self.child.id();
        let mut names = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let dir = task.unwrap().path();
            // A thread that ended meanwhile is left out.
            let (Ok(comm), Some(false), Some(mode)) = (
                std::fs::read_to_string(dir.join("comm")),
                super::procfs::is_kernel_worker(&dir),
                super::procfs::status_field(&dir, "Seccomp"),
            ) else {
                continue;
            };
            let comm = comm.trim().to_string();
            assert_eq!(mode, "2", "fennec's thread {comm} has no syscall filter");
            names.push(comm);
        }
        names.sort();
        names
    }

    /// What a failure shows: the console's tail, and fennec's log with the VM's state at the
    /// failure (fennec logs it on SIGUSR1: each vCPU's registers and local APIC, the serial
    /// port's registers, the IOAPIC pins).
    pub fn context(&self) -> String {
        if !self.reaped {
            // Twice, a second apart: whether the vCPUs move at all shows in the difference.
            for snapshot in 1..=2 {
                // SAFETY: kill(2) on our own child's PID: not reaped yet, so not reused.
                unsafe { libc::kill(self.child.id() as i32, libc::SIGUSR1) };
                let deadline = Instant::now() + Duration::from_secs(3);
                while self.stderr().matches("VM state (SIGUSR1)").count() < snapshot
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(1000));
            }
        }
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
        self.expect_within(from, marker, GUEST_TIMEOUT)
    }

    /// [`Session::expect_from`] with a time limit of its own (a whole distribution booting).
    pub fn expect_within(&self, from: usize, marker: &str, limit: Duration) -> String {
        let (text, cv) = &*self.console;
        let deadline = Instant::now() + limit;
        let mut guard = text.lock().unwrap();
        loop {
            if let Some(i) = guard.get(from..).and_then(|t| t.find(marker)) {
                return guard[from..from + i + marker.len()].to_string();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no {marker:?} from the guest within {limit:?}\n{}",
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
        self.wait_within(GUEST_TIMEOUT)
    }

    /// [`Session::wait`] with a time limit of its own (a whole distribution shutting down).
    pub fn wait_within(&mut self, limit: Duration) -> Option<i32> {
        drop(self.stdin.take());
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                // The state first, while fennec still runs; Drop kills it.
                panic!("fennec did not exit within {limit:?}\n{}", self.context());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.reaped = true;
        let code = status.code();
        // Let the reader threads drain.
        std::thread::sleep(Duration::from_millis(50));
        code
    }

    /// Kills fennec with SIGKILL, as a crash would end it, and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL fennec");
        let _ = self.child.wait();
        self.reaped = true;
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
