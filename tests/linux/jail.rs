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
