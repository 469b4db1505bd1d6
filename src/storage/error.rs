//! What can go wrong in an image store.

use std::io;

use super::layout::IMAGE_FILE;

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
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> StorageError {
        let what = what.into();
        move |source| StorageError::Io { what, source }
    }
}
