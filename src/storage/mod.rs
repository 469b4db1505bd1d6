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
//! directory). [`provision`] turns the template drives of a [`crate::config::VmConfig`] into image paths.

pub mod dir;
mod error;
mod files;
pub mod helper;
mod layout;
mod names;
mod open;
mod provision;
mod store;
pub mod zfs;

pub use error::{Result, StorageError};
pub(crate) use files::Undo;
pub use files::{
    copy_image, copy_sparse, create_private_dirs, image_in_use, PRIVATE_DIR, PRIVATE_FILE,
};
pub use layout::IMAGE_FILE;
pub use names::{check_name, DiskRef, SnapRef, Target};
pub use open::{default_spec, open};
pub use provision::{provision, Provisioned};
pub use store::{DiskStore, Entry, EntryKind, Progress, DEFAULT_STORE, STORE_ENV};

#[cfg(test)]
mod tests;
