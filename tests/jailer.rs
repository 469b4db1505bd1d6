//! fennec as Firecracker's `jailer` (a symlink named `jailer`), confining fennec as
//! `firecracker` (a symlink named `firecracker`) in the chroot layout Firecracker documents,
//! `<base>/firecracker/<id>/root`, the way engines use it: they put the VM's files in the
//! chroot, start the jailer, and drive the VM through the socket inside it.

mod common;

use std::os::unix::fs::{chown, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::running::collect;
use common::{api_call, require_kvm, wait_with_timeout, TIMEOUT};

/// Debian's nobody and nogroup.
const NOBODY: u32 = 65534;

/// The links an engine would install: `jailer` and `firecracker`, both fennec.
fn links(dir: &Path) -> (PathBuf, PathBuf) {
    let fennec = common::linux::fennec_bin();
    let (jailer, firecracker) = (dir.join("jailer"), dir.join("firecracker"));
    symlink(&fennec, &jailer).unwrap();
    symlink(&fennec, &firecracker).unwrap();
    (jailer, firecracker)
}

/// The engine's part: the chroot with the kernel, a configuration naming it by its place in
/// the chroot, and `/run` for the socket, all the VM's uid's.
fn chroot(base: &Path, id: &str) -> PathBuf {
    let root = base.join("firecracker").join(id).join("root");
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::fs::copy(common::tiny("pvh.elf"), root.join("vmlinux")).unwrap();
    let config = serde_json::json!({
        "boot-source": {"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0 tiny.mode=idle"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
    });
    std::fs::write(root.join("vm.json"), config.to_string()).unwrap();
    for p in ["", "run", "vmlinux", "vm.json"] {
        chown(root.join(p), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    root
}

fn status_field(pid: u32, field: &str) -> String {
    common::procfs::status_field(Path::new(&format!("/proc/{pid}")), field)
        .unwrap_or_else(|| panic!("process {pid} has ended"))
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The jailer's words for the VM: the API socket inside the chroot, the configuration there.
fn jailer_command(
    (jailer, firecracker): (&Path, &Path),
    base: &Path,
    id: &str,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(jailer);
    cmd.args(extra)
        .args(["--id", id, "--exec-file"])
        .arg(firecracker)
        .args(["--uid", &NOBODY.to_string(), "--gid", &NOBODY.to_string()])
        .arg("--chroot-base-dir")
        .arg(base)
        .args(["--resource-limit", "no-file=256"])
        .args([
            "--",
            "--api-sock",
            "/run/fc.sock",
            "--config-file",
            "/vm.json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// What a jailed VM must be: the VM's uid, no capabilities, the chroot as its root, the limits
/// applied, its ID what the jailer passed, and its socket answering.
fn check_confined(pid: u32, root: &Path, id: &str) {
    assert_eq!(status_field(pid, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    // Its root is the chroot: what the engine put there and what the jailer made.
    let mut seen: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "firecracker.pid")
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        ["dev", "run", "vm.json", "vmlinux"],
        "{}",
        root.display()
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 256 ")),
        "{limits}"
    );
    let socket = root.join("run/fc.sock");
    wait_for("the socket in the chroot", || socket.exists());
    let (status, info) = api_call(&socket, "GET", "/", "");
    assert_eq!(status, 200);
    assert_eq!(info["id"], id, "the jailer's --id reached the VM");
    assert_eq!(info["state"], "Running");
    let (status, _) = api_call(&socket, "PUT", "/actions", r#"{"action_type": "Stop"}"#);
    assert_eq!(status, 200);
}

#[test]
fn jailer_runs_firecracker_in_its_chroot_layout_as_the_same_process() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let (jailer, firecracker) = links(dir.path());
    let base = dir.path().join("jails");
    let root = chroot(&base, "vm-1");
    let ns = common::netns::NetNs::new("jailer");
    let ns_path = format!("/run/netns/{}", ns.name());
    let mut child = jailer_command(
        (&jailer, &firecracker),
        &base,
        "vm-1",
        &["--netns", &ns_path],
    )
    .spawn()
    .unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    let stdout = collect(child.stdout.take().unwrap());
    // Without --new-pid-ns the jailer becomes the VM: the PID the engine started is the VM's.
    let pid = child.id();
    wait_for("the guest's console output", || {
        stdout.lock().unwrap().contains("TINY ready")
    });
    // In the network namespace --netns named.
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&ns_path).unwrap());
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        PathBuf::from(format!("net:[{inode}]"))
    );
    check_confined(pid, &root, "vm-1");
    let status = wait_with_timeout(&mut child, TIMEOUT).expect("the VM ends after Stop");
    assert!(status.success(), "{status}: {}", stderr.lock().unwrap());

    // The chroot is the engine's to remove; the device nodes were made for the VM.
    let kvm = std::fs::metadata(root.join("dev/kvm")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&kvm), NOBODY);
}

/// Runs the jailer for VM `id` with `--new-pid-ns --daemonize`, which must succeed, and gives
/// the VM's PID from the PID file it wrote in the chroot.
fn start_daemonized(links: (&Path, &Path), base: &Path, id: &str) -> u32 {
    let out = jailer_command(links, base, id, &["--new-pid-ns", "--daemonize"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = base.join("firecracker").join(id).join("root");
    std::fs::read_to_string(root.join("firecracker.pid"))
        .expect("the jailer writes the VM's PID")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn jailer_new_pid_ns_and_daemonize_leave_the_vm_running_with_its_pid_file() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let (jailer, firecracker) = links(dir.path());
    let base = dir.path().join("jails");
    let root = chroot(&base, "vm-2");
    let pid = start_daemonized((&jailer, &firecracker), &base, "vm-2");
    // PID 1 of a namespace of its own, in a session of its own.
    assert_eq!(
        status_field(pid, "NSpid").split_whitespace().last(),
        Some("1")
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!(fields[3], pid.to_string(), "its own session (--daemonize)");
    check_confined(pid, &root, "vm-2");
    wait_for("the VM to end", || {
        !Path::new(&format!("/proc/{pid}")).exists() || status_field(pid, "State").starts_with('Z')
    });
}

#[test]
fn jailer_refuses_what_it_cannot_do_before_making_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (jailer, firecracker) = links(dir.path());
    let base = dir.path().join("jails");
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "--id".into(),
            "vm-3".into(),
            "--exec-file".into(),
            firecracker.to_str().unwrap().into(),
            "--uid".into(),
            NOBODY.to_string(),
            "--gid".into(),
            NOBODY.to_string(),
            "--chroot-base-dir".into(),
            base.to_str().unwrap().into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = Command::new(&jailer).args(&args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--cgroup", "memory.max=1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--cgroup-version 2"), "{err}");
    let (code, err) = run(&["--no-such-flag"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("Arguments parsing error"), "{err}");
    let (code, err) = run(&["--uid", "5"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("more than once"), "{err}");
    assert!(!base.exists(), "nothing made");
    let out = Command::new(&jailer).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Jailer v"));
}

/// The chroot is reused from run to run and belongs to the VM's uid, which may have left links
/// to the host's files in it: the jailer makes its device nodes and its PID file new, in place
/// of what had their names, and refuses a `dev` that is not a directory.
#[test]
fn jailer_follows_no_link_the_vm_uid_planted_in_its_chroot() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let (jailer, firecracker) = links(dir.path());
    let base = dir.path().join("jails");
    // Host files only root may write, which the links point at.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "host data").unwrap();
    let victim_dir = dir.path().join("victim-dir");
    std::fs::create_dir(&victim_dir).unwrap();
    let untouched = |what: &str| {
        let meta = std::fs::symlink_metadata(&victim).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(meta.is_file(), "{what}: the host's file was replaced");
        assert_eq!(meta.uid(), 0, "{what}: the host's file was given away");
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "host data",
            "{what}"
        );
        assert!(
            std::fs::read_dir(&victim_dir).unwrap().next().is_none(),
            "{what}: something was made in the host's directory"
        );
    };

    // `dev/kvm`, `dev/net` and the PID file as links to the host's files.
    let root = chroot(&base, "vm-4");
    std::fs::create_dir(root.join("dev")).unwrap();
    symlink(&victim, root.join("dev/kvm")).unwrap();
    symlink(&victim_dir, root.join("dev/net")).unwrap();
    symlink(&victim, root.join("firecracker.pid")).unwrap();
    let out = jailer_command(
        (&jailer, &firecracker),
        &base,
        "vm-4",
        &["--new-pid-ns", "--daemonize"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // `dev/net` is refused; nothing was written through any link before that.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("dev/net is not a directory"), "{err}");
    untouched("dev/net a link");

    std::fs::remove_file(root.join("dev/net")).unwrap();
    let pid = start_daemonized((&jailer, &firecracker), &base, "vm-4");
    untouched("dev/kvm and the PID file links");
    use std::os::unix::fs::FileTypeExt;
    let kvm = std::fs::symlink_metadata(root.join("dev/kvm")).unwrap();
    assert!(kvm.file_type().is_char_device(), "dev/kvm is a device node");
    let pid_file = std::fs::symlink_metadata(root.join("firecracker.pid")).unwrap();
    assert!(pid_file.is_file(), "the PID file is a file of its own");
    let socket = root.join("run/fc.sock");
    wait_for("the socket in the chroot", || socket.exists());
    let (status, _) = api_call(&socket, "PUT", "/actions", r#"{"action_type": "Stop"}"#);
    assert_eq!(status, 200);
    wait_for("the VM to end", || {
        !Path::new(&format!("/proc/{pid}")).exists() || status_field(pid, "State").starts_with('Z')
    });

    // `dev` itself as a link to a host directory.
    let root = chroot(&base, "vm-5");
    symlink(&victim_dir, root.join("dev")).unwrap();
    let out = jailer_command((&jailer, &firecracker), &base, "vm-5", &[])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("dev is not a directory"), "{err}");
    untouched("dev a link");
}
