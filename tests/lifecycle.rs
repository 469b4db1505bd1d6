//! The VM's threads and lifecycle on `/dev/kvm` with the tiny kernels: an idle guest is left
//! alone, a stalled console never stalls the VMM, signals end fennec cleanly.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fennec::harness::{tiny_kernel, TestVm};
use fennec::VmBuilder;

/// The kernel thread ID of this process's thread named `name`.
fn thread_named(name: &str) -> Option<String> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|t| {
        let t = t.ok()?;
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        (comm.trim() == name).then(|| t.file_name().to_string_lossy().into_owned())
    })
}

/// A thread's voluntary context switches: how often it went to sleep and was woken.
fn voluntary_switches(tid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches in /proc/self/task/TID/status")
}

#[test]
fn test_idle_guest_vcpu_is_not_woken_periodically() {
    require_kvm();
    let kernel = tiny_kernel("pvh.elf").unwrap();
    let builder = VmBuilder::new(kernel).cmdline("tiny.mode=idle");
    let mut vm = TestVm::boot(builder, TIMEOUT).unwrap();
    vm.expect("TINY ready").unwrap();
    let tid = thread_named("fennec-vcpu0").expect("a thread named fennec-vcpu0");
    // Let the VMM notice the guest is idle and probe it (it may, a few times, early on).
    std::thread::sleep(Duration::from_secs(4));
    let before = voluntary_switches(&tid);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let woken = voluntary_switches(&tid) - before;
    // A 250 ms poll would wake it 8 times here; the VMM's backed-off probes at most once.
    assert!(
        woken <= 2,
        "the idle vCPU thread was woken {woken} times in {:?}",
        started.elapsed()
    );
    assert_eq!(vm.vm().state(), fennec::VmState::Running);
}

/// A fennec process whose stdout is a pipe nobody reads.
struct Unread {
    child: std::process::Child,
    socket: Option<std::path::PathBuf>,
    _stdout: std::process::ChildStdout,
    _dir: tempfile::TempDir,
}

