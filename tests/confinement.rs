//! fennec confines itself: every thread of a running fennec runs under its role's syscall
//! filter, and the filters really apply.

mod common;

use std::path::Path;

use common::procfs::{is_kernel_worker, status_field};
use common::running::Running;
use common::TIMEOUT;
use fennec::seccomp::Role;
use fennec::seccomp::{role_filters, SeccompLevel};

/// `ptrace` request that reads a task's seccomp filter (linux/ptrace.h).
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;

/// The role a thread of fennec has, from its name (`comm`, 15 bytes at most).
fn role_of(comm: &str) -> Role {
    match comm {
        "fennec" => Role::ApiService,
        "fennec-vmm" => Role::Vmm,
        "fennec-console" => Role::Console,
        "fennec-signals" => Role::Signals,
        "fennec-api" | "fennec-api-conn" => Role::Api,
        c if c.starts_with("fennec-vcpu") => Role::Vcpu,
        c if c.starts_with("fennec-api-") => Role::ApiService,
        c => panic!("a thread of fennec with no known role: {c:?}"),
    }
}

/// The `Seccomp:` mode of a thread of `pid`; `None` if it has ended.
fn seccomp_mode(pid: u32, tid: &str) -> Option<String> {
    status_field(Path::new(&format!("/proc/{pid}/task/{tid}")), "Seccomp")
}

/// The seccomp filters of thread `tid`, oldest first, as 8-byte BPF instructions: the thread
/// is stopped for a moment with ptrace (fennec's vCPUs take that as a kick). `None` if the
/// thread has ended.
fn filters_of(tid: i32) -> Option<Vec<Vec<u64>>> {
    let mut filters = Vec::new();
    // SAFETY: ptrace and waitpid on a thread of our own child, with valid (or null) pointers;
    // each buffer holds the instruction count the kernel reported first.
    unsafe {
        if libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) != 0 {
            let err = std::io::Error::last_os_error();
            assert_eq!(
                err.raw_os_error(),
                Some(libc::ESRCH),
                "PTRACE_SEIZE {tid}: {err}"
            );
            return None;
        }
        assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
        for index in 0usize.. {
            let count = libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                tid,
                index,
                std::ptr::null_mut::<u64>(),
            );
            if count <= 0 {
                break;
            }
            let mut program = vec![0u64; count as usize];
            let read = libc::ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index, program.as_mut_ptr());
            assert_eq!(read, count, "PTRACE_SECCOMP_GET_FILTER {tid} {index}");
            filters.push(program);
        }
        libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0);
    }
    Some(filters)
}

/// `role`'s filters at the default level, as the kernel returns them.
fn expected_filters(role: Role) -> Vec<Vec<u64>> {
    let instruction = |i: &seccompiler::sock_filter| {
        u64::from(i.code) | u64::from(i.jt) << 16 | u64::from(i.jf) << 24 | u64::from(i.k) << 32
    };
    role_filters(role, SeccompLevel::Kill)
        .unwrap()
        .iter()
        .map(|f| f.iter().map(instruction).collect())
        .collect()
}

/// Checks every thread of `pid`: seccomp mode 2 and its role's filter. Returns the roles seen.
fn assert_every_thread_filtered(vm: &Running) -> Vec<Role> {
    let pid = vm.child.id();
    let mut roles = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid = task.unwrap().file_name().to_string_lossy().into_owned();
        // A connection's thread may end meanwhile: only threads still there are checked.
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")) else {
            continue;
        };
        let comm = comm.trim();
        if is_kernel_worker(Path::new(&format!("/proc/{pid}/task/{tid}"))) == Some(true) {
            continue;
        }
        let role = role_of(comm);
        let Some(mode) = seccomp_mode(pid, &tid) else {
            continue;
        };
        assert_eq!(
            mode,
            "2",
            "thread {comm} ({tid}) runs without a syscall filter\n{}",
            vm.context()
        );
        let Some(installed) = filters_of(tid.parse().unwrap()) else {
            continue;
        };
        let expected = expected_filters(role);
        let sizes = |f: &[Vec<u64>]| f.iter().map(Vec::len).collect::<Vec<_>>();
        assert!(
            installed == expected,
            "thread {comm} ({tid}) does not run under the {} filters: it has filters of {:?} \
             instructions, the role's are {:?}",
            role.name(),
            sizes(&installed),
            sizes(&expected)
        );
        roles.push(role);
    }
    roles.sort_by_key(|r| *r as usize);
    roles.dedup();
    roles
}

