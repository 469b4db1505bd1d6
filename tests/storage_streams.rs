//! Hostile `zfs send` streams given to `fennec image receive`: refused before ZFS applies
//! anything of theirs, and nothing of them is left (zfs-fuse pools on file vdevs).

mod common;

use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use common::store::{Backend, TestStore};

/// One test of this file at a time: zfs-fuse has left a `zfs unmount` in one pool and a `zfs
/// create` (a mount) in another, at once, waiting for each other for good.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `zfs send ARGS` into a file in the store's scratch directory; its path.
fn send(store: &TestStore, args: &[&str], name: &str) -> String {
    let stream = store.dir.path().join(name);
    let out = Command::new("zfs")
        .arg("send")
        .args(args)
        .stdout(std::fs::File::create(&stream).unwrap())
        .status()
        .unwrap();
    assert!(out.success(), "zfs send {args:?} failed");
    stream.to_str().unwrap().to_string()
}

/// A ZFS stream whose disk.img is a link to something of the receiving host's (here a file
/// outside the store; a device or a secret would do as well) is refused and leaves nothing.
#[test]
fn test_zfs_received_disk_image_that_is_a_link_is_refused() {
    let _serial = one_at_a_time();
    let store = TestStore::new(Backend::Zfs);
    store.import("base");
    let pool = store.pool.as_ref().unwrap();
    let evil = format!("{}/evil", pool.name);
    common::zfs::must("zfs", &["create", &evil]);
    let target = store.dir.path().join("host-secret");
    std::fs::write(&target, b"host data").unwrap();
    std::os::unix::fs::symlink(&target, pool.mountpoint().join("evil/disk.img")).unwrap();
    common::zfs::must("zfs", &["snapshot", &format!("{evil}@s")]);
    let stream = send(&store, &[&format!("{evil}@s")], "evil.stream");
    store.image_refused(
        &["receive", "vm9/disk0", "-i", &stream],
        "not a fennec disk",
    );
}

/// A stream that carries its dataset's properties (`zfs send -p`), here a mountpoint over a
/// directory of the host's, is refused before `zfs receive` runs: nothing is mounted there and
/// no dataset is made.
#[test]
fn test_zfs_stream_with_properties_is_refused_before_it_can_mount_itself() {
    let _serial = one_at_a_time();
    let store = TestStore::new(Backend::Zfs);
    store.import("base");
    let pool = store.pool.as_ref().unwrap();
    let evil = format!("{}/evil", pool.name);
    let target = store.dir.path().join("host-dir");
    std::fs::create_dir(&target).unwrap();
    // A dataset whose own mountpoint is a directory of the host's, sent with its properties.
    let mountpoint = format!("mountpoint={}", target.display());
    common::zfs::must("zfs", &["create", "-o", &mountpoint, &evil]);
    std::fs::write(target.join("disk.img"), vec![0u8; 4096]).unwrap();
    common::zfs::must("zfs", &["snapshot", &format!("{evil}@s")]);
    common::zfs::must("zfs", &["unmount", &evil]);
    let stream = send(&store, &["-p", &format!("{evil}@s")], "props.stream");
    store.image_refused(
        &["receive", "vm9/disk0", "-i", &stream],
        "carries dataset properties",
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(target.to_str().unwrap()),
        "something is mounted on the host's directory:\n{mounts}"
    );
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    // The same dataset sent plainly is taken.
    common::zfs::must("zfs", &["inherit", "mountpoint", &evil]);
    let plain = send(&store, &[&format!("{evil}@s")], "plain.stream");
    store.image_ok(&["receive", "vm9/disk0", "-i", &plain]);
}

/// A plain stream of a dataset that holds a setuid program and a device node is taken, and
/// what it made on this host cannot use either: setuid, devices and exec are off on the
/// received disk (and on the VM's dataset it inherits from, which it is mounted under).
#[test]
fn test_zfs_received_disk_cannot_run_setuid_programs_or_open_device_nodes() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = one_at_a_time();
    let store = TestStore::new(Backend::Zfs);
    store.import("base");
    let pool = store.pool.as_ref().unwrap();
    let source = format!("{}/sender", pool.name);
    common::zfs::must("zfs", &["create", &source]);
    let dir = pool.mountpoint().join("sender");
    std::fs::write(dir.join("disk.img"), vec![0u8; 4096]).unwrap();
    let program = dir.join("su");
    std::fs::copy("/bin/true", &program).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let node = dir.join("mem");
    let made = Command::new("mknod")
        .args([node.to_str().unwrap(), "c", "1", "1"])
        .status()
        .unwrap();
    assert!(made.success(), "mknod (coreutils) failed");
    common::zfs::must("zfs", &["snapshot", &format!("{source}@s")]);
    let stream = send(&store, &[&format!("{source}@s")], "suid.stream");
    store.image_ok(&["receive", "vm9/disk0", "-i", &stream]);
    let listing = common::zfs::must("zfs", &["list", "-H", "-o", "name", "-r", &pool.name]);
    let received = listing
        .lines()
        .find(|l| l.ends_with("/vm9/disk0"))
        .unwrap_or_else(|| panic!("no received disk in:\n{listing}"));
    for property in ["setuid", "devices", "exec"] {
        let value = common::zfs::must("zfs", &["get", "-H", "-o", "value", property, received]);
        assert_eq!(value.trim(), "off", "{property} of {received}");
    }
}
