//! A harness for tests that boot a guest and check what it prints (cargo feature `harness`).
//!
//! ```no_run
//! use std::time::Duration;
//! use fennec::harness::{tiny_kernel, TestVm};
//! use fennec::VmBuilder;
//!
//! let kernel = tiny_kernel("pvh.elf")?;
//! let mut vm = TestVm::boot(VmBuilder::new(kernel).cmdline("console=ttyS0"), Duration::from_secs(30))?;
//! vm.expect("TINY ready")?;
//! assert!(vm.wait()?.is_clean());
//! # Ok::<(), fennec::harness::HarnessError>(())
//! ```
//!
//! - [`tiny_kernel`] builds fennec's tiny test kernels (`resources/tiny`, with `make` and the
//!   system C compiler) once per machine; [`linux_guest`] finds or builds the Linux guest
//!   kernel, initramfs and root filesystem (`resources/build-guest-*.sh`, cached in
//!   `~/.cache/fennec`).
//! - [`TestVm`] boots a [`VmBuilder`], collects the console, and [`TestVm::expect`]s patterns
//!   in order with a timeout; a failure carries the console's tail. [`TestVm::run`] runs a
//!   command in a guest shell (the busybox guests' `sh` on the console) and returns its output
//!   and exit status. Dropping a `TestVm` always stops and reaps the VM.
//! - [`TestVm::checkpoint`] snapshots a booted guest and [`TestVm::restore`] starts further
//!   VMs from it, each in milliseconds instead of a boot.
//!
//! It runs wherever `/dev/kvm` runs guests: directly on hardware virtualization, or inside the
//! nested test host that fennec's Linux tests use on machines whose KVM emulates guest code.

use std::fmt;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::{ConsoleStream, ExitReason, Instance, StartError, VmBuilder};

mod agent;
pub use agent::AGENT_PORT;

/// How much of the console a failure message shows.
const TAIL_CHARS: usize = 3000;