#[test]
fn every_thread_of_a_running_fennec_runs_under_its_roles_filter() {
    let mut vm = Running::start(&[], &[]);
    vm.wait_for_console("TINY ready");
    let roles = assert_every_thread_filtered(&vm);
    assert_eq!(
        roles,
        [
            Role::Vcpu,
            Role::Vmm,
            Role::Console,
            Role::ApiService,
            Role::Signals
        ],
        "{}",
        vm.context()
    );
}

#[test]
fn every_thread_of_a_fennec_serving_its_control_socket_runs_under_its_roles_filter() {
    let mut vm = Running::start(&["--api-socket", "api.sock"], &[]);
    vm.wait_for_console("TINY ready");
    // A pause and a resume start the action thread.
    for state in ["Paused", "Resumed"] {
        let (status, body) = common::api_call(
            &vm.socket(),
            "PATCH",
            "/vm",
            &format!(r#"{{"state": "{state}"}}"#),
        );
        assert_eq!(status, 204, "{body}");
    }
    let roles = assert_every_thread_filtered(&vm);
    assert_eq!(
        roles,
        [
            Role::Vcpu,
            Role::Vmm,
            Role::Console,
            Role::Api,
            Role::ApiService,
            Role::Signals
        ],
        "{}",
        vm.context()
    );
}

#[test]
fn seccomp_filter_off_installs_no_filters() {
    let mut vm = Running::start(&["--seccomp-filter", "off"], &[]);
    vm.wait_for_console("TINY ready");
    let pid = vm.child.id();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid = task.unwrap().file_name().to_string_lossy().into_owned();
        assert_eq!(
            seccomp_mode(pid, &tid).as_deref(),
            Some("0"),
            "{}",
            vm.context()
        );
    }
    assert!(
        vm.stderr.lock().unwrap().contains("Syscall filters: off"),
        "{}",
        vm.context()
    );
}

/// Runs fennec with the self-test hook making a `role` thread call uname(2), which its filter
/// forbids, and returns how it ended.
fn selftest(role: &str, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let mut vm = Running::start(extra, &[("FENNEC_SECCOMP_SELFTEST", role)]);
    let status = vm
        .wait(TIMEOUT)
        .unwrap_or_else(|| panic!("fennec did not end\n{}", vm.context()));
    (status, vm.context())
}

#[test]
fn a_forbidden_syscall_kills_fennec_with_sigsys_in_every_role() {
    use std::os::unix::process::ExitStatusExt;
    for (role, extra) in [
        ("vcpu", &[][..]),
        ("vmm", &[][..]),
        ("console", &[][..]),
        ("signals", &[][..]),
        ("api", &["--api-socket", "api.sock"][..]),
    ] {
        let (status, context) = selftest(role, extra);
        assert_eq!(
            status.signal(),
            Some(libc::SIGSYS),
            "the {role} thread's forbidden syscall did not kill fennec ({status})\n{context}"
        );
        assert!(context.contains("Seccomp self-test"), "{context}");
    }
}

#[test]
fn with_seccomp_filter_log_a_forbidden_syscall_goes_through() {
    let mut vm = Running::start(
        &["--seccomp-filter", "log"],
        &[("FENNEC_SECCOMP_SELFTEST", "vcpu")],
    );
    vm.wait_for_console("TINY ready");
    assert!(
        vm.stderr
            .lock()
            .unwrap()
            .contains("Seccomp self-test: the vcpu thread calls uname(2)"),
        "{}",
        vm.context()
    );
    assert_eq!(vm.child.try_wait().unwrap(), None, "{}", vm.context());
}

