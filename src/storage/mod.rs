//! Disk images: templates, and the VM disks cloned from them.
//!
//! A [`DiskStore`] keeps *templates* (read-only base images, imported once) and *VM disks*
//! (`VM/DISK`, each a clone of a template or a received stream), with named snapshots of the
//! disks (`VM/DISK@SNAP`). Two backends implement it:
//!
//! - [`dir::DirStore`], the default: a directory of raw image files. A clone is a `FICLONE`
//!   reflink where the filesystem has it (btrfs, XFS), otherwise a sparse copy.
//! - [`zfs::ZfsStore`]: datasets under a parent dataset, driven through the `zfs` and `zpool`
//!   commands. A template is `PARENT/templates/NAME` holding `disk.img` with a snapshot
//!   `@base`; a VM disk is `PARENT/vms/VM/DISK`, a `zfs clone` of it: instant and
//!   copy-on-write, with snapshots, rollback and `zfs send`/`zfs receive` from ZFS itself.
//!
//! Every operation either completes or leaves the store as it found it: whatever a failed
//! operation created is removed before the error is returned.
//!
//! A store is named by a *spec*: `zfs:POOL/DATASET`, `dir:/PATH`, or a bare path (a
//! directory). [`provision`] turns the template drives of a [`VmConfig`] into image paths.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{DriveSource, TemplateDrive, VmConfig};

pub mod dir;
pub mod helper;
pub mod zfs;

/// The store used when neither `--store`, a drive's `store`, nor `FENNEC_STORE` names one.
pub const DEFAULT_STORE: &str = "dir:/var/lib/fennec/images";

/// The environment variable naming the default store.
pub const STORE_ENV: &str = "FENNEC_STORE";

/// The image file's name inside a template's or disk's directory (or dataset).
pub const IMAGE_FILE: &str = "disk.img";

/// Storage errors. Each says what was asked, what went wrong, and when there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A name has characters or a shape that could escape the store or that ZFS rejects.
    #[error("Invalid {what} {name:?}: {why}")]
    BadName {
        /// What the name names: "template", "VM", "disk", "snapshot".
        what: &'static str,
        /// The name.
        name: String,
        /// The rule it breaks.
        why: &'static str,
    },
    /// A store spec is not `zfs:DATASET`, `dir:PATH` or a path.
    #[error("Invalid store {0:?}: expected zfs:POOL/DATASET, dir:/PATH, or a directory path")]
    BadStore(String),
    /// A command could not be run at all.
    #[error("Cannot run `{command}`: {source}; {hint}")]
    CommandMissing {
        /// The command.
        command: String,
        /// Why it could not start.
        source: io::Error,
        /// How to get it.
        hint: &'static str,
    },
    /// A command ran and failed.
    #[error("`{command}` failed: {stderr}{hint}")]
    CommandFailed {
        /// The command line, for the message.
        command: String,
        /// What it printed on stderr, trimmed.
        stderr: String,
        /// Extra advice when the failure is a known one (an empty string otherwise).
        hint: &'static str,
    },
    /// The pool of a ZFS store does not exist.
    #[error("ZFS pool {0:?} does not exist (`zpool list` shows the pools there are)")]
    NoPool(String),
    /// The parent dataset of a ZFS store does not exist.
    #[error("ZFS dataset {0:?} does not exist; create it with `zfs create {0}`")]
    NoDataset(String),
    /// A store directory does not exist.
    #[error("Store directory {0} does not exist; create it with `mkdir -p {0}`")]
    NoDirectory(String),
    /// A dataset has no usable mountpoint.
    #[error("ZFS dataset {dataset:?} is not mounted (mountpoint {mountpoint:?}); fennec needs its image files")]
    NotMounted {
        /// The dataset.
        dataset: String,
        /// Its `mountpoint` property.
        mountpoint: String,
    },
    /// The thing named does not exist.
    #[error("No {what} {name:?} in {store}")]
    NotFound {
        /// "template", "disk" or "snapshot".
        what: &'static str,
        /// Its name.
        name: String,
        /// The store.
        store: String,
    },
    /// The name is taken.
    #[error("{what} {name:?} already exists in {store}")]
    Exists {
        /// "Template", "Disk" or "Snapshot".
        what: &'static str,
        /// Its name.
        name: String,
        /// The store.
        store: String,
    },
    /// A template still has disks cloned from it.
    #[error("Template {name:?} is in use by {}; destroy them first", disks.join(", "))]
    TemplateInUse {
        /// The template.
        name: String,
        /// The disks cloned from it.
        disks: Vec<String>,
    },
    /// A disk is open by a running VM.
    #[error("Disk {0:?} is open by a running VM; stop the VM first, or pass --force")]
    DiskInUse(String),
    /// A stream to receive is not one fennec takes.
    #[error("The stream for disk {disk:?} is refused: {why}")]
    BadStream {
        /// The disk it was to become.
        disk: String,
        /// Why.
        why: String,
    },
    /// A received stream did not hold a fennec disk.
    #[error(
        "The stream received as {0:?} holds no {IMAGE_FILE} of its own (a regular file): it is \
         not a fennec disk"
    )]
    NotADisk(String),
    /// An I/O error on a file of the store.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        source: io::Error,
    },
}

