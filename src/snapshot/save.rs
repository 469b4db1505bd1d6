//! Taking a snapshot of a paused VM into its two files, and reading one back.

use std::path::Path;

use super::error::SnapshotError;
use super::file::{read_state, write_memory, write_state};
use super::state::SnapshotState;
use crate::config::VmConfig;

/// The state and memory files of a snapshot directory: `DIR/state`, `DIR/memory`.
pub fn files_in(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (dir.join("state"), dir.join("memory"))
}

/// Reads the state file at `path`: its header and checksum are checked, the state itself when
/// a VM is restored from it ([`crate::Vm::restore`], the one gate).
pub fn load(path: &Path) -> Result<SnapshotState, SnapshotError> {
    read_state(path)
}

/// What [`save`] wrote.
#[derive(Clone, Copy, Debug)]
pub struct Saved {
    /// Bytes of the state file.
    pub state_bytes: u64,
    /// Bytes of guest RAM (the memory file's size; its zero pages are holes).
    pub memory_bytes: u64,
    /// How long the VM's state took to read, in microseconds.
    pub state_us: u64,
    /// How long the memory file took to write, in microseconds.
    pub memory_us: u64,
}

/// Snapshots the paused VM behind `handle`, built from `config`: its memory to `mem_path`,
/// then its state to `state_path` (so a state file never names memory not yet written).
pub fn save(
    handle: &crate::VmHandle,
    config: &VmConfig,
    state_path: &Path,
    mem_path: &Path,
) -> Result<Saved, crate::Error> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let started = std::time::Instant::now();
    let (machine, mem) = handle.snapshot()?;
    let state_us = started.elapsed().as_micros() as u64;
    let written = std::time::Instant::now();
    write_memory(mem_path, &mem)?;
    let memory_us = written.elapsed().as_micros() as u64;
    let memory: Vec<(u64, u64)> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
    let state = SnapshotState {
        fennec_version: env!("CARGO_PKG_VERSION").to_string(),
        config: config.clone(),
        memory_bytes: memory.iter().map(|(_, len)| len).sum(),
        memory,
        machine,
    };
    write_state(state_path, &state)?;
    let state_bytes = std::fs::metadata(state_path).map_or(0, |m| m.len());
    log::info!(
        "Snapshot: state {} ({state_bytes} bytes, read in {state_us} us), memory {} ({} MiB, \
         written in {} ms)",
        state_path.display(),
        mem_path.display(),
        state.memory_bytes >> 20,
        memory_us / 1000
    );
    Ok(Saved {
        state_bytes,
        memory_bytes: state.memory_bytes,
        state_us,
        memory_us,
    })
}
