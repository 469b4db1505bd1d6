//! The test host: a QEMU TCG machine emulating AMD SVM, running Debian's cloud kernel with
//! kvm-amd, in which this same test binary runs the Linux tests on a KVM that executes guest
//! code the way hardware virtualization does (see `resources/test-host/init`).
//!
//! Its three serial ports each carry one thing: the console (test output as it runs), framed
//! results (`FENNEC-START`, `FENNEC-RESULT` ... `FENNEC-END`), and the test host's own kernel
//! log. Inside, each test runs under a time limit and is killed, with evidence, when it
//! overstays. Outside, a test host that stops reporting for longer than that (its kernel hung,
//! say) is killed, its kernel log and console are kept, and a fresh test host runs the tests
//! that had not started, and once more the test the dead host was running: it says so with
//! `FENNEC-RETRY` and the dead host's kernel log. That is the one retry, for the one failure
//! that is not a test's: a test that fails inside a test host that is alive is never rerun,
//! and a test whose host dies twice fails.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::linux::{fennec_bin, guest, host_tool};

/// How long one test may run inside the test host before it is killed and reported: the
/// microVM tests take under 30 s there (a guest that stalls fails its own 60 s wait first).
const TEST_LIMIT: Duration = Duration::from_secs(180);
/// The same for the stock Debian tests: a whole distribution boots and shuts down, up to
/// 400 s beside a parallel compile (with both of its vCPUs on the test host's CPU 0).
const DEBIAN_TEST_LIMIT: Duration = Duration::from_secs(900);

/// The same for the network test: 16 MiB each way, which took more than a minute one way in
/// soak runs (its guest waits only on a transfer that stops).
const NETWORK_TEST_LIMIT: Duration = Duration::from_secs(360);

/// The same for the vsock streams test: 16 MiB each way and 4 MiB to a reader that stalls.
const VSOCK_TEST_LIMIT: Duration = Duration::from_secs(600);

/// The time limit of test `name` (with its module path) inside the test host.
fn test_limit(name: &str) -> Duration {
    let name = name.rsplit("::").next().unwrap_or(name);
    if name.starts_with("linux_debian_") {
        DEBIAN_TEST_LIMIT
    } else if name.starts_with("linux_network_") {
        NETWORK_TEST_LIMIT
    } else if name.starts_with("linux_vsock_streams_") {
        VSOCK_TEST_LIMIT
    } else {
        TEST_LIMIT
    }
}
/// How long the test host may take to boot and start its first test.
const BOOT_LIMIT: Duration = Duration::from_secs(300);
/// How many test hosts one run may boot: one, and one more for each that died mid-run.
const MAX_BOOTS: usize = 3;
/// The test host's kernel command line: its kernel console on the third serial port, at full
/// verbosity (see `resources/test-host/init`), kvm-amd with nested paging, every test and its
/// VMs on the test host's CPU 0 (`fennec.pin=1`), and the init's other workarounds for QEMU
/// 7.2 off.
///
/// The test host runs on QEMU 10 (Debian's bookworm-backports; [`MIN_QEMU`]). Measured with
/// `resources/soak.sh` beside a parallel kernel compile (README, Known problems): QEMU 7.2,
/// even with every workaround, lost test hosts to kernel panics and freezes; QEMU 10 lost none.
/// On QEMU 10, shadow paging (`kvm_amd.npt=0`, 7.2's workaround for stalls under nested
/// paging) is what breaks: no guest boots. With the 2-vCPU Debian guest's vCPUs free to run
/// on both of the test host's CPUs, the guest wedged in two runs of three, both vCPUs'
/// interrupts off for good, as it did on 7.2, where pinning them to one CPU held (the guest
/// live-patches its code and multi-threaded TCG does not show one emulated CPU the code
/// another rewrote); pinned, only slowness failed, which the tests now tell from a stall. `nokaslr`: the addresses QEMU's monitor gives for a frozen host's CPUs
/// stay those of the kernel's symbol tables (Debian's `System.map` is a stub; its `-dbg`
/// package's vmlinux names them).
pub const HOST_CMDLINE: &str = "console=ttyS2 loglevel=7 panic=-1 rdinit=/init kvm_amd.npt=1 \
     fennec.pin=1 fennec.anchor=0 fennec.offline=0 \
     softlockup_all_cpu_backtrace=1 hung_task_all_cpu_backtrace=1 nokaslr";

