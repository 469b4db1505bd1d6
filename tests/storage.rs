//! Image stores, end to end: `fennec image` and `fennec run --disk template=...` against a
//! ZFS pool on a file vdev (zfs-fuse here) and against a plain directory, with tiny guests on
//! `/dev/kvm` that read and stamp sectors through virtio-blk (`tiny.mode=disk`).
//!
//! Every test runs once per backend. Bad input must fail with a clear message and leave the
//! store exactly as it was (`zfs list -t all`, or the directory's files).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::store::{walk, Backend, TestStore, SECTOR, TEMPLATE_LEN};
use common::zfs::TestPool;
use common::*;

/// Boots the tiny disk guest on `disk` (a `--disk` argument) with extra command-line words.
fn run_disk_guest(disk: &str, extra: &str) -> Run {
    let kernel = tiny("pvh.elf");
    let run = fennec(&[
        "-v",
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        &format!("console=ttyS0 tiny.mode=disk {extra}"),
        "--disk",
        disk,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.context());
    assert!(run.stdout.contains("TINY disk done"), "{}", run.context());
    run
}

/// The text the guest read from sector 1 and 2 at boot.
fn read_back(run: &Run) -> (String, String) {
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("TINY disk s1="))
        .unwrap_or_else(|| panic!("no TINY disk line\n{}", run.context()));
    let s1 = line["TINY disk s1=".len()..].split(" s2=").next().unwrap();
    let s2 = line
        .split(" s2=")
        .nth(1)
        .unwrap()
        .split(" fnv=")
        .next()
        .unwrap();
    (s1.to_string(), s2.to_string())
}

fn stamped(word: &str, prefix: &str) -> Vec<u8> {
    let mut s = format!("{prefix}{word}\n").into_bytes();
    s.resize(SECTOR, b'.');
    s
}

fn sha(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a(bytes))
}

// ---------------------------------------------------------------------------------------

fn three_clones(backend: Backend) {
    let store = TestStore::new(backend);
    let template = store.import("base");
    let template_path = match &store.pool {
        Some(pool) => pool.mountpoint().join("fennec/templates/base/disk.img"),
        None => store.dir.path().join("store/templates/base/disk.img"),
    };
    for vm in ["vm1", "vm2", "vm3"] {
        store.image_ok(&["clone", "base", &format!("{vm}/disk0")]);
    }
    let listing = store.image_ok(&["list", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&listing).unwrap();
    for vm in ["vm1", "vm2", "vm3"] {
        let e = entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == format!("{vm}/disk0"))
            .unwrap_or_else(|| panic!("{vm}/disk0 not listed: {listing}"));
        assert_eq!(e["origin"], "base", "{listing}");
        assert_eq!(e["size"], TEMPLATE_LEN, "{listing}");
    }

    // All three at once, each stamping its own name (the existing disk is reused: vm=).
    let runs: Vec<_> = ["vm1", "vm2", "vm3"]
        .into_iter()
        .map(|vm| {
            let disk = store.disk_arg("base", vm);
            std::thread::spawn(move || run_disk_guest(&disk, &format!("disk.stamp={vm}")))
        })
        .collect();
    for run in runs {
        let run = run.join().unwrap();
        assert!(
            run.stdout.contains("TINY disk wrote s1 ok"),
            "{}",
            run.context()
        );
    }

    for vm in ["vm1", "vm2", "vm3"] {
        let image = std::fs::read(store.path(&format!("{vm}/disk0"))).unwrap();
        let mut expected = template.clone();
        expected[SECTOR..2 * SECTOR].copy_from_slice(&stamped(vm, "fennec-stamp:"));
        assert_eq!(
            sha(&image),
            sha(&expected),
            "{vm} does not hold its own write only"
        );
    }
    assert_eq!(
        sha(&std::fs::read(&template_path).unwrap()),
        sha(&template),
        "the template changed"
    );
    // A fresh ephemeral clone still sees the template, and is gone after the run.
    let before = store.state();
    let run = run_disk_guest(&format!("template=base,store={}", store.spec), "");
    assert!(
        run.stderr.contains("Destroyed ephemeral disk"),
        "{}",
        run.context()
    );
    let fnv = format!("fnv={:#018x} read=ok", fnv1a(&template[..8 * SECTOR]));
    assert!(
        run.stdout.contains(&fnv),
        "not the template's bytes\n{}",
        run.context()
    );
    assert_eq!(store.state(), before, "the ephemeral clone was left behind");
}

