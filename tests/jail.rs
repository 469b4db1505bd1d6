//! `fennec jail`: a tiny guest boots in a jail, as an unprivileged uid with nothing else of
//! the host; bad requests fail before anything is made.

mod common;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::running::Running;
use common::TIMEOUT;

/// The uid and gid the jailed VMs run as (Debian's nobody and nogroup).
const NOBODY: &str = "65534";

/// The jailed fennec: the jail's only child.
fn jailed_pid(jail: &Running) -> u32 {
    let jail_pid = jail.child.id();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{jail_pid}/task/{jail_pid}/children"))
                .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no jailed process\n{}",
            jail.context()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn status_field(pid: u32, field: &str) -> String {
    common::procfs::status_field(Path::new(&format!("/proc/{pid}")), field)
        .unwrap_or_else(|| panic!("process {pid} has ended"))
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `fennec jail --uid nobody --gid nogroup --base BASE --id ID EXTRA... --kernel pvh.elf`
/// with an echoing guest.
fn jail(base: &Path, id: &str, extra: &[&str]) -> Running {
    let kernel = common::tiny("pvh.elf");
    let mut args = vec!["jail", "--uid", NOBODY, "--gid", NOBODY, "--id", id];
    args.extend(["--base", base.to_str().unwrap()]);
    args.extend(extra);
    args.extend(["--kernel", kernel.to_str().unwrap()]);
    args.extend(["--cmdline", "console=ttyS0 tiny.mode=echo"]);
    Running::spawn(&args, &[])
}

#[test]
fn a_tiny_guest_boots_in_a_jail_as_an_unprivileged_user_with_nothing_else() {
    let base = tempfile::tempdir().unwrap();
    let images = tempfile::tempdir().unwrap();
    let disk = images.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    // The image's owner, which the jail gives it back to when the VM ends.
    std::os::unix::fs::chown(&disk, Some(4321), Some(4322)).unwrap();
    // A descriptor this test leaves open across exec: the jail must not pass it on.
    let secret = images.path().join("secret");
    std::fs::write(&secret, b"host only").unwrap();
    let leaked = std::fs::File::open(&secret).unwrap();
    // SAFETY: clears FD_CLOEXEC on a descriptor this test owns.
    unsafe { libc::fcntl(leaked.as_raw_fd(), libc::F_SETFD, 0) };

    let disk_arg = format!("path={}", disk.display());
    let mut vm = jail(
        base.path(),
        "jailed",
        &[
            "--api-socket",
            "api.sock",
            "--disk",
            &disk_arg,
            "--vsock",
            "cid=3,uds=/the/host/path/is/not/used.sock",
        ],
    );
    vm.wait_for_console("TINY ready");
    let pid = jailed_pid(&vm);

    assert_eq!(status_field(pid, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(pid, "Gid"), "65534\t65534\t65534\t65534");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    // PID 1 of a PID namespace of its own.
    assert_eq!(
        status_field(pid, "NSpid").split_whitespace().last(),
        Some("1")
    );

    let root = PathBuf::from(format!("/proc/{pid}/root"));
    assert_eq!(
        names_in(&root),
        [
            "api.sock",
            "dev",
            "drive-disk0",
            "kernel",
            "v.sock",
            "vm.json"
        ],
        "{}",
        vm.context()
    );
    assert_eq!(names_in(&root.join("dev")), ["kvm"]);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    for fd in fds {
        let target = std::fs::read_link(fd.unwrap().path()).unwrap_or_default();
        assert_ne!(
            target, secret,
            "the jailed fennec holds the test's descriptor"
        );
    }

    // The control socket is in the jail's root, and answers.
    let socket = base.path().join("jailed/root/api.sock");
    let (status, body) = common::api_call(&socket, "GET", "/", "");
    assert_eq!(
        (status, body["id"].as_str()),
        (200, Some("jailed")),
        "{body}"
    );

    // The vsock device listens in the jail's root, as the jailed uid: a host connection is
    // taken (and closed: the tiny guest has no vsock driver).
    let mut host = std::os::unix::net::UnixStream::connect(base.path().join("jailed/root/v.sock"))
        .expect("the jailed VM's vsock socket");
    std::io::Write::write_all(&mut host, b"CONNECT 52\n").unwrap();
    let mut end = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut host, &mut end).unwrap(), 0);

    // SIGTERM to the jail reaches the VM (PID 1 of its namespace), which stops cleanly; the
    // jail is removed.
    // SAFETY: kill on our own child's PID.
    unsafe { libc::kill(vm.child.id() as i32, libc::SIGTERM) };
    let status = vm.wait(TIMEOUT).expect("the jail ends");
    assert!(status.success(), "{status}\n{}", vm.context());
    assert!(
        !base.path().join("jailed").exists(),
        "the jail was left behind"
    );
    // The drive was bound, not copied: it is the same file, its owner's again.
    let meta = std::fs::metadata(&disk).unwrap();
    assert_eq!(meta.len(), 1 << 20);
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (4321, 4322), "the image's owner");
    drop(leaked);
}

#[test]
fn a_jail_refuses_root_template_drives_and_host_paths_with_one_line() {
    let base = tempfile::tempdir().unwrap();
    let kernel = common::tiny("pvh.elf");
    let (k, b) = (kernel.to_str().unwrap(), base.path().to_str().unwrap());
    let nobody = ["--uid", NOBODY, "--gid", NOBODY];
    for (ids, extra, expected) in [
        (
            ["--uid", "0", "--gid", "0"],
            &[][..],
            "may not run as uid or gid 0",
        ),
        (
            nobody,
            &["--disk", "template=debian"][..],
            "cloned from a template",
        ),
        (nobody, &["--allow-path", "/srv"][..], "host paths"),
        (
            nobody,
            &["--initrd", "/nonexistent/initrd"][..],
            "/nonexistent/initrd",
        ),
    ] {
        let mut args = vec!["jail", "--base", b, "--kernel", k];
        args.extend(ids);
        args.extend(extra);
        let run = common::fennec(&args);
        assert_ne!(run.code, Some(0), "{args:?}");
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            names_in(base.path()).is_empty(),
            "{args:?} left {:?}",
            names_in(base.path())
        );
    }
}

#[test]
fn jail_cgroup_limits_apply_on_cgroup_v2_and_are_a_clear_error_without_it() {
    let base = tempfile::tempdir().unwrap();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let mut vm = jail(
        base.path(),
        "limited",
        &["--pids-max", "64", "--cpus", "0.5"],
    );
    if v2 {
        vm.wait_for_console("TINY ready");
        let cgroup = Path::new("/sys/fs/cgroup/fennec/limited");
        let read = |f: &str| std::fs::read_to_string(cgroup.join(f)).unwrap();
        assert_eq!(read("pids.max").trim(), "64");
        assert_eq!(read("cpu.max").trim(), "50000 100000");
        let pid = jailed_pid(&vm);
        assert!(read("cgroup.procs").contains(&pid.to_string()));
        // SAFETY: kill on our own child's PID.
        unsafe { libc::kill(vm.child.id() as i32, libc::SIGTERM) };
        vm.wait(TIMEOUT).expect("the jail ends");
        assert!(!cgroup.exists(), "the cgroup was left behind");
    } else {
        let status = vm.wait(TIMEOUT).expect("the jail ends");
        assert_eq!(status.code(), Some(1), "{}", vm.context());
        assert!(
            vm.stderr
                .lock()
                .unwrap()
                .contains("cgroup v2 is not mounted at /sys/fs/cgroup"),
            "{}",
            vm.context()
        );
        assert!(names_in(base.path()).is_empty());
    }
}