/// The oldest QEMU the test host runs on by default (what `resources/prereqs.sh` installs).
/// `FENNEC_TEST_HOST_QEMU` names any other, for comparisons.
const MIN_QEMU: u32 = 10;

/// Extra test host command line from `FENNEC_TEST_HOST_CMDLINE` (to try module parameters such
/// as `kvm_amd.npt=0`, say, or the workarounds: `fennec.pin=1`); a later word wins.
fn host_cmdline() -> String {
    match std::env::var("FENNEC_TEST_HOST_CMDLINE") {
        Ok(extra) if !extra.trim().is_empty() => format!("{HOST_CMDLINE} {}", extra.trim()),
        _ => HOST_CMDLINE.to_string(),
    }
}
/// How much of the console and the kernel log a failure shows.
const TAIL_LINES: usize = 150;

/// One test's outcome: passed, and its output.
pub type TestResult = (bool, String);

/// The result of Linux test `name`, run in the test host (booted once per process, for every
/// Linux test of this binary).
pub fn result(name: &str) -> TestResult {
    static RESULTS: OnceLock<HashMap<String, TestResult>> = OnceLock::new();
    let results = RESULTS.get_or_init(run_all);
    results.get(name).cloned().unwrap_or_else(|| {
        (
            false,
            format!("the test host never ran {name}: it failed {MAX_BOOTS} times (see the other Linux tests' failures)"),
        )
    })
}

/// Names of this binary's Linux tests (named `linux_*`, in any module), with their module
/// path, as the test harness takes them (`--exact snapshot::linux_...`) and as `linux_test!`
/// reports their results. `FENNEC_TEST_HOST_ONLY=TEXT` keeps those whose name holds TEXT.
fn list_tests(exe: &Path) -> Vec<String> {
    let out = Command::new(exe)
        .args(["--list", "--format", "terse"])
        .output()
        .expect("list this binary's tests");
    let only = std::env::var("FENNEC_TEST_HOST_ONLY").unwrap_or_default();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .filter(|path| {
            path.rsplit("::")
                .next()
                .is_some_and(|n| n.starts_with("linux_"))
        })
        .filter(|path| path.contains(only.as_str()))
        .map(str::to_string)
        .collect()
}

/// Runs every Linux test in test hosts: one, and a fresh one for the tests a dead one left.
fn run_all() -> HashMap<String, TestResult> {
    let exe = std::env::current_exe().unwrap();
    let mut remaining = list_tests(&exe);
    let mut results = HashMap::new();
    let mut retried = std::collections::HashSet::new();
    for boot in 1..=MAX_BOOTS {
        if remaining.is_empty() {
            break;
        }
        let run = boot_and_run(&exe, &remaining, boot);
        let mut rerun = None;
        if let Some(name) = &run.died_in {
            if retried.insert(name.clone()) {
                // The test host's own kernel stopped, not the test: once, it runs again.
                eprintln!(
                    "FENNEC-RETRY {name}: the test host died while it ran ({}); running it once \
                     more in a fresh test host. The dead host's report:\n{}",
                    run.failure.as_deref().unwrap_or("it stopped"),
                    run.death_report()
                );
                rerun = Some(name.clone());
            } else {
                results.insert(name.clone(), (false, run.death_report()));
            }
        }
        results.extend(run.results);
        remaining.retain(|t| {
            !results.contains_key(t) && (!run.started.contains(t) || rerun.as_ref() == Some(t))
        });
        if run.died_in.is_none() && remaining.is_empty() {
            break;
        }
        if !remaining.is_empty() {
            eprintln!(
                "linux tests: test host {boot} ended with {} tests not run; booting another",
                remaining.len()
            );
        }
    }
    results
}

