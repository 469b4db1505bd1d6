//! Checkpoints: a running VM and its template disks snapshotted together (`fennec ctl
//! checkpoint`), then restored as independent copies (`fennec run --from-checkpoint NAME --vm
//! NEW`), each on its own clone of the disks as they were at the checkpoint. With a directory
//! store and a ZFS store (zfs-fuse).

mod common;

use std::io::Write;
use std::sync::Mutex;

use common::running::Running;
use common::store::{Backend, TestStore, SECTOR};
use common::TIMEOUT;

/// zfs-fuse deadlocks on concurrent pool changes (see tests/storage_streams.rs).
static ZFS: Mutex<()> = Mutex::new(());

/// The tiny disk guest's stamp in sector `n` of `image` ("fennec-...", up to its newline),
/// or "" when the sector holds none (the template's pattern).
fn sector_text(image: &std::path::Path, n: usize) -> String {
    let bytes = std::fs::read(image).unwrap();
    let s = &bytes[n * SECTOR..(n + 1) * SECTOR];
    let end = s
        .iter()
        .position(|&b| b == b'\n' || b == 0)
        .unwrap_or(s.len());
    let text = String::from_utf8_lossy(&s[..end]).into_owned();
    match text.starts_with("fennec-") {
        true => text,
        false => String::new(),
    }
}

/// The image of `disk` once the restoring fennec has cloned it.
fn cloned(store: &TestStore, vm: &Running, disk: &str) -> std::path::PathBuf {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !vm.stderr.lock().unwrap().contains("Restored a VM") {
        assert!(
            std::time::Instant::now() < deadline,
            "no restore\n{}",
            vm.context()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    store.path(disk)
}

fn type_byte(vm: &mut Running) {
    vm.child.stdin.as_mut().unwrap().write_all(b"x").unwrap();
}

fn checkpoint_and_copies(backend: Backend) {
    let store = TestStore::new(backend);
    store.import("base");
    let kernel = common::tiny("pvh.elf");
    let mut vm = Running::spawn(
        &[
            "run",
            "--api-socket",
            "api.sock",
            "--disk",
            &store.disk_arg("base", "orig"),
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "console=ttyS0 tiny.mode=disk disk.stamp=first disk.wait",
        ],
        &[],
    );
    vm.wait_for_console("TINY disk waiting");
    let answer = common::ctl(&vm.socket(), &["checkpoint", "cp1"]);
    assert_eq!(answer["checkpoint"], "cp1", "{answer}");
    // The original goes on after its checkpoint and writes sector 2.
    type_byte(&mut vm);
    vm.wait_for_console("TINY disk done");
    vm.wait(TIMEOUT).expect("the original ends");
    let original = store.path("orig/disk0");
    assert_eq!(sector_text(&original, 2), "fennec-later:first");

    // A copy goes on from the checkpoint on its own clone: it writes sector 2 there.
    let copy = |name: &str| {
        Running::spawn(
            &[
                "run",
                "--from-checkpoint",
                "cp1",
                "--vm",
                name,
                "--store",
                &store.spec,
            ],
            &[],
        )
    };
    let mut first = copy("copy1");
    let image1 = cloned(&store, &first, "copy1/disk0");
    assert_eq!(
        sector_text(&image1, 1),
        "fennec-stamp:first",
        "the checkpoint's disk"
    );
    assert_eq!(sector_text(&image1, 2), "", "as it was at the checkpoint");
    type_byte(&mut first);
    first.wait_for_console("TINY disk done");
    let status = first.wait(TIMEOUT).expect("the copy ends");
    assert!(status.success(), "{status}\n{}", first.context());
    assert!(
        !first.stdout.lock().unwrap().contains("TINY disk s1="),
        "restored, not booted"
    );
    assert_eq!(sector_text(&image1, 2), "fennec-later:first");

    // Another copy has its own disk, untouched by the first copy's and the original's writes.
    let mut second = copy("copy2");
    let image2 = cloned(&store, &second, "copy2/disk0");
    assert_eq!(sector_text(&image2, 2), "", "copies are independent");
    // SAFETY: kill on our own child's PID.
    unsafe { libc::kill(second.child.id() as i32, libc::SIGTERM) };
    second.wait(TIMEOUT);

    // A name taken, or no such checkpoint: clear errors, no VM.
    let taken = copy("copy1");
    let mut taken = taken;
    let status = taken.wait(TIMEOUT).expect("refused at once");
    assert_eq!(status.code(), Some(1));
    assert!(
        taken.stderr.lock().unwrap().contains("exists"),
        "{}",
        taken.context()
    );
    let mut missing = Running::spawn(
        &[
            "run",
            "--from-checkpoint",
            "nope",
            "--vm",
            "x",
            "--store",
            &store.spec,
        ],
        &[],
    );
    assert_eq!(missing.wait(TIMEOUT).and_then(|s| s.code()), Some(1));
    assert!(
        missing.stderr.lock().unwrap().contains("nope"),
        "{}",
        missing.context()
    );
}

#[test]
fn checkpoint_copies_in_a_directory_store() {
    checkpoint_and_copies(Backend::Dir);
}

#[test]
fn checkpoint_copies_in_a_zfs_store() {
    let _one_at_a_time = ZFS.lock().unwrap_or_else(|e| e.into_inner());
    checkpoint_and_copies(Backend::Zfs);
}

#[test]
fn checkpoint_refuses_plain_and_ephemeral_drives() {
    let store = TestStore::new(Backend::Dir);
    store.import("base");
    let plain = store.dir.path().join("plain.img");
    std::fs::write(&plain, vec![0u8; 1 << 20]).unwrap();
    let kernel = common::tiny("pvh.elf");
    for disk in [
        format!("path={}", plain.display()),
        format!("template=base,store={}", store.spec),
    ] {
        let mut vm = Running::spawn(
            &[
                "run",
                "--api-socket",
                "api.sock",
                "--disk",
                &disk,
                "--kernel",
                kernel.to_str().unwrap(),
                "--cmdline",
                "console=ttyS0 tiny.mode=echo",
            ],
            &[],
        );
        vm.wait_for_console("TINY ready");
        let (status, answer) = common::api_call(
            &vm.socket(),
            "PUT",
            "/checkpoint",
            r#"{"checkpoint_name": "c"}"#,
        );
        assert_eq!(status, 400, "{disk}: {answer}");
        let why = answer["fault_message"].as_str().unwrap();
        assert!(why.contains("vm_name"), "{why}");
        common::api_call(
            &vm.socket(),
            "PUT",
            "/actions",
            r#"{"action_type": "Stop"}"#,
        );
        vm.wait(TIMEOUT);
    }
}
