//! Linux under fennec: the microVM guest kernel (built from Debian's linux-source by
//! `resources/build-guest-kernel.sh`) with a busybox initramfs. Runs directly where `/dev/kvm`
//! has hardware virtualization, and otherwise inside the test host (see `common/linux.rs`).
//!
//! These tests are `#[ignore]`d from the default run until the intermittent mid-log stall of
//! non-quiet boots in the test host is understood; run them with
//! `cargo test --test linux -- --include-ignored` (CI runs them as a separate step).

mod common;

use std::path::Path;

use common::linux::{Guest, Session};

/// Guests boot with `quiet`: inside the nested test host, boots that print the whole kernel log
/// through the polled 8250 console have stalled mid-log (issue "Linux guests in CI").
const CMDLINE: &str = "console=ttyS0 panic=-1 quiet";

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Starts fennec on `kernel` with the guest initramfs, the quiet command line and `extra` flags.
fn start(kernel: &Path, g: &Guest, cmdline: &str, extra: &[&str]) -> Session {
    let mut args = vec![
        "--kernel",
        p(kernel),
        "--initrd",
        p(&g.initramfs),
        "--cmdline",
        cmdline,
    ];
    args.extend_from_slice(extra);
    Session::start(&args)
}

/// Boots `kernel` to the init marker, reboots with `reboot -f`, expects exit 0.
fn boot_and_reboot(kernel: &Path, guest: &Guest, format: &str) {
    let mut vm = start(kernel, guest, CMDLINE, &["-v"]);
    vm.expect("FENNEC-GUEST-READY 1 cpus");
    assert!(
        vm.stderr().contains(&format!("Loaded {format} kernel")),
        "{}",
        vm.stderr()
    );
    vm.send_line("reboot -f");
    vm.assert_exit(0);
}

linux_test!(linux_vmlinux_boots_through_pvh_and_reboots, |g: &Guest| {
    boot_and_reboot(&g.vmlinux, g, "ElfPvh");
});

linux_test!(linux_bzimage_boots_and_reboots, |g: &Guest| {
    boot_and_reboot(&g.bzimage, g, "BzImage");
});

linux_test!(linux_two_vcpus_seen_by_nproc, |g: &Guest| {
    let mut vm = start(&g.vmlinux, g, CMDLINE, &["--vcpus", "2"]);
    vm.expect("FENNEC-GUEST-READY");
    assert_eq!(vm.run("nproc"), "2");
    vm.send_line("reboot -f");
    vm.assert_exit(0);
});

linux_test!(linux_memory_512_is_memtotal, |g: &Guest| {
    let mut vm = start(&g.bzimage, g, CMDLINE, &["--memory", "512"]);
    vm.expect("FENNEC-GUEST-READY");
    let out = vm.run("grep MemTotal /proc/meminfo");
    let kib: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unexpected meminfo line: {out:?}"));
    let configured = 512 * 1024;
    assert!(
        kib <= configured && kib * 100 >= configured * 90,
        "MemTotal {kib} kB is not within 10% below {configured} kB"
    );
    vm.send_line("reboot -f");
    vm.assert_exit(0);
});

linux_test!(linux_typed_command_output_comes_back, |g: &Guest| {
    let mut vm = start(&g.vmlinux, g, CMDLINE, &[]);
    vm.expect("FENNEC-GUEST-READY");
    assert_eq!(
        vm.run("echo $((6 * 7))-answer; uname -s"),
        "42-answer\nLinux"
    );
    vm.send_line("reboot -f");
    vm.assert_exit(0);
});

linux_test!(linux_kernel_panic_ends_fennec_cleanly, |g: &Guest| {
    let broken = format!("{CMDLINE} rdinit=/does/not/exist init=/does/not/exist");
    let mut vm = start(&g.vmlinux, g, &broken, &[]);
    vm.expect("Kernel panic");
    vm.assert_exit(0);
});
