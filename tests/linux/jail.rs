//! The jail's cgroup limits, where the unified cgroup hierarchy is (the test host mounts it;
//! Debian 12 hosts have it).

use std::path::Path;

use crate::common::linux::Guest;
use crate::common::running::Running;
use crate::common::TIMEOUT;

/// `fennec jail` on the tiny kernel filling `fill_mib` MiB of its 128, under `memory_max`.
fn filling_jail(base: &Path, id: &str, memory_max: &str, fill_mib: u32) -> Running {
    assert!(
        Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        "this test needs the unified cgroup hierarchy (cgroup v2) at /sys/fs/cgroup: boot the \
         host with systemd.unified_cgroup_hierarchy=1 (Debian 12's default)"
    );
    let kernel = crate::common::tiny("pvh.elf");
    let cmdline = format!("console=ttyS0 tiny.mode=fill fill.mib={fill_mib}");
    let args = [
        "jail",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--id",
        id,
        "--base",
        base.to_str().unwrap(),
        "--memory-max",
        memory_max,
        "--memory",
        "128",
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        &cmdline,
    ];
    Running::spawn(&args, &[])
}

/// A jail whose memory limit is below what its guest touches: the kernel kills the VM, the jail
/// says why, the host runs on; the same guest under a roomier limit runs to its end.
pub fn memory_limit_ends_the_vm_not_the_host(_guest: &Guest) {
    let base = tempfile::tempdir().unwrap();
    // 48 MiB for a guest that touches 112: the kernel kills the VM, the jail says why.
    let mut vm = filling_jail(base.path(), "small", "48M", 112);
    let status = vm
        .wait(TIMEOUT * 4)
        .unwrap_or_else(|| panic!("the jail did not end\n{}", vm.context()));
    assert_eq!(status.code(), Some(1), "{}", vm.context());
    let stderr = vm.stderr.lock().unwrap().clone();
    assert!(
        stderr.contains("killed for memory") && stderr.contains("48 MiB"),
        "{}",
        vm.context()
    );
    assert!(!vm.stdout.lock().unwrap().contains("TINY fill done"));
    assert!(!Path::new("/sys/fs/cgroup/fennec/small").exists());
    assert!(!base.path().join("small").exists());

    // The same guest under a limit it fits in runs to the end: the limit was the cause.
    let mut vm = filling_jail(base.path(), "roomy", "256M", 112);
    vm.wait_for_console("TINY fill done");
    let current: u64 = std::fs::read_to_string("/sys/fs/cgroup/fennec/roomy/memory.current")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        current > 96 << 20,
        "memory.current {current}: the guest's pages count"
    );
    // SAFETY: kill on our own child's PID.
    unsafe { libc::kill(vm.child.id() as i32, libc::SIGTERM) };
    let status = vm.wait(TIMEOUT).expect("the jail ends");
    assert!(status.success(), "{status}\n{}", vm.context());
}

/// Firecracker's `jailer` (fennec through a symlink) with cgroup v2 files: the VM's process
/// is in `PARENT/ID`, the files say what `--cgroup` gave, and a memory limit below what the
/// guest touches has the kernel kill the VM, which is the jailer's own process.
pub fn jailer_cgroup_files_apply(_guest: &Guest) {
    use std::os::unix::fs::{chown, symlink};
    assert!(
        Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        "this test needs the unified cgroup hierarchy (cgroup v2) at /sys/fs/cgroup"
    );
    let dir = tempfile::tempdir().unwrap();
    let fennec = crate::common::linux::fennec_bin();
    let (jailer, firecracker) = (dir.path().join("jailer"), dir.path().join("firecracker"));
    symlink(&fennec, &jailer).unwrap();
    symlink(&fennec, &firecracker).unwrap();
    let base = dir.path().join("jails");
    let root = base.join("firecracker/oom/root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(crate::common::tiny("pvh.elf"), root.join("vmlinux")).unwrap();
    let config = serde_json::json!({
        "boot-source": {
            "kernel_image_path": "/vmlinux",
            "boot_args": "console=ttyS0 tiny.mode=fill fill.mib=112",
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
    });
    std::fs::write(root.join("vm.json"), config.to_string()).unwrap();
    for p in ["", "vmlinux", "vm.json"] {
        chown(root.join(p), Some(65534), Some(65534)).unwrap();
    }
    let cgroup = Path::new("/sys/fs/cgroup/fennec-jailer-test/oom");
    let out = std::process::Command::new(&jailer)
        .args(["--id", "oom", "--exec-file"])
        .arg(&firecracker)
        .args(["--uid", "65534", "--gid", "65534", "--chroot-base-dir"])
        .arg(&base)
        .args([
            "--cgroup-version",
            "2",
            "--parent-cgroup",
            "fennec-jailer-test",
        ])
        .args(["--cgroup", "memory.max=50331648", "--cgroup", "pids.max=64"])
        .args(["--", "--no-api", "--config-file", "/vm.json"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("TINY fill done"), "{stdout}");
    let read = |file: &str| std::fs::read_to_string(cgroup.join(file)).unwrap();
    assert_eq!(read("memory.max").trim(), "50331648");
    assert_eq!(read("pids.max").trim(), "64");
    let kills: u64 = read("memory.events")
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0);
    assert!(kills >= 1, "{}", read("memory.events"));
    // The jailer leaves its cgroup, as Firecracker's does; this test made it.
    std::fs::remove_dir(cgroup).unwrap();
    std::fs::remove_dir(cgroup.parent().unwrap()).unwrap();
}
