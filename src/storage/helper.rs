//! Storage commands for a running VM, in a process of their own.
//!
//! Once a VM runs, the VMM process executes no program: its threads' syscall filters deny
//! `execve` outright. The storage operations of a running VM, a live snapshot of a drive cloned
//! from a template (`zfs snapshot` on a ZFS store) and destroying the ephemeral clones once it
//! ended (`zfs destroy`), go to a [`StorageHelper`]: a child process forked at start-up, while
//! the VMM is still single-threaded, that answers one request per line on a socket pair and
//! exits when the VMM goes away.
//!
//! The helper runs unconfined (it executes `zfs`), so what it does for the VMM is pinned
//! before any guest runs: the VMM names the VM's disks once ([`StorageHelper::pin`], before
//! the guest's first instruction, while nothing a guest did can have reached it), and from then
//! on the helper snapshots only those disks and destroys only the ephemeral ones among them. A
//! VMM a guest took over can ask for nothing else, and cannot pin again.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{DiskRef, SnapRef, Target};

/// A request to the helper, in a store given as `zfs:POOL/DATASET` or `dir:/PATH`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    /// The VM's disks: the only ones later requests may name. Taken once.
    Pin { disks: Vec<PinnedDisk> },
    /// Take snapshot `VM/DISK@NAME`.
    Snapshot { store: String, snapshot: String },
    /// Destroy disk `VM/DISK` with its snapshots.
    Destroy { store: String, disk: String },
}

/// One of the VM's disks, as the helper is told before the guest runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedDisk {
    /// Its store, as a spec.
    pub store: String,
    /// The disk, `VM/DISK`.
    pub disk: String,
    /// Whether it is destroyed when the VM ends.
    pub ephemeral: bool,
}

/// The helper's answer: `None` when it was done, else why not.
#[derive(Serialize, Deserialize)]
struct Answer {
    error: Option<String>,
}

/// The VMM's side of the storage helper process.
#[derive(Debug)]
pub struct StorageHelper {
    stream: Mutex<(UnixStream, BufReader<UnixStream>)>,
    pid: libc::pid_t,
}

impl StorageHelper {
    /// Forks the helper. Call it while the process has one thread: a forked child has only the
    /// thread that forked, and locks other threads held stay locked in it.
    pub fn start() -> std::io::Result<StorageHelper> {
        let (ours, theirs) = UnixStream::pair()?;
        // SAFETY: fork has no memory-safety preconditions; the child below only runs code that
        // does not depend on other threads (the caller has none).
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(std::io::Error::last_os_error()),
            0 => {
                drop(ours);
                // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                serve(theirs);
                // SAFETY: _exit ends the child without running the parent's atexit handlers
                // or flushing its inherited stdio buffers twice.
                unsafe { libc::_exit(0) }
            }
            pid => {
                drop(theirs);
                let reader = BufReader::new(ours.try_clone()?);
                log::debug!("Storage helper started as process {pid}");
                Ok(StorageHelper {
                    stream: Mutex::new((ours, reader)),
                    pid,
                })
            }
        }
    }

    /// Names the VM's disks, the only ones the helper acts on from now on. Call it once,
    /// before the guest runs; the helper refuses a second call.
    pub fn pin(&self, disks: Vec<PinnedDisk>) -> Result<(), String> {
        self.ask(&Request::Pin { disks })
    }

    /// Takes snapshot `snap` in store `store` (a spec) in the helper process.
    pub fn snapshot(&self, store: &str, snap: &SnapRef) -> Result<(), String> {
        self.ask(&Request::Snapshot {
            store: store.to_string(),
            snapshot: snap.to_string(),
        })
    }

    /// Destroys `disk` and its snapshots in store `store` (a spec) in the helper process.
    pub fn destroy(&self, store: &str, disk: &DiskRef) -> Result<(), String> {
        self.ask(&Request::Destroy {
            store: store.to_string(),
            disk: disk.to_string(),
        })
    }

    fn ask(&self, request: &Request) -> Result<(), String> {
        let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
        line.push('\n');
        let mut stream = fennec_devices::lock(&self.stream);
        let (writer, reader) = &mut *stream;
        let gone = |e: std::io::Error| format!("the storage helper is gone: {e}");
        writer.write_all(line.as_bytes()).map_err(gone)?;
        let mut answer = String::new();
        if reader.read_line(&mut answer).map_err(gone)? == 0 {
            return Err("the storage helper is gone".into());
        }
        let answer: Answer = serde_json::from_str(&answer).map_err(|e| e.to_string())?;
        answer.error.map_or(Ok(()), Err)
    }

    /// The helper's process ID.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