#[test]
fn test_zfs_three_clones_run_at_once_and_keep_their_own_writes() {
    three_clones(Backend::Zfs);
}

#[test]
fn test_dir_three_clones_run_at_once_and_keep_their_own_writes() {
    three_clones(Backend::Dir);
}

// ---------------------------------------------------------------------------------------

/// A fennec serving the control socket, its console captured, its stdin held open. Every
/// `zfs` it runs goes through a wrapper that logs the PID of the process that ran it.
struct LiveVm {
    child: std::process::Child,
    console: Arc<Mutex<String>>,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl LiveVm {
    fn start(disk: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let kernel = tiny("pvh.elf");
        let spy = dir.path().join("bin");
        std::fs::create_dir(&spy).unwrap();
        let real = ["/usr/sbin/zfs", "/sbin/zfs", "/usr/bin/zfs"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("/usr/sbin/zfs");
        let log = dir.path().join("zfs-callers");
        std::fs::write(
            spy.join("zfs"),
            format!(
                "#!/bin/sh\necho \"$PPID $1\" >> {}\n\
                 [ \"$1\" = snapshot ] && [ -e {} ] && sleep 2\nexec {real} \"$@\"\n",
                log.display(),
                dir.path().join("slow-snapshots").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            spy.join("zfs"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let path = format!(
            "{}:{}",
            spy.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_fennec"))
            .env("PATH", path)
            .args(["-v", "run", "--api-socket"])
            .arg(&socket)
            .arg("--kernel")
            .arg(&kernel)
            .args([
                "--cmdline",
                &format!("console=ttyS0 tiny.mode=disk {extra}"),
            ])
            .args(["--disk", disk])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let console = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let sink = console.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut c = sink.lock().unwrap();
                c.push_str(&line);
                c.push('\n');
            }
        });
        LiveVm {
            child,
            console,
            socket,
            dir,
        }
    }

    /// The processes that ran `zfs SUBCOMMAND`, by PID.
    fn zfs_callers(&self, subcommand: &str) -> Vec<u32> {
        let log = std::fs::read_to_string(self.dir.path().join("zfs-callers")).unwrap_or_default();
        log.lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, cmd)| *cmd == subcommand)
            .filter_map(|(pid, _)| pid.parse().ok())
            .collect()
    }

    fn wait_for(&self, marker: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.console.lock().unwrap().contains(marker) {
            assert!(
                Instant::now() < deadline,
                "no {marker:?} on the console:\n{}",
                self.console.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Sends a byte to the guest and waits for fennec to exit 0.
    fn release(mut self) -> String {
        self.child.stdin.as_mut().unwrap().write_all(b"x").unwrap();
        let status = wait_with_timeout(&mut self.child, TIMEOUT);
        let console = self.console.lock().unwrap().clone();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "fennec did not exit cleanly:\n{console}"
        );
        console
    }
}

impl Drop for LiveVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn live_snapshot_then_rollback(backend: Backend) {
    let store = TestStore::new(backend);
    let template = store.import("base");
    let vm = LiveVm::start(
        &store.disk_arg("base", "snapvm"),
        "disk.stamp=first disk.wait",
    );
    vm.wait_for("TINY disk waiting");

    // While the VM has the disk open: no destroy, no rollback, and the template has a user.
    store.image_refused(&["destroy", "snapvm/disk0"], "is open by a running VM");
    store.image_refused(&["destroy", "base"], "is in use by snapvm/disk0");

    if backend == Backend::Zfs {
        // A snapshot that takes seconds (zfs made slow) blocks no other request.
        std::fs::write(vm.dir.path().join("slow-snapshots"), "").unwrap();
    }
    let socket = vm.socket.clone();
    let snapshot = std::thread::spawn(move || ctl(&socket, &["snapshot", "disk0", "s1"]));
    if backend == Backend::Zfs {
        std::thread::sleep(std::time::Duration::from_millis(700));
        let asked = Instant::now();
        let (code, status) = api_call(&vm.socket, "GET", "/status", "");
        let took = asked.elapsed();
        assert_eq!(code, 200, "{status}");
        assert_eq!(
            status["state"], "Paused",
            "the snapshot pauses the VM: {status}"
        );
        assert!(
            took < std::time::Duration::from_secs(1),
            "a status during a snapshot took {took:?}"
        );
    }
    let answer = snapshot.join().unwrap();
    assert_eq!(answer["snapshot"], "snapvm/disk0@s1", "{answer}");
    if backend == Backend::Zfs {
        let paused = answer["paused_us"].as_u64().unwrap_or(0);
        assert!(
            paused >= 2_000_000,
            "the slow zfs did not slow the snapshot: {answer}"
        );
    }
    if backend == Backend::Zfs {
        // The running VMM executed no program: its storage helper ran `zfs snapshot`.
        let callers = vm.zfs_callers("snapshot");
        assert_eq!(callers.len(), 1, "{callers:?}");
        assert_ne!(callers[0], vm.child.id(), "the VMM process ran zfs itself");
        let status = std::fs::read_to_string(format!("/proc/{}/status", callers[0])).unwrap();
        let parent = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(str::trim);
        assert_eq!(parent, Some(vm.child.id().to_string().as_str()), "{status}");
    }
    store.image_refused(&["rollback", "snapvm/disk0@s1"], "is open by a running VM");

    let console = vm.release();
    assert!(console.contains("TINY disk wrote s2 ok"), "{console}");
    let image = std::fs::read(store.path("snapvm/disk0")).unwrap();
    assert_eq!(
        &image[2 * SECTOR..3 * SECTOR],
        stamped("first", "fennec-later:")
    );

    store.image_ok(&["rollback", "snapvm/disk0@s1"]);
    let run = run_disk_guest(&store.disk_arg("base", "snapvm"), "");
    let (s1, _) = read_back(&run);
    assert_eq!(
        s1, "fennec-stamp:first",
        "the snapshot lost the write before it"
    );
    assert!(!run.stdout.contains("fennec-later"), "{}", run.context());
    let image = std::fs::read(store.path("snapvm/disk0")).unwrap();
    assert_eq!(
        &image[2 * SECTOR..3 * SECTOR],
        &template[2 * SECTOR..3 * SECTOR],
        "the write after the snapshot survived the rollback"
    );
}

#[test]
fn test_zfs_live_snapshot_then_rollback_drops_the_later_write() {
    live_snapshot_then_rollback(Backend::Zfs);
}

#[test]
fn test_dir_live_snapshot_then_rollback_drops_the_later_write() {
    live_snapshot_then_rollback(Backend::Dir);
}

// ---------------------------------------------------------------------------------------

fn send_receive(backend: Backend) {
    let store = TestStore::new(backend);
    store.import("base");
    run_disk_guest(&store.disk_arg("base", "src"), "disk.stamp=moved");
    store.image_ok(&["snapshot", "src/disk0@s1"]);
    let stream = store.dir.path().join("disk.stream");
    for (source, dest) in [("src/disk0", "dst"), ("src/disk0@s1", "dst2")] {
        store.image_ok(&["send", source, "-o", stream.to_str().unwrap()]);
        store.image_ok(&[
            "receive",
            &format!("{dest}/disk0"),
            "-i",
            stream.to_str().unwrap(),
        ]);
        let run = run_disk_guest(&store.disk_arg("base", dest), "");
        assert_eq!(read_back(&run).0, "fennec-stamp:moved", "{source}");
    }
    // The same bytes through stdout and stdin, too.
    let mut send = Command::new(env!("CARGO_BIN_EXE_fennec"))
        .args(["image", "--store", &store.spec, "send", "src/disk0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let received = Command::new(env!("CARGO_BIN_EXE_fennec"))
        .args(["image", "--store", &store.spec, "receive", "dst3/disk0"])
        .stdin(send.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(send.wait().unwrap().success(), "fennec image send failed");
    assert!(
        received.status.success(),
        "{}",
        String::from_utf8_lossy(&received.stderr)
    );
    let original = sha(&std::fs::read(store.path("src/disk0")).unwrap());
    for dest in ["dst", "dst2", "dst3"] {
        let copy = sha(&std::fs::read(store.path(&format!("{dest}/disk0"))).unwrap());
        assert_eq!(copy, original, "{dest} differs from what was sent");
    }
}

#[test]
fn test_zfs_send_then_receive_gives_the_same_disk() {
    send_receive(Backend::Zfs);
}

#[test]
fn test_dir_send_then_receive_gives_the_same_disk() {
    send_receive(Backend::Dir);
}

// ---------------------------------------------------------------------------------------

fn bad_input(backend: Backend) {
    let store = TestStore::new(backend);
    store.import("base");
    store.image_ok(&["clone", "base", "vm1/disk0"]);
    let file = store.dir.path().join("base.img");
    let file = file.to_str().unwrap();
    for name in ["..", "a/b", "-rf", "a@b", ".hidden", "has space", ""] {
        store.image_refused(&["import", "--", name, file], "Invalid template");
    }
    for disk in ["../x", "vm/../../x", "vm/-d", "a/b/c", "justone", "vm/d@s"] {
        store.image_refused(&["clone", "base", disk], "Invalid");
        store.image_refused(&["receive", disk, "-i", file], "Invalid");
    }
    for snap in ["vm1/disk0@..", "vm1/disk0@a/b", "vm1/disk0@-x", "vm1/disk0"] {
        store.image_refused(&["snapshot", snap], "Invalid");
    }
    store.image_refused(&["import", "base", file], "already exists");
    store.image_refused(&["import", "other", "/nonexistent.img"], "nonexistent.img");
    store.image_refused(&["clone", "nope", "vm2/disk0"], "No template \"nope\"");
    store.image_refused(&["clone", "base", "vm1/disk0"], "already exists");
    store.image_refused(&["snapshot", "vm9/disk0@s"], "No disk \"vm9/disk0\"");
    store.image_refused(&["rollback", "vm1/disk0@never"], "No snapshot");
    store.image_refused(&["destroy", "base"], "is in use by vm1/disk0");
    store.image_refused(&["destroy", "vm1/disk0@never"], "No snapshot");
    let garbage = store.dir.path().join("garbage");
    std::fs::write(&garbage, b"").unwrap();
    store.image_refused(
        &["receive", "vm5/disk0", "-i", garbage.to_str().unwrap()],
        match backend {
            Backend::Zfs => "0 bytes is not a zfs send stream",
            Backend::Dir => "not a fennec disk",
        },
    );
    if let Backend::Zfs = backend {
        std::fs::write(&garbage, pattern(4096, 3)).unwrap();
        store.image_refused(
            &["receive", "vm5/disk0", "-i", garbage.to_str().unwrap()],
            "not a zfs send stream (no stream magic)",
        );
    }
    // A drive naming a bad template is refused before anything is made.
    let before = store.state();
    let kernel = tiny("pvh.elf");
    let run = fennec(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--disk",
        &format!("template=nope,store={}", store.spec),
    ]);
    assert_eq!(run.code, Some(1), "{}", run.context());
    assert!(
        run.stderr.contains("No template \"nope\""),
        "{}",
        run.context()
    );
    assert_eq!(store.state(), before);

    // Disk full: an image bigger than the space there is. Nothing of it stays.
    let big = store.dir.path().join("big.img");
    let (small, _tmpfs) = match backend {
        Backend::Zfs => {
            std::fs::write(&big, pattern(96 << 20, 9)).unwrap();
            let pool = TestPool::new(64);
            let small = TestStore {
                spec: pool.spec(),
                pool: Some(pool),
                dir: tempfile::tempdir().unwrap(),
            };
            (small, None)
        }
        Backend::Dir => {
            std::fs::write(&big, pattern(16 << 20, 9)).unwrap();
            let tmpfs = Tmpfs::new(8);
            let small = TestStore {
                spec: format!("dir:{}", tmpfs.0.path().display()),
                pool: None,
                dir: tempfile::tempdir().unwrap(),
            };
            (small, Some(tmpfs))
        }
    };
    small.image_refused(
        &["import", "big", big.to_str().unwrap()],
        "No space left on device",
    );
    assert!(!small.image_ok(&["list"]).contains("big"));
}

/// A tmpfs of a few MiB, unmounted on drop, for running out of space.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(mib: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "fennec-test"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn test_zfs_bad_input_is_refused_and_changes_nothing() {
    bad_input(Backend::Zfs);
}

#[test]
fn test_dir_bad_input_is_refused_and_changes_nothing() {
    bad_input(Backend::Dir);
}

#[test]
fn test_zfs_missing_pool_dataset_commands_and_daemon_are_explained() {
    let pool = TestPool::new(64);
    let image = |store: &str, path: Option<&Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fennec"));
        c.args(["image", "--store", store, "list"]);
        if let Some(p) = path {
            c.env("PATH", p);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = image("zfs:nosuchpool/fennec", None);
    assert!(e.contains("ZFS pool \"nosuchpool\" does not exist"), "{e}");
    let e = image(&format!("zfs:{}/nope", pool.name), None);
    assert!(
        e.contains(&format!("create it with `zfs create {}/nope`", pool.name)),
        "{e}"
    );
    let e = image("zfs:bad/../name", None);
    assert!(e.contains("Invalid dataset"), "{e}");

    // No zfs command at all.
    let empty = tempfile::tempdir().unwrap();
    let e = image(&pool.spec(), Some(empty.path()));
    assert!(
        e.contains("Cannot run `zpool") && e.contains("zfs-fuse"),
        "{e}"
    );

    // The commands are there but the service is not: what zfs-fuse's tools print then.
    let fake = tempfile::tempdir().unwrap();
    for tool in ["zfs", "zpool"] {
        let path = fake.path().join(tool);
        std::fs::write(
            &path,
            "#!/bin/sh\necho 'connect: No such file or directory' >&2\n\
             echo 'Please make sure that the zfs-fuse daemon is running.' >&2\n\
             echo 'internal error: failed to initialize ZFS library' >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let e = image(&pool.spec(), Some(fake.path()));
    assert!(e.contains("Is the ZFS service running?"), "{e}");
}

/// Everything the directory store writes is root's alone: images 0600 (templates 0400),
/// directories 0700, whichever command made them.
#[test]
fn test_dir_store_keeps_images_and_directories_private() {
    use std::os::unix::fs::PermissionsExt;
    let store = TestStore::new(Backend::Dir);
    store.import("base");
    store.image_ok(&["clone", "base", "vm1/disk0"]);
    store.image_ok(&["snapshot", "vm1/disk0@s1"]);
    store.image_ok(&["rollback", "vm1/disk0@s1"]);
    let stream = store.dir.path().join("base.img");
    store.image_ok(&["receive", "vm2/disk0", "-i", stream.to_str().unwrap()]);
    let mut lines = Vec::new();
    let root = PathBuf::from(store.spec.strip_prefix("dir:").unwrap());
    walk(&root, &mut lines);
    let mut checked = 0;
    for line in &lines {
        let path = PathBuf::from(line.split(' ').next().unwrap().trim_end_matches('/'));
        let meta = std::fs::metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let name = path.file_name().unwrap().to_str().unwrap();
        let want = if meta.is_dir() {
            0o700
        } else if path.starts_with(root.join("templates")) && name == "disk.img" {
            0o400
        } else if name.ends_with(".img") {
            0o600
        } else {
            continue;
        };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
        checked += 1;
    }
    // templates/, base/, its image; vms/, vm1/, disk0/, its image, snapshots/, s1.img; vm2/,
    // disk0/, its image.
    assert!(
        checked >= 12,
        "only {checked} checked:\n{}",
        lines.join("\n")
    );
}
