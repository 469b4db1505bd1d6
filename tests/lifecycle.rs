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