impl Drop for StorageHelper {
    fn drop(&mut self) {
        // Closing our end ends the helper's loop; then reap it.
        let stream = fennec_devices::lock(&self.stream);
        let _ = stream.0.shutdown(std::net::Shutdown::Both);
        drop(stream);
        let mut status = 0;
        // SAFETY: waitpid on our own child's PID with a valid out-pointer.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// The helper's loop: one request per line until the VMM closes the socket.
fn serve(stream: UnixStream) {
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut writer = stream;
    let mut pinned: Option<Vec<PinnedDisk>> = None;
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else {
            return;
        };
        let answer = Answer {
            error: carry_out(&line, &mut pinned).err(),
        };
        let Ok(mut out) = serde_json::to_string(&answer) else {
            return;
        };
        out.push('\n');
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// The pinned disk `disk` of store `store`, if it is one.
fn pinned_disk<'a>(
    pinned: &'a Option<Vec<PinnedDisk>>,
    store: &str,
    disk: &DiskRef,
) -> Result<&'a PinnedDisk, String> {
    let disks = pinned
        .as_ref()
        .ok_or("the storage helper has not been told the VM's disks")?;
    let name = disk.to_string();
    disks
        .iter()
        .find(|d| d.store == store && d.disk == name)
        .ok_or_else(|| format!("{name} in {store} is not one of this VM's disks"))
}

fn carry_out(line: &str, pinned: &mut Option<Vec<PinnedDisk>>) -> Result<(), String> {
    let request: Request = serde_json::from_str(line).map_err(|e| e.to_string())?;
    match request {
        Request::Pin { disks } => {
            if pinned.is_some() {
                return Err("the VM's disks were named already".into());
            }
            *pinned = Some(disks);
            Ok(())
        }
        Request::Snapshot { store, snapshot } => {
            let snap = SnapRef::parse(&snapshot).map_err(|e| e.to_string())?;
            pinned_disk(pinned, &store, &snap.disk)?;
            let store = super::open(&store).map_err(|e| e.to_string())?;
            store.snapshot(&snap).map_err(|e| e.to_string())
        }
        Request::Destroy { store, disk } => {
            let disk = DiskRef::parse(&disk).map_err(|e| e.to_string())?;
            if !pinned_disk(pinned, &store, &disk)?.ephemeral {
                return Err(format!("{disk} outlives the VM: it is not destroyed"));
            }
            let store = super::open(&store).map_err(|e| e.to_string())?;
            store
                .destroy(&Target::Disk(disk), true)
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory store (its temporary directory, spec and handle) holding template `base`.
    fn store_with_template() -> (
        tempfile::TempDir,
        String,
        Box<dyn crate::storage::DiskStore>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let spec = format!("dir:{}", dir.path().display());
        let store = crate::storage::open(&spec).unwrap();
        let image = dir.path().join("image.raw");
        std::fs::write(&image, vec![7u8; 4096]).unwrap();
        store.import_template("base", &image, &mut |_| ()).unwrap();
        (dir, spec, store)
    }

    #[test]
    fn test_helper_takes_snapshots_and_destroys_disks_in_its_own_process_and_reports_errors() {
        let (_dir, spec, store) = store_with_template();
        let disk = crate::storage::DiskRef::new("vm", "disk0").unwrap();
        store.clone_template("base", &disk).unwrap();

        let helper = StorageHelper::start().unwrap();
        assert_ne!(helper.pid(), std::process::id() as libc::pid_t);
        let snap = SnapRef::new(disk.clone(), "s1").unwrap();
        let err = helper.snapshot(&spec, &snap).unwrap_err();
        assert!(err.contains("has not been told"), "{err}");
        helper
            .pin(vec![PinnedDisk {
                store: spec.clone(),
                disk: disk.to_string(),
                ephemeral: true,
            }])
            .unwrap();
        helper.snapshot(&spec, &snap).unwrap();
        let listed = store.list().unwrap();
        assert!(listed.iter().any(|e| e.name == "vm/disk0@s1"), "{listed:?}");

        helper.destroy(&spec, &disk).unwrap();
        let listed = store.list().unwrap();
        assert!(
            !listed.iter().any(|e| e.name.starts_with("vm/")),
            "{listed:?}"
        );
        let err = helper.destroy(&spec, &disk).unwrap_err();
        assert!(err.contains("vm/disk0"), "{err}");
        drop(helper);
    }

    /// What a VMM a guest took over could ask: disks of other VMs, in its stores or others,
    /// a disk that outlives the VM destroyed, the pin itself changed. All refused, and
    /// nothing touched.
    #[test]
    fn test_helper_acts_only_on_the_disks_it_was_pinned_to() {
        let (_dir, spec, store) = store_with_template();
        let ours = crate::storage::DiskRef::new("ours", "disk0").unwrap();
        let kept = crate::storage::DiskRef::new("ours", "disk1").unwrap();
        let theirs = crate::storage::DiskRef::new("theirs", "disk0").unwrap();
        for d in [&ours, &kept, &theirs] {
            store.clone_template("base", d).unwrap();
        }
        let other_dir = tempfile::tempdir().unwrap();
        let other_spec = format!("dir:{}", other_dir.path().display());

        let helper = StorageHelper::start().unwrap();
        let pin = |disk: &crate::storage::DiskRef, ephemeral| PinnedDisk {
            store: spec.clone(),
            disk: disk.to_string(),
            ephemeral,
        };
        helper
            .pin(vec![pin(&ours, true), pin(&kept, false)])
            .unwrap();
        let err = helper.pin(vec![pin(&theirs, true)]).unwrap_err();
        assert!(err.contains("named already"), "{err}");
        let snap = |d: &crate::storage::DiskRef| SnapRef::new(d.clone(), "s").unwrap();
        let err = helper.snapshot(&spec, &snap(&theirs)).unwrap_err();
        assert!(err.contains("not one of this VM's disks"), "{err}");
        let err = helper.snapshot(&other_spec, &snap(&ours)).unwrap_err();
        assert!(err.contains("not one of this VM's disks"), "{err}");
        let err = helper.destroy(&spec, &theirs).unwrap_err();
        assert!(err.contains("not one of this VM's disks"), "{err}");
        let err = helper.destroy(&spec, &kept).unwrap_err();
        assert!(err.contains("outlives the VM"), "{err}");
        let listed: Vec<String> = store.list().unwrap().into_iter().map(|e| e.name).collect();
        for name in ["ours/disk0", "ours/disk1", "theirs/disk0"] {
            assert!(listed.iter().any(|n| n == name), "{name}: {listed:?}");
        }
        assert!(!listed.iter().any(|n| n.contains('@')), "{listed:?}");
        // Its own disks, as pinned.
        helper.snapshot(&spec, &snap(&kept)).unwrap();
        helper.destroy(&spec, &ours).unwrap();
    }
}
