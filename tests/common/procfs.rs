//! Reading fennec's processes and threads from /proc.

use std::path::Path;

/// Field `field` of a task's `status` (`task` is `/proc/PID` or `/proc/PID/task/TID`), trimmed;
/// `None` if the task has ended. A field the kernel does not report fails the test.
pub fn status_field(task: &Path, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(task.join("status")).ok()?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {}/status", task.display()));
    Some(value.trim().to_string())
}

/// Whether a task is a kernel worker that never runs user code (PF_USER_WORKER): KVM starts
/// its NX huge page recovery worker, `kvm-nx-lpage-recovery`, in the VM's process. `None` if
/// the task has ended.
pub fn is_kernel_worker(task: &Path) -> Option<bool> {
    const PF_USER_WORKER: u64 = 0x4000;
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    // The fields after the command (which may hold spaces) start at the last ')'; flags is the
    // ninth field, the seventh after it.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let flags: u64 = after.split(' ').nth(6).unwrap().parse().unwrap();
    Some(flags & PF_USER_WORKER != 0)
}