/// The result of a storage operation.
pub type Result<T> = std::result::Result<T, StorageError>;

impl StorageError {
    /// `what` (`template`, `disk`, `snapshot`) named `name` is not in `store`.
    pub(crate) fn not_found(
        store: &dyn DiskStore,
        what: &'static str,
        name: impl ToString,
    ) -> Self {
        StorageError::NotFound {
            what,
            name: name.to_string(),
            store: store.spec(),
        }
    }

    /// `what` (`Template`, `Disk`, `Snapshot`) named `name` is already in `store`.
    pub(crate) fn exists(store: &dyn DiskStore, what: &'static str, name: impl ToString) -> Self {
        StorageError::Exists {
            what,
            name: name.to_string(),
            store: store.spec(),
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> StorageError {
        let what = what.into();
        move |source| StorageError::Io { what, source }
    }
}

/// Checks one name component (a template, VM, disk or snapshot name): 1 to 64 of
/// `A-Z a-z 0-9 _ - . :`, not starting with `-` or `.`. That keeps every name inside the
/// store (no `/`, no `..`), leaves `@` to separate snapshots, and is a valid ZFS component.
pub fn check_name(what: &'static str, name: &str) -> Result<()> {
    let bad = |why| {
        Err(StorageError::BadName {
            what,
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("use 1 to 64 characters");
    }
    if name.starts_with('-') || name.starts_with('.') {
        return bad("it may not start with '-' or '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return bad("use only A-Z a-z 0-9 _ - . : (no '/', '@' or spaces)");
    }
    Ok(())
}

/// A VM disk: `VM/DISK`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DiskRef {
    /// The VM it belongs to.
    pub vm: String,
    /// The disk's name within the VM.
    pub disk: String,
}

impl DiskRef {
    /// A checked `VM/DISK`.
    pub fn new(vm: &str, disk: &str) -> Result<Self> {
        check_name("VM", vm)?;
        check_name("disk", disk)?;
        Ok(DiskRef {
            vm: vm.to_string(),
            disk: disk.to_string(),
        })
    }

    /// Parses `VM/DISK`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once('/') {
            Some((vm, disk)) => DiskRef::new(vm, disk),
            None => Err(StorageError::BadName {
                what: "disk",
                name: s.to_string(),
                why: "expected VM/DISK",
            }),
        }
    }
}

impl fmt::Display for DiskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vm, self.disk)
    }
}

/// A snapshot of a VM disk: `VM/DISK@SNAP`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapRef {
    /// The disk.
    pub disk: DiskRef,
    /// The snapshot's name.
    pub snap: String,
}

impl SnapRef {
    /// A checked snapshot name of `disk`.
    pub fn new(disk: DiskRef, snap: &str) -> Result<Self> {
        check_name("snapshot", snap)?;
        Ok(SnapRef {
            disk,
            snap: snap.to_string(),
        })
    }

    /// Parses `VM/DISK@SNAP`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once('@') {
            Some((disk, snap)) => SnapRef::new(DiskRef::parse(disk)?, snap),
            None => Err(StorageError::BadName {
                what: "snapshot",
                name: s.to_string(),
                why: "expected VM/DISK@SNAP",
            }),
        }
    }
}

impl fmt::Display for SnapRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.disk, self.snap)
    }
}

/// Anything a store holds, as named on the command line: `NAME` (a template), `VM/DISK`, or
/// `VM/DISK@SNAP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A template.
    Template(String),
    /// A VM disk.
    Disk(DiskRef),
    /// A snapshot of a VM disk.
    Snapshot(SnapRef),
}

impl Target {
    /// Parses a target by its shape.
    pub fn parse(s: &str) -> Result<Self> {
        if s.contains('@') {
            SnapRef::parse(s).map(Target::Snapshot)
        } else if s.contains('/') {
            DiskRef::parse(s).map(Target::Disk)
        } else {
            check_name("template", s)?;
            Ok(Target::Template(s.to_string()))
        }
    }
}

