//! The library as other tools use it: [`VmBuilder`], the console stream, and the test harness
//! (`fennec::harness`), on the tiny kernels on `/dev/kvm`. One test builds a crate outside
//! the workspace that depends on fennec by path and boots a guest through the public API.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fennec::harness::{tiny_kernel, HarnessError, TestVm};
use fennec::{ExitReason, VmBuilder, VmState};

use common::require_kvm;

const TIMEOUT: Duration = Duration::from_secs(30);

fn echo_vm(tag: &str) -> TestVm {
    let kernel = tiny_kernel("pvh.elf").unwrap();
    let builder = VmBuilder::new(kernel)
        .cmdline(format!("console=ttyS0 tiny.mode=echo vm={tag}"))
        .memory_mib(32);
    TestVm::boot(builder, TIMEOUT).unwrap()
}

#[test]
fn test_two_vms_in_one_process_each_with_its_own_console() {
    require_kvm();
    let mut a = echo_vm("alpha");
    let mut b = echo_vm("beta");
    a.expect("vm=alpha").unwrap();
    b.expect("vm=beta").unwrap();
    a.expect("TINY ready").unwrap();
    b.expect("TINY ready").unwrap();
    // Both run at once: each echoes what it is typed, and only that.
    a.send("to-alpha ").unwrap();
    b.send("to-beta ").unwrap();
    a.expect("to-alpha").unwrap();
    b.expect("to-beta").unwrap();
    assert_eq!(a.vm().state(), VmState::Running);
    assert_eq!(b.vm().state(), VmState::Running);
    assert!(!a.console().contains("to-beta"), "{}", a.console());
    assert!(!b.console().contains("to-alpha"), "{}", b.console());
    // 'q' ends the echo loop; each guest resets through its own i8042.
    a.send("q").unwrap();
    b.send("q").unwrap();
    assert_eq!(a.wait().unwrap(), ExitReason::Reset);
    assert_eq!(b.wait().unwrap(), ExitReason::Reset);
}

#[test]
fn test_checkpoint_once_then_restore_vms_from_it() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let mut booted = echo_vm("origin");
    booted.expect("TINY ready").unwrap();
    booted.send("before ").unwrap();
    booted.expect("before").unwrap();
    booted.checkpoint(dir.path()).unwrap();
    // The original runs on.
    booted.send("after ").unwrap();
    booted.expect("after").unwrap();
    // Two VMs from the checkpoint, at once: each echoes its own input, booted no more.
    let mut a = TestVm::restore(dir.path(), TIMEOUT).unwrap();
    let mut b = TestVm::restore(dir.path(), TIMEOUT).unwrap();
    a.send("to-a ").unwrap();
    b.send("to-b ").unwrap();
    a.expect("to-a").unwrap();
    b.expect("to-b").unwrap();
    assert!(!a.console().contains("TINY ready"), "restored, not booted");
    assert!(!a.console().contains("to-b") && !b.console().contains("to-a"));
    for mut vm in [booted, a, b] {
        vm.send("q").unwrap();
        assert_eq!(vm.wait().unwrap(), ExitReason::Reset);
    }
}

#[test]
fn test_expect_that_never_comes_fails_in_time_with_the_console_tail() {
    require_kvm();
    let mut vm = echo_vm("waiting");
    vm.expect("TINY ready").unwrap();
    let started = Instant::now();
    let err = vm
        .expect_within("a line the guest never prints", Duration::from_secs(2))
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(matches!(err, HarnessError::Timeout { .. }), "{err}");
    let message = format!("{err:?}");
    assert!(
        message.contains("\"a line the guest never prints\" did not appear"),
        "{message}"
    );
    assert!(message.contains("console (tail)"), "{message}");
    assert!(message.contains("vm=waiting"), "no console tail: {message}");
    // The VM's state at the timeout: the echo guest waits for input in a polling loop with
    // its interrupts off, the serial port has its receive interrupt enabled.
    for part in [
        "--- VM state ---",
        "vCPU 0: runnable rip=0x",
        "lapic tpr=",
        "vCPU 0 exits: {\"io_in\":",
        "serial: IER=",
        "pin 4 (serial): vector",
    ] {
        assert!(message.contains(part), "no {part:?} in: {message}");
    }
    // The VM is torn down by the drop, still running.
    let handle = vm.vm().handle().clone();
    drop(vm);
    assert_eq!(handle.state(), VmState::Exited(ExitReason::Stopped));
}

#[test]
fn test_expect_after_the_guest_ended_fails_at_once() {
    require_kvm();
    // Without a mode the tiny kernel prints its report and resets.
    let kernel = tiny_kernel("pvh.elf").unwrap();
    let mut vm = TestVm::boot(VmBuilder::new(kernel), TIMEOUT).unwrap();
    let started = Instant::now();
    let err = vm.expect("never printed").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(err, HarnessError::Ended { .. }), "{err}");
    assert!(format!("{err}").contains("TINY ready"), "{err}");
}

#[test]
fn test_console_stream_reads_to_eof_and_tees_to_a_file() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let tee = dir.path().join("console.log");
    let kernel = tiny_kernel("bzImage").unwrap();
    let mut vm = VmBuilder::new(kernel)
        .cmdline("console=ttyS0 stream-test")
        .vcpus(2)
        .memory_mib(64)
        .tee_console(&tee)
        .start()
        .unwrap();
    let mut console = vm.take_console().unwrap();
    assert!(vm.take_console().is_none());
    assert_eq!(vm.wait().unwrap(), ExitReason::Reset);
    let mut text = String::new();
    console.read_to_string(&mut text).unwrap();
    assert!(text.contains("TINY ready"), "{text}");
    assert!(text.contains("stream-test"), "{text}");
    assert!(console.is_closed());
    assert_eq!(std::fs::read_to_string(&tee).unwrap(), text);
    let m = vm.metrics();
    assert_eq!(m.serial["bytes_out"], text.len() as u64);
}

#[test]
fn test_a_crate_outside_the_workspace_boots_a_guest_through_the_public_api() {
    require_kvm();
    let kernel = tiny_kernel("pvh.elf").unwrap();
    let fennec = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"fennec-embedder\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nfennec = {{ path = {:?} }}\n\n[workspace]\n",
            fennec.display().to_string()
        ),
    )
    .unwrap();
    // The workspace's lock file, so the build uses the same dependency versions.
    std::fs::copy(fennec.join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    std::fs::write(
        dir.path().join("src/main.rs"),
        r#"use std::io::Read;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kernel = std::env::args().nth(1).expect("kernel path");
    let mut vm = fennec::VmBuilder::new(kernel)
        .cmdline("console=ttyS0 from-outside")
        .memory_mib(32)
        .start()?;
    let mut console = vm.take_console().expect("console stream");
    let reason = vm.wait()?;
    let mut text = String::new();
    console.read_to_string(&mut text)?;
    print!("{text}");
    println!("EMBEDDER exit={} clean={}", reason.kind(), reason.is_clean());
    Ok(())
}
"#,
    )
    .unwrap();
    // Its own target directory under this workspace's, kept between runs.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("embedder-target");
    let out = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--manifest-path"])
        .arg(dir.path().join("Cargo.toml"))
        .arg("--")
        .arg(&kernel)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("from-outside"), "{stdout}");
    assert!(
        stdout.contains("EMBEDDER exit=reset clean=true"),
        "{stdout}\n{stderr}"
    );
}
