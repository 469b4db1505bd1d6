//! Checkpoints: a snapshot of a VM together with a snapshot of each of its disks in their image
//! store, taken while the VM is paused, so the two agree. Restoring one clones every disk from
//! its snapshot for a new VM name and restores the VM on the clones: as many independent copies
//! of one running machine as wanted.
//!
//! A checkpoint named NAME of a VM whose drives are store disks `VM/DISK` is the store
//! snapshots `VM/DISK@NAME` and the directory `NAME` in the store's checkpoints directory,
//! holding the VM's `state` and `memory` and `checkpoint.json` (which disks, of which store).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::SnapshotError;
use super::save::{files_in, load, save, Saved};
use super::state::SnapshotState;
use crate::config::VmConfig;
use crate::storage::{self, DiskRef, DiskStore, SnapRef};

/// The manifest's file name in a checkpoint's directory.
pub const MANIFEST: &str = "checkpoint.json";

/// What a checkpoint holds besides the VM's state and memory.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Its name: also the name of its disks' snapshots.
    pub name: String,
    /// The store its disks are in.
    pub store: String,
    /// Each drive's ID and the store disk (`VM/DISK`) it was.
    pub disks: Vec<(String, String)>,
}

fn store_error(name: &str) -> impl Fn(storage::StorageError) -> SnapshotError + '_ {
    move |source| SnapshotError::Store {
        name: name.to_string(),
        source,
    }
}

/// The directory of checkpoint `name` in `store`.
pub fn dir(store: &dyn DiskStore, name: &str) -> Result<PathBuf, SnapshotError> {
    storage::check_name("checkpoint", name).map_err(store_error(name))?;
    Ok(store
        .checkpoints_dir()
        .map_err(store_error(name))?
        .join(name))
}

/// Takes checkpoint `name` of the VM behind `handle`, built from `config`, whose drives are
/// `disks` (drive ID and store disk) of `store`, into `dir`: pauses the VM unless it is paused,
/// makes each drive's writes durable and snapshots its disk with `snapshot`, writes the VM's
/// state and memory, and resumes the VM if it was running.
pub fn take(
    handle: &crate::VmHandle,
    config: &VmConfig,
    (dir, name): (&Path, &str),
    (store, disks): (&str, &[(String, DiskRef)]),
    snapshot: &dyn Fn(&SnapRef) -> Result<(), String>,
) -> Result<Saved, crate::Error> {
    if dir.exists() {
        return Err(SnapshotError::CheckpointExists {
            name: name.to_string(),
            dir: dir.display().to_string(),
        }
        .into());
    }
    let was_running = handle.state() == crate::VmState::Running;
    if was_running {
        handle.pause()?;
    }
    let result = (|| {
        for (id, disk) in disks {
            let snap = SnapRef::new(disk.clone(), name).map_err(store_error(name))?;
            handle
                .quiesce_drive(id, || snapshot(&snap))?
                .map_err(|why| SnapshotError::DriveSnapshot {
                    id: id.clone(),
                    why,
                })?;
        }
        std::fs::create_dir(dir).map_err(|source| SnapshotError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let (state, memory) = files_in(dir);
        let saved = save(handle, config, &state, &memory)?;
        let manifest = Manifest {
            name: name.to_string(),
            store: store.to_string(),
            disks: disks
                .iter()
                .map(|(id, disk)| (id.clone(), disk.to_string()))
                .collect(),
        };
        let path = dir.join(MANIFEST);
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| SnapshotError::Manifest {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        std::fs::write(&path, json).map_err(|source| SnapshotError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(saved)
    })();
    if was_running {
        handle.resume()?;
    }
    if result.is_ok() {
        log::info!(
            "Checkpoint {name:?}: {} disks snapshotted in {store}, VM state in {}",
            disks.len(),
            dir.display()
        );
    }
    result
}

/// Clones checkpoint `name`'s disks in `store` as VM `vm`'s (`vm/DISK`), and returns the
/// checkpoint's VM state, its drives moved onto the clones, and its memory file: what
/// [`crate::BuiltVm::restore`] takes.
pub fn prepare(
    store: &dyn DiskStore,
    name: &str,
    vm: &str,
) -> Result<(SnapshotState, PathBuf), SnapshotError> {
    let dir = dir(store, name)?;
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| SnapshotError::Manifest {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
    let (state_path, memory) = files_in(&dir);
    let mut state = load(&state_path)?;
    for (id, was) in &manifest.disks {
        let stored = store_error(name);
        let snap = SnapRef::new(DiskRef::parse(was).map_err(&stored)?, name).map_err(&stored)?;
        let clone = DiskRef::new(vm, &snap.disk.disk).map_err(&stored)?;
        let image = store.clone_snapshot(&snap, &clone).map_err(&stored)?;
        log::info!("Drive {id:?}: cloned {snap} as {clone} in {}", store.spec());
        let drive = state
            .config
            .drives
            .iter_mut()
            .find(|d| d.id == *id)
            .ok_or_else(|| SnapshotError::NoSuchDrive(id.clone()))?;
        drive.source = crate::config::DriveSource::Path(image);
    }
    Ok((state, memory))
}
