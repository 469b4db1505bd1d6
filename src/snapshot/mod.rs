//! Snapshots of a paused VM: its state file and its memory file, and loading them.
//!
//! - The **state file** holds the configuration the VM was built from and its machine state:
//!   every vCPU (`vstate::vcpu::state`), the interrupt controllers, PIT and KVM clock
//!   (`vstate::vm::KvmVmState`) and every device ([`crate::device_manager::DevicesState`]). On disk it is a 24-byte
//!   header, `FNECSNAP`, the format version, the payload's length and its CRC-32, and then the
//!   payload, JSON. A file of another format version, a truncated or corrupted one, is refused
//!   before anything is built ([`SnapshotError`]).
//! - The **memory file** is guest RAM, region after region, written sparsely (pages of zeros
//!   are holes). A restored VM maps it `MAP_PRIVATE`: a restore costs page faults, not a copy,
//!   and VMs restored from one file share its pages until they write them.

pub mod checkpoint;
mod error;
mod file;
mod save;
mod state;

pub use error::SnapshotError;
pub use file::{framed, map_memory, read_state, write_memory, write_state, FORMAT_VERSION};
pub use save::{files_in, load, save, Saved};
pub use state::{MachineState, SnapshotState, XSAVE_AREA};
