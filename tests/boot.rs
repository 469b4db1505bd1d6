//! `fennec run` boots the tiny test kernels on `/dev/kvm`: every value they print must be what was
//! configured, through PVH, the 64-bit ELF entry and bzImage alike.

mod common;

use common::*;

/// Boots `kernel` with an initrd and checks every value the tiny kernel reports.
fn check_report(kernel: &str, boot: &str, vcpus: u32, mib: u64) {
    require_kvm();
    let initrd = pattern(12_345, mib);
    let (_dir, initrd_path) = temp_file("initrd.img", &initrd);
    let kernel = tiny(kernel);
    let (vcpus_s, mem_s) = (vcpus.to_string(), mib.to_string());
    let run = fennec(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd_path.to_str().unwrap(),
        "--cmdline",
        "fennec.test=1 quiet",
        "--vcpus",
        &vcpus_s,
        "--memory",
        &mem_s,
    ]);
    let r = run.report();
    let ctx = run.context();
    assert_eq!(run.code, Some(0), "{ctx}");
    assert!(r.ready, "{ctx}");
    assert_eq!(r.boot, boot, "{ctx}");
    assert_eq!(
        r.cmdline, "fennec.test=1 quiet console=ttyS0 reboot=k",
        "{ctx}"
    );
    assert_eq!(r.e820, expected_e820(mib), "{ctx}");
    assert_eq!(r.mem, (mib << 20) - (0x10_0000 - 0x9fc00), "{ctx}");
    let (addr, size, fnv) = r
        .initrd
        .unwrap_or_else(|| panic!("no initrd reported\n{ctx}"));
    assert_eq!(size, initrd.len() as u64, "{ctx}");
    assert_eq!(
        fnv,
        fnv1a(&initrd),
        "initrd bytes differ in the guest\n{ctx}"
    );
    assert_eq!(addr % 4096, 0, "{ctx}");
    assert!(
        addr >= 0x10_0000 && addr + size <= (mib << 20).min(0xc000_0000),
        "{ctx}"
    );
    assert_eq!(r.cpus, vcpus, "{ctx}");
    assert_eq!(r.mptable, "ok", "{ctx}");
}

#[test]
fn test_pvh_kernel_sees_configured_machine() {
    check_report("pvh.elf", "pvh", 2, 256);
}

#[test]
fn test_elf64_kernel_sees_configured_machine() {
    check_report("elf64.elf", "linux64", 1, 64);
}

#[test]
fn test_bzimage_kernel_sees_configured_machine() {
    check_report("bzImage", "linux64", 8, 512);
}

#[test]
fn test_large_guest_ram_continues_above_4g() {
    check_report("pvh.elf", "pvh", 4, 5 * 1024);
}

#[test]
fn test_bzimage_large_guest_ram_continues_above_4g() {
    check_report("bzImage", "linux64", 3, 4 * 1024);
}

#[test]
fn test_no_initrd_reported_as_none() {
    require_kvm();
    let kernel = tiny("elf64.elf");
    let run = fennec(&["run", "--kernel", kernel.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}", run.context());
    assert!(run.stdout.contains("TINY initrd none"), "{}", run.context());
    assert_eq!(run.report().cpus, 1, "{}", run.context());
}

#[test]
fn test_default_cmdline_has_console_and_reboot() {
    require_kvm();
    let kernel = tiny("pvh.elf");
    let run = fennec(&["run", "--kernel", kernel.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}", run.context());
    let cmdline = run.report().cmdline;
    assert!(
        cmdline.starts_with("console=ttyS0 reboot=k panic=1"),
        "{}",
        run.context()
    );
}

#[test]
fn test_stdin_reaches_guest_and_echo_comes_back() {
    require_kvm();
    let kernel = tiny("pvh.elf");
    let run = fennec_with_input(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "tiny.mode=echo",
        ],
        b"hello from the host 0123456789\nq",
    );
    assert_eq!(run.code, Some(0), "{}", run.context());
    let after_ready = run.stdout.split("TINY ready\n").nth(1).unwrap_or_default();
    assert!(
        after_ready.starts_with("hello from the host 0123456789\n"),
        "{}",
        run.context()
    );
    assert!(after_ready.contains("TINY bye"), "{}", run.context());
}

#[test]
fn test_stdin_longer_than_serial_fifo_arrives_whole() {
    require_kvm();
    let kernel = tiny("elf64.elf");
    let text: String = (0..40)
        .map(|i| format!("line {i:02} of the long input\n"))
        .collect();
    let mut input = text.clone().into_bytes();
    input.push(b'q');
    let run = fennec_with_input(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "tiny.mode=echo",
        ],
        &input,
    );
    assert_eq!(run.code, Some(0), "{}", run.context());
    let after_ready = run.stdout.split("TINY ready\n").nth(1).unwrap_or_default();
    assert!(after_ready.starts_with(&text), "{}", run.context());
}

#[test]
fn test_triple_fault_exits_zero() {
    require_kvm();
    let kernel = tiny("elf64.elf");
    let run = fennec(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        "tiny.mode=triple",
    ]);
    assert!(run.report().ready, "{}", run.context());
    assert!(!run.stdout.contains("TINY bye"), "{}", run.context());
    assert_eq!(run.code, Some(0), "{}", run.context());
}

#[test]
fn test_guest_halted_with_interrupts_off_is_reported() {
    require_kvm();
    let kernel = tiny("pvh.elf");
    let run = fennec(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--vcpus",
        "2",
        "--cmdline",
        "tiny.mode=halt",
    ]);
    assert!(run.report().ready, "{}", run.context());
    assert_eq!(run.code, Some(3), "{}", run.context());
    assert!(
        run.stderr.contains("halted with interrupts disabled"),
        "{}",
        run.context()
    );
}

#[test]
fn test_sigterm_stops_guest_cleanly() {
    require_kvm();
    let kernel = tiny("pvh.elf");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fennec"))
        .args([
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "tiny.mode=echo",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("TINY ready") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "console closed"
        );
    }
    // kill(1) by PID: our own child.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = wait_with_timeout(&mut child, TIMEOUT).and_then(|s| s.code());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// The `Guest boot time: X ms since fennec started` line fennec logs, in milliseconds.
fn logged_boot_time(stderr: &str) -> Option<f64> {
    stderr
        .lines()
        .find_map(|l| l.split("Guest boot time: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ms| ms.parse().ok())
}

#[test]
fn test_boot_timer_reports_a_plausible_boot_time_for_every_entry() {
    require_kvm();
    for kernel in ["pvh.elf", "elf64.elf", "bzImage"] {
        let kernel = tiny(kernel);
        let started = std::time::Instant::now();
        let run = fennec(&["run", "-v", "--kernel", kernel.to_str().unwrap()]);
        let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
        let ctx = run.context();
        assert_eq!(run.code, Some(0), "{ctx}");
        let boot_ms = logged_boot_time(&run.stderr)
            .unwrap_or_else(|| panic!("no boot time logged for {}\n{ctx}", kernel.display()));
        // After fennec started and before it ended; the tiny kernel is up in milliseconds.
        assert!(
            boot_ms > 0.0 && boot_ms < wall_ms,
            "{boot_ms} ms of {wall_ms} ms\n{ctx}"
        );
        // Reported once, though the guest ran on.
        assert_eq!(run.stderr.matches("Guest boot time").count(), 1, "{ctx}");
    }
}