impl Unread {
    /// `fennec run` on the flooding tiny kernel: over a control socket when `api`, else direct.
    fn start(api: bool) -> Unread {
        require_kvm();
        let dir = tempfile::tempdir().unwrap();
        let kernel = tiny("pvh.elf");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fennec"));
        cmd.args(["run", "--kernel"])
            .arg(&kernel)
            .args(["--cmdline", "tiny.mode=flood"]);
        let socket = api.then(|| dir.path().join("api.sock"));
        if let Some(s) = &socket {
            cmd.arg("--api-socket").arg(s);
        }
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let deadline = Instant::now() + TIMEOUT;
        while socket.as_ref().is_some_and(|s| !s.exists()) {
            assert!(Instant::now() < deadline, "no control socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Unread {
            child,
            socket,
            _stdout: stdout,
            _dir: dir,
        }
    }

    fn socket(&self) -> &std::path::Path {
        self.socket.as_deref().unwrap()
    }

    /// Waits until the guest has printed more than the pipe and fennec's buffer hold, so its
    /// output is being dropped; returns the serial counters then.
    fn wait_for_dropped_output(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let serial = ctl(self.socket(), &["metrics"])["serial"].clone();
            if serial["bytes_lost"].as_u64().unwrap_or(0) > 0 {
                return serial;
            }
            assert!(Instant::now() < deadline, "no output dropped: {serial}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `limit` for fennec to exit; its exit code and how long it took.
    fn exit_within(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let status = wait_with_timeout(&mut self.child, limit);
        (status.and_then(|s| s.code()), started.elapsed())
    }

    fn signal(&self, signal: &str) {
        // kill(1) by PID: our own child.
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What waiting on a reader that never reads would cost: fennec's whole console drain (2 s),
/// or forever. Giving up on it takes a quarter of a second, with room here for a loaded
/// machine.
const STALLED: Duration = Duration::from_secs(2);

/// Runs `what` and asserts nothing stalled it.
fn unstalled<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    assert!(took < STALLED, "{what} took {took:?}");
    out
}

#[test]
fn test_console_reader_that_never_reads_stalls_nothing_pause_resume_stop() {
    let mut vm = Unread::start(true);
    let serial = vm.wait_for_dropped_output();
    assert!(serial["bytes_out"].as_u64().unwrap() > 64 << 10, "{serial}");
    let (code, _) = unstalled("pause", || {
        api_call(vm.socket(), "PATCH", "/vm", r#"{"state": "Paused"}"#)
    });
    assert_eq!(code, 204);
    assert_eq!(ctl(vm.socket(), &["status"])["state"], "Paused");
    let (code, _) = unstalled("resume", || {
        api_call(vm.socket(), "PATCH", "/vm", r#"{"state": "Resumed"}"#)
    });
    assert_eq!(code, 204);
    let before = ctl(vm.socket(), &["metrics"])["serial"]["bytes_lost"]
        .as_u64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lost = ctl(vm.socket(), &["metrics"])["serial"]["bytes_lost"]
            .as_u64()
            .unwrap();
        if lost > before {
            break;
        }
        assert!(Instant::now() < deadline, "the guest stopped printing");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = r#"{"action_type": "Stop"}"#;
    let (code, _) = unstalled("stop", || api_call(vm.socket(), "PUT", "/actions", stop));
    assert_eq!(code, 200);
    let (code, took) = vm.exit_within(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(took < STALLED, "exit took {took:?} after stop");
    assert!(!vm.socket().exists(), "the control socket was left behind");
}

#[test]
fn test_console_reader_that_never_reads_stalls_nothing_shutdown() {
    let mut vm = Unread::start(true);
    vm.wait_for_dropped_output();
    // The flooding guest ignores Ctrl-Alt-Del: the shutdown stops it after its timeout.
    let body = r#"{"action_type": "Shutdown", "timeout_ms": 200}"#;
    let (code, answer) = unstalled("a shutdown with a 200 ms timeout", || {
        api_call(vm.socket(), "PUT", "/actions", body)
    });
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["forced"], true, "{answer}");
    let (code, took) = vm.exit_within(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(took < STALLED, "exit took {took:?} after the shutdown");
}

#[test]
fn test_console_reader_that_never_reads_stalls_nothing_sigterm_api() {
    let mut vm = Unread::start(true);
    vm.wait_for_dropped_output();
    vm.signal("-TERM");
    let (code, took) = vm.exit_within(Duration::from_secs(5));
    assert_eq!(code, Some(0), "after {took:?}");
    assert!(took < STALLED, "SIGTERM took {took:?}");
    assert!(!vm.socket().exists(), "the control socket was left behind");
}

#[test]
fn test_console_reader_that_never_reads_stalls_nothing_sigterm_direct() {
    let mut vm = Unread::start(false);
    // 64 KiB of pipe and 64 KiB of buffer fill within seconds; then fennec drops output.
    std::thread::sleep(Duration::from_secs(3));
    vm.signal("-TERM");
    let (code, took) = vm.exit_within(Duration::from_secs(5));
    assert_eq!(code, Some(0), "after {took:?}");
    assert!(took < STALLED, "SIGTERM took {took:?}");
}

#[test]
fn test_sigterm_in_api_mode_before_a_start_removes_the_socket_and_exits_zero() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let mut child = spawn_api(&[], &socket);
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_with_timeout(&mut child, Duration::from_secs(5));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stderr}");
    assert!(!socket.exists(), "the control socket was left behind");
}

#[test]
fn test_a_long_shutdown_blocks_no_other_request() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let kernel = tiny("pvh.elf");
    // The echo guest ignores Ctrl-Alt-Del: a Shutdown waits out its whole timeout.
    let kernel = kernel.to_str().unwrap();
    let mut child = spawn_api(
        &["--cmdline", "tiny.mode=echo", "--kernel", kernel],
        &socket,
    );
    let shutdown_socket = socket.clone();
    let shutdown = std::thread::spawn(move || {
        let body = r#"{"action_type": "Shutdown", "timeout_ms": 60000}"#;
        ctl(&shutdown_socket, &["request", "PUT", "/actions", body])
    });
    std::thread::sleep(Duration::from_millis(300));
    let (_, status) = unstalled("a status during the shutdown", || {
        api_call(&socket, "GET", "/status", "")
    });
    assert_eq!(status["state"], "Running", "{status}");
    let stop = r#"{"action_type": "Stop"}"#;
    let (code, _) = unstalled("a stop during the shutdown", || {
        api_call(&socket, "PUT", "/actions", stop)
    });
    assert_eq!(code, 200);
    let answer = shutdown.join().unwrap();
    assert_eq!(answer["exit"]["kind"], "stopped", "{answer}");
    let code = wait_with_timeout(&mut child, Duration::from_secs(5)).and_then(|s| s.code());
    assert_eq!(code, Some(0));
}