/// What kind of thing a listed entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A template.
    Template,
    /// A VM disk.
    Disk,
    /// A snapshot of a VM disk.
    Snapshot,
}

/// One line of `fennec image list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// `NAME`, `VM/DISK` or `VM/DISK@SNAP`.
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// The image's size as the guest sees it, in bytes.
    pub size: u64,
    /// Bytes it takes in the store beyond what it shares (ZFS `used`; allocated blocks for
    /// files).
    pub used: u64,
    /// The template a disk was cloned from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// Progress of a long copy: called with the bytes done so far.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

/// A place that keeps templates and VM disks.
pub trait DiskStore: fmt::Debug + Send + Sync {
    /// The store's spec, for messages (`zfs:tank/fennec`, `dir:/var/lib/fennec/images`).
    fn spec(&self) -> String;

    /// Imports the raw image at `image` as template `name`.
    fn import_template(&self, name: &str, image: &Path, progress: Progress<'_>) -> Result<()>;

    /// Every template, disk and snapshot, sorted by name.
    fn list(&self) -> Result<Vec<Entry>>;

    /// Creates `disk` as a clone of template `template`; returns its image path.
    fn clone_template(&self, template: &str, disk: &DiskRef) -> Result<PathBuf>;

    /// The image path of an existing disk.
    fn disk_path(&self, disk: &DiskRef) -> Result<PathBuf>;

    /// Whether `disk` exists.
    fn disk_exists(&self, disk: &DiskRef) -> Result<bool>;

    /// Takes a snapshot of a disk. The caller makes sure the image is consistent (a running
    /// VM is paused and its drive flushed: see [`crate::VmHandle::quiesce_drive`]).
    fn snapshot(&self, snap: &SnapRef) -> Result<()>;
    /// Makes disk `disk` a copy of snapshot `snap` (a ZFS clone; a copy in a directory, shared
    /// extents where the filesystem has reflinks); returns its image's path.
    fn clone_snapshot(&self, snap: &SnapRef, disk: &DiskRef) -> Result<PathBuf>;
    /// The directory checkpoints keep their VM state and memory files in, made if missing
    /// (root's alone).
    fn checkpoints_dir(&self) -> Result<PathBuf>;

    /// Returns a disk to a snapshot. Refused while a VM has the disk open, unless `force`.
    fn rollback(&self, snap: &SnapRef, force: bool) -> Result<()>;

    /// Destroys a template (refused while disks are cloned from it), a disk with its snapshots
    /// (refused while a VM has it open, unless `force`), or a snapshot.
    fn destroy(&self, target: &Target, force: bool) -> Result<()>;

    /// Writes a disk (its current state) or a snapshot to `out`: a `zfs send` stream for ZFS,
    /// the raw image for a directory store. Returns the bytes written.
    fn send(&self, source: &Target, out: &mut dyn Write) -> Result<u64>;

    /// Creates `disk` from a stream [`DiskStore::send`] wrote; returns its image path.
    fn receive(&self, disk: &DiskRef, input: &mut dyn Read) -> Result<PathBuf>;
}

/// Opens the store named by `spec` (`zfs:DATASET`, `dir:PATH`, or a path), checking that it
/// exists.
pub fn open(spec: &str) -> Result<Box<dyn DiskStore>> {
    if let Some(dataset) = spec.strip_prefix("zfs:") {
        Ok(Box::new(zfs::ZfsStore::open(dataset)?))
    } else if let Some(path) = spec.strip_prefix("dir:") {
        Ok(Box::new(dir::DirStore::open(path)?))
    } else if spec.starts_with('/') || spec.starts_with('.') {
        Ok(Box::new(dir::DirStore::open(spec)?))
    } else {
        Err(StorageError::BadStore(spec.to_string()))
    }
}

/// The store spec to use: `explicit`, else `$FENNEC_STORE`, else [`DEFAULT_STORE`].
pub fn default_spec(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var(STORE_ENV).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_STORE.to_string())
}

/// Whether a VM has the image at `path` open: fennec's block device holds a `flock` on every
/// image it serves (exclusive when writable, shared when read-only), so an exclusive
/// non-blocking lock fails exactly when one does.
pub fn image_in_use(path: &Path) -> Result<bool> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(StorageError::io(format!("cannot open {}", path.display()))(
                e,
            ))
        }
    };
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(false); // The lock goes with `file`.
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(true)
    } else {
        Err(StorageError::io(format!("cannot lock {}", path.display()))(
            e,
        ))
    }
}

