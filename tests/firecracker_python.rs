//! fennec as Firecracker for a real client: firecracker-python (PyPI) starts it through a
//! symlink named `firecracker` with the arguments that library gives Firecracker, and drives it
//! with its own API client (`tests/firecracker_python/drive.py`). The library comes from
//! `resources/firecracker-python.sh` (a virtualenv cached in ~/.cache/fennec).

mod common;

use std::path::Path;
use std::process::Command;

use common::require_kvm;

#[test]
fn firecracker_python_starts_and_drives_fennec_as_firecracker() {
    require_kvm();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = Command::new(root.join("resources/firecracker-python.sh"))
        .output()
        .expect("run resources/firecracker-python.sh");
    assert!(
        venv.status.success(),
        "cannot make the firecracker-python virtualenv (it needs python3-venv and PyPI): {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = String::from_utf8(venv.stdout).unwrap();
    // firecracker-python's client puts the socket's path in a URL's host, which requests
    // lower-cases: the path must have no capital letter (tempfile's names have some).
    let dir = tempfile::Builder::new()
        .prefix("fennec-fcpy-")
        .rand_bytes(0)
        .suffix(&std::process::id().to_string())
        .tempdir()
        .unwrap();
    let link = dir.path().join("firecracker");
    std::os::unix::fs::symlink(common::linux::fennec_bin(), &link).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let out = Command::new(python.trim())
        .arg(root.join("tests/firecracker_python/drive.py"))
        .arg(&link)
        .arg(&data)
        .arg(common::tiny("pvh.elf"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let fennec_out =
        std::fs::read_to_string(data.join("fcpy-1/firecracker.log")).unwrap_or_default();
    assert!(
        out.status.success() && stdout.contains("FC-PYTHON OK"),
        "{}\n{stdout}\n{stderr}\n--- fennec's stdout ---\n{fennec_out}",
        out.status
    );
    assert!(fennec_out.contains("TINY ready"), "{fennec_out}");
}