/// A raw image of `sectors` 512-byte sectors at `path`.
fn image(path: &std::path::Path, sectors: usize) {
    std::fs::write(path, vec![0u8; sectors * 512]).unwrap();
}

#[test]
fn the_operators_paths_open_anywhere_and_the_guest_facing_threads_open_nothing() {
    let files = tempfile::tempdir().unwrap();
    let (given, outside) = (
        files.path().join("given.img"),
        files.path().join("outside.img"),
    );
    image(&given, 8);
    image(&outside, 16);
    let disk = format!("path={}", given.display());
    let mut vm = Running::start(
        &["--api-socket", "api.sock", "--disk", &disk],
        &[("FENNEC_LANDLOCK_SELFTEST", outside.to_str().unwrap())],
    );
    vm.wait_for_console("TINY ready");
    let stderr = || vm.stderr.lock().unwrap().clone();
    assert!(
        stderr().contains("Landlock: the vCPU and VMM threads may open only the 0 files"),
        "this test needs a kernel with Landlock (5.13 or later, `landlock` in the lsm= boot \
         parameter or CONFIG_LSM)\n{}",
        vm.context()
    );
    // The domain the vCPU and VMM threads inherit (from the thread that starts them) is
    // refused by the kernel; the thread that serves the operator is not in it.
    let refused = format!(
        "Landlock self-test: the launcher thread cannot open {}: Permission denied",
        outside.display()
    );
    assert!(stderr().contains(&refused), "{}", vm.context());
    let opened = format!(
        "Landlock self-test: the api-service thread opened {}",
        outside.display()
    );
    assert!(stderr().contains(&opened), "{}", vm.context());
    let call = |method: &str, path: &str, body: serde_json::Value| {
        common::api_call(&vm.socket(), method, path, &body.to_string())
    };
    // What the operator names opens where it is: a drive's new image beside nothing of the
    // VM's, a snapshot into a directory that holds no drive. (A metrics file is named before
    // the VM starts, as in Firecracker.)
    let (status, body) = call(
        "PATCH",
        "/drives/disk0",
        serde_json::json!({"drive_id": "disk0", "path_on_host": outside}),
    );
    assert_eq!(status, 204, "{body}");
    let elsewhere = tempfile::tempdir().unwrap();
    let metrics = elsewhere.path().join("metrics.json");
    let (status, body) = call(
        "PUT",
        "/metrics",
        serde_json::json!({ "metrics_path": metrics }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("after starting"), "{body}");
    assert!(!metrics.exists());
    let (status, body) = call("PATCH", "/vm", serde_json::json!({"state": "Paused"}));
    assert_eq!(status, 204, "{body}");
    let snapshot = elsewhere.path().join("snap");
    std::fs::create_dir(&snapshot).unwrap();
    let (status, body) = call(
        "PUT",
        "/snapshot/create",
        serde_json::json!({
            "snapshot_path": snapshot.join("state"),
            "mem_file_path": snapshot.join("memory"),
        }),
    );
    assert_eq!(status, 204, "{body}");
    assert!(snapshot.join("state").exists() && snapshot.join("memory").exists());
    let (status, body) = call("PATCH", "/vm", serde_json::json!({"state": "Resumed"}));
    assert_eq!(status, 204, "{body}");
    // New rate limits for the running drive, under the filters: taken and reported.
    let limits = serde_json::json!({"bandwidth": {"size": 1048576, "refill_time": 100}});
    let (status, body) = common::api_call(
        &vm.socket(),
        "PATCH",
        "/drives/disk0",
        &serde_json::json!({"drive_id": "disk0", "rate_limiter": limits}).to_string(),
    );
    assert_eq!(status, 204, "{body}");
    let (_, config) = common::api_call(&vm.socket(), "GET", "/vm/config", "");
    assert_eq!(config["drives"][0]["rate_limiter"], limits, "{config}");
    assert_eq!(vm.child.try_wait().unwrap(), None, "{}", vm.context());
}
