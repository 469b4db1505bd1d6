//! The stock Debian system under fennec: Debian's own cloud kernel and initramfs, found through
//! ACPI, on 2 vCPUs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::linux::{host_tool, Guest, Session};
use crate::common::netns::NetNs;
use crate::{common, guest_pings_host, p};

/// How long Debian's own kernel, initramfs and systemd get to reach `multi-user.target`: with
/// both vCPUs on the test host's CPU 0, 180 to 270 s beside a parallel compile in soak runs
/// (the test host's limit for these tests is 900 s).
const DEBIAN_BOOT: Duration = Duration::from_secs(450);
/// How long its systemd gets to stop everything and power off: about 10 s, 35 s under load.
const DEBIAN_SHUTDOWN: Duration = Duration::from_secs(180);

/// A stock Debian system under fennec, as a homelab user would run it: Debian's cloud kernel
/// and the initramfs Debian generated for it, root on virtio-blk, 2 vCPUs, a NIC on `tap0` in
/// `ns` (host side 10.0.2.1/24), and a control socket. Waits for systemd's
/// `multi-user.target`, checks what the guest found, and returns the session, the copy of the
/// root filesystem it runs on, and the socket.
struct Debian {
    vm: Session,
    root: PathBuf,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Debian {
    fn boot(ns: &NetNs) -> Debian {
        let d = common::linux::debian();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs.ext4");
        std::fs::copy(&d.rootfs, &root).unwrap();
        let socket = dir.path().join("api.sock");
        let disk = format!("path={},id=rootfs,root", root.display());
        ns.add_tap("tap0", Some("10.0.2.1/24"));
        let vm = Session::start_in(
            ns,
            &[
                "-v",
                "--kernel",
                p(&d.kernel),
                "--initrd",
                p(&d.initrd),
                "--cmdline",
                // systemd gives a device 90 s to appear; in a test host on a loaded machine
                // the serial port's took longer, and its getty (the tests' shell) never came.
                // nokaslr: a wedged guest's instruction pointers (in the failure's VM state)
                // name their functions in Debian's -dbg vmlinux as they are.
                "console=ttyS0 quiet systemd.default_timeout_start_sec=600 nokaslr",
                "--vcpus",
                "2",
                "--memory",
                "512",
                "--disk",
                &disk,
                "--net",
                "tap=tap0",
                "--api-socket",
                p(&socket),
            ],
        );
        let ready = vm.expect_within(0, "FENNEC-DEBIAN-READY", DEBIAN_BOOT);
        let from = ready.len();
        let line = vm.expect_from(from - "FENNEC-DEBIAN-READY".len(), "\n");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(
            field("cpus"),
            "2",
            "the guest's CPUs (from the MADT): {line}"
        );
        assert!(
            field("disks").split(',').any(|d| d == "vda"),
            "the guest's disks (a virtio-mmio device from the DSDT): {line}"
        );
        assert!(
            field("ifaces").split(',').any(|i| i == "eth0"),
            "the guest's interfaces: {line}"
        );
        eprintln!("Debian reached multi-user.target: {line}");
        Debian {
            vm,
            root,
            socket,
            _dir: dir,
        }
    }

    /// Waits for the root login the serial getty gives: the shell takes commands from then on.
    fn log_in(&mut self) {
        self.vm.expect_within(0, "root@fennec-debian", DEBIAN_BOOT);
    }

    /// The kernel's log holds no warning (`common::kernel_log` says which it lets pass).
    fn assert_kernel_log_clean(&mut self) {
        let log = self
            .vm
            .run("dmesg -r --color=never --level=emerg,alert,crit,err,warn");
        let warnings = common::kernel_log::warnings(&log);
        assert!(
            warnings.is_empty(),
            "Debian's kernel warned:\n{}",
            warnings.join("\n")
        );
    }

    /// fennec exits 0 because the guest powered off, and the root filesystem is clean.
    fn assert_powered_off_cleanly(mut self) {
        let code = self.vm.wait_within(DEBIAN_SHUTDOWN);
        let stderr = self.vm.stderr();
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stderr.contains("the guest powered off"), "{stderr}");
        let fsck = Command::new(host_tool("e2fsck"))
            .args(["-fn", p(&self.root)])
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "the root filesystem is not clean after the shutdown:\n{}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
    }
}