/// What one test host did.
struct HostRun {
    results: HashMap<String, TestResult>,
    /// Tests that started, reported or not.
    started: Vec<String>,
    /// The test that was running when the host died or stopped reporting.
    died_in: Option<String>,
    /// Why the host ended early, if it did.
    failure: Option<String>,
    console_tail: String,
    kernel_log_tail: String,
    /// Where a dead host's whole kernel log and console are kept.
    kept: PathBuf,
}

impl HostRun {
    fn death_report(&self) -> String {
        format!(
            "the test host ended while this test ran: {} (its whole kernel log and console: {})\n--- test host kernel log (tail) ---\n{}\n--- test host console (tail) ---\n{}",
            self.failure.as_deref().unwrap_or("it stopped"),
            self.kept.display(),
            self.kernel_log_tail,
            self.console_tail
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Builds the test host's initramfs for `tests` and runs it until it powers off, dies, or stops
/// reporting.
fn boot_and_run(exe: &Path, tests: &[String], boot: usize) -> HostRun {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "test-host-{}-{boot}",
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
    // The tiny kernels, for tests that need a guest but not Linux (the jail's limits).
    let tiny = super::tiny("pvh.elf");
    std::os::unix::fs::symlink(tiny, guest_dir.join("tiny-pvh.elf")).unwrap();
    let d = super::linux::debian();
    for (src, name) in [
        (&d.kernel, "debian-vmlinuz"),
        (&d.initrd, "debian-initrd.img"),
        (&d.rootfs, "debian-rootfs.ext4"),
    ] {
        std::os::unix::fs::symlink(src, guest_dir.join(name)).unwrap();
    }
    let list = work.join("tests.list");
    // Each line: a test and its time limit in seconds.
    let lines: Vec<String> = tests
        .iter()
        .map(|t| format!("{t} {}", test_limit(t).as_secs()))
        .collect();
    std::fs::write(&list, lines.join("\n") + "\n").unwrap();

    let resources = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources");
    let entry = |name: &str, path: &Path| format!("{name}={}", path.display());
    let status = Command::new(resources.join("build-test-host.sh"))
        .arg(&work)
        .arg(resources.join("test-host/init"))
        .arg(&guest_dir)
        .arg(entry("fennec", &fennec_bin()))
        .arg(entry("linux-tests", exe))
        .arg(entry("tests.list", &list))
        .arg(entry("debugfs", &host_tool("debugfs")))
        .arg(entry("e2fsck", &host_tool("e2fsck")))
        .arg(entry("ip", &super::netns::ip_tool()))
        // User-mode networking's process.
        .arg(entry("passt", &host_tool("passt")))
        // ZFS (zfs-fuse) for the checkpoint test's store.
        .arg(entry("zfs-fuse", &host_tool("zfs-fuse")))
        .arg(entry("zfs", &host_tool("zfs")))
        .arg(entry("zpool", &host_tool("zpool")))
        .stdout(Stdio::null())
        .status()
        .expect("run resources/build-test-host.sh");
    assert!(status.success(), "building the test host failed");
    run_qemu(&work, boot)
}

/// Where a running test host stands, from its results channel.
#[derive(Debug, Default, PartialEq)]
struct Progress {
    started: Vec<String>,
    results: HashMap<String, TestResult>,
    done: bool,
}

impl Progress {
    /// The test that started and has not reported.
    fn running(&self) -> Option<&String> {
        self.started
            .last()
            .filter(|name| !self.results.contains_key(*name))
    }
}

/// The QEMU that runs the test host: `FENNEC_TEST_HOST_QEMU` (a `qemu-system-x86_64`, such
/// as one unpacked from another Debian suite's package by `resources/soak.sh`), or the one on
/// PATH. An unpacked package's own firmware directory (`../share/qemu` beside its binary)
/// comes first, then SeaBIOS's, then the system's.
fn qemu() -> (PathBuf, Vec<PathBuf>) {
    let Some(binary) = std::env::var_os("FENNEC_TEST_HOST_QEMU")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
    else {
        let binary = PathBuf::from("qemu-system-x86_64");
        let version = qemu_version(&binary);
        match qemu_major(&version) {
            Some(major) if major >= MIN_QEMU => {}
            _ => panic!(
                "the test host needs QEMU {MIN_QEMU} or later; the system's says {version:?}: \
                 run resources/prereqs.sh as root (it installs qemu-system-x86 from Debian's \
                 bookworm-backports), or name one in FENNEC_TEST_HOST_QEMU"
            ),
        }
        return (binary, Vec::new());
    };
    assert!(
        binary.is_file(),
        "FENNEC_TEST_HOST_QEMU={}: no such file",
        binary.display()
    );
    let data = binary
        .parent()
        .and_then(Path::parent)
        .map(|usr| usr.join("share/qemu"))
        .filter(|d| d.is_dir());
    // Its BIOS is SeaBIOS's, which the system's QEMU may link in from elsewhere.
    let seabios = Some(PathBuf::from("/usr/share/seabios")).filter(|d| d.is_dir());
    (binary, data.into_iter().chain(seabios).collect())
}

/// What `qemu --version` says of itself, first line.
fn qemu_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines().next().unwrap_or_default().to_string()
        })
        .unwrap_or_else(|e| format!("{} does not run: {e}", binary.display()))
}

