//! ZFS for tests: the daemon (zfs-fuse here, started if none runs), and throwaway pools on
//! file vdevs, destroyed on drop, also when a test fails.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The longest one `zfs` or `zpool` command may take; the slowest here take a few seconds.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// Runs `program` with `args` to its end, or kills it after [`COMMAND_LIMIT`] and fails with
/// `TimedOut`: a ZFS service that stopped answering fails the test with a message instead of
/// hanging the suite.
fn run(program: &str, args: &[&str]) -> std::io::Result<Output> {
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    match super::output_within(&mut child, COMMAND_LIMIT) {
        (Some(status), stdout, stderr) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        (None, _, _) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "`{program} {}` did not finish in {COMMAND_LIMIT:?} and was killed: the ZFS \
                 service stopped answering (with zfs-fuse: its PID is in {PID_FILE}; kill -9 it, \
                 the next test starts a new one)",
                args.join(" ")
            ),
        )),
    }
}

/// `zfs ARGS` (or `zpool`), which must succeed; its stdout.
pub fn must(program: &str, args: &[&str]) -> String {
    let out = run(program, args).unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where the zfs-fuse the tests start keeps its PID.
const PID_FILE: &str = "/run/zfs-fuse.pid";

/// Removes `path` when the process it names is gone (a daemon that was killed, a machine that
/// crashed): zfs-fuse refuses to start, silently, while its PID file exists.
fn remove_stale_pid_file(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let alive = text.trim().parse::<i32>().is_ok_and(|pid| {
        // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
        pid > 0 && unsafe { libc::kill(pid, 0) } == 0
    });
    if !alive {
        let _ = std::fs::remove_file(path);
    }
}

/// Makes sure `zfs` works: the commands are installed and the ZFS service answers. Where the
/// commands come from zfs-fuse and its daemon is not running, starts it (once, under a lock,
/// however many tests ask at the same time).
pub fn require_zfs() {
    match run("zfs", &["list", "-H", "-o", "name"]) {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => panic!("{e}"),
        Err(e) => panic!(
            "cannot run zfs ({e}): these tests need ZFS. On Debian: apt-get install zfs-fuse \
             (or OpenZFS: zfsutils-linux)"
        ),
        Ok(out) if out.status.success() => return,
        Ok(_) => {}
    }
    let lock = std::fs::File::create("/tmp/fennec-tests-zfs-fuse.lock").unwrap();
    // SAFETY: flock on a descriptor this function owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if run("zfs", &["list", "-H", "-o", "name"]).is_ok_and(|o| o.status.success()) {
        return;
    }
    remove_stale_pid_file(Path::new(PID_FILE));
    // What it says goes to a file, not a pipe: the daemon it leaves may hold it open.
    let said = tempfile::tempfile().unwrap();
    let status = Command::new("zfs-fuse")
        .args(["--no-kstat-mount", "-p", PID_FILE])
        .stdin(std::process::Stdio::null())
        .stdout(said.try_clone().unwrap())
        .stderr(said.try_clone().unwrap())
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "the ZFS service is not running and zfs-fuse cannot be started ({e}): \
                 apt-get install zfs-fuse, or start OpenZFS (modprobe zfs)"
            )
        });
    if !status.success() {
        use std::io::{Read, Seek};
        let mut text = String::new();
        let mut said = said;
        let _ = said.rewind().and_then(|()| said.read_to_string(&mut text));
        panic!("zfs-fuse failed to start ({status}): {text}");
    }
    for _ in 0..100 {
        if run("zfs", &["list", "-H", "-o", "name"]).is_ok_and(|o| o.status.success()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("zfs-fuse started but `zfs list` still fails");
}

/// A pool on a sparse file vdev in a temp dir, with the dataset `POOL/fennec` for a store.
pub struct TestPool {
    pub name: String,
    dir: tempfile::TempDir,
}

impl TestPool {
    /// A pool of `mib` MiB (zfs-fuse wants at least 64).
    pub fn new(mib: u64) -> Self {
        require_zfs();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "fennectest{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::tempdir().unwrap();
        let vdev = dir.path().join("vdev");
        std::fs::File::create(&vdev)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let mnt = dir.path().join("mnt");
        // One pool comes up at a time: two `zpool create`s at once, each followed by a `zfs
        // create` in its pool, once left zfs-fuse's two new mounts unanswered for good (both
        // `zfs create`s waiting in the kernel for the FUSE daemon, the daemon's threads all
        // idle). Production's OpenZFS has no such daemon; here the tests go around it.
        static CREATING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = CREATING.lock().unwrap_or_else(|e| e.into_inner());
        must(
            "zpool",
            &[
                "create",
                "-m",
                mnt.to_str().unwrap(),
                &name,
                vdev.to_str().unwrap(),
            ],
        );
        let pool = TestPool { name, dir };
        must("zfs", &["create", &pool.parent()]);
        pool
    }

    /// The store's parent dataset.
    pub fn parent(&self) -> String {
        format!("{}/fennec", self.name)
    }

    /// The store spec for fennec.
    pub fn spec(&self) -> String {
        format!("zfs:{}", self.parent())
    }

    /// `zfs list -t all` of the whole pool, with sizes left out (they move with metadata).
    pub fn listing(&self) -> String {
        must(
            "zfs",
            &[
                "list",
                "-H",
                "-t",
                "all",
                "-o",
                "name,type,origin",
                "-r",
                &self.name,
            ],
        )
    }

    /// Where the pool is mounted.
    pub fn mountpoint(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// The temp dir holding the vdev.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        // Retry while zfs-fuse is still unmounting something (it answers "busy" meanwhile).
        for _ in 0..50 {
            match run("zpool", &["destroy", "-f", &self.name]) {
                Ok(out) if out.status.success() => return,
                Ok(out) if String::from_utf8_lossy(&out.stderr).contains("no such pool") => return,
                _ => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
        eprintln!("could not destroy test pool {}", self.name);
    }
}