pub fn stock_kernel_boots_pings_and_powers_off(_g: &Guest) {
    let ns = NetNs::new("debian");
    let mut debian = Debian::boot(&ns);
    debian.log_in();
    // Debian's kernel found a machine it has no complaints about: ACPI tables, CPUID,
    // APIC, timers.
    debian.assert_kernel_log_clean();
    guest_pings_host(&mut debian.vm, "10.0.2.2/24", "10.0.2.1");
    debian.vm.send_line("systemctl poweroff");
    debian.assert_powered_off_cleanly();
}

pub fn power_button_from_fennec_ctl_shuts_it_down(_g: &Guest) {
    let ns = NetNs::new("debian");
    let debian = Debian::boot(&ns);
    let timeout = DEBIAN_SHUTDOWN.as_secs().to_string();
    let answer = common::ctl(&debian.socket, &["shutdown", "--timeout", &timeout]);
    assert_eq!(answer["forced"], false, "{answer}");
    assert_eq!(answer["exit"]["kind"], "power_off", "{answer}");
    debian.assert_powered_off_cleanly();
}

/// How many times the guest switches its scheduler statistics on and off: each switch rewrites
/// every site of the `sched_schedstats` static key with breakpoints and IPIs.
const PATCH_ROUNDS: u32 = 400;
/// About 3 rounds a second in the test host.
const PATCHING: Duration = Duration::from_secs(420);

/// A kernel that rewrites its own code on one vCPU while the other runs through the rewritten
/// sites: Debian's static keys for scheduler statistics, switched hundreds of times from vCPU 0
/// while vCPU 1 runs a process loop through the scheduler. Every switch puts a breakpoint on each
/// site, synchronizes the vCPUs with IPIs, and takes it out again; vCPU 1 meets those
/// breakpoints. The guest must finish, keep both vCPUs, warn about nothing, and power off.
pub fn live_code_patching_on_two_vcpus(_g: &Guest) {
    let ns = NetNs::new("debian");
    let mut debian = Debian::boot(&ns);
    debian.log_in();
    let vm = &mut debian.vm;
    assert_eq!(
        vm.run("cat /proc/sys/kernel/sched_schedstats"),
        "0",
        "Debian's kernel has scheduler statistics off by default"
    );
    // Started from a subshell, so the interactive shell prints no job number.
    let busy =
        vm.run("(taskset -c 1 sh -c 'while :; do /bin/true; done' >/dev/null 2>&1 & echo $!)");
    let busy: u32 = busy
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no PID: {busy:?}"));
    let from = vm.console().len();
    vm.send_line(&format!(
        "taskset -c 0 sh -c 'i=0; while [ $i -lt {PATCH_ROUNDS} ]; do \
         echo 1 > /proc/sys/kernel/sched_schedstats; echo 0 > /proc/sys/kernel/sched_schedstats; \
         i=$((i+1)); done; echo PATCHED-$i-TIMES'"
    ));
    vm.expect_within(from, &format!("PATCHED-{PATCH_ROUNDS}-TIMES"), PATCHING);
    // The loop ran on vCPU 1 the whole time (field 39 of its stat is the CPU it last ran on).
    let cpu = vm.run(&format!("cut -d' ' -f39 /proc/{busy}/stat; kill {busy}"));
    assert_eq!(cpu, "1", "the process loop is not on vCPU 1");
    assert_eq!(vm.run("grep -c ^processor /proc/cpuinfo"), "2");
    debian.assert_kernel_log_clean();
    debian.vm.send_line("systemctl poweroff");
    debian.assert_powered_off_cleanly();
}
