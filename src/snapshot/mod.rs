//! Snapshots of a paused VM: its state file and its memory file, and loading them.
//!
//! - The **state file** holds the configuration the VM was built from and its machine state:
//!   every vCPU (`vstate::vcpu::state`), the interrupt controllers, PIT and KVM clock
//!   (`vstate::vm::KvmVmState`) and every device ([`DevicesState`]). On disk it is a 24-byte
//!   header, `FNECSNAP`, the format version, the payload's length and its CRC-32, and then the
//!   payload, JSON. A file of another format version, a truncated or corrupted one, is refused
//!   before anything is built ([`SnapshotError`]).
//! - The **memory file** is guest RAM, region after region, written sparsely (pages of zeros
//!   are holes). A restored VM maps it `MAP_PRIVATE`: a restore costs page faults, not a copy,
//!   and VMs restored from one file share its pages until they write them.

pub mod checkpoint;
mod file;

use std::path::Path;

use serde::{Deserialize, Serialize};

use fennec_devices::legacy::i8042::I8042State;
use fennec_devices::legacy::serial::SerialSnapshot;
use fennec_devices::virtio::mmio::MmioState;

use crate::config::VmConfig;
use crate::vstate::vcpu::state::VcpuState;
use crate::vstate::vm::KvmVmState;

pub use file::{map_memory, read_state, write_memory, write_state, FORMAT_VERSION};

/// The largest XSAVE area a snapshot holds (`kvm_xsave`): hosts whose CPUs need more (AMX)
/// cannot be snapshotted yet.
pub const XSAVE_AREA: usize = 4096;

/// Why a snapshot could not be taken, read or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a snapshot, or one cut short.
    #[error("{path} is not a fennec snapshot state file ({why})")]
    NotASnapshot {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// Another format version.
    #[error(
        "{path} is a snapshot of format version {found}; this fennec reads version {}",
        FORMAT_VERSION
    )]
    Version {
        /// The file.
        path: String,
        /// Its version.
        found: u32,
    },
    /// The payload does not match its checksum.
    #[error("{path} is corrupted: its checksum does not match")]
    Checksum {
        /// The file.
        path: String,
    },
    /// The payload does not parse.
    #[error("{path}: the snapshot's state does not parse: {why}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// The memory file does not fit the state.
    #[error("{path}: {why}")]
    Memory {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The state does not fit the machine it is loaded into.
    #[error("the snapshot cannot be loaded: {0}")]
    Mismatch(String),
    /// A checkpoint could not be taken or found.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

/// The devices' state: the legacy devices and each virtio transport, by the device's ID.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicesState {
    /// The serial port.
    pub serial: SerialSnapshot,
    /// The keyboard controller.
    pub i8042: I8042State,
    /// The ACPI power registers' enabled events, with ACPI.
    pub acpi_events: Option<u8>,
    /// Each virtio device's transport, in slot order.
    pub virtio: Vec<(String, MmioState)>,
}

/// The machine: what KVM and the devices hold.
#[derive(Serialize, Deserialize)]
pub struct MachineState {
    /// Each vCPU, in index order.
    pub vcpus: Vec<VcpuState>,
    /// The interrupt controllers, PIT and clock.
    pub vm: KvmVmState,
    /// The devices.
    pub devices: DevicesState,
}

/// What a state file holds.
#[derive(Serialize, Deserialize)]
pub struct SnapshotState {
    /// The fennec that wrote it.
    pub fennec_version: String,
    /// The configuration the VM was built from (drives and interfaces as they were).
    pub config: VmConfig,
    /// Guest RAM's regions: (guest address, length), in the memory file's order.
    pub memory: Vec<(u64, u64)>,
    /// Their total: the memory file's size.
    pub memory_bytes: u64,
    /// The machine.
    pub machine: MachineState,
}

impl SnapshotState {
    /// Checks that the state describes a machine fennec can rebuild: the configuration
    /// valid, one vCPU state per vCPU, in order, and RAM as the configuration lays it out.
    pub fn check(&self) -> Result<(), SnapshotError> {
        self.config
            .validate()
            .map_err(|e| SnapshotError::Mismatch(format!("its configuration: {e}")))?;
        let count = usize::from(self.config.machine_config.vcpu_count);
        if self.machine.vcpus.len() != count
            || self
                .machine
                .vcpus
                .iter()
                .enumerate()
                .any(|(i, v)| usize::from(v.index) != i)
        {
            return Err(SnapshotError::Mismatch(format!(
                "it has {} vCPU states for {count} vCPUs",
                self.machine.vcpus.len()
            )));
        }
        let layout: Vec<(u64, u64)> =
            fennec_boot::layout::ram_regions(self.config.machine_config.mem_size_bytes());
        if self.memory != layout {
            return Err(SnapshotError::Mismatch(
                "its memory regions do not match its memory size".into(),
            ));
        }
        Ok(())
    }
}

/// The state and memory files of a snapshot directory: `DIR/state`, `DIR/memory`.
pub fn files_in(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (dir.join("state"), dir.join("memory"))
}

/// Reads and checks the state file at `path`.
pub fn load(path: &Path) -> Result<SnapshotState, SnapshotError> {
    let state = read_state(path)?;
    state.check()?;
    Ok(state)
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
