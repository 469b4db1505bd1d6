//! What every image store does ([`DiskStore`]), and what it lists.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::{Result, StorageError};
use super::names::{DiskRef, SnapRef, Target};

/// The store used when neither `--store`, a drive's `store`, nor `FENNEC_STORE` names one.
pub const DEFAULT_STORE: &str = "dir:/var/lib/fennec/images";

/// The environment variable naming the default store.
pub const STORE_ENV: &str = "FENNEC_STORE";

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

/// Errors that name the store they happened in.
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
}