/// The major version in `qemu --version`'s first line ("QEMU emulator version 10.0.2 ...").
fn qemu_major(version: &str) -> Option<u32> {
    let number = version.split("version ").nth(1)?;
    number.split('.').next()?.trim().parse().ok()
}

fn run_qemu(work: &Path, boot: usize) -> HostRun {
    let results_path = work.join("results.txt");
    let kernel_log_path = work.join("kernel.log");
    let serial_file = |p: &PathBuf| format!("file:{}", p.display());
    let (binary, data_dirs) = qemu();
    eprintln!(
        "linux tests: booting test host {boot} (TCG with emulated AMD SVM; {}; command line {:?})",
        qemu_version(&binary),
        host_cmdline()
    );
    let mut child = Command::new(&binary);
    for dir in &data_dirs {
        child.arg("-L").arg(dir);
    }
    let mut child = child
        .arg("-accel")
        .arg(format!(
            "tcg,thread={}",
            std::env::var("FENNEC_TEST_HOST_TCG").unwrap_or_else(|_| "multi".into())
        ))
        .args(["-smp", "2", "-m", "4096"])
        .args(["-M", "q35", "-cpu", "EPYC,+svm", "-nodefaults"])
        .args(["-no-user-config", "-nographic", "-monitor"])
        .arg(format!(
            "unix:{},server=on,wait=off",
            work.join("monitor.sock").display()
        ))
        .args(["-serial", "stdio", "-serial"])
        .arg(serial_file(&results_path))
        .arg("-serial")
        .arg(serial_file(&kernel_log_path))
        .arg("-kernel")
        .arg(work.join("vmlinuz"))
        .arg("-initrd")
        .arg(work.join("initramfs.cpio"))
        .arg("-append")
        .arg(host_cmdline())
        .arg("-no-reboot")
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

    // Watch the results channel: each start or result is progress.
    let mut failure = None;
    let mut last_len = 0;
    let mut deadline = Instant::now() + BOOT_LIMIT;
    let progress = loop {
        let text = std::fs::read_to_string(&results_path).unwrap_or_default();
        let progress = parse_results(&text);
        if child.try_wait().unwrap().is_some() {
            if !progress.done {
                failure = Some("the test host powered off or crashed".to_string());
            }
            break progress;
        }
        if text.len() != last_len {
            last_len = text.len();
            let limit = progress.running().map_or(TEST_LIMIT, |t| test_limit(t));
            deadline = Instant::now() + limit + Duration::from_secs(60);
        }
        if Instant::now() > deadline {
            // Whether QEMU spins or waits, thread by thread, before it goes.
            let threads = [qemu_threads(child.id()), {
                std::thread::sleep(Duration::from_secs(1));
                qemu_threads(child.id())
            }]
            .join("\n--- a second later ---\n");
            let _ = std::fs::write(work.join("qemu-threads.txt"), &threads);
            let cpus = frozen_cpus(work);
            let _ = std::fs::write(work.join("qemu-cpus.txt"), &cpus);
            failure = Some(format!(
                "the test host reported nothing past its time limit and was killed; where its CPUs were:\n{cpus}\nQEMU's threads then:\n{threads}"
            ));
            let _ = child.kill();
            let _ = child.wait();
            break progress;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for s in streams {
        let _ = s.join();
    }
    let console = console.lock().unwrap().clone();
    let console_tail = tail(&console, TAIL_LINES);
    let kernel_log = std::fs::read(&kernel_log_path).unwrap_or_default();
    let kernel_log_tail = tail(&String::from_utf8_lossy(&kernel_log), TAIL_LINES);
    // A dead host's logs outlive the next run's work directory.
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("test-host-failures")
        .join(format!(
            "{}-host{boot}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        ));
    if let Some(why) = &failure {
        eprintln!(
            "linux tests: test host {boot}: {why}; logs kept in {}",
            kept.display()
        );
        let _ = std::fs::create_dir_all(&kept);
        let _ = std::fs::write(kept.join("kernel.log"), &kernel_log);
        let _ = std::fs::write(kept.join("console.log"), &console);
        let _ = std::fs::copy(&results_path, kept.join("results.txt"));
    }
    HostRun {
        died_in: failure
            .is_some()
            .then(|| progress.running().cloned())
            .flatten(),
        started: progress.started,
        results: progress.results,
        failure,
        console_tail,
        kernel_log_tail,
        kept,
    }
}

/// Every thread of process `pid` (QEMU's vCPU threads among them): its name, state, CPU time
/// in clock ticks, where it waits in the kernel, and its kernel stack.
fn qemu_threads(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("process {pid} is gone");
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let dir = task.path();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let stat = read("stat");
        // After the name in parentheses: state, then (fields 14 and 15) user and system time.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n).copied().unwrap_or("?");
        out.push(format!(
            "thread {} {} state {} utime {} stime {} wchan {}\n{}",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            field(0),
            field(11),
            field(12),
            read("wchan"),
            read("stack")
        ));
    }
    out.join("\n")
}

/// Where each CPU of a frozen test host is, three times half a second apart: QEMU's monitor's
/// `info registers -a`, each RIP named from the kernel's System.map where it has symbols
/// (Debian's has none: the RIPs stand alone).
fn frozen_cpus(work: &Path) -> String {
    use std::os::unix::net::UnixStream;
    let symbols = symbols(&work.join("System.map"));
    let mut out = String::new();
    for _ in 0..3 {
        let registers = UnixStream::connect(work.join("monitor.sock")).and_then(|mut monitor| {
            monitor.set_read_timeout(Some(Duration::from_millis(500)))?;
            monitor.write_all(b"info registers -a\n")?;
            let mut text = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = monitor.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.extend_from_slice(&buf[..n]);
            }
            Ok(String::from_utf8_lossy(&text).into_owned())
        });
        match registers {
            Ok(text) => {
                for rip in text.split("RIP=").skip(1).filter_map(|r| r.get(..16)) {
                    let name = u64::from_str_radix(rip, 16)
                        .ok()
                        .and_then(|a| symbolize(&symbols, a))
                        .unwrap_or_default();
                    out += &format!("CPU RIP {rip} {name}\n");
                }
            }
            Err(e) => out += &format!("QEMU's monitor did not answer: {e}\n"),
        }
        out += "--\n";
    }
    out
}

/// The text symbols of a System.map, by address.
fn symbols(map: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(map).unwrap_or_default();
    let mut symbols: Vec<(u64, String)> = text
        .lines()
        .filter_map(|line| {
            let mut w = line.split_whitespace();
            let address = u64::from_str_radix(w.next()?, 16).ok()?;
            let kind = w.next()?;
            let name = w.next()?;
            matches!(kind, "t" | "T").then(|| (address, name.to_string()))
        })
        .collect();
    symbols.sort();
    symbols
}

/// `name+0xoffset` for `address`.
fn symbolize(symbols: &[(u64, String)], address: u64) -> Option<String> {
    let i = symbols
        .partition_point(|(a, _)| *a <= address)
        .checked_sub(1)?;
    let (start, name) = &symbols[i];
    Some(format!("{name}+{:#x}", address - start))
}

/// Parses the results channel: `FENNEC-START name`; `FENNEC-RESULT name ok|failed`, base64
/// output, `FENNEC-END name`; `FENNEC-HOST-DONE` at the end.
fn parse_results(text: &str) -> Progress {
    let mut progress = Progress::default();
    let mut current: Option<(String, bool, String)> = None;
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(name) = line.strip_prefix("FENNEC-START ") {
            progress.started.push(name.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("FENNEC-RESULT ") {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or_default().to_string();
            current = Some((name, words.next() == Some("ok"), String::new()));
        } else if line.starts_with("FENNEC-END ") {
            if let Some((name, ok, b64)) = current.take() {
                let output = String::from_utf8_lossy(&base64_decode(&b64)).into_owned();
                progress.results.insert(name, (ok, output));
            }
        } else if line == "FENNEC-HOST-DONE" {
            progress.done = true;
        } else if let Some((_, _, b64)) = current.as_mut() {
            b64.push_str(line.trim());
        }
    }
    progress
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_qemu_major_reads_the_version_line() {
        let line = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)";
        assert_eq!(qemu_major(line), Some(10));
        assert_eq!(
            qemu_major("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7)"),
            Some(7)
        );
        assert_eq!(
            qemu_major("qemu-system-x86_64 does not run: not found"),
            None
        );
    }

    #[test]
    fn test_base64_decode_round_trip() {
        assert_eq!(base64_decode("aGVsbG8gd29ybGQK"), b"hello world\n");
        assert_eq!(base64_decode("YQ=="), b"a");
    }

    #[test]
    fn test_symbolize_names_the_function_an_address_is_in() {
        let symbols = vec![(0x1000, "a".to_string()), (0x1040, "b".to_string())];
        assert_eq!(symbolize(&symbols, 0x1044).as_deref(), Some("b+0x4"));
        assert_eq!(symbolize(&symbols, 0x1000).as_deref(), Some("a+0x0"));
        assert_eq!(symbolize(&symbols, 0xfff), None);
    }

    #[test]
    fn test_parse_results_tracks_the_running_test() {
        let text = "FENNEC-HOST-READY\r\nFENNEC-START a\nFENNEC-RESULT a ok\naGk=\nFENNEC-END a\nFENNEC-START b\n";
        let p = parse_results(text);
        assert_eq!(p.results.get("a"), Some(&(true, "hi".to_string())));
        assert_eq!(p.running(), Some(&"b".to_string()));
        assert!(!p.done);
        let finished = parse_results(&format!(
            "{text}FENNEC-RESULT b failed\nFENNEC-END b\nFENNEC-HOST-DONE\n"
        ));
        assert_eq!(finished.running(), None);
        assert!(finished.done);
        assert_eq!(finished.results.get("b"), Some(&(false, String::new())));
    }
}
