//! What the control socket runs on its action thread, in order: pauses, resumes, drive
//! snapshots, VM snapshots and checkpoints.

use std::path::PathBuf;

use serde_json::json;

use super::answers::vm_error;
use crate::api::sinks::{record_latency, Timed};
use crate::api::{ApiError, ApiResponse};
use crate::config::VmConfig;
use crate::storage::helper::StorageHelper;
use crate::VmHandle;

/// What changes whether the VM runs, taken off the serving thread so that reads, `Stop` and
/// signals are served meanwhile, and run one at a time, so that a snapshot's own pause and
/// resume never interleave with a client's.
pub(super) enum Action {
    Pause,
    Resume,
    Snapshot {
        id: String,
        store: String,
        snap: crate::storage::SnapRef,
    },
    /// A checkpoint: the VM and its template disks (`PUT /checkpoint`).
    Checkpoint {
        name: String,
        dir: PathBuf,
        store: String,
        disks: Vec<(String, crate::storage::DiskRef)>,
        config: Box<VmConfig>,
    },
    /// A snapshot of the whole paused VM (`PUT /snapshot/create`).
    SaveVm {
        state: PathBuf,
        memory: PathBuf,
        config: Box<VmConfig>,
    },
}

impl Action {
    pub(super) fn run(
        self,
        handle: &VmHandle,
        helper: Option<&StorageHelper>,
    ) -> Result<ApiResponse, ApiError> {
        let started = std::time::Instant::now();
        let timed = |what: Timed, done: Result<(), crate::Error>| {
            if done.is_ok() {
                record_latency(what, started.elapsed(), started.elapsed());
            }
            Self::empty(done)
        };
        let (id, store, snap) = match self {
            Action::Pause => return timed(Timed::Pause, handle.pause()),
            Action::Resume => return timed(Timed::Resume, handle.resume()),
            Action::SaveVm {
                state,
                memory,
                config,
            } => {
                let saved = crate::snapshot::save(handle, &config, &state, &memory);
                if let Ok(saved) = &saved {
                    let vmm = std::time::Duration::from_micros(saved.state_us + saved.memory_us);
                    record_latency(Timed::CreateSnapshot, started.elapsed(), vmm);
                }
                return saved.map(|_| ApiResponse::Empty).map_err(vm_error);
            }
            Action::Checkpoint {
                name,
                dir,
                store,
                disks,
                config,
            } => {
                let snapshot = |snap: &crate::storage::SnapRef| match helper {
                    Some(helper) => helper.snapshot(&store, snap),
                    None => crate::storage::open(&store)
                        .and_then(|s| s.snapshot(snap))
                        .map_err(|e| e.to_string()),
                };
                return crate::snapshot::checkpoint::take(
                    handle,
                    &config,
                    (&dir, &name),
                    (&store, &disks),
                    &snapshot,
                )
                .map(|saved| {
                    ApiResponse::Json(json!({
                        "checkpoint": name,
                        "store": store,
                        "directory": dir,
                        "memory_bytes": saved.memory_bytes,
                    }))
                })
                .map_err(vm_error);
            }
            Action::Snapshot { id, store, snap } => (id, store, snap),
        };
        handle
            .quiesce_drive(&id, || match helper {
                Some(helper) => helper.snapshot(&store, &snap),
                None => crate::storage::open(&store)
                    .and_then(|s| s.snapshot(&snap))
                    .map_err(|e| e.to_string()),
            })
            .map_err(vm_error)?
            .map_err(ApiError::bad_request)?;
        let took = started.elapsed();
        log::info!(
            "Drive {id:?}: snapshot {snap} in {store} ({} us with the VM paused)",
            took.as_micros()
        );
        Ok(ApiResponse::Json(json!({
            "snapshot": snap.to_string(),
            "store": store,
            "paused_us": took.as_micros() as u64,
        })))
    }

    fn empty(done: Result<(), crate::Error>) -> Result<ApiResponse, ApiError> {
        done.map(|()| ApiResponse::Empty).map_err(vm_error)
    }
}