/// Why a harness step failed. `Debug` prints the same readable text as `Display`, so a test's
/// `.unwrap()` shows the console's tail.
#[derive(thiserror::Error)]
pub enum HarnessError {
    /// The pattern did not appear in time.
    #[error("{pattern:?} did not appear on the console within {waited:?}\n--- console (tail) ---\n{tail}\n--- VM state ---\n{state}")]
    Timeout {
        /// What was expected.
        pattern: String,
        /// How long the harness waited.
        waited: Duration,
        /// The end of the console.
        tail: String,
        /// Where the VM stood when the harness gave up ([`crate::VmHandle::describe`]).
        state: String,
    },
    /// The guest ended before the pattern appeared.
    #[error(
        "the guest ended ({reason}) before {pattern:?} appeared\n--- console (tail) ---\n{tail}"
    )]
    Ended {
        /// What was expected.
        pattern: String,
        /// How the guest ended.
        reason: String,
        /// The end of the console.
        tail: String,
    },
    /// The guest did not end within the timeout (and was stopped).
    #[error(
        "the guest did not end within {0:?}\n--- console (tail) ---\n{1}\n--- VM state ---\n{2}"
    )]
    NoExit(Duration, String, String),
    /// The VM could not start.
    #[error("cannot start the VM: {0}")]
    Start(#[from] StartError),
    /// The VM failed.
    #[error("the VM failed: {0}")]
    Vm(#[from] crate::Error),
    /// Guest artifacts could not be built or found.
    #[error("{0}")]
    Artifacts(String),
    /// Typing into the console failed.
    #[error("cannot write to the console: {0}")]
    Console(#[from] std::io::Error),
    /// The guest's agent could not run a command.
    #[error("the guest's agent: {0}")]
    Agent(String),
}

impl fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The harness's result type.
pub type Result<T> = std::result::Result<T, HarnessError>;

/// The fennec source tree this crate was built from (its `resources/`).
fn source_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds (once per process, under a lock shared by processes) and returns fennec's tiny test kernel `name`:
/// `pvh.elf` (PVH entry, with the virtio drivers and the `tiny.mode=` programs), `elf64.elf`
/// or `bzImage`. They go to `$FENNEC_TINY_DIR`, else a directory under the system temp dir.
pub fn tiny_kernel(name: &str) -> Result<PathBuf> {
    // Built once per process; `make` keeps them up to date across processes.
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let out = match BUILT.get() {
        Some(out) => out.clone(),
        None => {
            let out = build_tiny_kernels()?;
            BUILT.get_or_init(|| out).clone()
        }
    };
    let fail = |what: String| HarnessError::Artifacts(what);
    let kernel = out.join(name);
    if !kernel.is_file() {
        return Err(fail(format!(
            "no tiny kernel {name:?}: try pvh.elf, elf64.elf or bzImage"
        )));
    }
    Ok(kernel)
}

/// Runs `make` on `resources/tiny` into the output directory, under a lock; returns the directory.
fn build_tiny_kernels() -> Result<PathBuf> {
    let fail = |what: String| HarnessError::Artifacts(what);
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    let out = std::env::var_os("FENNEC_TINY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("fennec-tiny-{uid}")));
    std::fs::create_dir_all(&out)
        .map_err(|e| fail(format!("cannot create {}: {e}", out.display())))?;
    let lock = std::fs::File::create(out.join(".lock"))
        .map_err(|e| fail(format!("cannot lock {}: {e}", out.display())))?;
    // SAFETY: flock on a descriptor this function owns; released when `lock` is dropped.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    let src = source_dir().join("resources/tiny");
    let status = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(&src)
        .arg(format!("OUT={}", out.display()))
        .stdout(Stdio::null())
        .status()
        .map_err(|e| fail(format!("cannot run make ({e}): apt-get install make gcc")))?;
    if !status.success() {
        return Err(fail(format!(
            "building the tiny kernels in {} failed",
            src.display()
        )));
    }
    Ok(out)
}

/// The Linux guest: a kernel (as ELF and bzImage) with fennec's config, a busybox initramfs
/// whose `/init` runs `fennec.cmd=` or a shell on the console, and an ext4 root filesystem.
#[derive(Clone, Debug)]
pub struct LinuxGuest {
    /// The ELF kernel (PVH entry).
    pub vmlinux: PathBuf,
    /// The same kernel as a bzImage.
    pub bzimage: PathBuf,
    /// The busybox initramfs.
    pub initramfs: PathBuf,
    /// The ext4 root filesystem; boot a copy of it.
    pub rootfs: PathBuf,
}

fn script(name: &str) -> Result<PathBuf> {
    let path = source_dir().join("resources").join(name);
    let out = Command::new(&path)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| HarnessError::Artifacts(format!("cannot run {}: {e}", path.display())))?;
    if !out.status.success() {
        return Err(HarnessError::Artifacts(format!(
            "{} failed (it needs root to install Debian packages the first time; its messages are above)",
            path.display()
        )));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The Linux guest's artifacts: from `$FENNEC_GUEST_DIR` when set (the test host has them
/// there), else built and cached by `resources/build-guest-*.sh` (the first kernel build takes
/// a while; later calls return the cache).
pub fn linux_guest() -> Result<LinuxGuest> {
    if let Some(dir) = std::env::var_os("FENNEC_GUEST_DIR") {
        let dir = PathBuf::from(dir);
        return Ok(LinuxGuest {
            vmlinux: dir.join("vmlinux"),
            bzimage: dir.join("bzImage"),
            initramfs: dir.join("initramfs.cpio"),
            rootfs: dir.join("rootfs.ext4"),
        });
    }
    let kernel = script("build-guest-kernel.sh")?;
    Ok(LinuxGuest {
        vmlinux: kernel.join("vmlinux"),
        bzimage: kernel.join("bzImage"),
        initramfs: script("build-guest-initramfs.sh")?,
        rootfs: script("build-guest-rootfs.sh")?,
    })
}

/// A stock Debian 12 system: Debian's cloud kernel, the initramfs Debian's initramfs-tools
/// made for it, and an ext4 root filesystem debootstrapped from Debian's packages
/// (`resources/build-debian-guest.sh`). Root logs in on the serial console; a unit prints
/// `FENNEC-DEBIAN-READY ...` once `multi-user.target` is reached.
#[derive(Clone, Debug)]
pub struct DebianGuest {
    /// Debian's kernel (a bzImage).
    pub kernel: PathBuf,
    /// Its initramfs, as Debian generated it.
    pub initrd: PathBuf,
    /// The root filesystem; boot a copy of it as the root drive.
    pub rootfs: PathBuf,
}

/// The Debian guest: from `$FENNEC_GUEST_DIR` when set (`debian-vmlinuz`, `debian-initrd.img`,
/// `debian-rootfs.ext4`), else built and cached by `resources/build-debian-guest.sh` (a few
/// minutes and root the first time).
pub fn debian_guest() -> Result<DebianGuest> {
    let (dir, prefix) = match std::env::var_os("FENNEC_GUEST_DIR") {
        Some(dir) => (PathBuf::from(dir), "debian-"),
        None => (script("build-debian-guest.sh")?, ""),
    };
    Ok(DebianGuest {
        kernel: dir.join(format!("{prefix}vmlinuz")),
        initrd: dir.join(format!("{prefix}initrd.img")),
        rootfs: dir.join(format!("{prefix}rootfs.ext4")),
    })
}

/// What [`TestVm::run`] got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// What the command printed (stdout and stderr, as the console shows them), trimmed.
    pub output: String,
    /// Its exit status.
    pub status: i32,
}

/// The console text collected so far, and whether the guest's side closed.
#[derive(Default)]
struct Collected {
    text: Mutex<(String, bool)>,
    grew: Condvar,
}

/// A VM under test: its console collected as it comes, patterns expected in order.
pub struct TestVm {
    vm: Instance,
    console: Arc<Collected>,
    input: std::io::PipeWriter,
    /// Where the next [`TestVm::expect`] starts looking.
    cursor: usize,
    timeout: Duration,
    /// The vsock device's host socket: [`TestVm::run`] goes through the guest's agent.
    agent: Option<PathBuf>,
}

impl TestVm {
    /// Boots `builder` (its console becomes the harness's) with `timeout` for every wait.
    pub fn boot(builder: VmBuilder, timeout: Duration) -> Result<TestVm> {
        let agent = builder.vsock_uds_path().map(Path::to_path_buf);
        let mut vm = builder.start()?;
        let stream: ConsoleStream = vm.take_console().ok_or_else(|| {
            HarnessError::Artifacts("the builder was given its own console".into())
        })?;
        let (mut reader, input) = stream.split();
        let console = Arc::new(Collected::default());
        let sink = console.clone();
        std::thread::Builder::new()
            .name("fennec-harness-console".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let n = std::io::Read::read(&mut reader, &mut buf).unwrap_or(0);
                    let mut text = fennec_devices::lock(&sink.text);
                    if n == 0 {
                        text.1 = true;
                        sink.grew.notify_all();
                        return;
                    }
                    text.0.push_str(&String::from_utf8_lossy(&buf[..n]));
                    sink.grew.notify_all();
                }
            })
            .map_err(HarnessError::Console)?;
        Ok(TestVm {
            vm,
            console,
            input,
            cursor: 0,
            timeout,
            agent,
        })
    }

    /// Snapshots the VM into `dir` (pausing it for that, then resuming it): boot a guest once,
    /// then start every further test VM from here with [`TestVm::restore`].
    pub fn checkpoint(&mut self, dir: &Path) -> Result<()> {
        self.vm.pause()?;
        let saved = self.vm.snapshot(dir);
        self.vm.resume()?;
        saved.map(drop).map_err(HarnessError::Vm)
    }

    /// A VM restored from the snapshot in `dir` ([`TestVm::checkpoint`]): it goes on where the
    /// snapshotted one was, in milliseconds. Its console starts empty.
    pub fn restore(dir: &Path, timeout: Duration) -> Result<TestVm> {
        TestVm::boot(VmBuilder::restore(dir)?, timeout)
    }

    /// Everything the guest printed so far.
    pub fn console(&self) -> String {
        fennec_devices::lock(&self.console.text).0.clone()
    }

    /// The last few thousand characters of the console.
    pub fn tail(&self) -> String {
        let text = self.console();
        let start = text
            .char_indices()
            .rev()
            .nth(TAIL_CHARS)
            .map_or(0, |(i, _)| i);
        text[start..].to_string()
    }

    /// Where the VM stands ([`crate::VmHandle::describe`]), or why that cannot be told.
    fn state(&self) -> String {
        self.vm.describe().unwrap_or_else(|e| e.to_string())
    }

    /// The running VM (pause, resume, metrics, ...).
    pub fn vm(&self) -> &Instance {
        &self.vm
    }

    /// Waits for `pattern` after the previous match, up to the harness timeout; returns the
    /// text from the previous match to the end of this one.
    pub fn expect(&mut self, pattern: &str) -> Result<String> {
        self.expect_within(pattern, self.timeout)
    }

    /// [`TestVm::expect`] with its own timeout.
    pub fn expect_within(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut text = fennec_devices::lock(&self.console.text);
        loop {
            if let Some(i) = text.0.get(self.cursor..).and_then(|t| t.find(pattern)) {
                let end = self.cursor + i + pattern.len();
                let found = text.0[self.cursor..end].to_string();
                self.cursor = end;
                return Ok(found);
            }
            let now = Instant::now();
            if text.1 {
                drop(text);
                let reason = self
                    .vm
                    .wait_timeout(Duration::from_secs(1))
                    .map_or_else(|| "its console closed".to_string(), |r| r.to_string());
                return Err(HarnessError::Ended {
                    pattern: pattern.to_string(),
                    reason,
                    tail: self.tail(),
                });
            }
            if now >= deadline {
                drop(text);
                return Err(HarnessError::Timeout {
                    pattern: pattern.to_string(),
                    waited: start.elapsed(),
                    tail: self.tail(),
                    state: self.state(),
                });
            }
            text = self
                .console
                .grew
                .wait_timeout(text, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Types `text` into the guest's serial port.
    pub fn send(&mut self, text: &str) -> Result<()> {
        self.input.write_all(text.as_bytes())?;
        Ok(())
    }

    /// Types `line` and Enter.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        self.send(&format!("{line}\n"))
    }

    /// Runs `command` (one line) in the guest and returns its output and exit status. A VM
    /// with a vsock device runs it through the guest's agent (`fennec-agent serve` on port
    /// [`AGENT_PORT`], which the Linux test guest starts): output and status come back framed,
    /// stdout and stderr together, with no console parsing. Without one it is typed into the
    /// guest's shell (a POSIX shell reading the console), and the output is what the shell
    /// printed between two markers that the echo of the typed line cannot contain.
    pub fn run(&mut self, command: &str) -> Result<CommandOutput> {
        match &self.agent {
            Some(uds) => agent::run(uds, command, self.timeout)
                .map(|(output, status)| CommandOutput { output, status })
                .map_err(HarnessError::Agent),
            None => self.run_on_console(command),
        }
    }

    /// [`TestVm::run`] typed into the guest's shell on the console, whether or not the VM
    /// has a vsock device.
    pub fn run_on_console(&mut self, command: &str) -> Result<CommandOutput> {
        self.send_line(&format!(
            "echo FENNEC-BEGIN-$((40+2)); {command}; echo FENNEC-END-$((40+2))-status=$?."
        ))?;
        self.expect("FENNEC-BEGIN-42")?;
        let body = self.expect("FENNEC-END-42-status=")?;
        let status_text = self.expect(".")?;
        let output = body
            .strip_suffix("FENNEC-END-42-status=")
            .unwrap_or(&body)
            .replace('\r', "")
            .trim()
            .to_string();
        let status = status_text
            .trim_end_matches('.')
            .trim()
            .parse()
            .map_err(|_| HarnessError::Artifacts(format!("no exit status in {status_text:?}")))?;
        Ok(CommandOutput { output, status })
    }

    /// Waits for the guest to end, up to the harness timeout (then stops it and fails).
    pub fn wait(&mut self) -> Result<ExitReason> {
        match self.vm.wait_timeout(self.timeout) {
            Some(reason) => Ok(reason),
            None => {
                let state = self.state();
                self.vm.stop()?;
                let _ = self.vm.wait();
                Err(HarnessError::NoExit(self.timeout, self.tail(), state))
            }
        }
    }
}
