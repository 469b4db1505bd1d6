//! Every mistake a user can make with `fennec run` ends with one clear line on stderr and a
//! non-zero exit status, never a panic.

mod common;

use std::process::Command;

use common::*;

/// Asserts fennec failed with `code` and a single stderr line containing `needle`.
fn assert_fails(run: &Run, code: i32, needle: &str) {
    let ctx = run.context();
    assert_eq!(run.code, Some(code), "{ctx}");
    assert!(
        run.stderr.contains(needle),
        "expected {needle:?} on stderr\n{ctx}"
    );
    assert!(!run.stderr.contains("panicked"), "{ctx}");
    assert!(run.stdout.is_empty(), "{ctx}");
}

/// Asserts a runtime error: exit 1 and exactly one line, prefixed `fennec:`.
fn assert_error_line(run: &Run, needle: &str) {
    assert_fails(run, 1, needle);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.context());
    assert!(lines[0].starts_with("fennec: "), "{}", run.context());
}

#[test]
fn test_missing_kernel_is_one_line_error() {
    require_kvm();
    let run = fennec(&["run", "--kernel", "/nonexistent/vmlinux"]);
    assert_error_line(
        &run,
        "Cannot open kernel /nonexistent/vmlinux: No such file or directory",
    );
}

#[test]
fn test_not_a_kernel_is_one_line_error() {
    require_kvm();
    let (_dir, path) = temp_file("notes.txt", b"this is not a kernel\n");
    let run = fennec(&["run", "--kernel", path.to_str().unwrap()]);
    assert_error_line(&run, "neither an ELF vmlinux nor a bzImage");
}

#[test]
fn test_truncated_elf_is_one_line_error() {
    require_kvm();
    let elf = std::fs::read(tiny("elf64.elf")).unwrap();
    let (_dir, path) = temp_file("cut.elf", &elf[..100]);
    let run = fennec(&["run", "--kernel", path.to_str().unwrap()]);
    assert_error_line(&run, "Failed to load the ELF kernel");
}

#[test]
fn test_missing_initrd_is_one_line_error() {
    require_kvm();
    let kernel = tiny("pvh.elf");
    let run = fennec(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        "/nonexistent/initrd",
    ]);
    assert_error_line(&run, "Cannot open initrd /nonexistent/initrd");
}

#[test]
fn test_initrd_larger_than_memory_is_one_line_error() {
    require_kvm();
    let kernel = tiny("pvh.elf");
    let (_dir, initrd) = temp_file("big.img", &vec![0u8; 6 << 20]);
    let run = fennec(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--memory",
        "4",
    ]);
    assert_error_line(&run, "does not fit in guest memory");
}

#[test]
fn test_kernel_larger_than_memory_is_one_line_error() {
    require_kvm();
    let mut image = std::fs::read(tiny("bzImage")).unwrap();
    image.resize(image.len() + (3 << 20), 0);
    let (_dir, path) = temp_file("huge-bzImage", &image);
    let run = fennec(&["run", "--kernel", path.to_str().unwrap(), "--memory", "2"]);
    assert_error_line(&run, "fits in guest memory");
}

#[test]
fn test_cmdline_too_long_is_one_line_error() {
    require_kvm();
    let kernel = tiny("pvh.elf");
    let long = "x".repeat(3000);
    let run = fennec(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        &long,
    ]);
    assert_error_line(&run, "Invalid kernel command line");
}

#[test]
fn test_zero_vcpus_is_usage_error() {
    let run = fennec(&["run", "--kernel", "/k", "--vcpus", "0"]);
    assert_fails(&run, 2, "--vcpus");
}

#[test]
fn test_too_many_vcpus_is_usage_error() {
    let run = fennec(&["run", "--kernel", "/k", "--vcpus", "255"]);
    assert_fails(&run, 2, "255 is not in 1..=254");
}

#[test]
fn test_bad_memory_values_are_usage_errors() {
    for bad in ["lots", "1", "0", "5T", "-3"] {
        let run = fennec(&["run", "--kernel", "/k", &format!("--memory={bad}")]);
        assert_fails(&run, 2, "--memory");
    }
}

#[test]
fn test_missing_kernel_flag_is_usage_error() {
    let run = fennec(&["run"]);
    assert_fails(&run, 2, "--kernel");
}

/// Runs fennec with `/dev` replaced by an empty tmpfs in a private mount namespace.
#[test]
fn test_no_dev_kvm_is_one_line_error() {
    let kernel = tiny("pvh.elf");
    let out = Command::new("unshare")
        .args([
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs none /dev && exec \"$0\" run --kernel \"$1\"",
        ])
        .arg(env!("CARGO_BIN_EXE_fennec"))
        .arg(&kernel)
        .output()
        .expect("unshare (util-linux) runs; this test needs root");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "fennec: /dev/kvm does not exist: load the kvm module (kvm_intel or kvm_amd) on a host with hardware virtualization"
    );
}

/// Runs fennec in a private mount namespace whose `/dev/kvm` has mode 000, as root without the
/// capabilities that override file permissions.
#[test]
fn test_dev_kvm_permission_denied_is_one_line_error() {
    let kernel = tiny("pvh.elf");
    let out = Command::new("unshare")
        .args([
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs none /dev && mknod /dev/kvm c 10 232 && chmod 000 /dev/kvm && \
             exec setpriv --bounding-set -dac_override,-dac_read_search \"$0\" run --kernel \"$1\"",
        ])
        .arg(env!("CARGO_BIN_EXE_fennec"))
        .arg(&kernel)
        .output()
        .expect("unshare and setpriv (util-linux) run; this test needs root");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "fennec: Permission denied opening /dev/kvm: run as root or add your user to the kvm group"
    );
}

#[test]
fn test_drive_with_path_and_template_refused_the_same_way_everywhere() {
    use fennec::config::{BlockConfig, VmConfig, BOTH_SOURCES};
    require_kvm();
    let kernel = tiny("pvh.elf");
    let kernel = kernel.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("a.img");
    std::fs::write(&image, vec![0u8; 4096]).unwrap();
    let drive = serde_json::json!({
        "drive_id": "d", "path_on_host": image, "template": "debian"
    });

    // The command line.
    let arg = format!("path={},template=debian", image.display());
    let run = fennec(&["run", "--kernel", kernel, "--disk", &arg]);
    assert_fails(&run, 2, BOTH_SOURCES);

    // The config file.
    let config = serde_json::json!({
        "boot-source": {"kernel_image_path": kernel},
        "drives": [drive],
    });
    let file = dir.path().join("vm.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let run = fennec(&["run", "--config-file", file.to_str().unwrap()]);
    assert_error_line(&run, BOTH_SOURCES);

    // The control socket.
    let socket = dir.path().join("api.sock");
    let mut server = spawn_api(&[], &socket);
    let out = Command::new(env!("CARGO_BIN_EXE_fennec"))
        .arg("ctl")
        .arg("--api-socket")
        .arg(&socket)
        .args(["request", "PUT", "/drives/d", &drive.to_string()])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("400") && stderr.contains(BOTH_SOURCES),
        "{stderr}"
    );

    // The library: a drive names one source by its type; from JSON, the same refusal.
    let e = serde_json::from_value::<BlockConfig>(drive).unwrap_err();
    assert!(e.to_string().contains(BOTH_SOURCES), "{e}");
    let e = serde_json::from_value::<VmConfig>(config).unwrap_err();
    assert!(e.to_string().contains(BOTH_SOURCES), "{e}");
}