/// The mode of every image a store writes: the guest's data is root's alone.
pub const PRIVATE_FILE: u32 = 0o600;
/// The mode of every directory a store makes.
pub const PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` and its missing parents with [`PRIVATE_DIR`].
pub fn create_private_dirs(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .map_err(StorageError::io(format!("cannot create {}", dir.display())))
}

/// The size of the chunks [`copy_image`] moves, and the unit of hole detection.
const COPY_CHUNK: usize = 1 << 20;

/// Copies `src` into the new file `dst` (which must not exist): a `FICLONE` reflink when the
/// filesystem can share blocks, otherwise a copy that leaves all-zero megabytes as holes.
/// The result is synced to disk. Returns whether it was a reflink.
pub fn copy_image(src: &Path, dst: &Path, progress: Progress<'_>) -> Result<bool> {
    let mut input =
        File::open(src).map_err(StorageError::io(format!("cannot open {}", src.display())))?;
    let len = input
        .metadata()
        .map_err(StorageError::io(format!("cannot stat {}", src.display())))?
        .len();
    let mut output = File::options()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(dst)
        .map_err(StorageError::io(format!("cannot create {}", dst.display())))?;
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are open
    // for the duration of the call and no memory is shared.
    let cloned = unsafe { libc::ioctl(output.as_raw_fd(), libc::FICLONE, input.as_raw_fd()) } == 0;
    if cloned {
        progress(len);
    } else {
        copy_sparse(&mut input, &mut output, progress).map_err(StorageError::io(format!(
            "cannot copy {} to {}",
            src.display(),
            dst.display()
        )))?;
    }
    output
        .sync_all()
        .map_err(StorageError::io(format!("cannot sync {}", dst.display())))?;
    Ok(cloned)
}

/// Streams `input` into `output` (positioned at 0) until EOF, seeking over all-zero chunks.
/// Sets the final length, so trailing holes are kept.
pub fn copy_sparse(
    input: &mut dyn Read,
    output: &mut File,
    progress: Progress<'_>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut done = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        let chunk = &buf[..filled];
        if chunk.iter().all(|&b| b == 0) {
            output.seek(SeekFrom::Current(filled as u64 as i64))?;
        } else {
            output.write_all(chunk)?;
        }
        done += filled as u64;
        progress(done);
        if filled < buf.len() {
            break;
        }
    }
    output.set_len(done)?;
    Ok(done)
}

/// Undoes the steps of an operation that failed part-way: each registered action runs, last
/// first, unless [`Undo::commit`] was called.
#[derive(Default)]
pub(crate) struct Undo {
    steps: Vec<(String, UndoStep)>,
}

type UndoStep = Box<dyn FnOnce() -> Result<()>>;

impl Undo {
    /// Registers `step`, described by `what` for the log if it fails.
    pub(crate) fn push(&mut self, what: String, step: impl FnOnce() -> Result<()> + 'static) {
        self.steps.push((what, Box::new(step)));
    }

    /// The operation succeeded: keep what it made.
    pub(crate) fn commit(mut self) {
        self.steps.clear();
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        while let Some((what, step)) = self.steps.pop() {
            match step() {
                Ok(()) => log::debug!("Undid: {what}"),
                Err(e) => log::error!("Could not undo {what}: {e}"),
            }
        }
    }
}

/// A drive cloned from a template for one VM run.
#[derive(Debug)]
struct ProvisionedDisk {
    drive_id: String,
    store: Box<dyn DiskStore>,
    disk: DiskRef,
    ephemeral: bool,
}

/// The disks [`provision`] made. Ephemeral ones are destroyed when this is dropped (or
/// [`Provisioned::release`]d): drop it only after the VM is gone.
#[derive(Debug, Default)]
pub struct Provisioned {
    disks: Vec<ProvisionedDisk>,
    helper: Option<std::sync::Arc<helper::StorageHelper>>,
}

impl Provisioned {
    /// Destroys the ephemeral disks in `helper`'s process rather than this one, so a VMM whose
    /// threads run under syscall filters executes no program (see [`helper`]).
    pub fn set_helper(&mut self, helper: std::sync::Arc<helper::StorageHelper>) {
        self.helper = Some(helper);
    }

    /// Destroys the ephemeral disks now, logging any that cannot be.
    pub fn release(&mut self) {
        for d in self.disks.drain(..) {
            if !d.ephemeral {
                continue;
            }
            let destroyed = match &self.helper {
                Some(helper) => helper.destroy(&d.store.spec(), &d.disk),
                None => d
                    .store
                    .destroy(&Target::Disk(d.disk.clone()), true)
                    .map_err(|e| e.to_string()),
            };
            match destroyed {
                Ok(()) => log::info!("Destroyed ephemeral disk {} in {}", d.disk, d.store.spec()),
                Err(e) => log::error!("Could not destroy ephemeral disk {}: {e}", d.disk),
            }
        }
    }

    /// The store and disk behind the drive `drive_id`, if it was provisioned from a template.
    pub fn disk_of(&self, drive_id: &str) -> Option<(&dyn DiskStore, &DiskRef)> {
        self.disks
            .iter()
            .find(|d| d.drive_id == drive_id)
            .map(|d| (d.store.as_ref(), &d.disk))
    }

    /// Whether drive `drive_id`'s disk is destroyed when the VM ends (no `vm=` name).
    pub fn is_ephemeral(&self, drive_id: &str) -> bool {
        self.disks
            .iter()
            .any(|d| d.drive_id == drive_id && d.ephemeral)
    }
}

impl Drop for Provisioned {
    fn drop(&mut self) {
        self.release();
    }
}

/// A name no other run of this host uses at the same time, for an ephemeral disk's VM.
fn ephemeral_vm_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "ephemeral-{}-{:x}-{}",
        std::process::id(),
        nanos & 0xffff_ffff,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Gives every drive of `config` that names a template an image: a clone of the template
/// made now (a persistent drive, with a `vm_name`, reuses its disk when it exists). Drives
/// with a path are left alone. On error, whatever was cloned is destroyed again.
pub fn provision(config: &mut VmConfig) -> Result<Provisioned> {
    let mut made = Provisioned::default();
    let mut ephemeral_vm = None;
    for drive in &mut config.drives {
        let Some(TemplateDrive {
            template,
            store,
            vm_name,
        }) = drive.template().cloned()
        else {
            continue;
        };
        let store = open(&default_spec(store.as_deref()))?;
        let (vm, ephemeral) = match &vm_name {
            Some(vm) => (vm.clone(), false),
            None => (
                ephemeral_vm.get_or_insert_with(ephemeral_vm_name).clone(),
                true,
            ),
        };
        let disk = DiskRef::new(&vm, &drive.id)?;
        let path = if !ephemeral && store.disk_exists(&disk)? {
            log::info!(
                "Drive {:?}: reusing disk {disk} in {}",
                drive.id,
                store.spec()
            );
            store.disk_path(&disk)?
        } else {
            let started = std::time::Instant::now();
            let path = store.clone_template(&template, &disk)?;
            log::info!(
                "Drive {:?}: cloned template {template:?} as {disk} in {} ({} ms{})",
                drive.id,
                store.spec(),
                started.elapsed().as_millis(),
                if ephemeral { ", destroyed at exit" } else { "" }
            );
            path
        };
        drive.source = DriveSource::Path(path);
        made.disks.push(ProvisionedDisk {
            drive_id: drive.id.clone(),
            store,
            disk,
            ephemeral,
        });
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_that_leave_the_store_are_refused() {
        for bad in [
            "", "..", ".", "../x", "a/b", "a@b", "-rf", ".hidden", "a b", "a\0b", "ä",
        ] {
            assert!(check_name("VM", bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name("VM", &"x".repeat(65)).is_err());
        for good in ["web1", "debian-12", "a.b", "snap:2026", "A_9", "a..b"] {
            check_name("VM", good).unwrap();
        }
    }

    #[test]
    fn test_targets_parse_by_shape() {
        assert_eq!(
            Target::parse("debian").unwrap(),
            Target::Template("debian".into())
        );
        assert_eq!(
            Target::parse("web1/root").unwrap(),
            Target::Disk(DiskRef::new("web1", "root").unwrap())
        );
        assert_eq!(
            Target::parse("web1/root@s1").unwrap(),
            Target::Snapshot(SnapRef::new(DiskRef::new("web1", "root").unwrap(), "s1").unwrap())
        );
        for bad in ["a/b/c", "a/../b", "a/b@", "a/b@c@d", "@x", "/abs", "a/-b"] {
            assert!(Target::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn test_store_specs() {
        assert!(matches!(open("nfs:server"), Err(StorageError::BadStore(_))));
        assert!(matches!(
            open("dir:/nonexistent/fennec-store"),
            Err(StorageError::NoDirectory(_))
        ));
    }

    #[test]
    fn test_sparse_copy_keeps_data_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 3 * COPY_CHUNK + 100];
        data[5] = 1;
        data[2 * COPY_CHUNK + 7] = 2;
        let src = dir.path().join("src");
        std::fs::write(&src, &data).unwrap();
        let dst = dir.path().join("dst");
        let mut seen = 0;
        copy_image(&src, &dst, &mut |n| seen = n).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        assert_eq!(seen, data.len() as u64);
        assert!(copy_image(&src, &dst, &mut |_| {}).is_err(), "overwrote");
    }
}
